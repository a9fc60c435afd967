//! The commands of the outbound channel: `enroll` and `status` on the agent's side, and the
//! reference control plane (`gateway serve|token|revoke|agents|reports`).

use super::{Cli, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE, load, settings_path};
use crate::config::ControlPlaneSettings;
use crate::packages::Registry;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `connagent status` exit codes (besides 0 for running and connected, or running with no
/// outbound channel).
pub const STATUS_DEGRADED: u8 = 1;
pub const STATUS_NOT_RUNNING: u8 = 3;
pub const STATUS_CREDENTIAL: u8 = 6;

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Accept agents' channels (--agents, TLS) and serve gRPC clients (--clients, loopback):
    /// AgentService on the agent named by x-connagent-agent metadata, and ListAgents
    Serve {
        /// The gateway's folder: its CA, its store (made with mode 0700)
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
        /// Where agents connect (port 0: a free port, printed first)
        #[arg(long, default_value = "0.0.0.0:7443")]
        agents: std::net::SocketAddr,
        /// Where gRPC clients connect (loopback only)
        #[arg(long, default_value = "127.0.0.1:7444")]
        clients: std::net::SocketAddr,
        /// A host name or address agents use to reach the gateway (repeatable; localhost,
        /// 127.0.0.1 and ::1 are always in its certificate)
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
    /// Make a one-time enrollment token (printed once; only its hash is kept)
    Token {
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
        /// How long the token may be used
        #[arg(long, default_value_t = 60, value_name = "MINUTES")]
        valid_minutes: u64,
    },
    /// Revoke an agent's credential; its channel is closed and refused until it enrolls again
    Revoke {
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
        /// The agent's identifier
        agent: String,
    },
    /// List the enrolled agents
    Agents {
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
    },
    /// Print the reports received, one JSON line each, oldest first
    Reports {
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
        /// Only this agent's
        #[arg(long)]
        agent: Option<String>,
    },
}

/// Reads the enrollment token: from the file, else standard input; trimmed, never echoed.
fn read_token(token_file: Option<&Path>) -> Result<zeroize::Zeroizing<String>, String> {
    let text = match token_file {
        Some(f) => {
            let bytes = crate::fsutil::read_limited(f, 4096, "a token file")
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            String::from_utf8(bytes).map_err(|_| format!("{} is not text", f.display()))?
        }
        None => {
            use std::io::{BufRead, IsTerminal, Read};
            if std::io::stdin().is_terminal() {
                err_line!(
                    "paste the enrollment token and press Enter (or use --token-file, or a pipe):"
                );
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(4096)
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
            line
        }
    };
    let token = zeroize::Zeroizing::new(text.trim().to_string());
    if token.is_empty() {
        return Err(
            "no enrollment token: pass it on standard input or with --token-file (make one with `connagent gateway token` on the control plane)".into(),
        );
    }
    Ok(token)
}

pub async fn enroll(
    cli: &Cli,
    registry: &Arc<Registry>,
    url: &str,
    token_file: Option<&Path>,
    ca_file: Option<&Path>,
) -> u8 {
    let loaded = match load(cli, registry, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let snapshot = &loaded.snapshot;
    if let Err(e) = crate::grpc::dial::Endpoint::parse(url) {
        err_line!("error: --url {e}");
        return EXIT_USAGE;
    }
    let token = match read_token(token_file) {
        Ok(t) => t,
        Err(e) => {
            err_line!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let mut settings = ControlPlaneSettings::for_url(url, snapshot.control_plane.as_ref());
    if let Some(ca) = ca_file {
        settings.ca_file = Some(ca.to_path_buf());
    }
    let agent = snapshot.agent.to_string();
    match crate::grpc::enroll::enroll(&snapshot.work_folder, &settings, &agent, &token).await {
        Ok(done) => {
            if cli.json {
                out_line!(
                    "{}",
                    json!({"enrolled": done.agent, "credential": done.folder, "valid_until": done.not_after, "replaced": done.replaced})
                );
            } else {
                out_line!(
                    "agent {} enrolled with {url}; credential {}in {} (mode 0600), valid until {}",
                    done.agent,
                    if done.replaced {
                        "replaced "
                    } else {
                        "stored "
                    },
                    done.folder.display(),
                    done.not_after
                );
            }
            match &snapshot.control_plane {
                Some(cp) if cp.url.trim_end_matches('/') == url.trim_end_matches('/') => {}
                Some(cp) => err_line!(
                    "note: ControlPlane:Url is {}; set it to {url} for the agent to use this enrollment",
                    cp.url
                ),
                None => err_line!(
                    "note: set ControlPlane:Url to {url} in {} for the agent to dial the control plane",
                    settings_path(cli).display()
                ),
            }
            EXIT_OK
        }
        Err(e) => {
            err_line!("error: {e}");
            match e {
                crate::grpc::enroll::EnrollError::Refused(_) => EXIT_CONFIG,
                crate::grpc::enroll::EnrollError::Failed(_) => EXIT_FAILED,
            }
        }
    }
}

/// Whether a process with this id exists.
fn alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `connagent status`: what the running daemon wrote in `<Work>/State/agent-status.json`.
/// Exit 0 running (and connected, when it dials a control plane), 1 running but the channel is
/// down or the last reload was rejected, 3 not running, 6 the credential is revoked or missing
/// (enroll again; 6 is LSB's "not configured").
pub fn status(cli: &Cli, registry: &Arc<Registry>) -> u8 {
    let loaded = match load(cli, registry, true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let path = loaded
        .snapshot
        .work_folder
        .join(crate::runtime::STATUS_FILE);
    let saved = crate::fsutil::read_limited_text(&path, 1024 * 1024, "the status file")
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let running = saved.as_ref().is_some_and(|s| {
        !s["stopped"].as_bool().unwrap_or(true) && s["pid"].as_i64().is_some_and(alive)
    });
    let channel = saved
        .as_ref()
        .map(|s| s["channel"].clone())
        .unwrap_or(serde_json::Value::Null);
    let state = channel["state"].as_str().unwrap_or("off");
    let reload_ok = saved
        .as_ref()
        .is_none_or(|s| s["last_reload_applied"].as_bool().unwrap_or(true));
    let code = match (running, state) {
        (false, _) => STATUS_NOT_RUNNING,
        (true, "revoked" | "not_enrolled") => STATUS_CREDENTIAL,
        (true, "connecting") => STATUS_DEGRADED,
        (true, _) if !reload_ok => STATUS_DEGRADED,
        (true, _) => EXIT_OK,
    };
    if cli.json {
        out_line!(
            "{}",
            json!({"running": running, "agent": loaded.snapshot.agent, "status": saved.as_ref().map(|s| s["status"].clone()), "channel": channel, "exit": code})
        );
        return code;
    }
    if !running {
        out_line!(
            "agent {}: not running (no live daemon wrote {})",
            loaded.snapshot.agent,
            path.display()
        );
        return code;
    }
    let status_line = saved
        .as_ref()
        .and_then(|s| s["status"].as_str())
        .unwrap_or_default();
    out_line!("agent {}: running; {status_line}", loaded.snapshot.agent);
    match state {
        "revoked" => out_line!(
            "the control plane revoked this agent's credential: {}\nenroll it again: connagent enroll --url URL < token",
            channel["message"].as_str().unwrap_or_default()
        ),
        "not_enrolled" => {
            out_line!("no credential for the control plane: connagent enroll --url URL < token")
        }
        "connecting" => out_line!(
            "the channel to the control plane is down: {}",
            channel["last_error"].as_str().unwrap_or("dialling")
        ),
        _ => {}
    }
    code
}

pub async fn gateway(cli: &Cli, command: &GatewayCommand) -> u8 {
    use crate::gateway;
    let fail = |e: String| {
        err_line!("error: {e}");
        EXIT_FAILED
    };
    match command {
        GatewayCommand::Serve {
            folder,
            agents,
            clients,
            names,
        } => {
            super::init_logging(false, "info");
            let opts = gateway::Options {
                folder: folder.clone(),
                agents: *agents,
                clients: *clients,
                names: names.clone(),
            };
            let json = cli.json;
            let announce = |b: &gateway::Bound| {
                if json {
                    gateway_line(
                        json!({"kind": "listening", "agents": b.agents.to_string(), "clients": b.clients.to_string(), "ca": b.ca}),
                    );
                } else {
                    out_line!(
                        "connagent gateway: agents connect to {} (TLS; CA {}), gRPC clients to http://{}",
                        b.agents,
                        b.ca.display(),
                        b.clients
                    );
                }
            };
            match gateway::serve(opts, announce).await {
                Ok(()) => EXIT_OK,
                Err(e) if e.contains("not a loopback address") => {
                    err_line!("error: {e}");
                    EXIT_USAGE
                }
                Err(e) => fail(e),
            }
        }
        GatewayCommand::Token {
            folder,
            valid_minutes,
        } => {
            let valid = std::time::Duration::from_secs(valid_minutes.saturating_mul(60));
            match gateway::issue_token(folder, valid) {
                Ok((token, expires)) => {
                    if cli.json {
                        out_line!(
                            "{}",
                            json!({"token": token.as_str(), "expires_at": expires})
                        );
                    } else {
                        out_line!("{}", token.as_str());
                        err_line!(
                            "one-time enrollment token, valid until {expires}: on the agent's host run `connagent enroll --url https://THIS-HOST:PORT --ca-file {}` and paste it",
                            folder.join(gateway::pki::CA_CERTIFICATE).display()
                        );
                    }
                    EXIT_OK
                }
                Err(e) => fail(e),
            }
        }
        GatewayCommand::Revoke { folder, agent } => match gateway::revoke(folder, agent) {
            Ok(true) => {
                out_line!(
                    "agent {agent}: credential revoked; a running gateway closes its channel within 2 s"
                );
                EXIT_OK
            }
            Ok(false) => fail(format!(
                "no agent {agent:?} is enrolled with the gateway in {}",
                folder.display()
            )),
            Err(e) => fail(e),
        },
        GatewayCommand::Agents { folder } => match gateway::agents(folder) {
            Ok(rows) => {
                for a in rows {
                    if cli.json {
                        out_line!(
                            "{}",
                            json!({"identifier": a.identifier, "enrolled_at": a.enrolled_at, "revoked_at": a.revoked_at, "version": a.version, "last_heartbeat": a.last_heartbeat, "configuration_generation": a.configuration_generation, "reports_received": a.reports_received})
                        );
                    } else {
                        out_line!(
                            "{}\tenrolled {}\t{}\tversion {}\tlast heartbeat {}\t{} reports",
                            a.identifier,
                            a.enrolled_at,
                            a.revoked_at
                                .as_deref()
                                .map_or("active".to_string(), |r| format!("REVOKED {r}")),
                            if a.version.is_empty() {
                                "?"
                            } else {
                                &a.version
                            },
                            a.last_heartbeat.as_deref().unwrap_or("never"),
                            a.reports_received
                        );
                    }
                }
                EXIT_OK
            }
            Err(e) => fail(e),
        },
        GatewayCommand::Reports { folder, agent } => {
            match gateway::reports(folder, agent.as_deref()) {
                Ok(rows) => {
                    for r in rows {
                        out_line!(
                            "{}",
                            json!({"agent": r.agent, "sequence": r.sequence, "kind": r.kind, "received_at": r.received_at, "report": r.body})
                        );
                    }
                    EXIT_OK
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn gateway_line(v: serde_json::Value) {
    crate::grpc::dev_control_plane::print(v);
}
