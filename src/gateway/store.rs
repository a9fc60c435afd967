//! The gateway's store: one SQLite file (`gateway.db` in its folder, WAL, mode 0600) that the
//! serving process and the `token`/`revoke`/`agents` commands share.
//!
//! * `tokens`: enrollment tokens by SHA-256 (the token itself is shown once and never stored),
//!   their expiry, and who used them;
//! * `agents`: each enrolled agent, the SHA-256 of the certificate it was issued last (only that
//!   one is accepted), revocation, and what its last heartbeat and hello said;
//! * `reports`: every schema and run report received, once per (agent, sequence): the agent
//!   delivers at least once, the store keeps each report once.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FILE: &str = "gateway.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the gateway store {path}: {message}")]
    Sql { path: String, message: String },
}

/// Why a token was not accepted. The messages never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Used { by: String, at: String },
    Expired { at: String },
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefusal::Unknown => f.write_str(
                "the enrollment token is not known to this gateway: check that it was copied whole, or make a new one with `connagent gateway token`",
            ),
            TokenRefusal::Used { by, at } => write!(
                f,
                "the enrollment token was used already (by agent {by} at {at}); each token enrolls one agent once: make a new one with `connagent gateway token`"
            ),
            TokenRefusal::Expired { at } => write!(
                f,
                "the enrollment token expired at {at}: make a new one with `connagent gateway token`"
            ),
        }
    }
}

/// An agent as the store knows it.
#[derive(Debug, Clone, Default)]
pub struct AgentRow {
    pub identifier: String,
    pub certificate_sha256: String,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
    pub version: String,
    pub last_heartbeat: Option<String>,
    pub configuration_generation: u64,
    pub configuration_ok: bool,
    pub configuration_fingerprint: String,
    pub queued_reports: u32,
    pub reports_received: u64,
    pub packages: Vec<String>,
}

/// A report as stored.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub agent: String,
    pub sequence: u64,
    pub kind: String,
    pub received_at: String,
    pub body: serde_json::Value,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// Opens (creating when needed) the store in `folder`.
    pub fn open(folder: &Path) -> Result<Store, StoreError> {
        let path = folder.join(FILE);
        let err = |e: rusqlite::Error| StoreError::Sql {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS tokens (
                 sha256 TEXT PRIMARY KEY,
                 created_at TEXT NOT NULL,
                 expires_at TEXT NOT NULL,
                 used_at TEXT,
                 used_by TEXT
             );
             CREATE TABLE IF NOT EXISTS agents (
                 identifier TEXT PRIMARY KEY COLLATE NOCASE,
                 certificate_sha256 TEXT NOT NULL,
                 enrolled_at TEXT NOT NULL,
                 revoked_at TEXT,
                 version TEXT NOT NULL DEFAULT '',
                 last_heartbeat TEXT,
                 configuration_generation INTEGER NOT NULL DEFAULT 0,
                 configuration_ok INTEGER NOT NULL DEFAULT 0,
                 configuration_fingerprint TEXT NOT NULL DEFAULT '',
                 queued_reports INTEGER NOT NULL DEFAULT 0,
                 packages TEXT NOT NULL DEFAULT ''
             );
             CREATE TABLE IF NOT EXISTS reports (
                 agent TEXT NOT NULL COLLATE NOCASE,
                 sequence INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 received_at TEXT NOT NULL,
                 body TEXT NOT NULL,
                 PRIMARY KEY (agent, sequence)
             );
             CREATE TABLE IF NOT EXISTS schema_fingerprints (
                 agent TEXT NOT NULL COLLATE NOCASE,
                 connection TEXT NOT NULL COLLATE NOCASE,
                 fingerprint TEXT NOT NULL,
                 PRIMARY KEY (agent, connection)
             );",
        )
        .map_err(err)?;
        Ok(Store { conn, path })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Records a new token's hash, valid for `valid`; returns when it expires.
    pub fn add_token(&self, token: &str, valid: Duration) -> Result<String, StoreError> {
        let expires = chrono::Utc::now()
            + chrono::Duration::from_std(valid).unwrap_or(chrono::Duration::hours(1));
        let expires = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.conn
            .execute(
                "INSERT INTO tokens (sha256, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![sha256_hex(token.as_bytes()), now(), expires],
            )
            .map_err(|e| self.err(e))?;
        Ok(expires)
    }

    /// Checks a token and, when it is good, hands it to `issue` (which makes the certificate)
    /// and records the agent with the certificate's hash, all in one transaction: a token is
    /// used once even when two agents present it at the same moment.
    pub fn enroll<T>(
        &mut self,
        token: &str,
        agent: &str,
        issue: impl FnOnce() -> Result<(T, String), String>,
    ) -> Result<Result<T, TokenRefusal>, String> {
        let path = self.path.display().to_string();
        let sql = |e: rusqlite::Error| format!("the gateway store {path}: {e}");
        let tx = self.conn.transaction().map_err(sql)?;
        let row: Option<(String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT expires_at, used_at, used_by FROM tokens WHERE sha256 = ?1",
                params![sha256_hex(token.as_bytes())],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?;
        let refusal = match row {
            None => Some(TokenRefusal::Unknown),
            Some((_, Some(at), by)) => Some(TokenRefusal::Used {
                by: by.unwrap_or_default(),
                at,
            }),
            Some((expires, None, _)) => chrono::DateTime::parse_from_rfc3339(&expires)
                .ok()
                .filter(|e| *e < chrono::Utc::now())
                .map(|_| TokenRefusal::Expired { at: expires }),
        };
        if let Some(r) = refusal {
            return Ok(Err(r));
        }
        let (issued, certificate_sha256) = issue()?;
        let at = now();
        tx.execute(
            "UPDATE tokens SET used_at = ?1, used_by = ?2 WHERE sha256 = ?3",
            params![at, agent, sha256_hex(token.as_bytes())],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO agents (identifier, certificate_sha256, enrolled_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (identifier) DO UPDATE SET certificate_sha256 = excluded.certificate_sha256,
                 enrolled_at = excluded.enrolled_at, revoked_at = NULL",
            params![agent, certificate_sha256, at],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(Ok(issued))
    }

    /// Revokes an agent's credential; `false` when no such agent is enrolled.
    pub fn revoke(&self, agent: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE agents SET revoked_at = ?1 WHERE identifier = ?2",
                params![now(), agent],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn agent(&self, identifier: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(self
            .agents()?
            .into_iter()
            .find(|a| a.identifier.eq_ignore_ascii_case(identifier)))
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.identifier, a.certificate_sha256, a.enrolled_at, a.revoked_at, a.version,
                        a.last_heartbeat, a.configuration_generation, a.configuration_ok,
                        a.configuration_fingerprint, a.queued_reports, a.packages,
                        (SELECT COUNT(*) FROM reports r WHERE r.agent = a.identifier)
                 FROM agents a ORDER BY a.identifier",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AgentRow {
                    identifier: r.get(0)?,
                    certificate_sha256: r.get(1)?,
                    enrolled_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                    version: r.get(4)?,
                    last_heartbeat: r.get(5)?,
                    configuration_generation: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                    configuration_ok: r.get::<_, i64>(7)? != 0,
                    configuration_fingerprint: r.get(8)?,
                    queued_reports: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
                    packages: r
                        .get::<_, String>(10)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    reports_received: u64::try_from(r.get::<_, i64>(11)?).unwrap_or(0),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// What an agent's hello said: its version, packages and configuration fingerprint; returns
    /// the connections whose schema fingerprint differs from the one stored (or is not stored).
    pub fn hello(
        &self,
        agent: &str,
        version: &str,
        packages: &[String],
        configuration_fingerprint: &str,
        configuration_generation: u64,
        schemas: &std::collections::HashMap<String, String>,
    ) -> Result<Vec<String>, StoreError> {
        self.conn
            .execute(
                "UPDATE agents SET version = ?1, packages = ?2, configuration_fingerprint = ?3,
                     configuration_generation = ?4 WHERE identifier = ?5",
                params![
                    version,
                    packages.join(","),
                    configuration_fingerprint,
                    i64::try_from(configuration_generation).unwrap_or(i64::MAX),
                    agent
                ],
            )
            .map_err(|e| self.err(e))?;
        let mut wanted = Vec::new();
        for (connection, fingerprint) in schemas {
            let known: Option<String> = self
                .conn
                .query_row(
                    "SELECT fingerprint FROM schema_fingerprints WHERE agent = ?1 AND connection = ?2",
                    params![agent, connection],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if known.as_deref() != Some(fingerprint.as_str()) {
                wanted.push(connection.clone());
            }
        }
        wanted.sort();
        Ok(wanted)
    }

    pub fn heartbeat(
        &self,
        agent: &str,
        version: &str,
        generation: u64,
        ok: bool,
        queued: u32,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE agents SET version = ?1, last_heartbeat = ?2, configuration_generation = ?3,
                     configuration_ok = ?4, queued_reports = ?5 WHERE identifier = ?6",
                params![
                    version,
                    now(),
                    i64::try_from(generation).unwrap_or(i64::MAX),
                    i64::from(ok),
                    i64::from(queued),
                    agent
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores a report once; `false` when this (agent, sequence) was stored already (a
    /// redelivery). A schema report also records the schema's fingerprint.
    pub fn add_report(
        &self,
        agent: &str,
        sequence: u64,
        kind: &str,
        body: &serde_json::Value,
        schema: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO reports (agent, sequence, kind, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (agent, sequence) DO NOTHING",
                params![
                    agent,
                    i64::try_from(sequence).unwrap_or(i64::MAX),
                    kind,
                    now(),
                    body.to_string()
                ],
            )
            .map_err(|e| self.err(e))?;
        if let Some((connection, fingerprint)) = schema.filter(|(_, f)| !f.is_empty()) {
            self.conn
                .execute(
                    "INSERT INTO schema_fingerprints (agent, connection, fingerprint) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent, connection) DO UPDATE SET fingerprint = excluded.fingerprint",
                    params![agent, connection, fingerprint],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(n > 0)
    }

    /// The reports received, oldest first (by agent, then sequence).
    pub fn reports(&self, agent: Option<&str>) -> Result<Vec<ReportRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT agent, sequence, kind, received_at, body FROM reports
                 WHERE ?1 IS NULL OR agent = ?1 ORDER BY agent, sequence",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![agent], |r| {
                let body: String = r.get(4)?;
                Ok(ReportRow {
                    agent: r.get(0)?,
                    sequence: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    kind: r.get(2)?,
                    received_at: r.get(3)?,
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_used_once_and_expire() {
        let dir = std::env::temp_dir().join(format!("cgw-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Store::open(&dir).unwrap();
        s.add_token("tok-a", Duration::from_secs(600)).unwrap();
        s.add_token("tok-b", Duration::from_secs(0)).unwrap();
        let issue = || Ok(((), "abc".to_string()));
        assert_eq!(s.enroll("tok-a", "A1", issue).unwrap(), Ok(()));
        assert!(matches!(
            s.enroll("tok-a", "A2", issue).unwrap(),
            Err(TokenRefusal::Used { by, .. }) if by == "A1"
        ));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(
            s.enroll("tok-b", "A2", issue).unwrap(),
            Err(TokenRefusal::Expired { .. })
        ));
        assert_eq!(
            s.enroll("nope", "A2", issue).unwrap(),
            Err(TokenRefusal::Unknown)
        );
        assert!(!s.agent("a1").unwrap().unwrap().identifier.is_empty());
        assert!(s.revoke("A1").unwrap());
        assert!(s.agent("A1").unwrap().unwrap().revoked_at.is_some());
        assert!(!s.revoke("nobody").unwrap());
        let body = serde_json::json!({"x": 1});
        assert!(s.add_report("A1", 1, "run", &body, None).unwrap());
        assert!(!s.add_report("a1", 1, "run", &body, None).unwrap());
        assert_eq!(s.reports(Some("A1")).unwrap().len(), 1);
        // The hello asks only for the schemas whose fingerprints differ from those stored.
        s.add_report("A1", 2, "schema", &body, Some(("Hr", "fp1")))
            .unwrap();
        let mut said = std::collections::HashMap::new();
        said.insert("Hr".to_string(), "fp1".to_string());
        said.insert("Ad".to_string(), "fp2".to_string());
        assert_eq!(
            s.hello("A1", "1", &[], "cfg", 1, &said).unwrap(),
            vec!["Ad".to_string()]
        );
        said.insert("Hr".to_string(), "fp3".to_string());
        assert_eq!(
            s.hello("A1", "1", &[], "cfg", 1, &said).unwrap(),
            vec!["Ad".to_string(), "Hr".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
