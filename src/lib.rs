//! connagent: an on-premise connection agent. See ARCHITECTURE.md for the module map.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod encoding;
pub mod export;
pub mod fsutil;
pub mod gateway;
pub mod grpc;
pub mod ident;
pub mod invoke;
pub mod packages;
pub mod runtime;
pub mod schema;
pub mod secret;
pub mod table_name;

/// Makes ring the process-wide rustls crypto provider. Two providers are linked into the agent
/// (tiberius brings aws-lc-rs, everything else uses ring), and rustls then refuses to choose one
/// by itself: any TLS configuration built from the process default (tonic's server and client,
/// ldap3, tiberius) would panic. Called first thing by the CLI and again, harmlessly, before each
/// TLS configuration is built, so library users are covered too.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
