//! connagent: an on-premise connection agent. See ARCHITECTURE.md for the module map.

pub mod cli;
pub mod config;
pub mod export;
pub mod fsutil;
pub mod grpc;
pub mod ident;
pub mod packages;
pub mod runtime;
pub mod schema;
pub mod secret;
