//! Helpers for the outbound-channel tests: `connagent gateway serve` as a process, tokens,
//! enrollment, clients of the gateway's client port, and which ports a process listens on.

use super::agent::{Checked, Proc};
use super::*;
use connagent::grpc::proto as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::gateway_service_client::GatewayServiceClient;
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;

/// A running gateway and its folder.
pub struct Gateway {
    pub proc: Proc,
    pub folder: PathBuf,
    /// `host:port` agents dial (TLS).
    pub agents: String,
    /// `host:port` of the client port (plain HTTP/2).
    pub clients: String,
}

impl Gateway {
    /// Starts a gateway on free ports (or the ones given, for a restart).
    pub fn start(folder: &Path, agents: Option<&str>, clients: Option<&str>) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.args(["--json", "gateway", "serve", "--folder"])
            .arg(folder)
            .args(["--agents", agents.unwrap_or("127.0.0.1:0")])
            .args(["--clients", clients.unwrap_or("127.0.0.1:0")])
            .env("RUST_LOG", "connagent=debug")
            .stdin(Stdio::null());
        let proc = Proc::start(cmd);
        let agents = proc.first["agents"].as_str().expect("agents").to_string();
        let clients = proc.first["clients"].as_str().expect("clients").to_string();
        Gateway {
            proc,
            folder: folder.to_path_buf(),
            agents,
            clients,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.agents)
    }

    pub fn ca(&self) -> PathBuf {
        self.folder.join("ca.crt")
    }

    /// A one-time token valid `minutes`.
    pub fn token(&self, minutes: u64) -> String {
        token(&self.folder, minutes)
    }

    pub async fn agents_client(&self) -> GatewayServiceClient<Checked<Channel>> {
        let ch = Channel::from_shared(format!("http://{}", self.clients))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gateway's client port");
        GatewayServiceClient::new(Checked(ch))
    }

    /// A client of AgentService through the gateway (name the agent with [`to`]).
    pub async fn client(&self) -> AgentServiceClient<Checked<Channel>> {
        super::agent::client(&self.clients).await
    }

    /// The agents as ListAgents shows them.
    pub async fn list(&self) -> Vec<pb::AgentInfo> {
        self.agents_client()
            .await
            .list_agents(pb::ListAgentsRequest {})
            .await
            .expect("ListAgents")
            .into_inner()
            .agents
    }

    /// Waits until `agent` is connected (or not), at most 60 s.
    pub async fn wait_connected(&self, agent: &str, connected: bool) -> pb::AgentInfo {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.list().await;
            if let Some(a) = list
                .iter()
                .find(|a| a.identifier.eq_ignore_ascii_case(agent) && a.connected == connected)
            {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "agent {agent} never became connected={connected}: {list:?}\ngateway log:\n{}",
                self.proc.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The reports stored, as `connagent gateway reports` prints them.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["gateway", "reports", "--folder"])
            .arg(&self.folder)
            .output()
            .expect("gateway reports");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON report line"))
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // What the gateway stores (its database, its CA) holds no secret of the agents.
        let leaked = files_containing(&self.folder, CANARY_MARK);
        assert!(
            leaked.is_empty(),
            "a secret (a value holding {CANARY_MARK:?}) was stored by the gateway in {leaked:?}"
        );
    }
}

/// The resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `connagent gateway token --folder F --valid-minutes M`.
pub fn token(folder: &Path, minutes: u64) -> String {
    let out = Command::new(BIN)
        .args(["gateway", "token", "--folder"])
        .arg(folder)
        .args(["--valid-minutes", &minutes.to_string()])
        .output()
        .expect("gateway token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `connagent enroll --url URL --ca-file CA` with the token on standard input.
pub fn enroll(ws: &Workspace, url: &str, ca: &Path, token: &str) -> Output {
    use std::io::Write;
    let mut cmd = ws.command(&["enroll", "--url", url, "--ca-file"]);
    cmd.arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn enroll");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{token}\n").as_bytes())
        .expect("write the token");
    let out = child.wait_with_output().expect("enroll");
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_no_canary("the output of `connagent enroll`", &out.all());
    assert!(
        !out.all().contains(token),
        "enroll printed the token:\n{}",
        out.all()
    );
    out
}

/// A request for `agent` through the gateway, with a bearer token when given.
pub fn to<T>(msg: T, agent: &str, token: Option<&str>) -> Request<T> {
    let mut r = match token {
        Some(t) => super::agent::auth(msg, t),
        None => Request::new(msg),
    };
    r.metadata_mut()
        .insert("x-connagent-agent", agent.parse().unwrap());
    r
}

/// The TCP ports a process listens on (from /proc: its socket inodes in LISTEN state).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9
                && cols[3] == "0A"
                && inodes.iter().any(|i| i == cols[9])
                && let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Waits until `p`'s stderr holds `needle`, at most `within`; returns how long it took.
pub fn wait_for_log(p: &Proc, needle: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if p.stderr_text().contains(needle) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{needle:?} not logged within {within:?}; log:\n{}",
            p.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
