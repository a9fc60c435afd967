//! Sessions: connecting (failover across `Servers`, TLS, StartTLS, binds), the root DSE and the
//! subschema, and errors of LDAP calls.

use super::*;

/// What the root DSE says about a server.
#[derive(Debug, Clone, Default)]
pub(super) struct RootDse {
    pub(super) naming_contexts: Vec<String>,
    pub(super) supported_controls: Vec<String>,
    pub(super) versions: Vec<String>,
    pub(super) vendor_name: Option<String>,
    pub(super) vendor_version: Option<String>,
    pub(super) subschema: Option<String>,
    /// Why it could not be read, when it could not.
    pub(super) unreadable: Option<String>,
}

/// A connected and bound server.
pub(super) struct Session {
    pub(super) ldap: Ldap,
    /// The server's URL, for messages.
    pub(super) server: String,
    pub(super) transport: &'static str,
    /// "cn=reader,dc=example,dc=com" or "anonymous".
    pub(super) login: String,
    pub(super) root: RootDse,
    /// The servers tried before this one, and why they were skipped.
    pub(super) skipped: Vec<String>,
    pub(super) timeout: Option<Duration>,
    /// Searches send the Active Directory domain-scope control (`Controls: DomainScope`).
    pub(super) domain_scope: bool,
}

impl Session {
    /// Applies TimeOut to the next operation (ldap3 resets the timer for every answer).
    pub(super) fn arm(&mut self) {
        if let Some(t) = self.timeout {
            self.ldap.with_timeout(t);
        }
    }

    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ldap.unbind()).await;
    }
}

/// Runs `f` unless the connection is cancelled first.
pub(super) async fn cancellable<F: Future>(
    cancel: &CancellationToken,
    f: F,
) -> Result<F::Output, PackageError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(PackageError::cancelled()),
        out = f => Ok(out),
    }
}

/// An error of an LDAP call, outside search results.
pub(super) fn call_failure(server: &str, doing: &str, e: LdapError, cfg: &Config) -> PackageError {
    match e {
        LdapError::Timeout { .. } => PackageError::source(format!(
            "{server}: no answer within {} while {doing}; raise TimeOut if the server is slow",
            cfg.timeout_text()
        )),
        LdapError::LdapResult { result } => PackageError::source(format!(
            "{server}: {doing} failed with result code {}{}",
            result.rc,
            diagnostic(&result)
        )),
        e if connection_lost(&e) => PackageError::source(format!(
            "{server}: the server closed the connection while {doing}"
        )),
        other => PackageError::source(format!("{server}: {doing} failed: {other}")),
    }
}

pub(super) fn diagnostic(res: &LdapResult) -> String {
    let text = res.text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// Tries the servers in order; the first that connects and binds wins.
pub(super) async fn connect_any(
    cfg: &Config,
    cancel: &CancellationToken,
) -> Result<Session, PackageError> {
    let mut failures: Vec<PackageError> = Vec::new();
    for server in &cfg.servers {
        match cancellable(cancel, connect_one(cfg, server)).await? {
            Ok(mut session) => {
                session.skipped = failures
                    .iter()
                    .map(|e| format!("skipped a server: {}", e.message))
                    .collect();
                return Ok(session);
            }
            Err(e) => {
                tracing::debug!(server = %server.url, error = %e.message, "LDAP server not usable");
                failures.push(e);
            }
        }
    }
    match failures.len() {
        0 => Err(PackageError::config("Servers is empty")),
        1 => Err(failures.remove(0)),
        _ => {
            // A refused login is what the operator can fix; report it as such.
            let class = if failures
                .iter()
                .any(|e| e.class == crate::packages::FailureClass::Config)
            {
                crate::packages::FailureClass::Config
            } else {
                crate::packages::FailureClass::Source
            };
            Err(PackageError {
                class,
                message: format!(
                    "no LDAP server could be used: {}",
                    failures
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })
        }
    }
}

pub(super) async fn connect_one(
    cfg: &Config,
    server: &ServerConfig,
) -> Result<Session, PackageError> {
    if server.auth == AuthType::Negotiate {
        return Err(PackageError::config(format!(
            "{}: {NEGOTIATE_MESSAGE}",
            server.url
        )));
    }
    let mut settings = LdapConnSettings::new();
    if let Some(t) = cfg.timeout {
        settings = settings.set_conn_timeout(t);
    }
    if server.start_tls {
        settings = settings.set_starttls(true);
    }
    if server.start_tls || server.url.starts_with("ldaps://") {
        crate::install_crypto_provider();
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &server.url)
        .await
        .map_err(|e| {
            let why = match e {
                LdapError::Timeout { .. } => format!("no connection within {}", cfg.timeout_text()),
                other => {
                    let text = other.to_string();
                    if text.contains("certificate") {
                        format!(
                            "{text}; the TLS handshake failed before anything was sent: the server's certificate must be valid for the host written in Server and signed by a CA the agent trusts (the system's roots, or the PEM file named by SSL_CERT_FILE in the agent's environment)"
                        )
                    } else {
                        text
                    }
                }
            };
            PackageError::source(format!("cannot reach {}: {why}", server.url))
        })?;
    // The connection runs in its own task until every handle is dropped or unbound.
    ldap3::drive!(conn);
    let transport = if server.url.starts_with("ldaps://") {
        "LDAPS"
    } else if server.start_tls {
        "StartTLS"
    } else {
        "plain LDAP, not encrypted"
    };
    let mut session = Session {
        ldap,
        server: server.url.clone(),
        transport,
        login: "anonymous".into(),
        root: RootDse::default(),
        skipped: Vec::new(),
        domain_scope: server.domain_scope,
        timeout: cfg.timeout,
    };
    if server.auth == AuthType::Basic {
        let login = server.login.clone().unwrap_or_default();
        let password = server
            .own_password
            .as_ref()
            .or(cfg.default_password.as_ref())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                PackageError::config(format!(
                    "{}: Login {login} has no password: set the secured Password setting",
                    server.url
                ))
            })?;
        session.arm();
        let res = session
            .ldap
            .simple_bind(&login, password.expose())
            .await
            .map_err(|e| call_failure(&server.url, &format!("binding as {login}"), e, cfg))?;
        match res.rc {
            0 => {}
            49 => {
                return Err(PackageError::config(format!(
                    "the server {} refused the login for {login}: wrong password or unknown user{}",
                    server.url,
                    diagnostic(&res)
                )));
            }
            13 => {
                return Err(PackageError::config(format!(
                    "the server {} requires an encrypted connection for the login {login}{}: set EnableSSL or StartTLS",
                    server.url,
                    diagnostic(&res)
                )));
            }
            rc => {
                return Err(PackageError::source(format!(
                    "the server {} did not accept the login for {login}: result code {rc}{}",
                    server.url,
                    diagnostic(&res)
                )));
            }
        }
        session.login = login;
    }
    session.root = read_root_dse(&mut session, cfg).await?;
    Ok(session)
}

/// Reads the root DSE. A server that does not answer is skipped (failover); one that answers
/// with an error is kept, with the reason noted.
pub(super) async fn read_root_dse(
    session: &mut Session,
    cfg: &Config,
) -> Result<RootDse, PackageError> {
    session.arm();
    let result = session
        .ldap
        .search(
            "",
            ldap3::Scope::Base,
            "(objectClass=*)",
            ROOT_DSE_ATTRS.to_vec(),
        )
        .await
        .map_err(|e| call_failure(&session.server, "reading the root DSE", e, cfg))?;
    let (entries, res) = (result.0, result.1);
    let mut root = RootDse::default();
    if res.rc != 0 {
        root.unreadable = Some(format!("result code {}{}", res.rc, diagnostic(&res)));
        return Ok(root);
    }
    for re in entries {
        let Ok(entry) = parse_entry(re.0) else {
            continue;
        };
        for (desc, values) in entry.attrs {
            let values: Vec<String> = values
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            match attr_key(&desc).as_str() {
                "namingcontexts" => root.naming_contexts = values,
                "supportedcontrol" => root.supported_controls = values,
                "supportedldapversion" => root.versions = values,
                "vendorname" => root.vendor_name = values.into_iter().next(),
                "vendorversion" => root.vendor_version = values.into_iter().next(),
                "subschemasubentry" => root.subschema = values.into_iter().next(),
                _ => {}
            }
        }
    }
    Ok(root)
}

/// Reads the attribute types of the server's subschema subentry.
pub(super) async fn load_subschema(
    session: &mut Session,
    cfg: &Config,
    cancel: &CancellationToken,
) -> Result<Subschema, PackageError> {
    let dn = session
        .root
        .subschema
        .clone()
        .unwrap_or_else(|| "cn=Subschema".to_string());
    session.arm();
    let result = cancellable(
        cancel,
        session.ldap.search(
            &dn,
            ldap3::Scope::Base,
            "(objectClass=subschema)",
            vec!["attributeTypes", "objectClasses", "ldapSyntaxes"],
        ),
    )
    .await?
    .map_err(|e| {
        call_failure(
            &session.server,
            &format!("reading the subschema {dn}"),
            e,
            cfg,
        )
    })?;
    let (entries, res) = (result.0, result.1);
    if res.rc != 0 {
        return Err(PackageError::source(format!(
            "{}: reading the subschema {dn} failed with result code {}{}",
            session.server,
            res.rc,
            diagnostic(&res)
        )));
    }
    let mut defs: Vec<String> = Vec::new();
    let mut classes: Vec<String> = Vec::new();
    let mut syntaxes: Vec<String> = Vec::new();
    for re in entries {
        let entry = parse_entry(re.0).map_err(|m| {
            PackageError::source(format!("{}: subschema {dn}: {m}", session.server))
        })?;
        for (desc, values) in entry.attrs {
            let into = match attr_key(&desc).as_str() {
                "attributetypes" => &mut defs,
                "objectclasses" => &mut classes,
                "ldapsyntaxes" => &mut syntaxes,
                _ => continue,
            };
            into.extend(
                values
                    .into_iter()
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
            );
        }
    }
    if defs.is_empty() {
        return Err(PackageError::source(format!(
            "{}: the subschema {dn} lists no attribute types (is it readable by {}?)",
            session.server, session.login
        )));
    }
    Ok(Subschema::from_parts(
        defs.iter().map(String::as_str),
        classes.iter().map(String::as_str),
        syntaxes.iter().map(String::as_str),
    ))
}
