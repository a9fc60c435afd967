//! What a connection string says, typed for tokio-postgres (host, port, database, user, the
//! secret password, TLS mode, timeouts), and the TLS configuration (webpki roots and `CaFile`).

use super::*;

/// What the connection string says, typed.
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) ssl: SslMode,
    pub(super) shown: String,
    /// The whole connection (TCP, TLS, start-up and login) must be made within this.
    pub(super) connect_timeout: Duration,
}

/// The server enforces `Timeout` itself (statement_timeout); the agent gives it this much more
/// before it stops waiting, so that the server's own message normally comes first.
pub(super) const SERVER_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

pub(super) fn target(settings: &Settings) -> Result<Target, Problem> {
    let hint = "write ConnectionString as postgresql://user:password@host:5432/database";
    let cs: &ConnectionString =
        settings
            .connection_string("ConnectionString")
            .ok_or_else(|| {
                Problem::new(
                    Some("ConnectionString"),
                    "ConnectionString is not set",
                    hint,
                )
            })?;
    let mut config = tokio_postgres::Config::new();
    let written_host = cs
        .plain(&["host", "server", "hostaddr"])
        .unwrap_or("localhost");
    // Npgsql reads `Host=h:5433` (and `[::1]:5433`) as a host and its port.
    let (host, host_port) = split_host_port(written_host);
    config.host(host);
    let parse_port = |p: &str| {
        p.trim().parse::<u16>().map_err(|_| {
            Problem::new(
                Some("ConnectionString"),
                format!("the port {p:?} is not a number"),
                hint,
            )
        })
    };
    let port = match (cs.plain(&["port"]), host_port) {
        (Some(p), None) => parse_port(p)?,
        (None, Some(p)) => parse_port(p)?,
        (Some(p), Some(hp)) => {
            let (p, hp) = (parse_port(p)?, parse_port(hp)?);
            if p != hp {
                return Err(Problem::new(
                    Some("ConnectionString"),
                    format!("Host {written_host:?} names port {hp}, and Port says {p}"),
                    "write the port once: in Host (host:port) or in Port",
                ));
            }
            p
        }
        (None, None) => 5432,
    };
    config.port(port);
    let db = cs
        .plain(&["dbname", "database", "initial catalog", "db"])
        .ok_or_else(|| {
            Problem::new(
                Some("ConnectionString"),
                "the connection string names no database",
                hint,
            )
        })?;
    config.dbname(db);
    let user = cs
        .plain(&["user", "username", "user id", "userid", "uid"])
        .ok_or_else(|| {
            Problem::new(
                Some("ConnectionString"),
                "the connection string names no user",
                hint,
            )
        })?;
    config.user(user);
    if let Some(Part::Secret(pw)) = cs.get(&["password", "pwd", "psw"]) {
        config.password(pw.expose());
    }
    let ssl = match cs
        .plain(&["sslmode", "ssl mode"])
        .map(|s| s.to_ascii_lowercase())
    {
        None => SslMode::Prefer,
        Some(m) => match m.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" | "verifyca" | "verifyfull" => SslMode::Require,
            other => {
                return Err(Problem::new(
                    Some("ConnectionString"),
                    format!("sslmode {other:?} is not known"),
                    "use disable, prefer, require, verify-ca or verify-full",
                ));
            }
        },
    };
    config.ssl_mode(ssl);
    let connect_timeout = match cs.plain(&["connect_timeout", "timeout", "connect timeout"]) {
        Some(t) => {
            let secs = t.trim().parse::<u64>().map_err(|_| {
                Problem::new(
                    Some("ConnectionString"),
                    format!("connect_timeout {t:?} is not a number of seconds"),
                    hint,
                )
            })?;
            // 0 means "no limit" to libpq; the agent still bounds the connection (a day).
            Duration::from_secs(if secs == 0 { 86_400 } else { secs })
        }
        None => Duration::from_secs(30),
    };
    config.connect_timeout(connect_timeout);
    config.application_name(
        cs.plain(&["application_name", "application name"])
            .unwrap_or("connagent"),
    );
    Ok(Target {
        config,
        ssl,
        shown: format!("{user}@{host}:{port}/{db}"),
        connect_timeout,
    })
}

/// `host:port` (and `[v6]:port`) as Npgsql reads `Host`; a bare IPv6 address has no port.
fn split_host_port(h: &str) -> (&str, Option<&str>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[')
        && let Some((addr, tail)) = rest.split_once(']')
    {
        return (addr, tail.strip_prefix(':'));
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !port.is_empty() => (host, Some(port)),
        _ => (h, None),
    }
}

pub(super) fn tls(
    settings: &Settings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PackageError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = settings.path("CaFile") {
        let pem = crate::fsutil::read_limited(&ca, crate::fsutil::limits::PEM_FILE, "a PEM file")
            .map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| PackageError::config(format!("CaFile {}: {e}", ca.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PackageError::system(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn npgsql_hosts_with_ports() {
        assert_eq!(
            split_host_port("db.example:5433"),
            ("db.example", Some("5433"))
        );
        assert_eq!(split_host_port("db.example"), ("db.example", None));
        assert_eq!(split_host_port("[::1]:5433"), ("::1", Some("5433")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(
            split_host_port("/var/run/postgresql"),
            ("/var/run/postgresql", None)
        );
    }
}
