//! `AgentService`: what the central server calls. Every handler authenticates the caller, checks
//! its role, logs the call with the caller's name and outcome (never a secret), and converts.

use super::auth::{self, Caller};
use super::convert;
use super::proto as pb;
use super::proto::agent_service_server::AgentService;
use crate::config::{Role, SettingsState};
use crate::export::{PlanErrorKind, Target};
use crate::packages::{FailureClass, Settings};
use crate::runtime::runs::{RunEventKind, StartError};
use crate::runtime::schemas::RefreshError;
use crate::runtime::{Event, Runtime};
use crate::secret::Secret;
use std::io::{Read, Seek};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use zeroize::Zeroize;

pub struct AgentServiceImpl {
    rt: Arc<Runtime>,
}

impl AgentServiceImpl {
    pub fn new(rt: Arc<Runtime>) -> Self {
        AgentServiceImpl { rt }
    }

    fn begin<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        role: Role,
    ) -> Result<Caller, Status> {
        let snapshot = self.rt.snapshot();
        let caller =
            auth::authenticate(&snapshot.grpc.tokens, req.metadata()).inspect_err(|s| {
                tracing::warn!(method, code = ?s.code(), "gRPC call refused: {}", s.message());
            })?;
        auth::authorize(&caller, method, role).inspect_err(|s| {
            tracing::warn!(method, caller = %caller.name, code = ?s.code(), "gRPC call refused: {}", s.message());
        })?;
        Ok(caller)
    }
}

fn done<T>(
    method: &'static str,
    caller: &Caller,
    r: Result<T, Status>,
) -> Result<Response<T>, Status> {
    match &r {
        Ok(_) => tracing::info!(method, caller = %caller.name, "gRPC call ok"),
        Err(s) => {
            tracing::info!(method, caller = %caller.name, code = ?s.code(), "gRPC call failed: {}", s.message())
        }
    }
    r.map(Response::new)
}

impl AgentServiceImpl {
    /// Stores (or removes) a secured option (`runtime::secured`), translating to and from gRPC.
    async fn change_secured_option(
        &self,
        caller: &Caller,
        connection: &str,
        option: &str,
        value: Option<&Secret>,
    ) -> Result<pb::SecuredOptionState, Status> {
        use crate::runtime::secured::SecuredOptionError as E;
        let id = required("connection", connection)?;
        let option = required("option", option)?;
        let st = self
            .rt
            .change_secured_option(&caller.name, id, option, value)
            .await
            .map_err(|e| match e {
                E::NotFound(_) => Status::not_found(e.to_string()),
                E::NotSecured { .. } | E::KeyValueOptions(_) => {
                    Status::invalid_argument(e.to_string())
                }
                E::NoPackage(_) | E::Store(_) | E::Rejected { .. } => {
                    Status::failed_precondition(e.to_string())
                }
                E::Internal(_) => Status::internal(e.to_string()),
            })?;
        Ok(pb::SecuredOptionState {
            connection: st.connection,
            option: st.option.to_string(),
            is_set: st.is_set,
            changed_at: Some(convert::ts(st.changed_at)),
            configuration_generation: st.configuration_generation,
        })
    }
}

/// A managed-connection error as a gRPC status.
fn managed_status(e: crate::runtime::managed::ManagedError) -> Status {
    use crate::runtime::managed::ManagedError as E;
    match e {
        E::Invalid(_) | E::Rejected(_) => Status::invalid_argument(e.to_string()),
        E::NotFound(_) => Status::not_found(e.to_string()),
        E::Exists { .. } => Status::already_exists(e.to_string()),
        E::ReadOnly { .. } | E::InUse { .. } | E::Store(_) => {
            Status::failed_precondition(e.to_string())
        }
    }
}

impl AgentServiceImpl {
    /// Creates or updates a managed connection, then answers with it as GetConnection would.
    async fn put_connection(
        &self,
        caller: &Caller,
        mut q: pb::ConnectionDefinition,
        update: bool,
    ) -> Result<pb::ConnectionDetail, Status> {
        let id = required("identifier", &q.identifier)?.to_string();
        required("connector", &q.connector)?;
        required("package", &q.package)?;
        // Secured values move into Secrets; nothing else keeps them.
        let secured = std::mem::take(&mut q.secured_settings)
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        let def = crate::runtime::managed::Definition {
            identifier: id.clone(),
            display_name: q.display_name,
            connector: q.connector,
            package: q.package,
            settings: q.settings,
            secured,
        };
        self.rt
            .put_connection(&caller.name, def, update)
            .await
            .map_err(managed_status)?;
        let snapshot = self.rt.snapshot();
        let c = snapshot.connection(&id).ok_or_else(|| {
            Status::internal(format!("connection {id} is not in force after the change"))
        })?;
        Ok(connection_detail(&self.rt, &snapshot, c))
    }
}

/// A connection as GetConnection shows it (secured values only as set or not).
fn connection_detail(
    rt: &Runtime,
    snapshot: &crate::config::Snapshot,
    c: &crate::config::Connection,
) -> pb::ConnectionDetail {
    let shown = match (&c.settings, &c.package) {
        (SettingsState::Ok(s), _) => s.shown(),
        (_, Some(p)) => {
            Settings::new(p.info().settings, Vec::new(), &snapshot.settings_file).shown()
        }
        (_, None) => Vec::new(),
    };
    pb::ConnectionDetail {
        summary: Some(convert::connection_summary(rt, snapshot, c)),
        settings: shown
            .into_iter()
            .map(|s| pb::SettingValue {
                name: s.name.to_string(),
                is_set: s.is_set,
                is_default: s.is_default,
                secured: s.secured,
                value: s.shown,
            })
            .collect(),
    }
}

fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, Status> {
    let v = v.trim();
    if v.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(v)
    }
}

fn refresh_status(e: RefreshError) -> Status {
    match e {
        RefreshError::NotFound(m) => Status::not_found(m),
        RefreshError::Precondition(m) => Status::failed_precondition(m),
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let caller = self.begin(&req, "GetStatus", Role::Viewer)?;
        let cs = self.rt.config_state();
        let s = &cs.snapshot;
        let r = pb::AgentStatus {
            agent_identifier: s.agent.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: Some(convert::ts(self.rt.started_at)),
            uptime_seconds: self.rt.uptime_seconds(),
            configuration_generation: cs.generation,
            configuration_loaded_at: Some(convert::ts(cs.loaded_at)),
            last_reload: Some(convert::reload(&cs.last_reload)),
            runs_in_progress: self
                .rt
                .runs
                .in_progress()
                .iter()
                .map(convert::run)
                .collect(),
            packages: self
                .rt
                .registry
                .all()
                .map(|p| p.info().id.to_string())
                .collect(),
            connections: u32::try_from(s.connections.len()).unwrap_or(u32::MAX),
            connections_served: u32::try_from(s.connections.iter().filter(|c| c.served).count())
                .unwrap_or(u32::MAX),
        };
        done("GetStatus", &caller, Ok(r))
    }

    async fn list_connections(
        &self,
        req: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let caller = self.begin(&req, "ListConnections", Role::Viewer)?;
        let q = req.into_inner();
        let r = (|| {
            let category = pb::Category::try_from(q.category).map_err(|_| {
                Status::invalid_argument(format!("category {} is not a known Category", q.category))
            })?;
            let package = if q.package.trim().is_empty() {
                None
            } else {
                Some(
                    self.rt
                        .registry
                        .find(&q.package)
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "package {:?} is not known; known: {}",
                                q.package,
                                self.rt.registry.known_names()
                            ))
                        })?
                        .info()
                        .id,
                )
            };
            let page_size = match q.page_size {
                0 => 100,
                n if n <= 1000 => n as usize,
                n => {
                    return Err(Status::invalid_argument(format!(
                        "page_size {n} is over the maximum of 1000"
                    )));
                }
            };
            let offset = if q.page_token.is_empty() {
                0
            } else {
                q.page_token.parse::<usize>().map_err(|_| {
                    Status::invalid_argument(
                        "page_token is not a token returned by ListConnections",
                    )
                })?
            };
            let snapshot = self.rt.snapshot();
            let search = q.search.trim().to_lowercase();
            let all: Vec<_> = snapshot
                .connections
                .iter()
                .filter(|c| {
                    search.is_empty()
                        || c.identifier.as_str().to_lowercase().contains(&search)
                        || c.display_name.to_lowercase().contains(&search)
                })
                .filter(|c| {
                    category == pb::Category::Unspecified
                        || convert::category(c.category()) == category
                })
                .filter(|c| {
                    q.connector.trim().is_empty() || c.connector.matches(q.connector.trim())
                })
                .filter(|c| package.is_none_or(|p| c.package_id() == p))
                .collect();
            let total = all.len();
            let page: Vec<_> = all
                .into_iter()
                .skip(offset)
                .take(page_size)
                .map(|c| convert::connection_summary(&self.rt, &snapshot, c))
                .collect();
            let next = offset + page.len();
            Ok(pb::ListConnectionsResponse {
                connections: page,
                next_page_token: if next < total {
                    next.to_string()
                } else {
                    String::new()
                },
                total: u32::try_from(total).unwrap_or(u32::MAX),
            })
        })();
        done("ListConnections", &caller, r)
    }

    async fn get_connection(
        &self,
        req: Request<pb::GetConnectionRequest>,
    ) -> Result<Response<pb::ConnectionDetail>, Status> {
        let caller = self.begin(&req, "GetConnection", Role::Viewer)?;
        let q = req.into_inner();
        let r = (|| {
            let id = required("identifier", &q.identifier)?;
            let snapshot = self.rt.snapshot();
            let c = snapshot
                .connection(id)
                .ok_or_else(|| Status::not_found(format!("there is no connection {id:?}")))?;
            Ok(connection_detail(&self.rt, &snapshot, c))
        })();
        done("GetConnection", &caller, r)
    }

    async fn set_secured_option(
        &self,
        req: Request<pb::SetSecuredOptionRequest>,
    ) -> Result<Response<pb::SecuredOptionState>, Status> {
        let caller = self.begin(&req, "SetSecuredOption", Role::Admin)?;
        let mut q = req.into_inner();
        // Into a Secret at once: the decoded String's buffer moves, it is not copied.
        let value = Secret::new(std::mem::take(&mut q.value));
        if value.is_empty() {
            let r = Err(Status::invalid_argument(
                "value is required (DeleteSecuredOption removes one)",
            ));
            return done("SetSecuredOption", &caller, r);
        }
        let r = self
            .change_secured_option(&caller, &q.connection, &q.option, Some(&value))
            .await;
        done("SetSecuredOption", &caller, r)
    }

    async fn delete_secured_option(
        &self,
        req: Request<pb::DeleteSecuredOptionRequest>,
    ) -> Result<Response<pb::SecuredOptionState>, Status> {
        let caller = self.begin(&req, "DeleteSecuredOption", Role::Admin)?;
        let q = req.into_inner();
        let r = self
            .change_secured_option(&caller, &q.connection, &q.option, None)
            .await;
        done("DeleteSecuredOption", &caller, r)
    }

    async fn create_connection(
        &self,
        req: Request<pb::ConnectionDefinition>,
    ) -> Result<Response<pb::ConnectionDetail>, Status> {
        let caller = self.begin(&req, "CreateConnection", Role::Admin)?;
        let r = self.put_connection(&caller, req.into_inner(), false).await;
        done("CreateConnection", &caller, r)
    }

    async fn update_connection(
        &self,
        req: Request<pb::ConnectionDefinition>,
    ) -> Result<Response<pb::ConnectionDetail>, Status> {
        let caller = self.begin(&req, "UpdateConnection", Role::Admin)?;
        let r = self.put_connection(&caller, req.into_inner(), true).await;
        done("UpdateConnection", &caller, r)
    }

    async fn delete_connection(
        &self,
        req: Request<pb::DeleteConnectionRequest>,
    ) -> Result<Response<pb::DeleteConnectionResponse>, Status> {
        let caller = self.begin(&req, "DeleteConnection", Role::Admin)?;
        let q = req.into_inner();
        let r = async {
            let id = required("identifier", &q.identifier)?;
            let generation = self
                .rt
                .delete_connection(&caller.name, id)
                .await
                .map_err(managed_status)?;
            Ok(pb::DeleteConnectionResponse {
                identifier: id.to_string(),
                configuration_generation: generation,
            })
        }
        .await;
        done("DeleteConnection", &caller, r)
    }

    async fn describe_packages(
        &self,
        req: Request<pb::DescribePackagesRequest>,
    ) -> Result<Response<pb::DescribePackagesResponse>, Status> {
        let caller = self.begin(&req, "DescribePackages", Role::Viewer)?;
        let r = pb::DescribePackagesResponse {
            packages: self
                .rt
                .registry
                .all()
                .map(|p| convert::package_spec(p.info()))
                .collect(),
        };
        done("DescribePackages", &caller, Ok(r))
    }

    async fn test_connection(
        &self,
        req: Request<pb::TestConnectionRequest>,
    ) -> Result<Response<pb::TestConnectionResponse>, Status> {
        let caller = self.begin(&req, "TestConnection", Role::Operator)?;
        let mut q = req.into_inner();
        let r = self.test(&q).await;
        // Candidate values may be secrets, used for this test only: wiped now.
        q.settings.values_mut().for_each(Zeroize::zeroize);
        done("TestConnection", &caller, r)
    }

    async fn refresh_schema(
        &self,
        req: Request<pb::RefreshSchemaRequest>,
    ) -> Result<Response<pb::RefreshSchemaResponse>, Status> {
        let caller = self.begin(&req, "RefreshSchema", Role::Operator)?;
        let q = req.into_inner();
        let r = async {
            use pb::refresh_schema_request::Target as T;
            let snapshot = self.rt.snapshot();
            let ids: Vec<String> = match q.target {
                Some(T::Connection(c)) => vec![required("connection", &c)?.to_string()],
                Some(T::Connector(k)) => {
                    let k = required("connector", &k)?;
                    if !snapshot.connectors.iter().any(|c| c.identifier.matches(k)) {
                        return Err(Status::not_found(format!("there is no connector {k:?}")));
                    }
                    let ids: Vec<String> = snapshot
                        .connections
                        .iter()
                        .filter(|c| {
                            c.connector.matches(k)
                                && c.served
                                && matches!(c.settings, SettingsState::Ok(_))
                        })
                        .map(|c| c.identifier.to_string())
                        .collect();
                    if ids.is_empty() {
                        return Err(Status::failed_precondition(format!(
                            "connector {k} has no connection served by this agent with usable settings"
                        )));
                    }
                    ids
                }
                None => {
                    return Err(Status::invalid_argument(
                        "target is required: connection or connector",
                    ));
                }
            };
            // Its own task: a client that goes away does not cut a discovery short.
            let rt = self.rt.clone();
            let work = tokio::spawn(async move {
                let mut schemas = Vec::new();
                for id in ids {
                    let s = rt.schemas.refresh(&rt, &id).await.map_err(refresh_status)?;
                    schemas.push(convert::schema_state(&s));
                }
                Ok(pb::RefreshSchemaResponse { schemas })
            });
            work.await
                .unwrap_or_else(|e| Err(Status::internal(format!("the refresh stopped: {e}"))))
        }
        .await;
        done("RefreshSchema", &caller, r)
    }

    async fn reset_metadata(
        &self,
        req: Request<pb::ResetMetadataRequest>,
    ) -> Result<Response<pb::RefreshSchemaResponse>, Status> {
        let caller = self.begin(&req, "ResetMetadata", Role::Operator)?;
        let q = req.into_inner();
        let r = async {
            let id = required("connection", &q.connection)?;
            let rt = self.rt.clone();
            let id = id.to_string();
            let s = tokio::spawn(async move { rt.schemas.reset(&rt, &id).await })
                .await
                .map_err(|e| Status::internal(format!("the reset stopped: {e}")))?
                .map_err(refresh_status)?;
            Ok(pb::RefreshSchemaResponse {
                schemas: vec![convert::schema_state(&s)],
            })
        }
        .await;
        done("ResetMetadata", &caller, r)
    }

    async fn get_schema(
        &self,
        req: Request<pb::GetSchemaRequest>,
    ) -> Result<Response<pb::SchemaState>, Status> {
        let caller = self.begin(&req, "GetSchema", Role::Viewer)?;
        let q = req.into_inner();
        let r = required("connection", &q.connection).and_then(|id| {
            self.rt
                .schemas
                .get(&self.rt, id)
                .map(|s| convert::schema_state(&s))
                .map_err(refresh_status)
        });
        done("GetSchema", &caller, r)
    }

    async fn list_export_tasks(
        &self,
        req: Request<pb::ListExportTasksRequest>,
    ) -> Result<Response<pb::ListExportTasksResponse>, Status> {
        let caller = self.begin(&req, "ListExportTasks", Role::Viewer)?;
        let snapshot = self.rt.snapshot();
        let tasks = snapshot
            .export_tasks
            .iter()
            .map(|t| pb::ExportTaskInfo {
                identifier: t.identifier.to_string(),
                display_name: t.display_name.clone(),
                agent: t.agent.to_string(),
                served_here: t.served,
                connection: t.connection.to_string(),
                continue_on_error: t.continue_on_error,
                ignore_cookie_file: t.ignore_cookie_file,
                running_run_id: self
                    .rt
                    .runs
                    .running_for_task(t.identifier.as_str())
                    .unwrap_or_default(),
            })
            .collect();
        done(
            "ListExportTasks",
            &caller,
            Ok(pb::ListExportTasksResponse { tasks }),
        )
    }

    type RunExportStream = Stream<pb::RunEvent>;

    async fn run_export(
        &self,
        req: Request<pb::RunExportRequest>,
    ) -> Result<Response<Self::RunExportStream>, Status> {
        let caller = self.begin(&req, "RunExport", Role::Operator)?;
        let q = req.into_inner();
        let r = (|| {
            use pb::run_export_request::Target as T;
            let target = match q.target {
                Some(T::Task(t)) => Target::Task(required("task", &t)?.to_string()),
                Some(T::Connection(c)) => {
                    Target::Connection(required("connection", &c)?.to_string())
                }
                None => {
                    return Err(Status::invalid_argument(
                        "target is required: task or connection",
                    ));
                }
            };
            let mode = pb::ExportMode::try_from(q.mode).map_err(|_| {
                Status::invalid_argument(format!("mode {} is not a known ExportMode", q.mode))
            })?;
            let (record, mut rx) = self
                .rt
                .start_export(target, mode == pb::ExportMode::Complete, &caller.name)
                .map_err(|e| match &e {
                    StartError::Plan(p) if p.kind == PlanErrorKind::NotFound => {
                        Status::not_found(e.to_string())
                    }
                    StartError::Plan(_) | StartError::AlreadyRunning { .. } => {
                        Status::failed_precondition(e.to_string())
                    }
                    StartError::ShuttingDown => Status::unavailable(e.to_string()),
                })?;
            tracing::info!(run = %record.id, connection = %record.connection, caller = %caller.name, "export started");
            let (tx, out) = mpsc::channel(64);
            let shutdown = self.rt.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tx.closed() => break,
                        ev = rx.recv() => ev,
                    };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            // Say so rather than silently skip: GetRun has the run's state.
                            let _ = tx
                                .send(Err(Status::data_loss(format!(
                                    "{n} events of this run were skipped because the client read too slowly; follow the run with GetRun"
                                ))))
                                .await;
                            break;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    };
                    use pb::run_event::Event as E;
                    let last =
                        matches!(ev.kind, RunEventKind::Finished(_) | RunEventKind::Failed(_));
                    let event = match ev.kind {
                        RunEventKind::Accepted(r) => E::Accepted(convert::run(&r)),
                        RunEventKind::TableStarted(file) => {
                            E::TableStarted(pb::TableStarted { file })
                        }
                        RunEventKind::Progress { file, rows, bytes } => {
                            E::Progress(pb::Progress { file, rows, bytes })
                        }
                        RunEventKind::TablePublished(t) => E::TablePublished(convert::table(&t)),
                        RunEventKind::Finished(r) => E::Finished(convert::run(&r)),
                        RunEventKind::Failed(r) => E::Failed(convert::run(&r)),
                    };
                    let msg = pb::RunEvent {
                        run_id: ev.run_id,
                        at: Some(convert::ts(ev.at)),
                        event: Some(event),
                    };
                    // A client that went away stops the stream, not the run.
                    let sent = tokio::select! {
                        _ = shutdown.cancelled() => false,
                        r = tx.send(Ok(msg)) => r.is_ok(),
                    };
                    if !sent || last {
                        break;
                    }
                }
            });
            Ok(ReceiverStream::new(out))
        })();
        done("RunExport", &caller, r)
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let caller = self.begin(&req, "CancelRun", Role::Operator)?;
        let q = req.into_inner();
        let r = required("run_id", &q.run_id).and_then(|id| {
            self.rt
                .runs
                .cancel(id)
                .map(|r| convert::run(&r))
                .ok_or_else(|| Status::not_found(format!("there is no run {id:?}")))
        });
        done("CancelRun", &caller, r)
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let caller = self.begin(&req, "GetRun", Role::Viewer)?;
        let q = req.into_inner();
        let r = required("run_id", &q.run_id).and_then(|id| {
            self.rt
                .runs
                .get(id)
                .map(|r| convert::run(&r))
                .ok_or_else(|| Status::not_found(format!("there is no run {id:?}")))
        });
        done("GetRun", &caller, r)
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = self.begin(&req, "ListRuns", Role::Viewer)?;
        let q = req.into_inner();
        let r = match q.limit {
            n if n > 500 => Err(Status::invalid_argument(format!(
                "limit {n} is over the maximum of 500"
            ))),
            n => {
                let limit = if n == 0 { 50 } else { n as usize };
                let conn = Some(q.connection.trim()).filter(|c| !c.is_empty());
                Ok(pb::ListRunsResponse {
                    runs: self
                        .rt
                        .runs
                        .list(conn, limit)
                        .iter()
                        .map(convert::run)
                        .collect(),
                })
            }
        };
        done("ListRuns", &caller, r)
    }

    type ReadConnectionTableStream = Stream<pb::TableChunk>;

    async fn read_connection_table(
        &self,
        req: Request<pb::ReadConnectionTableRequest>,
    ) -> Result<Response<Self::ReadConnectionTableStream>, Status> {
        let caller = self.begin(&req, "ReadConnectionTable", Role::Operator)?;
        let q = req.into_inner();
        let r = self.read_table(q).await;
        done("ReadConnectionTable", &caller, r)
    }

    type WatchEventsStream = Stream<pb::AgentEvent>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.begin(&req, "WatchEvents", Role::Viewer)?;
        let mut rx = self.rt.subscribe();
        let shutdown = self.rt.shutdown.clone();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    ev = rx.recv() => ev,
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            skipped = n,
                            "a WatchEvents client is too slow; ending its stream"
                        );
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} events were skipped because the client read too slowly; GetStatus and ListRuns give the current state"
                            ))))
                            .await;
                        break;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                use pb::agent_event::Event as E;
                let event = match ev.event {
                    Event::Configuration(o) => E::Configuration(convert::reload(&o)),
                    Event::SchemaChanged(s) => E::SchemaChanged(convert::schema_state(&s)),
                    Event::Run(r) => E::Run(convert::run(&r)),
                };
                if tx
                    .send(Ok(pb::AgentEvent {
                        at: Some(convert::ts(ev.at)),
                        event: Some(event),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        done("WatchEvents", &caller, Ok(ReceiverStream::new(out)))
    }
}

impl AgentServiceImpl {
    async fn test(
        &self,
        q: &pb::TestConnectionRequest,
    ) -> Result<pb::TestConnectionResponse, Status> {
        use crate::invoke::{CandidateError, LookupError};
        let id = required("identifier", &q.identifier)?;
        let snapshot = self.rt.snapshot();
        let target = crate::invoke::candidate_target(
            &snapshot,
            id,
            &q.settings,
            self.rt.shutdown.child_token(),
        )
        .map_err(|e| match e {
            CandidateError::Lookup(l @ LookupError::NotFound { .. }) => {
                Status::not_found(l.to_string())
            }
            CandidateError::Value(m) => Status::invalid_argument(m),
            other => Status::failed_precondition(other.to_string()),
        })?;
        match target.test().await {
            Ok(report) => Ok(pb::TestConnectionResponse {
                checks: report.checks,
            }),
            Err(e) => {
                let msg = format!("connection {}: {}", target.cref.identifier, e.message);
                Err(match e.class {
                    FailureClass::Config => Status::failed_precondition(msg),
                    FailureClass::Source => Status::unavailable(msg),
                    FailureClass::System | FailureClass::Cancelled => Status::internal(msg),
                })
            }
        }
    }

    /// Streams a published connection table (opened and checked by `export::published`).
    async fn read_table(
        &self,
        q: pb::ReadConnectionTableRequest,
    ) -> Result<Stream<pb::TableChunk>, Status> {
        use crate::export::published::{self, OpenError};
        let name = required("file", &q.file)?.to_string();
        let chunk = match q.chunk_size {
            0 => 64 * 1024,
            n if n <= 1024 * 1024 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "chunk_size {n} is over the maximum of 1048576"
                )));
            }
        };
        let snapshot = self.rt.snapshot();
        let table = tokio::task::spawn_blocking(move || published::open(&snapshot, &name))
            .await
            .map_err(|e| Status::internal(format!("opening the table stopped: {e}")))?
            .map_err(|e| match e {
                OpenError::BadName(_) => Status::invalid_argument(e.to_string()),
                OpenError::NoConnection(..) | OpenError::NotPublished(_) => {
                    Status::not_found(e.to_string())
                }
                OpenError::OtherAgent(_) | OpenError::NotRegular { .. } => {
                    Status::failed_precondition(e.to_string())
                }
                OpenError::Changed(_) => Status::aborted(e.to_string()),
                OpenError::Io(..) => Status::internal(e.to_string()),
            })?;
        let start = q.offset;
        if start > table.size {
            return Err(Status::out_of_range(format!(
                "offset {start} is past the end of {} ({} bytes)",
                table.file_name, table.size
            )));
        }
        let (tx, out) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let published::PublishedTable {
                file_name,
                mut file,
                size,
                sha256,
            } = table;
            let send = |m: Result<pb::TableChunk, Status>| tx.blocking_send(m).is_ok();
            // A resumed download starts where the client's bytes end.
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
                send(Err(Status::internal(format!(
                    "cannot read {file_name}: {e}"
                ))));
                return;
            }
            let mut buf = vec![0u8; chunk];
            let mut offset = start;
            let mut first = true;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        send(Err(Status::internal(format!(
                            "cannot read {file_name}: {e}"
                        ))));
                        return;
                    }
                };
                if n == 0 && !first {
                    break;
                }
                let msg = pb::TableChunk {
                    file: if first {
                        file_name.clone()
                    } else {
                        String::new()
                    },
                    size: if first { size } else { 0 },
                    sha256: if first { sha256.clone() } else { String::new() },
                    offset,
                    data: buf[..n].to_vec(),
                };
                first = false;
                offset += n as u64;
                if !send(Ok(msg)) || n == 0 {
                    break;
                }
            }
        });
        Ok(ReceiverStream::new(out))
    }
}
