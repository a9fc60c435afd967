//! Starting the gRPC server: TLS and mutual TLS from files, health and reflection, a listener the
//! caller can read the bound address from, and a graceful stop.

use super::agent::AgentServiceImpl;
use super::proto;
use super::proto::agent_service_server::AgentServiceServer;
use crate::config::{GrpcSettings, TlsFiles};
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without TLS and tokens: set Grpc:Tls (CertificateFile, KeyFile) and Grpc:Tokens, or listen on a loopback address such as 127.0.0.1:50051"
    )]
    Insecure(SocketAddr),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    #[error("the gRPC server stopped: {0}")]
    Transport(String),
}

/// A non-loopback address needs both TLS and tokens (no listener needs nothing).
pub fn check_security(g: &GrpcSettings) -> Result<(), ServeError> {
    match g.listen {
        None => Ok(()),
        Some(a) if a.ip().is_loopback() || (g.tls.is_some() && !g.tokens.is_empty()) => Ok(()),
        Some(a) => Err(ServeError::Insecure(a)),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    crate::fsutil::read_limited(path, crate::fsutil::limits::PEM_FILE, "a PEM file").map_err(|e| {
        ServeError::Read {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        }
    })
}

pub fn tls_config(t: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    crate::install_crypto_provider();
    let identity = Identity::from_pem(read(&t.certificate)?, read(&t.key)?);
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &t.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

/// A bound, not yet serving, gRPC server.
pub struct Bound {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
}

/// Binds the inbound listener; `None` when `Grpc:Listen` is empty (no port at all).
pub async fn bind(g: &GrpcSettings) -> Result<Option<Bound>, ServeError> {
    check_security(g)?;
    let Some(listen) = g.listen else {
        return Ok(None);
    };
    let tls = g.tls.as_ref().map(tls_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    Ok(Some(Bound {
        listener,
        addr,
        tls,
    }))
}

/// The services the agent offers, whichever way the control plane comes in (the inbound
/// listener, the outbound channel): AgentService (gzip both ways when the client accepts it),
/// health, and reflection v1 and v1alpha.
pub async fn routes(rt: Arc<Runtime>) -> Result<tonic::service::Routes, ServeError> {
    use tonic::codec::CompressionEncoding;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<AgentServiceImpl>>()
        .await;
    // Reflection in both versions: v1, and v1alpha that many tools still ask for first.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let agent = AgentServiceServer::new(AgentServiceImpl::new(rt))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    Ok(tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(agent))
}

/// Serves the agent's services on the inbound listener until `rt.shutdown` is cancelled.
pub async fn serve(bound: Bound, rt: Arc<Runtime>) -> Result<(), ServeError> {
    let routes = routes(rt.clone()).await?;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    if let Some(tls) = bound.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let shutdown = rt.shutdown.clone();
    builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(bound.listener), async move {
            shutdown.cancelled().await
        })
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
}
