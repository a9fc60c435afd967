//! The settings of the agent's own services: the gRPC listener (`Grpc`) and the control-plane
//! client (`ControlPlane`).

use super::diag::{Diagnostic, Diagnostics};
use super::settings::SettingsTree;
use crate::secret::Secret;
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 30;
pub const DEFAULT_KEEPALIVE_SECONDS: u64 = 30;

/// What a gRPC caller may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A bearer token known by its SHA-256; the token itself is never configured in clear.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub role: Role,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GrpcSettings {
    /// The inbound listener; `None` when `Grpc:Listen` is written empty (`""`): no port at all.
    pub listen: Option<SocketAddr>,
    pub tokens: Vec<ApiToken>,
    pub tls: Option<TlsFiles>,
}

/// How the control plane reaches `AgentService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlaneMode {
    /// The control plane calls the agent's listener (`Grpc:Listen`).
    Inbound,
    /// The agent keeps a connection open to the control plane and serves `AgentService` over
    /// it (the default when `ControlPlane:Url` is set).
    Outbound,
}

/// An HTTP CONNECT proxy on the way to the control plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `host:port` of the proxy.
    pub address: String,
    /// Basic authentication: the user, and the secured `ControlPlane:ProxyPassword`.
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    pub mode: ControlPlaneMode,
    /// The outbound channel is dropped when its pings go unanswered for this long.
    pub keepalive: Duration,
    /// `ControlPlane:Proxy`; `None`: the `HTTPS_PROXY`/`NO_PROXY` environment decides.
    pub proxy: Option<ProxySettings>,
    pub token: Option<Secret>,
    pub heartbeat: Duration,
    /// CA that signs the server's certificate (https). Without it: the CA the enrollment
    /// stored, else the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when the server asks for mutual TLS.
    pub certificate_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ControlPlaneSettings {
    /// The settings for a URL given on the command line (`connagent enroll --url`): the
    /// defaults, with the proxy of the configuration when there is one.
    pub fn for_url(url: &str, configured: Option<&ControlPlaneSettings>) -> ControlPlaneSettings {
        ControlPlaneSettings {
            url: url.to_string(),
            mode: ControlPlaneMode::Outbound,
            keepalive: Duration::from_secs(DEFAULT_KEEPALIVE_SECONDS),
            proxy: configured.and_then(|c| c.proxy.clone()),
            token: None,
            heartbeat: Duration::from_secs(DEFAULT_HEARTBEAT_SECONDS),
            ca_file: configured.and_then(|c| c.ca_file.clone()),
            certificate_file: None,
            key_file: None,
        }
    }
}

fn text<'a>(tree: &'a SettingsTree, path: &[&str], d: &mut Diagnostics) -> Option<&'a str> {
    match tree.get(path)? {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim()),
        Value::Null => None,
        _ => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(path)),
                    format!("{} must be a string", path.join(":")),
                )
                .hint("put the value in double quotes"),
            );
            None
        }
    }
}

fn file(tree: &SettingsTree, path: &[&str], d: &mut Diagnostics) -> Option<PathBuf> {
    let p = tree.resolve_path(text(tree, path, d)?);
    if !p.is_file() {
        d.push(
            Diagnostic::error(
                Some(tree.origin(path)),
                format!(
                    "{}: the file {} does not exist",
                    path.join(":"),
                    p.display()
                ),
            )
            .hint("correct the path (relative paths start at the settings file's folder)"),
        );
    }
    Some(p)
}

/// A listening address: `IP:PORT`, `[IPv6]:PORT`, or `localhost:PORT` (the IPv4 loopback, as
/// the other names are not looked up: the agent binds before any resolver could be trusted).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && host.eq_ignore_ascii_case("localhost")
    {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| "the port must be a number from 0 to 65535".to_string());
    }
    Err(
        "expected IP:PORT or localhost:PORT (host names other than localhost are not looked up)"
            .into(),
    )
}

pub fn grpc_settings(tree: &SettingsTree, d: &mut Diagnostics) -> GrpcSettings {
    // Written empty: no listener at all (the outbound channel is then the only way in).
    let no_listener =
        matches!(tree.get(&["Grpc", "Listen"]), Some(Value::String(s)) if s.trim().is_empty());
    let listen_text = text(tree, &["Grpc", "Listen"], d).unwrap_or(DEFAULT_LISTEN);
    let listen = (!no_listener).then(|| parse_listen(listen_text).unwrap_or_else(|e| {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["Grpc", "Listen"])),
                format!(
                    "Grpc:Listen {} is not an address and port: {e}",
                    tree.quote(&["Grpc", "Listen"])
                ),
            )
            .hint("write an IP address or localhost, and a port: \"127.0.0.1:50051\", \"localhost:50051\", \"[::1]:50051\" or \"0.0.0.0:50051\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 50051))
    }));
    let mut tokens: Vec<ApiToken> = Vec::new();
    match tree.get(&["Grpc", "Tokens"]) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let idx = i.to_string();
                let at = |k: &str| tree.origin(&["Grpc", "Tokens", &idx, k]);
                let field = |k: &str| {
                    item.as_object()
                        .and_then(|o| crate::ident::get_ci(o, k))
                        .and_then(Value::as_str)
                };
                let hint = "each token is {\"Name\": \"central\", \"Sha256\": \"<64 hex digits: sha256 of the token>\", \"Role\": \"viewer|operator|admin\"}";
                let name = field("Name").map(str::trim).filter(|n| !n.is_empty());
                let Some(name) = name else {
                    d.push(
                        Diagnostic::error(
                            Some(tree.origin(&["Grpc", "Tokens", &idx])),
                            format!("Grpc:Tokens item {i} has no Name"),
                        )
                        .hint(hint),
                    );
                    continue;
                };
                let sha = field("Sha256")
                    .and_then(|h| <[u8; 32]>::try_from(hex::decode(h.trim()).ok()?).ok());
                let Some(sha256) = sha else {
                    d.push(
                        Diagnostic::error(
                            Some(at("Sha256")),
                            format!("Grpc:Tokens {name}: Sha256 must be 64 hexadecimal digits"),
                        )
                        .hint("compute it with: printf %s \"$TOKEN\" | sha256sum"),
                    );
                    continue;
                };
                let Some(role) = field("Role").and_then(Role::parse) else {
                    d.push(
                        Diagnostic::error(
                            Some(at("Role")),
                            format!("Grpc:Tokens {name}: Role must be viewer, operator or admin"),
                        )
                        .hint(hint),
                    );
                    continue;
                };
                if tokens.iter().any(|t| t.name.eq_ignore_ascii_case(name)) {
                    d.push(
                        Diagnostic::error(
                            Some(at("Name")),
                            format!("Grpc:Tokens: the name {name} is used twice"),
                        )
                        .hint("give each token its own name: it identifies the caller in the log"),
                    );
                    continue;
                }
                tokens.push(ApiToken {
                    name: name.to_string(),
                    sha256,
                    role,
                });
            }
        }
        Some(_) => d.push(
            Diagnostic::error(
                Some(tree.origin(&["Grpc", "Tokens"])),
                "Grpc:Tokens must be a list",
            )
            .hint("write \"Tokens\": [{\"Name\": ..., \"Sha256\": ..., \"Role\": ...}]"),
        ),
    }
    let cert = file(tree, &["Grpc", "Tls", "CertificateFile"], d);
    let key = file(tree, &["Grpc", "Tls", "KeyFile"], d);
    let client_ca = file(tree, &["Grpc", "Tls", "ClientCaFile"], d);
    let tls = match (cert, key) {
        (Some(certificate), Some(key)) => Some(TlsFiles {
            certificate,
            key,
            client_ca,
        }),
        (None, None) => {
            if client_ca.is_some() {
                d.push(
                    Diagnostic::error(
                        Some(tree.origin(&["Grpc", "Tls", "ClientCaFile"])),
                        "Grpc:Tls:ClientCaFile needs CertificateFile and KeyFile",
                    )
                    .hint("mutual TLS needs the server's own certificate and key too"),
                );
            }
            None
        }
        _ => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Grpc", "Tls"])),
                    "Grpc:Tls needs both CertificateFile and KeyFile",
                )
                .hint("give the PEM certificate chain and its private key"),
            );
            None
        }
    };
    GrpcSettings {
        listen,
        tokens,
        tls,
    }
}

pub fn control_plane_settings(
    tree: &SettingsTree,
    d: &mut Diagnostics,
) -> Option<ControlPlaneSettings> {
    let url = text(tree, &["ControlPlane", "Url"], d)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["ControlPlane", "Url"])),
                format!(
                    "ControlPlane:Url {} must start with http:// or https://",
                    tree.quote(&["ControlPlane", "Url"])
                ),
            )
            .hint("e.g. \"https://central.example:443\""),
        );
        return None;
    }
    let token = match tree.get(&["ControlPlane", "Token"]) {
        Some(Value::String(s)) if !s.is_empty() => {
            plain_secret_warning(tree, "Token", d);
            Some(Secret::new(s.clone()))
        }
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => None,
        Some(_) => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["ControlPlane", "Token"])),
                    "ControlPlane:Token must be a string",
                )
                .hint("put the token in double quotes"),
            );
            None
        }
    };
    let heartbeat = match tree.get(&["ControlPlane", "HeartbeatSeconds"]) {
        None | Some(Value::Null) => DEFAULT_HEARTBEAT_SECONDS,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(n) if (1..=86_400).contains(&n) => n,
            _ => {
                d.push(
                    Diagnostic::error(
                        Some(tree.origin(&["ControlPlane", "HeartbeatSeconds"])),
                        "ControlPlane:HeartbeatSeconds must be a whole number from 1 to 86400",
                    )
                    .hint("e.g. 30"),
                );
                DEFAULT_HEARTBEAT_SECONDS
            }
        },
    };
    let certificate_file = file(tree, &["ControlPlane", "CertificateFile"], d);
    let key_file = file(tree, &["ControlPlane", "KeyFile"], d);
    if certificate_file.is_some() != key_file.is_some() {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["ControlPlane"])),
                "ControlPlane needs both CertificateFile and KeyFile, or neither",
            )
            .hint("a client certificate for mutual TLS comes with its private key"),
        );
    }
    let host_is_loopback = url
        .split("://")
        .nth(1)
        .map(|rest| rest.split(['/', ':']).next().unwrap_or(""))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || h == "[::1]"
        });
    if url.starts_with("http://") && token.is_some() && !host_is_loopback {
        d.push(
            Diagnostic::warning(
                Some(tree.origin(&["ControlPlane", "Url"])),
                "ControlPlane:Token would travel in clear text over http:// to another host",
            )
            .hint("use an https:// URL (with CaFile for a private CA)"),
        );
    }
    let mode = match text(tree, &["ControlPlane", "Mode"], d) {
        None => ControlPlaneMode::Outbound,
        Some(m) if m.eq_ignore_ascii_case("outbound") => ControlPlaneMode::Outbound,
        Some(m) if m.eq_ignore_ascii_case("inbound") => ControlPlaneMode::Inbound,
        Some(_) => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["ControlPlane", "Mode"])),
                    format!(
                        "ControlPlane:Mode {} is not known",
                        tree.quote(&["ControlPlane", "Mode"])
                    ),
                )
                .hint("use outbound (the agent dials the control plane; the default) or inbound (the control plane calls Grpc:Listen)"),
            );
            ControlPlaneMode::Outbound
        }
    };
    let keepalive = match tree.get(&["ControlPlane", "KeepaliveSeconds"]) {
        None | Some(Value::Null) => DEFAULT_KEEPALIVE_SECONDS,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(n) if (2..=3600).contains(&n) => n,
            _ => {
                d.push(
                    Diagnostic::error(
                        Some(tree.origin(&["ControlPlane", "KeepaliveSeconds"])),
                        "ControlPlane:KeepaliveSeconds must be a whole number from 2 to 3600",
                    )
                    .hint("e.g. 30: a connection whose pings go unanswered that long is dropped and dialled again"),
                );
                DEFAULT_KEEPALIVE_SECONDS
            }
        },
    };
    if mode == ControlPlaneMode::Outbound && url.starts_with("http://") && !host_is_loopback {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["ControlPlane", "Url"])),
                "the outbound channel runs over TLS: an http:// ControlPlane:Url is allowed only to a loopback address",
            )
            .hint("use an https:// URL (with CaFile for a private CA), or ControlPlane:Mode inbound"),
        );
    }
    let proxy = proxy_settings(tree, d);
    Some(ControlPlaneSettings {
        url: url.to_string(),
        mode,
        keepalive: Duration::from_secs(keepalive),
        proxy,
        token,
        heartbeat: Duration::from_secs(heartbeat),
        ca_file: file(tree, &["ControlPlane", "CaFile"], d),
        certificate_file,
        key_file,
    })
}

/// A `ControlPlane:<name>` secret written in plain text in the settings file itself: allowed,
/// with a warning that names the setting (never the value) and the safer places for it.
fn plain_secret_warning(tree: &SettingsTree, name: &str, d: &mut Diagnostics) {
    let path = ["ControlPlane", name];
    let origin = tree.origin(&path);
    let in_file = matches!(&origin, crate::config::Origin::File(loc) if loc.file == tree.path);
    if in_file && !tree.is_referenced(&path) {
        d.push(
            Diagnostic::warning(
                Some(origin),
                format!("ControlPlane:{name} holds a secret in plain text in the settings file"),
            )
            .hint(format!(
                "move it out of the file: `connagent protect ControlPlane:{name}` (encrypted), a systemd credential, or CONNAGENT__ControlPlane__{name}"
            )),
        );
    }
}

/// `ControlPlane:Proxy` (`http://[user@]host:port`) and the secured `ControlPlane:ProxyPassword`.
fn proxy_settings(tree: &SettingsTree, d: &mut Diagnostics) -> Option<ProxySettings> {
    let text_value = text(tree, &["ControlPlane", "Proxy"], d)?;
    let rest = text_value
        .strip_prefix("http://")
        .unwrap_or(text_value)
        .trim_end_matches('/');
    let (user, address) = match rest.rsplit_once('@') {
        Some((u, a)) => (Some(u.to_string()).filter(|u| !u.is_empty()), a),
        None => (None, rest),
    };
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !valid || text_value.starts_with("https://") {
        d.push(
            Diagnostic::error(
                Some(tree.origin(&["ControlPlane", "Proxy"])),
                format!(
                    "ControlPlane:Proxy {} is not an HTTP proxy address",
                    tree.quote(&["ControlPlane", "Proxy"])
                ),
            )
            .hint("write http://proxy.example:3128 (or http://user@proxy.example:3128 with ControlPlane:ProxyPassword)"),
        );
        return None;
    }
    let password = match tree.get(&["ControlPlane", "ProxyPassword"]) {
        Some(Value::String(s)) if !s.is_empty() => Some(Secret::new(s.as_str())),
        _ => None,
    };
    if password.is_some() {
        plain_secret_warning(tree, "ProxyPassword", d);
    }
    Some(ProxySettings {
        address: address.to_string(),
        user,
        password,
    })
}

/// How the daemon logs, reloads, schedules and stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// `Logging:Format`: "text" (default) or "json".
    pub log_json: bool,
    /// `Logging:Level` (a tracing filter such as "info" or "connagent=debug"); RUST_LOG wins.
    pub log_level: String,
    /// `Shutdown:GraceSeconds`: how long runs may go on after SIGTERM before they are cancelled.
    pub grace: Duration,
    /// `Reload:PollSeconds`: how often configuration files are checked even without events.
    pub poll: Duration,
    /// `Scheduler:Enabled`: whether `run` fires the jobs' schedules.
    pub scheduler: bool,
}

fn seconds(tree: &SettingsTree, path: &[&str], default: u64, max: u64, d: &mut Diagnostics) -> u64 {
    match tree.get(path) {
        None | Some(Value::Null) => default,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(n) if n <= max => n,
            _ => {
                d.push(
                    Diagnostic::error(
                        Some(tree.origin(path)),
                        format!(
                            "{} must be a whole number of seconds from 0 to {max}",
                            path.join(":")
                        ),
                    )
                    .hint(format!("the default is {default}")),
                );
                default
            }
        },
    }
}

pub fn daemon_settings(tree: &SettingsTree, d: &mut Diagnostics) -> DaemonSettings {
    let log_json = match text(tree, &["Logging", "Format"], d) {
        None => false,
        Some(f) if f.eq_ignore_ascii_case("text") => false,
        Some(f) if f.eq_ignore_ascii_case("json") => true,
        Some(_) => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Logging", "Format"])),
                    format!(
                        "Logging:Format {} is not known",
                        tree.quote(&["Logging", "Format"])
                    ),
                )
                .hint("use \"text\" or \"json\""),
            );
            false
        }
    };
    let log_level = text(tree, &["Logging", "Level"], d)
        .unwrap_or("info")
        .to_string();
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        d.push(
            Diagnostic::error(Some(tree.origin(&["Logging", "Level"])), format!("Logging:Level {} is not a log filter", tree.quote(&["Logging", "Level"])))
                .hint("use error, warn, info, debug or trace, optionally per module: \"info,connagent=debug\""),
        );
    }
    let scheduler = match tree.get(&["Scheduler", "Enabled"]) {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            d.push(
                Diagnostic::error(
                    Some(tree.origin(&["Scheduler", "Enabled"])),
                    "Scheduler:Enabled must be true or false",
                )
                .hint("write true or false without quotes"),
            );
            true
        }
    };
    DaemonSettings {
        log_json,
        log_level,
        grace: Duration::from_secs(seconds(tree, &["Shutdown", "GraceSeconds"], 30, 86_400, d)),
        poll: Duration::from_secs(seconds(tree, &["Reload", "PollSeconds"], 30, 86_400, d).max(1)),
        scheduler,
    }
}
