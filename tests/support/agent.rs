//! Helpers for tests that run the agent as a process and talk gRPC to it.

use super::*;
use connagent::grpc::proto as pb;
use pb::agent_service_client::AgentServiceClient;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;

pub fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A running process whose first stdout line is JSON; killed on drop.
pub struct Proc {
    pub child: Child,
    pub first: Value,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    pub fn start(mut cmd: std::process::Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let errs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for (i, l) in BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .enumerate()
                {
                    if i == 0 {
                        let _ = tx.send(l.clone());
                    }
                    lines.lock().unwrap().push(l);
                }
            });
        }
        {
            let errs = errs.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    errs.lock().unwrap().push(l);
                }
            });
        }
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                serde_json::from_str(&l).unwrap_or_else(|_| panic!("first line is not JSON: {l}"))
            }
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "the process printed nothing; stderr: {}",
                    errs.lock().unwrap().join("\n")
                );
            }
        };
        Proc {
            child,
            first,
            lines,
            stderr: errs,
        }
    }

    pub fn addr(&self) -> String {
        self.first["listening"]
            .as_str()
            .or(self.first["address"].as_str())
            .expect("address")
            .to_string()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait; returns the exit code.
    pub fn stop(mut self) -> (i32, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (st.code().unwrap_or(-1), self.stderr_text());
            }
            assert!(Instant::now() < deadline, "the agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let printed = format!(
                "{}\n{}",
                self.lines.lock().map(|l| l.join("\n")).unwrap_or_default(),
                self.stderr_text()
            );
            super::assert_no_canary("the agent's output or log", &printed);
        }
    }
}

pub async fn client(addr: &str) -> AgentServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    AgentServiceClient::new(ch)
}

pub fn auth<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub async fn collect<T>(mut s: tonic::Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await.expect("stream item") {
        out.push(m);
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `connagent dev-control-plane` on a port, requiring `token`.
pub fn dev_control_plane_with(port: u16, token: &str) -> Proc {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "dev-control-plane",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--token",
        token,
    ])
    .stdin(Stdio::null());
    Proc::start(cmd)
}

pub fn wait_for_lines(p: &Proc, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let lines: Vec<Value> = p
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if pred(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "timed out; got {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
