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

/// The gRPC client every test uses: each response (headers, messages, trailers, so status
/// messages too) is searched for a canary secret before the test sees it.
pub type Client = AgentServiceClient<Checked<Channel>>;

pub async fn client(addr: &str) -> Client {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    AgentServiceClient::new(Checked(ch))
}

/// A gRPC transport that checks every response for canaries ([`CANARY_MARK`]): protobuf keeps
/// strings as their UTF-8 bytes, and status messages travel as percent-encoded header values in
/// which the letters of the mark are unchanged, so a byte search finds any secret the agent sends.
#[derive(Clone)]
pub struct Checked<S>(pub S);

fn check_headers(what: &str, h: &tonic::codegen::http::HeaderMap) {
    for (name, value) in h {
        assert_no_canary(
            &format!("a gRPC response {what} ({name})"),
            &String::from_utf8_lossy(value.as_bytes()),
        );
    }
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Checked<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            check_headers("header", resp.headers());
            let (parts, body) = resp.into_parts();
            Ok(tonic::codegen::http::Response::from_parts(
                parts,
                tonic::body::Body::new(CheckedBody {
                    inner: body,
                    tail: Vec::new(),
                }),
            ))
        })
    }
}

/// The response body, searched frame by frame; the end of each frame is kept so that a canary
/// split across two frames is found too.
struct CheckedBody {
    inner: tonic::body::Body,
    tail: Vec<u8>,
}

impl http_body::Body for CheckedBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let mut seen = std::mem::take(&mut this.tail);
                seen.extend_from_slice(data);
                assert_no_canary("a gRPC response message", &String::from_utf8_lossy(&seen));
                let keep = seen.len().saturating_sub(CANARY_MARK.len() - 1);
                this.tail = seen.split_off(keep);
            }
            if let Some(trailers) = frame.trailers_ref() {
                check_headers("trailer", trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
