//! `connagent gateway`: the reference control plane. It accepts agents' outbound channels,
//! enrolls agents with one-time tokens and keeps their credentials (its own CA), stores the
//! reports they send (SQLite in its folder), and gives standard gRPC clients a local port where
//! `AgentService` is called on a chosen agent (`x-connagent-agent` metadata) and
//! `GatewayService.ListAgents` lists them.
//!
//! * `agents`: the agent port (TLS; tunnels, enrollment, reports);
//! * `clients`: the client port (forwarding, ListAgents);
//! * `pki`: the CA, the server certificate, issuing agent certificates;
//! * `store`: tokens, agents, reports.
//!
//! Its folder holds `ca.key` (0600), `ca.crt` (give it to agents: `connagent enroll --ca-file`),
//! and `gateway.db` (0600).

pub mod agents;
pub mod clients;
pub mod pki;
pub mod store;

use hyper::client::conn::http2::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use store::Store;
use tokio_util::sync::CancellationToken;

/// An agent's live channel.
pub struct Tunnel {
    pub sender: SendRequest<tonic::body::Body>,
    pub since: chrono::DateTime<chrono::Utc>,
    pub peer: SocketAddr,
    pub version: String,
    /// The SHA-256 of the certificate it connected with.
    pub fingerprint: String,
    /// Cancelled to close the channel (revocation).
    pub close: CancellationToken,
}

/// An agent's place in the table of channels.
pub enum Slot {
    /// A channel passed its checks and is being welcomed.
    Reserved { session: u64, peer: SocketAddr },
    Live {
        agent: String,
        session: u64,
        tunnel: Tunnel,
    },
}

/// What the gateway's tasks share.
pub struct Hub {
    store: Mutex<Store>,
    pub authority: pki::Authority,
    tunnels: Mutex<HashMap<String, Slot>>,
    next_session: AtomicU64,
    pub stop: CancellationToken,
}

impl Hub {
    pub fn new(store: Store, authority: pki::Authority) -> Hub {
        Hub {
            store: Mutex::new(store),
            authority,
            tunnels: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            stop: CancellationToken::new(),
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tunnels(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the agent's slot for a new channel; `Err` describes the channel already up.
    pub fn reserve(&self, agent: &str, peer: SocketAddr) -> Result<u64, String> {
        let mut tunnels = self.tunnels();
        let key = agent.to_ascii_lowercase();
        match tunnels.get(&key) {
            Some(Slot::Reserved { peer, .. }) => {
                return Err(format!("a channel from {peer} is being opened"));
            }
            Some(Slot::Live { tunnel, .. }) if !tunnel.sender.is_closed() => {
                return Err(format!(
                    "from {} since {}",
                    tunnel.peer,
                    tunnel
                        .since
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            _ => {}
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        tunnels.insert(key, Slot::Reserved { session, peer });
        Ok(session)
    }

    /// The welcomed channel becomes live.
    pub fn establish(&self, agent: &str, session: u64, tunnel: Tunnel) {
        self.tunnels().insert(
            agent.to_ascii_lowercase(),
            Slot::Live {
                agent: agent.to_string(),
                session,
                tunnel,
            },
        );
    }

    /// Frees the agent's slot if it is still this session's.
    pub fn release(&self, agent: &str, session: u64) {
        let mut tunnels = self.tunnels();
        let key = agent.to_ascii_lowercase();
        let mine = match tunnels.get(&key) {
            Some(Slot::Reserved { session: s, .. }) | Some(Slot::Live { session: s, .. }) => {
                *s == session
            }
            None => false,
        };
        if mine {
            tunnels.remove(&key);
        }
    }

    /// Where to send a call for `agent`: its live, open channel.
    pub fn sender(&self, agent: &str) -> Option<SendRequest<tonic::body::Body>> {
        match self.tunnels().get(&agent.to_ascii_lowercase()) {
            Some(Slot::Live { tunnel, .. }) if !tunnel.sender.is_closed() => {
                Some(tunnel.sender.clone())
            }
            _ => None,
        }
    }

    /// The agents connected now, and since when.
    pub fn live(&self) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
        self.tunnels()
            .values()
            .filter_map(|s| match s {
                Slot::Live { agent, tunnel, .. } if !tunnel.sender.is_closed() => {
                    Some((agent.clone(), tunnel.since))
                }
                _ => None,
            })
            .collect()
    }
}

/// The next connection on one of the gateway's ports, or `None` once the gateway stops. A
/// failed accept (out of file descriptors) is logged and tried again after 100 ms.
pub async fn accept(
    hub: &Hub,
    listener: &tokio::net::TcpListener,
    port: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = hub.stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, addr));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{port}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// How `connagent gateway serve` runs.
pub struct Options {
    pub folder: PathBuf,
    /// Where agents connect (TLS).
    pub agents: SocketAddr,
    /// Where gRPC clients connect (plain HTTP/2; loopback only).
    pub clients: SocketAddr,
    /// The names and addresses agents use to reach the gateway (the server certificate's).
    pub names: Vec<String>,
}

/// The folder, made with mode 0700 when it does not exist.
fn prepare(folder: &Path) -> Result<(), String> {
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create the gateway folder {}: {e}", folder.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", folder.display()))
}

/// The addresses bound, announced by `serve` before it serves.
pub struct Bound {
    pub agents: SocketAddr,
    pub clients: SocketAddr,
    pub ca: PathBuf,
}

/// Runs the gateway until SIGINT or SIGTERM. `announce` is called once both ports are bound.
pub async fn serve(opts: Options, announce: impl FnOnce(&Bound)) -> Result<(), String> {
    if !opts.clients.ip().is_loopback() {
        return Err(format!(
            "--clients {} is not a loopback address: the client port has no TLS or tokens of its own (the agents check each call's token); keep it on 127.0.0.1 or ::1 and reach it through SSH or a TLS-terminating proxy",
            opts.clients
        ));
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    prepare(&opts.folder)?;
    let name = opts
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let authority = pki::Authority::load_or_create(&opts.folder, &name)?;
    let store = Store::open(&opts.folder).map_err(|e| e.to_string())?;
    let hub = std::sync::Arc::new(Hub::new(store, authority));
    let mut names = opts.names.clone();
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    let tls = agents::tls_config(&hub, &names)?;
    let bind = |addr: SocketAddr, what: &str| {
        let what = what.to_string();
        async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
        }
    };
    let agent_listener = bind(opts.agents, "--agents").await?;
    let client_listener = bind(opts.clients, "--clients").await?;
    let bound = Bound {
        agents: agent_listener.local_addr().map_err(|e| e.to_string())?,
        clients: client_listener.local_addr().map_err(|e| e.to_string())?,
        ca: opts.folder.join(pki::CA_CERTIFICATE),
    };
    announce(&bound);
    tracing::info!(agents = %bound.agents, clients = %bound.clients, "gateway serving");
    tokio::spawn(agents::serve(hub.clone(), agent_listener, tls));
    tokio::spawn(agents::watch_revocations(hub.clone()));
    let clients = tokio::spawn(clients::serve(hub.clone(), client_listener));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        r = clients => {
            hub.stop.cancel();
            return match r {
                Ok(r) => r,
                Err(e) => Err(format!("the client port stopped: {e}")),
            };
        }
    }
    tracing::info!("gateway stopping");
    hub.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Makes a one-time enrollment token valid for `valid`: returns it (to show once) and its
/// expiry. Only its SHA-256 is stored.
pub fn issue_token(
    folder: &Path,
    valid: Duration,
) -> Result<(zeroize::Zeroizing<String>, String), String> {
    use base64::Engine as _;
    prepare(folder)?;
    let store = Store::open(folder).map_err(|e| e.to_string())?;
    let bytes = zeroize::Zeroizing::new(
        crate::fsutil::random_bytes(32).map_err(|e| format!("no random bytes for a token: {e}"))?,
    );
    let token = zeroize::Zeroizing::new(format!(
        "cgt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice())
    ));
    let expires = store.add_token(&token, valid).map_err(|e| e.to_string())?;
    Ok((token, expires))
}

/// Revokes an agent's credential (its channel is closed within seconds by a running gateway).
pub fn revoke(folder: &Path, agent: &str) -> Result<bool, String> {
    let store = Store::open(folder).map_err(|e| e.to_string())?;
    store.revoke(agent).map_err(|e| e.to_string())
}

/// The enrolled agents, as stored.
pub fn agents(folder: &Path) -> Result<Vec<store::AgentRow>, String> {
    let store = Store::open(folder).map_err(|e| e.to_string())?;
    store.agents().map_err(|e| e.to_string())
}

/// The reports stored, for one agent or all.
pub fn reports(folder: &Path, agent: Option<&str>) -> Result<Vec<store::ReportRow>, String> {
    let store = Store::open(folder).map_err(|e| e.to_string())?;
    store.reports(agent).map_err(|e| e.to_string())
}
