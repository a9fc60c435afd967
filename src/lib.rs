//! connagent: an on-premise connection agent. See ARCHITECTURE.md for the module map.

pub mod cli;
pub mod config;
pub mod export;
pub mod fsutil;
pub mod ident;
pub mod packages;
pub mod schema;
pub mod secret;
