//! The command line: argument parsing and printing. Business rules live in the library modules.

/// `println!` and `eprintln!` panic when their stream is closed (`connagent connections | head -1`,
/// a daemon whose journal or parent went away), and a panic in the daemon's stop task would leave
/// it unable to stop. These write and let a failed write go.
macro_rules! out_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! err_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod outbound;

use crate::config::{self, Diagnostics, LoadOptions, Loaded, SettingsState, Severity, Snapshot};
use crate::export::{self, RunOutcome, RunReport, Target, sink::Progress};
use crate::invoke;
use crate::packages::Registry;
use crate::schema::SchemaStore;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit codes (sysexits-style for configuration).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "connagent",
    version,
    about = "On-premise connection agent: validates connections, tests them, discovers schemas and exports CSV connection tables."
)]
#[command(
    after_help = "Exit codes: 0 done, 1 the operation failed, 2 usage error, 78 configuration invalid, 128+N an export cancelled by signal N (130 Ctrl-C/SIGINT, 143 SIGTERM, 129 SIGHUP, 131 SIGQUIT; previous files kept, no partial file left)."
)]
pub struct Cli {
    /// Settings file [default: $CONNAGENT_SETTINGS, else ./appsettings.agent.json]
    #[arg(long, global = true, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Machine-readable JSON output on stdout
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load and check the whole configuration; list every problem with its file and line
    Validate,
    /// List the connections and what uses them
    Connections(ConnectionsArgs),
    /// Check that a connection's source is reachable and readable
    Test {
        /// Connection identifier (case-insensitive)
        connection: String,
    },
    /// Discover a connection's tables and columns, and store them under Work/Schemas
    Schema {
        /// Connection identifier (case-insensitive)
        connection: String,
    },
    /// Export connection tables to <TempFolderPath>/ExportOutput
    Export(ExportArgs),
    /// Serve the gRPC AgentService (Grpc:Listen) and report to the control plane (ControlPlane:Url)
    Serve,
    /// The daemon: `serve`, plus configuration reload (file changes, SIGHUP), the job scheduler
    /// and the systemd notify protocol (READY, RELOADING, STOPPING, STATUS, WATCHDOG)
    Run,
    /// Make the agent's key for the encrypted settings (Secrets:KeyFile, default agent.key next to
    /// the settings file); `--rotate` replaces it and re-encrypts the overlay
    Keygen {
        /// Replace the key and re-encrypt appsettings.encrypted.agent.json with the new one
        #[arg(long)]
        rotate: bool,
    },
    /// Encrypt one setting (value read from standard input) into appsettings.encrypted.agent.json,
    /// or with --all move every secret written in the settings file there
    Protect {
        /// The setting path, e.g. Connections:HRDb:Password
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        setting: Option<String>,
        /// Move every secured value written in plain text in the settings file into the
        /// encrypted overlay, and blank it in the settings file
        #[arg(long)]
        all: bool,
    },
    /// Obtain the agent's credential for the control plane with a one-time token (read from
    /// standard input or --token-file; never stored or shown)
    Enroll {
        /// The control plane, e.g. https://gateway.example:7443
        #[arg(long)]
        url: String,
        /// Read the token from this file instead of standard input
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The control plane's CA certificate (the gateway's ca.crt) [default: ControlPlane:CaFile, else the public roots]
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Whether the daemon runs and how its channel to the control plane stands. Exit 0 running
    /// (connected), 1 channel down or reload rejected, 3 not running, 6 credential revoked or
    /// missing
    Status,
    /// The reference control plane: agents' channels, enrollment tokens, reports, and a gRPC
    /// port to call AgentService on any connected agent
    Gateway {
        #[command(subcommand)]
        command: outbound::GatewayCommand,
    },
    /// A minimal control plane that prints heartbeats and reports as JSON lines, for trying the agent
    DevControlPlane {
        /// Address to listen on (port 0 picks a free port; the first line printed says which)
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: std::net::SocketAddr,
        /// Require this bearer token from the agent
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    /// Only connections whose identifier or display name contains TEXT (case-insensitive)
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only connections of this category (Database, File, Directory)
    #[arg(long, value_name = "CAT")]
    pub category: Option<String>,
    /// Only connections of this connector
    #[arg(long, value_name = "ID")]
    pub connector: Option<String>,
    /// Also print each connection's settings (secured values show only as (set) / (not set))
    #[arg(long)]
    pub show_settings: bool,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false, id = "what")]
pub struct ExportTarget {
    /// Run this export task (its IgnoreCookieFile and ContinueOnError apply)
    #[arg(long, value_name = "ID", group = "what")]
    pub task: Option<String>,
    /// Export this connection
    #[arg(long, value_name = "ID", group = "what")]
    pub connection: Option<String>,
    /// Export every connection this agent serves
    #[arg(long, group = "what")]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: ExportTarget,
    /// Complete export (ignore incremental state; CSV connections read Path)
    #[arg(long)]
    pub complete: bool,
}

pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    disable_core_dumps();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    // The daemon commands set up logging from the settings (Logging:Format, Logging:Level).
    if !matches!(
        cli.command,
        Command::Run
            | Command::Serve
            | Command::Gateway {
                command: outbound::GatewayCommand::Serve { .. }
            }
    ) {
        init_logging(false, "warn");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            err_line!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(run(cli));
    // Blocking tasks (a file being streamed to a client that stopped reading) must not keep
    // the process alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    ExitCode::from(code)
}

/// Logs to stderr (the journal under systemd): text, or JSON lines. RUST_LOG wins over `level`.
/// No colours unless stderr is a terminal.
fn keygen(cli: &Cli, rotate: bool) -> u8 {
    use crate::config::encrypted;
    let settings = settings_path(cli);
    if rotate {
        return match encrypted::rotate(&settings) {
            Ok((public, n)) => {
                out_line!("new key made; {n} encrypted value(s) re-encrypted for {public}");
                EXIT_OK
            }
            Err(e) => {
                err_line!("error: key rotation: {e}; nothing was changed");
                EXIT_FAILED
            }
        };
    }
    let dir = settings
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let key = encrypted::key_path(&encrypted::plain_settings(&settings), &dir);
    match encrypted::keygen(&key, false) {
        Ok(public) => {
            out_line!(
                "key written to {} (mode 0600); public key {public}",
                key.display()
            );
            EXIT_OK
        }
        Err(e) => {
            err_line!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn protect_all(cli: &Cli, registry: &Arc<Registry>) -> u8 {
    // Which settings are secret comes from each connection's package: the configuration is
    // loaded (problems in it do not stop this).
    let loaded = match load(cli, registry, true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let connections: Vec<(String, &'static [crate::packages::spec::SettingSpec])> = loaded
        .snapshot
        .connections
        .iter()
        .filter_map(|c| {
            c.package
                .as_ref()
                .map(|p| (c.identifier.to_string(), p.info().settings))
        })
        .collect();
    match crate::config::encrypted::protect_all(&settings_path(cli), &connections) {
        Ok(moved) if moved.is_empty() => {
            out_line!("no secret is written in plain text in the settings file");
            EXIT_OK
        }
        Ok(moved) => {
            for m in &moved {
                out_line!("{m}: encrypted, and blanked in the settings file");
            }
            EXIT_OK
        }
        Err(e) => {
            err_line!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn protect(cli: &Cli, setting: &str) -> u8 {
    use std::io::Read;
    // Read into one buffer that never moves (a moved buffer would leave a copy of the secret
    // behind) and that is wiped when dropped.
    const LIMIT: usize = 64 * 1024;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(LIMIT + 1));
    if let Err(e) = std::io::stdin()
        .lock()
        .take(LIMIT as u64)
        .read_to_end(&mut bytes)
    {
        err_line!("error: cannot read the value from standard input: {e}");
        return EXIT_FAILED;
    }
    if bytes.len() >= LIMIT {
        err_line!(
            "error: the value on standard input is {LIMIT} bytes or longer; a secured value must be shorter"
        );
        return EXIT_USAGE;
    }
    let value = match std::str::from_utf8(&bytes) {
        Ok(v) => config::settings::without_final_newline(v),
        Err(_) => {
            err_line!("error: the value on standard input is not UTF-8 text");
            return EXIT_USAGE;
        }
    };
    if value.is_empty() {
        err_line!(
            "error: no value on standard input; pipe the value in: `connagent protect {setting} < file`"
        );
        return EXIT_USAGE;
    }
    match crate::config::encrypted::protect(&settings_path(cli), setting, value) {
        Ok(file) => {
            out_line!(
                "{setting} is encrypted in {}; remove its plain value from the settings file",
                file.display()
            );
            EXIT_OK
        }
        Err(e) => {
            err_line!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// A crash must not write the agent's memory, secrets included, to a core file: the soft and hard
/// limits go to 0 (the unit also sets `LimitCORE=0`). A failure is ignored: it only means the
/// limit stays what the environment set.
fn disable_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // The default reports a failed write with eprintln!, which panics on a closed stderr.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn settings_path(cli: &Cli) -> PathBuf {
    cli.settings
        .clone()
        .or_else(|| std::env::var_os(config::SETTINGS_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_SETTINGS_FILE))
}

fn print_diagnostics(d: &Diagnostics, warnings: bool) {
    for diag in
        d.0.iter()
            .filter(|x| warnings || x.severity == Severity::Error)
    {
        err_line!("{diag}");
    }
}

fn count_line(d: &Diagnostics) -> String {
    let e = d.errors().count();
    let w = d.warnings().count();
    format!("{e} error{}, {w} warning{}", plural(e), plural(w))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Loads the configuration. `Err(code)` when the command cannot go on (errors are printed).
fn load(cli: &Cli, registry: &Arc<Registry>, tolerate_errors: bool) -> Result<Loaded, u8> {
    let opts = LoadOptions::from_env(settings_path(cli));
    match config::validate::load_isolated(opts, registry.clone()) {
        Err(d) => {
            if cli.json {
                out_line!("{}", json!({"valid": false, "diagnostics": d}));
            }
            print_diagnostics(&d, true);
            Err(EXIT_CONFIG)
        }
        Ok(loaded) => {
            if loaded.diagnostics.has_errors() && !tolerate_errors {
                if cli.json {
                    out_line!(
                        "{}",
                        json!({"valid": false, "diagnostics": loaded.diagnostics})
                    );
                }
                print_diagnostics(&loaded.diagnostics, false);
                err_line!(
                    "configuration invalid ({}); nothing was run. `connagent validate` lists the warnings too.",
                    count_line(&loaded.diagnostics)
                );
                return Err(EXIT_CONFIG);
            }
            let w = loaded.diagnostics.warnings().count();
            if w > 0 && !tolerate_errors {
                err_line!(
                    "note: the configuration has {w} warning{}; `connagent validate` shows them",
                    plural(w)
                );
            }
            Ok(loaded)
        }
    }
}

pub async fn run(cli: Cli) -> u8 {
    let registry = Arc::new(Registry::builtin());
    match &cli.command {
        Command::Validate => validate(&cli, &registry),
        Command::Connections(args) => connections(&cli, &registry, args),
        Command::Test { connection } => test(&cli, &registry, connection).await,
        Command::Schema { connection } => schema(&cli, &registry, connection).await,
        Command::Export(args) => export_cmd(&cli, &registry, args).await,
        Command::Serve => daemon(&cli, registry, false).await,
        Command::Run => daemon(&cli, registry, true).await,
        Command::Keygen { rotate } => keygen(&cli, *rotate),
        Command::Protect { setting, all } => match (setting, all) {
            (Some(setting), false) => protect(&cli, setting),
            _ => protect_all(&cli, &registry),
        },
        Command::Enroll {
            url,
            token_file,
            ca_file,
        } => {
            outbound::enroll(
                &cli,
                &registry,
                url,
                token_file.as_deref(),
                ca_file.as_deref(),
            )
            .await
        }
        Command::Status => outbound::status(&cli, &registry),
        Command::Gateway { command } => outbound::gateway(&cli, command).await,
        Command::DevControlPlane { listen, token } => {
            match crate::grpc::dev_control_plane::serve(*listen, token.clone()).await {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    err_line!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
    }
}

fn summary_json(s: &Snapshot) -> serde_json::Value {
    json!({
        "agent": s.agent,
        "settings_file": s.settings_file,
        "xml_files": s.xml_files,
        "connectors": s.connectors.len(),
        "connections": s.connections.len(),
        "connections_served": s.connections.iter().filter(|c| c.served).count(),
        "export_tasks": s.export_tasks.len(),
        "other_tasks": s.other_tasks.iter().map(|t| json!({"identifier": t.identifier, "kind": t.kind})).collect::<Vec<_>>(),
        "jobs": s.jobs.len(),
        "server_jobs": s.jobs.iter().filter(|j| j.agent.is_none()).map(|j| j.identifier.to_string()).collect::<Vec<_>>(),
        "entity_type_mappings": s.entity_type_mappings.len(),
        "entity_association_mappings": s.association_mappings.len(),
        "skipped_elements": s.skipped,
    })
}

fn validate(cli: &Cli, registry: &Arc<Registry>) -> u8 {
    let loaded = match load(cli, registry, true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let d = &loaded.diagnostics;
    let s = &loaded.snapshot;
    let valid = !d.has_errors();
    if cli.json {
        out_line!(
            "{}",
            json!({"valid": valid, "summary": summary_json(s), "diagnostics": d})
        );
    } else {
        print_diagnostics(d, true);
    }
    if !valid {
        err_line!("configuration invalid: {}", count_line(d));
        return EXIT_CONFIG;
    }
    if !cli.json {
        let skipped: usize = s.skipped.values().sum();
        out_line!("configuration valid: {}", s.settings_file.display());
        out_line!("  agent:       {}", s.agent);
        out_line!(
            "  xml files:   {} under {}",
            s.xml_files.len(),
            s.xml_folder.display()
        );
        out_line!("  connectors:  {}", s.connectors.len());
        out_line!(
            "  connections: {} ({} served here)",
            s.connections.len(),
            s.connections.iter().filter(|c| c.served).count()
        );
        out_line!("  export tasks: {}", s.export_tasks.len());
        if !s.other_tasks.is_empty() {
            let parts: Vec<String> = s
                .other_tasks
                .iter()
                .map(|t| format!("{} ({})", t.identifier, t.kind))
                .collect();
            out_line!(
                "  other tasks: {} not run by this agent: {}",
                s.other_tasks.len(),
                parts.join(", ")
            );
        }
        let server_jobs: Vec<String> = s
            .jobs
            .iter()
            .filter(|j| j.agent.is_none())
            .map(|j| j.identifier.to_string())
            .collect();
        if server_jobs.is_empty() {
            out_line!("  jobs:        {}", s.jobs.len());
        } else {
            out_line!(
                "  jobs:        {} ({} with no Agent, the server's, not scheduled here: {})",
                s.jobs.len(),
                server_jobs.len(),
                server_jobs.join(", ")
            );
        }
        out_line!(
            "  mappings:    {} entity type, {} association",
            s.entity_type_mappings.len(),
            s.association_mappings.len()
        );
        if skipped > 0 {
            let parts: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out_line!(
                "  skipped:     {skipped} elements not used by the agent ({})",
                parts.join(", ")
            );
        }
        if d.warnings().count() > 0 {
            out_line!("  warnings:    {}", d.warnings().count());
        }
    }
    EXIT_OK
}

fn connections(cli: &Cli, registry: &Arc<Registry>, args: &ConnectionsArgs) -> u8 {
    let loaded = match load(cli, registry, true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let s = &loaded.snapshot;
    if let Some(cat) = &args.category
        && !["database", "file", "directory"].contains(&cat.to_ascii_lowercase().as_str())
    {
        err_line!("error: unknown category {cat:?}; use Database, File or Directory");
        return EXIT_USAGE;
    }
    let times = crate::runtime::state::read_times(&s.work_folder);
    let time_of = |id: &crate::config::Ident| times.get(&id.key());
    let search = args.search.as_ref().map(|t| t.to_lowercase());
    let list: Vec<_> = s
        .connections
        .iter()
        .filter(|c| {
            search.as_ref().is_none_or(|t| {
                c.identifier.as_str().to_lowercase().contains(t)
                    || c.display_name.to_lowercase().contains(t)
            })
        })
        .filter(|c| {
            args.category.as_ref().is_none_or(|cat| {
                c.category()
                    .is_some_and(|k| k.to_string().eq_ignore_ascii_case(cat))
            })
        })
        .filter(|c| {
            args.connector
                .as_ref()
                .is_none_or(|k| c.connector.matches(k))
        })
        .collect();
    if cli.json {
        let items: Vec<_> = list
            .iter()
            .map(|c| {
                let usage = s.usage(&c.identifier);
                json!({
                    "identifier": c.identifier,
                    "display_name": c.display_name,
                    "category": c.category(),
                    "connector": c.connector,
                    "package": c.package_id(),
                    "usage_count": usage.len(),
                    "usage": usage.iter().map(|(k, n)| json!({"kind": k, "name": n})).collect::<Vec<_>>(),
                    "served": s.served_label(c),
                    "served_by": if c.served { Some(&s.agent) } else { s.served_by(c) },
                    "settings": c.settings.label(),
                    "first_seen": time_of(&c.identifier).map(|t| t.first_seen),
                    "last_modified": time_of(&c.identifier).map(|t| t.last_modified),
                    "setting_values": match &c.settings {
                        SettingsState::Ok(st) => serde_json::to_value(st.shown()).unwrap_or_default(),
                        _ => serde_json::Value::Null,
                    },
                })
            })
            .collect();
        out_line!(
            "{}",
            json!({"connections": items, "configuration_errors": loaded.diagnostics.errors().count()})
        );
    } else {
        let mut rows = vec![
            [
                "CATEGORY",
                "IDENTIFIER",
                "DISPLAY NAME",
                "CONNECTOR",
                "PACKAGE",
                "USAGE",
                "SERVED",
                "SETTINGS",
                "MODIFIED",
            ]
            .map(String::from),
        ];
        for c in &list {
            let usage = s.usage(&c.identifier);
            let tasks = usage.iter().filter(|(k, _)| *k == "ExportTask").count();
            let maps = usage.len() - tasks;
            rows.push([
                c.category()
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "?".into()),
                c.identifier.to_string(),
                c.display_name.clone(),
                c.connector.to_string(),
                c.package_id().to_string(),
                format!(
                    "{tasks} task{}, {maps} mapping{}",
                    plural(tasks),
                    plural(maps)
                ),
                s.served_label(c),
                c.settings.label().into(),
                time_of(&c.identifier)
                    .map(|t| t.last_modified.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        print_table(&rows);
        if args.show_settings {
            for c in &list {
                if let SettingsState::Ok(st) = &c.settings {
                    out_line!("\n{} ({})", c.identifier, c.package_id());
                    for sh in st
                        .shown()
                        .iter()
                        .filter(|x| x.is_set || x.is_default || x.secured)
                    {
                        let note = if sh.is_default { " (default)" } else { "" };
                        out_line!("  {:<22} {}{note}", sh.name, sh.shown);
                    }
                }
            }
        }
        if list.is_empty() {
            out_line!("(no connection matches)");
        }
    }
    if loaded.diagnostics.has_errors() {
        err_line!(
            "the configuration is invalid ({}): run `connagent validate`",
            count_line(&loaded.diagnostics)
        );
        return EXIT_CONFIG;
    }
    EXIT_OK
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out_line!("{}", line.join("  ").trim_end());
    }
}

async fn test(cli: &Cli, registry: &Arc<Registry>, id: &str) -> u8 {
    let loaded = match load(cli, registry, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let target = match invoke::target(&loaded.snapshot, id, CancellationToken::new()) {
        Ok(t) => t,
        Err(e) => {
            err_line!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let connection = &target.cref.identifier;
    match target.test().await {
        Ok(report) => {
            if cli.json {
                out_line!(
                    "{}",
                    json!({"connection": connection, "ok": true, "checks": report.checks})
                );
            } else {
                out_line!("connection {connection}: ok");
                for c in &report.checks {
                    out_line!("  {c}");
                }
            }
            EXIT_OK
        }
        Err(e) => {
            if cli.json {
                out_line!(
                    "{}",
                    json!({"connection": connection, "ok": false, "class": e.class, "error": e.message})
                );
            }
            err_line!(
                "connection {connection}: test failed ({:?}): {}",
                e.class,
                e.message
            );
            EXIT_FAILED
        }
    }
}

/// Discovers a connection's schema and stores the outcome, success or failure, as a schema
/// refresh of the daemon does (`invoke::discovered_state`).
async fn schema(cli: &Cli, registry: &Arc<Registry>, id: &str) -> u8 {
    let loaded = match load(cli, registry, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let s = &loaded.snapshot;
    let target = match invoke::target(s, id, CancellationToken::new()) {
        Ok(t) => t,
        Err(e) => {
            err_line!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let connection = target.cref.identifier.to_string();
    let result = target.discover().await;
    let store = SchemaStore::new(&s.work_folder);
    let (state, _, _) = invoke::discovered_state(store.load(&connection), result.clone());
    let stored = store.save(&state);
    let schema = match result {
        Ok(x) => x,
        Err(e) => {
            err_line!(
                "connection {connection}: schema discovery failed ({:?}): {}",
                e.class,
                e.message
            );
            if let Err(e) = stored {
                err_line!("error: {e}");
            }
            return EXIT_FAILED;
        }
    };
    if cli.json {
        out_line!(
            "{}",
            json!({"schema": schema, "stored": stored.as_ref().ok()})
        );
    } else {
        out_line!(
            "connection {} ({}): {} table{}",
            schema.connection,
            schema.package,
            schema.tables.len(),
            plural(schema.tables.len())
        );
        for t in &schema.tables {
            out_line!("\n{}  <- {}", t.name, t.source);
            for c in &t.columns {
                let key = match c.key_type {
                    crate::schema::KeyType::Primary => "primary key",
                    crate::schema::KeyType::Unique => "unique key",
                    crate::schema::KeyType::None => "",
                };
                out_line!(
                    "  {:<28} {:<9} {:<12} {}",
                    c.name,
                    format!("{:?}", c.value_type),
                    c.source_type.as_deref().unwrap_or(""),
                    key
                );
            }
        }
    }
    match stored {
        Ok(p) => {
            if !cli.json {
                out_line!("\nstored in {}", p.display());
            }
            EXIT_OK
        }
        Err(e) => {
            err_line!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The signals that interrupt a command-line export: Ctrl-C (SIGINT), and SIGTERM, SIGHUP and
/// SIGQUIT, which `timeout`, cron, systemd timers, container stops and closed terminals send.
/// Registered before anything else is done, so that an early signal is never lost: from then on
/// a signal is held until the export looks at it.
struct InterruptSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl InterruptSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(InterruptSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal's number and name.
    async fn next(&mut self) -> (i32, &'static str) {
        tokio::select! {
            _ = self.int.recv() => (libc::SIGINT, "SIGINT"),
            _ = self.term.recv() => (libc::SIGTERM, "SIGTERM"),
            _ = self.hup.recv() => (libc::SIGHUP, "SIGHUP"),
            _ = self.quit.recv() => (libc::SIGQUIT, "SIGQUIT"),
        }
    }
}

/// The exit code of an export interrupted by signal `n`: 128 + n, what a shell reports for a
/// command killed by it (130 for SIGINT, 143 for SIGTERM), so scripts see the interruption.
pub fn interrupted_exit_code(n: i32) -> u8 {
    u8::try_from(128 + n).unwrap_or(EXIT_FAILED)
}

async fn export_cmd(cli: &Cli, registry: &Arc<Registry>, args: &ExportArgs) -> u8 {
    // First of all: a signal that arrives while the configuration loads is held, not lost.
    let mut signals = match InterruptSignals::new() {
        Ok(s) => s,
        Err(e) => {
            err_line!("error: cannot handle signals: {e}");
            return EXIT_FAILED;
        }
    };
    let cancel = CancellationToken::new();
    let interrupted = Arc::new(std::sync::atomic::AtomicI32::new(0));
    {
        let cancel = cancel.clone();
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            let (n, name) = signals.next().await;
            interrupted.store(n, Ordering::SeqCst);
            err_line!(
                "\ninterrupted ({name}): cancelling the export (previous files are kept); send it again to quit at once"
            );
            cancel.cancel();
            let (n, _) = signals.next().await;
            err_line!(
                "quitting now: a partial file may remain; it is removed at the connection's next export"
            );
            std::process::exit(i32::from(interrupted_exit_code(n)));
        });
    }
    let loaded = match load(cli, registry, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let s = &loaded.snapshot;
    let target = match (&args.target.task, &args.target.connection, args.target.all) {
        (Some(t), _, _) => Target::Task(t.clone()),
        (_, Some(c), _) => Target::Connection(c.clone()),
        _ => Target::All,
    };
    let runs = match export::plan(s, &target, args.complete) {
        Ok(r) => r,
        Err(e) => {
            if cli.json {
                out_line!("{}", json!({"error": e.message}));
            }
            err_line!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let show_progress = !cli.json && std::io::stderr().is_terminal();
    let mut reports: Vec<RunReport> = Vec::new();
    let mut code = EXIT_OK;
    for run in &runs {
        if cancel.is_cancelled() {
            break;
        }
        let progress = Arc::new(Progress::default());
        let bar =
            show_progress.then(|| spawn_progress(run.connection.to_string(), progress.clone()));
        let report = export::run_one(s, run, &cancel, progress).await;
        if let Some((handle, stop)) = bar {
            stop.cancel();
            let _ = handle.await;
        }
        if !cli.json {
            print_report(&report, run.continue_on_error);
        }
        let failed = report.failed();
        reports.push(report);
        if failed {
            if run.task.is_some() && run.continue_on_error {
                continue; // warning mode: the failure is reported, the command succeeds
            }
            code = EXIT_FAILED;
            if run.task.is_some() {
                break;
            }
        }
    }
    // Interrupted: a run was cancelled, or runs were left out. (A signal that came once every
    // run had published changes nothing: the work is done.)
    let cut_short = reports.len() < runs.len()
        || reports.iter().any(|r| {
            matches!(
                r.outcome,
                RunOutcome::Failed {
                    class: crate::packages::FailureClass::Cancelled,
                    ..
                }
            )
        });
    if cancel.is_cancelled() && cut_short {
        code = interrupted_exit_code(interrupted.load(Ordering::SeqCst));
    }
    if cli.json {
        out_line!(
            "{}",
            json!({"runs": reports, "cancelled": cancel.is_cancelled()})
        );
    }
    code
}

fn print_report(r: &RunReport, continue_on_error: bool) {
    let what = match &r.task {
        Some(t) => format!("{} (task {t}, {:?})", r.connection, r.mode).to_string(),
        None => format!("{} ({:?})", r.connection, r.mode),
    };
    match &r.outcome {
        RunOutcome::Published { tables } => {
            out_line!(
                "{what}: published {} table{} in {:.2} s",
                tables.len(),
                plural(tables.len()),
                r.duration.as_secs_f64()
            );
            for t in tables {
                out_line!(
                    "  {:<32} {:>10} rows  {:>10}  {:>7.2} s  {}",
                    t.file,
                    t.rows,
                    human_bytes(t.bytes),
                    t.duration.as_secs_f64(),
                    t.path
                );
            }
        }
        RunOutcome::NotRun { reason } => out_line!("{what}: not run: {reason}"),
        RunOutcome::Failed {
            class,
            message,
            published,
        } => {
            let tail = if continue_on_error && r.task.is_some() {
                " (ContinueOnError: reported as a warning)"
            } else {
                ""
            };
            let files = if published.is_empty() {
                "the previous connection tables, if any, are unchanged".to_string()
            } else {
                format!(
                    "these tables were already replaced: {}; the others are unchanged",
                    published
                        .iter()
                        .map(|t| t.file.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            err_line!("{what}: failed ({class:?}){tail}: {message}\n  {files}");
        }
    }
}

/// Draws a progress bar on stderr once an export has lasted more than a second.
fn spawn_progress(
    connection: String,
    progress: Arc<Progress>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move {
        tokio::select! {
            _ = s.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let mut tick = tokio::time::interval(Duration::from_millis(150));
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tick.tick() => {
                    let table = progress.table.lock().map(|t| t.clone()).unwrap_or_default();
                    bar.set_message(format!(
                        "{connection}: {table}: {} rows, {}",
                        progress.rows.load(Ordering::Relaxed),
                        human_bytes(progress.bytes.load(Ordering::Relaxed))
                    ));
                    bar.tick();
                }
            }
        }
        bar.finish_and_clear();
    });
    (handle, stop)
}

/// `serve` (full = false) and `run` (full = true): the signals first (none is lost while the
/// configuration loads), then the configuration, the logging it sets, the daemon built and
/// announced on stdout, and run until stopped.
async fn daemon(cli: &Cli, registry: Arc<Registry>, full: bool) -> u8 {
    use crate::daemon::{Daemon, DaemonError, Signals};
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            err_line!("error: cannot handle signals: {e}");
            return EXIT_FAILED;
        }
    };
    let loaded = match load(cli, &registry, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let settings = loaded.snapshot.daemon.clone();
    init_logging(settings.log_json, &settings.log_level);
    let exit = |e: DaemonError| {
        err_line!("error: {e}");
        if e.is_configuration() {
            EXIT_CONFIG
        } else {
            EXIT_FAILED
        }
    };
    let daemon = match Daemon::build(loaded, registry, full, signals).await {
        Ok(d) => d,
        Err(e) => return exit(e),
    };
    let scheme = if daemon.tls() { "https" } else { "http" };
    if cli.json {
        out_line!(
            "{}",
            json!({
                "listening": daemon.address().map(|a| a.to_string()),
                "tls": daemon.tls(),
                "dialling": daemon.outbound_url(),
            })
        );
    } else {
        let listening = match daemon.address() {
            Some(a) => format!("serving gRPC on {scheme}://{a}"),
            None => "with no listening port (Grpc:Listen is empty)".to_string(),
        };
        let dialling = daemon
            .outbound_url()
            .map(|u| format!("; serving AgentService over a channel to {u}"))
            .unwrap_or_default();
        out_line!(
            "connagent {}: agent {} {listening}{dialling}",
            env!("CARGO_PKG_VERSION"),
            daemon.agent(),
        );
    }
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    match daemon.run().await {
        Ok(()) => EXIT_OK,
        Err(e) => exit(e),
    }
}
