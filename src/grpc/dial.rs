//! Dialling the control plane: the TCP connection to `ControlPlane:Url`'s host and port, direct
//! or through an HTTP CONNECT proxy (`ControlPlane:Proxy`, else the agent's `HTTPS_PROXY` /
//! `HTTP_PROXY` unless `NO_PROXY` names the host), with basic authentication when a user and
//! password are given; then TLS with the agent's credential ([`open`]). Used by the outbound
//! channel and by the report client alike, so that both take the same way out.

use crate::config::{ControlPlaneSettings, ProxySettings};
use crate::secret::Secret;
use base64::Engine as _;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the control plane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// `https://host:port/...` or `http://host:port/...` (ports 443 and 80 by default).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} does not start with https:// or http://"));
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("the port of {url:?} is not a number"))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The proxy on the way to `to`: the configured one, else the environment's.
pub fn proxy_for(settings: &ControlPlaneSettings, to: &Endpoint) -> Option<ProxySettings> {
    if let Some(p) = &settings.proxy {
        return Some(p.clone());
    }
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok())
            .filter(|v| !v.trim().is_empty())
    };
    let url = if to.tls {
        var(&["HTTPS_PROXY", "https_proxy"])
    } else {
        var(&["HTTP_PROXY", "http_proxy"])
    }?;
    if let Some(no) = var(&["NO_PROXY", "no_proxy"])
        && bypassed(&no, &to.host)
    {
        return None;
    }
    let rest = url
        .strip_prefix("http://")
        .unwrap_or(&url)
        .trim_end_matches('/');
    let (userinfo, address) = match rest.rsplit_once('@') {
        Some((u, a)) => (Some(u), a),
        None => (None, rest),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((u, p)) => (Some(u.to_string()), (!p.is_empty()).then(|| Secret::new(p))),
        None => (None, None),
    };
    Some(ProxySettings {
        address: address.to_string(),
        user,
        password,
    })
}

/// Whether `NO_PROXY` names `host`: `*`, the host itself, or a domain it ends with.
pub fn bypassed(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|e| {
        let e = e.to_ascii_lowercase();
        let e = e.trim_start_matches('.');
        !e.is_empty() && (e == "*" || host == e || host.ends_with(&format!(".{e}")))
    })
}

/// Opens TCP to the control plane, through the proxy when there is one; both within `timeout`.
pub async fn connect(
    settings: &ControlPlaneSettings,
    to: &Endpoint,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let work = async {
        match proxy_for(settings, to) {
            None => TcpStream::connect((to.host.as_str(), to.port))
                .await
                .map_err(|e| format!("cannot reach {}: {e}", to.authority())),
            Some(p) => through_proxy(&p, to).await,
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        format!(
            "no connection to {} within {} s",
            to.authority(),
            timeout.as_secs()
        )
    })?
}

/// A connection to the control plane: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Why no connection was opened.
#[derive(Debug)]
pub enum OpenError {
    /// An https:// control plane and no client certificate to present.
    NotEnrolled(String),
    /// Unreachable, refused by the proxy, TLS failed, a credential that cannot be read.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NotEnrolled(m) | OpenError::Failed(m) => f.write_str(m),
        }
    }
}

/// Opens a connection to the control plane: TCP (through the proxy), then for https:// TLS with
/// the credential read now from `work` (so a new enrollment is used without a restart), offering
/// `alpn`. `need_identity`: an https:// control plane without a client certificate is refused
/// before dialling (the outbound channel needs one; the report client may use a token instead).
pub async fn open(
    settings: &ControlPlaneSettings,
    work: &std::path::Path,
    alpn: &[u8],
    need_identity: bool,
    timeout: Duration,
) -> Result<Box<dyn Stream>, OpenError> {
    let to = Endpoint::parse(&settings.url).map_err(OpenError::Failed)?;
    let cred = super::credential::load(work, settings).map_err(OpenError::Failed)?;
    if to.tls && need_identity && cred.identity.is_none() {
        return Err(OpenError::NotEnrolled(format!(
            "no client certificate for {}: run `connagent enroll` (or set ControlPlane:CertificateFile and KeyFile)",
            settings.url
        )));
    }
    let tcp = connect(settings, &to, timeout)
        .await
        .map_err(OpenError::Failed)?;
    let _ = tcp.set_nodelay(true);
    if !to.tls {
        return Ok(Box::new(tcp));
    }
    let config = super::credential::client_config(&cred, alpn).map_err(OpenError::Failed)?;
    let name = rustls::pki_types::ServerName::try_from(to.host.clone())
        .map_err(|e| OpenError::Failed(format!("{}: {e}", to.host)))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, tls).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(e)) => Err(OpenError::Failed(format!(
            "TLS with {} failed: {e} (its certificate must chain to ControlPlane:CaFile, the enrollment's CA, or a public root)",
            settings.url
        ))),
        Err(_) => Err(OpenError::Failed(format!(
            "no TLS handshake with {} within {} s",
            settings.url,
            timeout.as_secs()
        ))),
    }
}

/// A gRPC channel to the control plane (connected lazily, reconnected as needed) whose every
/// connection is opened by [`open`]: through the proxy, TLS with the credential read at that
/// moment, the same way the outbound channel goes. Pings every `KeepaliveSeconds / 2`.
pub fn grpc_channel(
    settings: &ControlPlaneSettings,
    work: &std::path::Path,
) -> Result<tonic::transport::Channel, String> {
    let s = settings.clone();
    Endpoint::parse(&s.url)?;
    let origin: http::Uri = s
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| format!("{:?} is not a URL: {e}", s.url))?;
    // tonic sees a plain connection (TLS is done by the connector) and sends the URL's own
    // scheme and authority.
    let ep = tonic::transport::Endpoint::from_static("http://control-plane.invalid")
        .origin(origin)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(s.keepalive / 2)
        .keep_alive_timeout(s.keepalive / 2)
        .keep_alive_while_idle(true);
    let work = work.to_path_buf();
    let connector = tower::service_fn(move |_: http::Uri| {
        let s = s.clone();
        let work = work.clone();
        async move {
            open(&s, &work, b"h2", false, Duration::from_secs(10))
                .await
                .map(hyper_util::rt::TokioIo::new)
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    });
    Ok(ep.connect_with_connector_lazy(connector))
}

/// The most of a proxy's answer to CONNECT that is read.
const MAX_PROXY_ANSWER: usize = 16 * 1024;

async fn through_proxy(p: &ProxySettings, to: &Endpoint) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(p.address.as_str())
        .await
        .map_err(|e| format!("cannot reach the proxy {}: {e}", p.address))?;
    let target = to.authority();
    let mut request = zeroize::Zeroizing::new(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: connagent/{}\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(user) = &p.user {
        let mut pair = zeroize::Zeroizing::new(String::new());
        pair.push_str(user);
        pair.push(':');
        if let Some(pw) = &p.password {
            pair.push_str(pw.expose());
        }
        let encoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
        );
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&encoded);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("the proxy {} closed the connection: {e}", p.address))?;
    // The answer's head, byte by byte up to the blank line (nothing of the tunnel is read).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_ANSWER {
            return Err(format!("the proxy {} sent an answer too long", p.address));
        }
        match s.read(&mut byte).await {
            Ok(0) => {
                return Err(format!(
                    "the proxy {} closed the connection before answering CONNECT",
                    p.address
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("the proxy {}: {e}", p.address)),
        }
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    match code {
        "200" => Ok(s),
        "407" => Err(format!(
            "the proxy {} wants authentication ({status_line}): set ControlPlane:Proxy to http://USER@{} and the secured ControlPlane:ProxyPassword",
            p.address, p.address
        )),
        _ => Err(format!(
            "the proxy {} refused to connect to {target}: {status_line}",
            p.address
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_no_proxy() {
        let e = Endpoint::parse("https://central.example:7443/x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("central.example", 7443, true)
        );
        assert_eq!(Endpoint::parse("http://127.0.0.1").unwrap().port, 80);
        assert_eq!(Endpoint::parse("https://[::1]:9").unwrap().host, "::1");
        assert!(Endpoint::parse("https://[::1]:9").unwrap().is_loopback());
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(bypassed("localhost, .example.com", "central.example.com"));
        assert!(bypassed("*", "anything"));
        assert!(!bypassed("example.com", "notexample.com"));
    }
}
