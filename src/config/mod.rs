//! Configuration: the settings file, the environment overrides and the XML configuration, loaded
//! into one validated [`Snapshot`]. Problems carry `file:line:col` and a fix. No network I/O here.

pub mod diag;
pub mod encrypted;
pub mod files;
pub mod inputs;
pub mod jsonc;
pub mod jsonpos;
pub mod model;
pub mod service;
pub mod settings;
pub mod validate;
pub mod xml;

pub use crate::ident::{self, Ident};
pub use diag::{Diagnostic, Diagnostics, Location, Origin, Severity};
pub use model::*;
pub use service::{
    ApiToken, ControlPlaneMode, ControlPlaneSettings, DaemonSettings, GrpcSettings, ProxySettings,
    Role, TlsFiles,
};
pub use validate::{LoadOptions, load};

/// The default settings file, in the working directory.
pub const DEFAULT_SETTINGS_FILE: &str = "appsettings.agent.json";
/// The environment variable naming the settings file.
pub const SETTINGS_ENV: &str = "CONNAGENT_SETTINGS";
