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

/// A non-loopback address needs both TLS and tokens.
pub fn check_security(g: &GrpcSettings) -> Result<(), ServeError> {
    if g.listen.ip().is_loopback() || (g.tls.is_some() && !g.tokens.is_empty()) {
        Ok(())
    } else {
        Err(ServeError::Insecure(g.listen))
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

pub async fn bind(g: &GrpcSettings) -> Result<Bound, ServeError> {
    check_security(g)?;
    let tls = g.tls.as_ref().map(tls_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(g.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: g.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: g.listen,
        source,
    })?;
    Ok(Bound {
        listener,
        addr,
        tls,
    })
}

/// Serves AgentService, health and reflection until `rt.shutdown` is cancelled.
pub async fn serve(bound: Bound, rt: Arc<Runtime>) -> Result<(), ServeError> {
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
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(AgentServiceServer::new(AgentServiceImpl::new(rt)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(bound.listener), async move {
            shutdown.cancelled().await
        })
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
}
