//! The daemon's lifecycle (`connagent run`, and `connagent serve` without reload and scheduler):
//! configuration → build → spawn → wait for a signal → drain, as linkerd2-proxy does.
//!
//! * **build**: the runtime from the loaded configuration; partial files a crash left removed;
//!   the control-plane client started (runs cut short by the previous stop reported); the gRPC
//!   listener bound. Nothing is served yet.
//! * **spawn**: background discovery, the file watcher and the scheduler (`run` only), SIGHUP
//!   reloads (`run`; `serve` logs and ignores it), the systemd status and watchdog.
//! * **stop**: SIGTERM or SIGINT: STOPPING=1, no new work, runs may finish within
//!   `Shutdown:GraceSeconds`, then they are cancelled (their previous files stay); a second signal
//!   quits at once. Open gRPC calls get 10 s.
//! * **drain**: cancelled runs remove their partial files and queue their reports; queued reports
//!   get 3 s to reach the control plane, the rest stay on disk for the next start.
//!
//! The CLI only registers [`Signals`] first, loads the configuration, prints the address and maps
//! a [`DaemonError`] to an exit code.

use crate::config::{ControlPlaneMode, ControlPlaneSettings, Loaded};
use crate::grpc::{channel, control_plane::ControlPlaneClient, server};
use crate::packages::Registry;
use crate::runtime::{ReportSink, Runtime, sdnotify};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long open gRPC calls may go on after the stop.
const CALLS_GRACE: Duration = Duration::from_secs(10);
/// How long cancelled runs get to remove their partial files and queue their reports.
const RUNS_DRAIN: Duration = Duration::from_secs(30);
/// How long queued reports get to reach the control plane before the process leaves.
const REPORTS_FLUSH: Duration = Duration::from_secs(3);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    ControlPlane(#[from] crate::grpc::control_plane::ClientError),
}

impl DaemonError {
    /// Whether the configuration is at fault (exit 78): an insecure listener, a control plane
    /// that cannot be addressed.
    pub fn is_configuration(&self) -> bool {
        match self {
            DaemonError::Serve(e) => matches!(e, server::ServeError::Insecure(_)),
            DaemonError::ControlPlane(_) => true,
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP, registered before the configuration is loaded, so that no signal
/// reaches a process that has not yet decided what to do with it.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGTERM or SIGINT: a request to stop.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Writes a line to stderr; a closed stderr (the journal or the parent gone) is no reason to
/// fail, and must never panic the task that stops the agent.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A built daemon: its runtime, its bound listener (none when `Grpc:Listen` is empty), its
/// control-plane client and the outbound channel's settings.
pub struct Daemon {
    rt: Arc<Runtime>,
    bound: Option<server::Bound>,
    outbound: Option<ControlPlaneSettings>,
    tls: bool,
    agent: String,
    reporter: Option<Arc<ControlPlaneClient>>,
    /// `run` (reload, scheduler) rather than `serve`.
    full: bool,
    stop: StopSignals,
    hup: Signal,
}

impl Daemon {
    /// Builds the runtime from a loaded configuration (which must have no errors), cleans what a
    /// crash left, starts the control-plane client and binds the listener.
    pub async fn build(
        loaded: Loaded,
        registry: Arc<Registry>,
        full: bool,
        signals: Signals,
    ) -> Result<Daemon, DaemonError> {
        server::check_security(&loaded.snapshot.grpc)?;
        let grpc_settings = loaded.snapshot.grpc.clone();
        let rt = Runtime::new(loaded, registry);
        let snapshot = rt.snapshot();
        // Partial files left by a crash go now (each under its connection's lock).
        for p in crate::export::clean_stale_partials(&snapshot) {
            tracing::info!(file = %p.display(), "removed a partial file left by an interrupted export");
        }
        let mut reporter = None;
        if snapshot
            .control_plane
            .as_ref()
            .is_some_and(|cp| cp.mode == ControlPlaneMode::Outbound)
            && grpc_settings.tokens.is_empty()
        {
            tracing::warn!(
                "Grpc:Tokens is empty: every call that comes over the channel from the control plane gets the admin role; configure tokens to give the control plane's callers their roles"
            );
        }
        let outbound = snapshot
            .control_plane
            .clone()
            .filter(|cp| cp.mode == ControlPlaneMode::Outbound);
        if let Some(cp) = snapshot.control_plane.clone() {
            let client = ControlPlaneClient::new(&snapshot.work_folder, cp);
            client.start(rt.clone())?;
            rt.set_report_sink(client.clone());
            // Runs cut short by the previous stop are reported now.
            for r in rt.runs.take_interrupted() {
                if let Err(e) = client.report_run(snapshot.agent.as_str(), &r) {
                    tracing::error!(run = %r.id, error = %e, "run report not queued");
                }
            }
            reporter = Some(client);
        }
        let bound = server::bind(&grpc_settings).await?;
        Ok(Daemon {
            agent: snapshot.agent.to_string(),
            rt,
            bound,
            outbound,
            tls: grpc_settings.tls.is_some(),
            reporter,
            full,
            stop: StopSignals {
                term: signals.term,
                int: signals.int,
            },
            hup: signals.hup,
        })
    }

    /// The inbound listener's address; `None` when there is no listener.
    pub fn address(&self) -> Option<SocketAddr> {
        self.bound.as_ref().map(|b| b.addr)
    }

    /// The control plane the agent dials (outbound mode).
    pub fn outbound_url(&self) -> Option<&str> {
        self.outbound.as_ref().map(|cp| cp.url.as_str())
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Spawns the daemon's tasks, tells systemd it is ready, serves until stopped, and drains.
    pub async fn run(self) -> Result<(), DaemonError> {
        let Daemon {
            rt,
            bound,
            outbound,
            reporter,
            full,
            stop,
            hup,
            ..
        } = self;
        rt.start_background();
        if full {
            crate::runtime::watch::spawn(rt.clone());
            crate::runtime::scheduler::spawn(rt.clone());
        }
        if let Some(cp) = outbound {
            let sink = reporter
                .clone()
                .map(|r| r as Arc<dyn crate::runtime::ReportSink>);
            channel::spawn(rt.clone(), cp, sink);
        }
        spawn_reloads(rt.clone(), hup, full);
        rt.write_status(false);
        sdnotify::notify(&format!("READY=1\nSTATUS={}", rt.status_line()));
        spawn_status(rt.clone());
        spawn_stop(rt.clone(), stop);
        let result = serve_until_stopped(&rt, bound).await;
        drain(&rt, reporter).await;
        rt.write_status(true);
        result
    }
}

/// SIGHUP: reload (`run`), or a note that `serve` does not reload.
fn spawn_reloads(rt: Arc<Runtime>, mut hup: Signal, full: bool) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = rt.stopping.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            if full {
                rt.reload("SIGHUP", true).await;
            } else {
                tracing::warn!(
                    "SIGHUP ignored: `connagent serve` does not reload; `connagent run` does"
                );
            }
        }
    });
}

/// The watchdog and the status line for systemd, every few seconds until the stop.
fn spawn_status(rt: Arc<Runtime>) {
    let every = sdnotify::watchdog_interval()
        .map(|w| w / 2)
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    tokio::spawn(async move {
        let watchdog = sdnotify::watchdog_interval().is_some();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = rt.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // While stopping, the status says so (set once, not overwritten).
            let status = if rt.stopping.is_cancelled() {
                String::new()
            } else {
                format!("\nSTATUS={}", rt.status_line())
            };
            let msg = format!("{}{status}", if watchdog { "WATCHDOG=1" } else { "" });
            let msg = msg.trim_start_matches('\n');
            if !msg.is_empty() {
                sdnotify::notify(msg);
            }
        }
    });
}

/// The two-phase stop: the first signal stops new work and lets runs finish within the grace
/// period, then cancels them; a second signal quits at once.
fn spawn_stop(rt: Arc<Runtime>, mut stop: StopSignals) {
    tokio::spawn(async move {
        stop.next().await;
        // Read now: the grace period may have changed by reload.
        let grace = rt.snapshot().daemon.grace;
        sdnotify::notify("STOPPING=1\nSTATUS=stopping: letting runs finish");
        tracing::info!(grace = ?grace, "stopping: no new work; runs may finish within the grace period");
        rt.stopping.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while rt.runs.any_active() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("grace period over: cancelling the runs still going (their previous files stay)");
                    break;
                }
                _ = stop.next() => quit_now(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        rt.runs.cancel_all();
        rt.shutdown.cancel();
        stop.next().await;
        quit_now();
    });
}

fn quit_now() -> ! {
    say("stopping now (second signal); partial files are removed at the next start");
    std::process::exit(1);
}

/// Serves gRPC until the stop; open calls then get [`CALLS_GRACE`], and the server stops
/// regardless.
async fn serve_until_stopped(
    rt: &Arc<Runtime>,
    bound: Option<server::Bound>,
) -> Result<(), DaemonError> {
    let shutdown = rt.shutdown.clone();
    let Some(bound) = bound else {
        // No listener: the outbound channel is the only way in; it ends with the stop.
        shutdown.cancelled().await;
        return Ok(());
    };
    let serving = server::serve(bound, rt.clone());
    tokio::pin!(serving);
    tokio::select! {
        r = &mut serving => r.map_err(DaemonError::from),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(CALLS_GRACE).await;
        } => {
            tracing::warn!("open gRPC calls did not end within {CALLS_GRACE:?} of the stop; closing them");
            Ok(())
        }
    }
}

/// Lets cancelled runs remove their partial files and queue their reports, then tries to deliver
/// the queued reports.
async fn drain(rt: &Arc<Runtime>, reporter: Option<Arc<ControlPlaneClient>>) {
    let deadline = std::time::Instant::now() + RUNS_DRAIN;
    while rt.runs.any_active() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(client) = reporter {
        let left = client.flush(REPORTS_FLUSH).await;
        if left > 0 {
            tracing::info!(
                queued = left,
                "reports stay queued on disk for the next start"
            );
        }
    }
}
