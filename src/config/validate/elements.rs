//! The XML elements read into declarations (agents, connectors, connections, mappings, tasks,
//! jobs), each element's attributes checked as it is read; elements the agent does not use are
//! counted for `validate`'s summary.

use super::*;

/// A `<Connection>` as declared, before its settings are built: the element, identifier,
/// connector, package name, deactivation, transformations and display name.
pub(super) type RawConnection<'a> = (
    &'a RawElement,
    &'a str,
    &'a str,
    &'a str,
    Deactivation,
    Vec<Transformation>,
    String,
);

/// Everything the XML declares, as read.
#[derive(Default)]
pub(super) struct Declared<'a> {
    pub(super) agents: Vec<AgentDecl>,
    pub(super) connectors: Vec<Connector>,
    pub(super) connections: Vec<RawConnection<'a>>,
    pub(super) etms: Vec<EntityTypeMapping>,
    pub(super) eams: Vec<EntityAssociationMapping>,
    pub(super) tasks: Vec<ExportTask>,
    pub(super) other_tasks: Vec<OtherTask>,
    pub(super) jobs: Vec<(Job, Vec<(JobStep, Location)>)>,
    pub(super) skipped: BTreeMap<String, usize>,
}

/// Reads every element of the XML configuration (this agent is `agent`).
pub(super) fn read_elements<'a>(
    elements: &'a [RawElement],
    registry: &Registry,
    agent: &Ident,
    d: &mut Diagnostics,
) -> Declared<'a> {
    let mut out = Declared::default();
    for el in elements {
        match el.name.as_str() {
            "Agent" => read_agent(el, &mut out, d),
            "Connector" => read_connector(el, &mut out, d),
            "Connection" => read_connection(el, &mut out, d, registry),
            "EntityTypeMapping" => read_entity_type_mapping(el, &mut out, d),
            "EntityAssociationMapping" => read_association_mapping(el, &mut out, d),
            "Job" => read_job(el, &mut out, d, agent),
            name if is_task(name) => {
                read_task(el, &mut out, d, agent, None);
            }
            other => *out.skipped.entry(other.to_string()).or_default() += 1,
        }
    }
    out
}

/// `<Agent>`.
fn read_agent<'a>(el: &'a RawElement, out: &mut Declared<'a>, d: &mut Diagnostics) {
    count_unknown_children(el, &[], &mut out.skipped);
    let a = Attrs::new(el, AGENT_ATTRS);
    if let Some(id) = a.required("Identifier", "the agent's identifier", d) {
        out.agents.push(AgentDecl {
            identifier: Ident::new(id),
            display_name: a.display_name(id),
            uri: a.get("URI").map(str::to_string),
            loc: el.loc.clone(),
        });
    }
    a.finish(d);
}

/// `<Connector>`.
fn read_connector<'a>(el: &'a RawElement, out: &mut Declared<'a>, d: &mut Diagnostics) {
    count_unknown_children(el, &[], &mut out.skipped);
    let a = Attrs::new(el, CONNECTOR_ATTRS);
    let is_deactivated = a.boolean("IsDeactivated", false, d);
    if let Some(id) = a.required("Identifier", "the connector's identifier", d) {
        out.connectors.push(Connector {
            identifier: Ident::new(id),
            display_name: a.display_name(id),
            agent: a.get("Agent").filter(|s| !s.is_empty()).map(Ident::new),
            is_deactivated,
            loc: el.loc.clone(),
        });
    }
    a.finish(d);
}

/// The longest file name a file system takes (Linux NAME_MAX: ext4, XFS, Btrfs), and the longest
/// suffix the agent adds to a connection's identifier (`<id>.csv.partial`).
const NAME_MAX: usize = 255;
const LONGEST_SUFFIX: &str = ".csv.partial";

/// `<Connection>`.
fn read_connection<'a>(
    el: &'a RawElement,
    out: &mut Declared<'a>,
    d: &mut Diagnostics,
    registry: &Registry,
) {
    let a = Attrs::new(el, CONNECTION_ATTRS);
    let id = a.required("Identifier", "the connection's identifier", d);
    let connector = a.required(
        "Connector",
        "the identifier of the connector it belongs to",
        d,
    );
    let package = a.required("Package", &format!("one of: {}", registry.known_names()), d);
    let deactivation = match a.get("DeactivationExportFulfill") {
        None => Deactivation::None,
        Some(v) if v.eq_ignore_ascii_case("None") || v == "0" => Deactivation::None,
        Some(v) if v.eq_ignore_ascii_case("Export") || v == "1" => Deactivation::Export,
        Some(v) if v.eq_ignore_ascii_case("Fulfill") || v == "2" => Deactivation::Fulfill,
        Some(v) => {
            d.push(
                Diagnostic::error(
                    a.origin_of("DeactivationExportFulfill"),
                    format!("DeactivationExportFulfill=\"{v}\" is not a known value"),
                )
                .hint("use None, Export or Fulfill"),
            );
            Deactivation::None
        }
    };
    if let Some(id) = id
        && let Err(e) = check_connection_identifier(id)
    {
        d.push(
            Diagnostic::error(a.origin_of("Identifier"), format!("connection {e}"))
                .hint("start with a letter and use only letters, digits, '.' and '-'"),
        );
    } else if let Some(id) = id
        && id.len() + LONGEST_SUFFIX.len() > NAME_MAX
    {
        // Allowed by the identifier rule (442 characters), but no file system takes the name.
        d.push(
            Diagnostic::error(
                a.origin_of("Identifier"),
                format!(
                    "connection identifier is {} characters long: its connection table {id:.20}...{LONGEST_SUFFIX} would be a file name of {} bytes, over the file system's limit of {NAME_MAX}",
                    id.len(),
                    id.len() + LONGEST_SUFFIX.len()
                ),
            )
            .hint(format!(
                "use an identifier of at most {} characters",
                NAME_MAX - LONGEST_SUFFIX.len()
            )),
        );
    }
    let mut transformations = Vec::new();
    for child in &el.children {
        if child.name == "Transformation" {
            let t = Attrs::new(child, TRANSFORMATION_ATTRS);
            check_transformation(&t, id, d);
            transformations.push(Transformation {
                attributes: child
                    .attrs
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                loc: child.loc.clone(),
            });
            t.finish(d);
        } else {
            *out.skipped
                .entry(format!("Connection/{}", child.name))
                .or_default() += 1;
        }
    }
    if let (Some(id), Some(connector), Some(package)) = (id, connector, package) {
        out.connections.push((
            el,
            id,
            connector,
            package,
            deactivation,
            transformations,
            a.display_name(id),
        ));
    }
    a.finish(d);
}

/// `<EntityTypeMapping>`.
fn read_entity_type_mapping<'a>(el: &'a RawElement, out: &mut Declared<'a>, d: &mut Diagnostics) {
    let a = Attrs::new(el, ETM_ATTRS).with(MAPPING_THRESHOLDS);
    let mut properties = Vec::new();
    count_unknown_children(el, &["Property"], &mut out.skipped);
    for child in el.children.iter().filter(|c| c.name == "Property") {
        let p = Attrs::new(child, PROPERTY_ATTRS);
        if let Some(pid) = p.required("Identifier", "the entity property", d) {
            properties.push(MappingProperty {
                identifier: pid.to_string(),
                connection_column: p.get("ConnectionColumn").map(str::to_string),
                is_primary_key: p.boolean("IsPrimaryKey", false, d),
                is_unique_key: p.boolean("IsUniqueKey", false, d),
                format: p.get("Format").map(str::to_string),
            });
        }
        p.finish(d);
    }
    if let Some(id) = a.required("Identifier", "the entity type it maps", d) {
        out.etms.push(EntityTypeMapping {
            identifier: Ident::new(id),
            connector: a.get("Connector").filter(|s| !s.is_empty()).map(Ident::new),
            connection_table: a
                .get("ConnectionTable")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            connection: None,
            properties,
            loc: el.loc.clone(),
        });
    }
    a.finish(d);
}

/// `<EntityAssociationMapping>`.
fn read_association_mapping<'a>(el: &'a RawElement, out: &mut Declared<'a>, d: &mut Diagnostics) {
    count_unknown_children(el, &[], &mut out.skipped);
    let a = Attrs::new(el, EAM_ATTRS).with(MAPPING_THRESHOLDS);
    let id = a.required("Identifier", "the entity association it maps", d);
    let connector = a.required("Connector", "the connector that holds the association", d);
    let c1 = a.required("Column1", "the column holding the first end's key", d);
    let c2 = a.required("Column2", "the column holding the second end's key", d);
    if let (Some(id), Some(connector), Some(c1), Some(c2)) = (id, connector, c1, c2) {
        out.eams.push(EntityAssociationMapping {
            identifier: Ident::new(id),
            connector: Ident::new(connector),
            connection_table: a
                .get("ConnectionTable")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            connection: None,
            column1: c1.to_string(),
            column2: c2.to_string(),
            loc: el.loc.clone(),
        });
    }
    a.finish(d);
}

/// Whether an element declares a task: `ExportTask`, and every other `...Task` element of the
/// documented agent and server tasks (`PrepareSynchronizationTask`, `SynchronizeTask`, ...).
/// `TaskDependsOnTask` is a child of a task, and `...TaskOverride` elements are not tasks.
fn is_task(name: &str) -> bool {
    name.ends_with("Task") && name != "TaskDependsOnTask"
}

/// `<TaskDependsOnTask ParentTask="..."/>` children of a task.
fn depends_on(el: &RawElement, d: &mut Diagnostics) -> Vec<Ident> {
    let mut out = Vec::new();
    for child in el.children.iter().filter(|c| c.name == "TaskDependsOnTask") {
        let a = Attrs::new(child, &["ParentTask"]);
        if let Some(parent) = a.required("ParentTask", "the task this one depends on", d) {
            out.push(Ident::new(parent));
        }
        a.finish(d);
    }
    out
}

/// A task element (top level, or a child of `<Job>` whose agent it inherits when it names
/// none). Returns its identifier.
fn read_task<'a>(
    el: &'a RawElement,
    out: &mut Declared<'a>,
    d: &mut Diagnostics,
    agent: &Ident,
    job_agent: Option<&str>,
) -> Option<Ident> {
    if el.name == "ExportTask" {
        return read_export_task(el, out, d, agent, job_agent);
    }
    // Another kind: only what a job needs to name it and to place it.
    let value = |name: &str| {
        el.attr(name)
            .map(|a| a.value.as_str())
            .filter(|s| !s.trim().is_empty())
    };
    let identifier = value("Identifier")
        .map(Ident::new)
        .unwrap_or_else(|| Ident::new(format!("{}@{}", el.name, el.loc)));
    let task_agent = value("Agent").or(job_agent).map(Ident::new);
    out.other_tasks.push(OtherTask {
        identifier: identifier.clone(),
        kind: el.name.clone(),
        agent: task_agent,
        depends_on: depends_on(el, d),
        loc: el.loc.clone(),
    });
    Some(identifier)
}

/// `<ExportTask>`.
fn read_export_task<'a>(
    el: &'a RawElement,
    out: &mut Declared<'a>,
    d: &mut Diagnostics,
    agent: &Ident,
    job_agent: Option<&str>,
) -> Option<Ident> {
    count_unknown_children(el, &["TaskDependsOnTask"], &mut out.skipped);
    let a = Attrs::new(el, EXPORT_TASK_ATTRS);
    let task_agent = match (a.get("Agent").filter(|s| !s.is_empty()), job_agent) {
        (Some(x), _) => Some(x),
        (None, Some(j)) => Some(j),
        (None, None) => a.required("Agent", "the agent that runs the task", d),
    };
    let connection = a.required("Connection", "the connection to export", d);
    let continue_on_error = a.boolean("ContinueOnError", false, d);
    let ignore_cookie_file = a.boolean("IgnoreCookieFile", false, d);
    a.boolean("InitMode", false, d);
    let parents = depends_on(el, d);
    let identifier = a
        .get("Identifier")
        .filter(|s| !s.is_empty())
        .map(Ident::new)
        .unwrap_or_else(|| Ident::new(format!("ExportTask@{}", el.loc)));
    let read = if let (Some(task_agent), Some(connection)) = (task_agent, connection) {
        out.tasks.push(ExportTask {
            display_name: a.display_name(identifier.as_str()),
            identifier: identifier.clone(),
            agent: Ident::new(task_agent),
            connection: Ident::new(connection),
            continue_on_error,
            ignore_cookie_file,
            served: Ident::new(task_agent) == *agent,
            depends_on: parents,
            loc: el.loc.clone(),
        });
        Some(identifier)
    } else {
        None
    };
    a.finish(d);
    read
}

/// `<Job>`: its `<Step>`s, and the tasks declared as its children (tasks of their own, and the
/// job's steps in document order).
fn read_job<'a>(el: &'a RawElement, out: &mut Declared<'a>, d: &mut Diagnostics, agent: &Ident) {
    let a = Attrs::new(el, JOB_ATTRS);
    let job_agent = a.get("Agent").filter(|s| !s.is_empty());
    let mut steps = Vec::new();
    for child in &el.children {
        if is_task(&child.name) {
            if let Some(task) = read_task(child, out, d, agent, job_agent) {
                steps.push((JobStep { task, level: None }, child.loc.clone()));
            }
            continue;
        }
        if child.name != "Step" {
            *out.skipped
                .entry(format!("Job/{}", child.name))
                .or_default() += 1;
            continue;
        }
        let s = Attrs::new(child, STEP_ATTRS);
        let task = s
            .get("Task")
            .or_else(|| s.get("Identifier"))
            .filter(|t| !t.is_empty());
        let level = match s.get("Level") {
            None => None,
            Some(v) => {
                match v.trim().parse() {
                    Ok(l) => Some(l),
                    Err(_) => {
                        d.push(
                        Diagnostic::error(
                            s.origin_of("Level"),
                            format!("Level=\"{v}\" is not a whole number"),
                        )
                        .hint("steps with the same Level run together; write Level=\"0\", \"1\", ..."),
                    );
                        None
                    }
                }
            }
        };
        match task {
            Some(t) => steps.push((
                JobStep {
                    task: Ident::new(t),
                    level,
                },
                child.loc.clone(),
            )),
            None => d.push(
                Diagnostic::error(child.origin(), "<Step> names no task")
                    .hint("add Task=\"<task identifier>\""),
            ),
        }
        s.finish(d);
    }
    let utc = match a.get("CronTimeZone") {
        None => true,
        Some(v) if v == "0" || v.eq_ignore_ascii_case("UTC") => true,
        Some(v)
            if v == "1"
                || v.eq_ignore_ascii_case("ServerTime")
                || v.eq_ignore_ascii_case("Local") =>
        {
            false
        }
        Some(v) => {
            d.push(
                Diagnostic::error(
                    a.origin_of("CronTimeZone"),
                    format!("CronTimeZone=\"{v}\" is not known"),
                )
                .hint("use 0 (UTC) or 1 (the server's local time)"),
            );
            true
        }
    };
    let schedule = a
        .get("CronTabExpression")
        .filter(|e| !e.is_empty())
        .and_then(|e| match parse_cron(e) {
            Ok(cron) => Some(CronSchedule {
                expression: e.to_string(),
                cron,
                utc,
            }),
            Err(err) => {
                d.push(
                    Diagnostic::error(
                        a.origin_of("CronTabExpression"),
                        format!("CronTabExpression=\"{e}\" is not a cron expression of five fields (minute first) or six (second first): {err}"),
                    )
                    .hint("write minute hour day-of-month month day-of-week, e.g. \"*/15 * * * *\" for every 15 minutes (or six fields, seconds first: \"0 */15 * * * *\")"),
                );
                None
            }
        });
    if let Some(id) = a.required("Identifier", "the job's identifier", d) {
        out.jobs.push((
            Job {
                identifier: Ident::new(id),
                display_name: a.display_name(id),
                agent: a.get("Agent").filter(|s| !s.is_empty()).map(Ident::new),
                schedule,
                steps: steps.iter().map(|(s, _)| s.clone()).collect(),
                loc: el.loc.clone(),
            },
            steps,
        ));
    }
    a.finish(d);
}

/// A cron expression: five fields (minute first, as crontab and the connector pages write them)
/// or six (second first, as NCRONTAB and the job page write them).
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// Counts children that the agent does not read, as `Parent/Child`, for `validate`'s summary.
pub(super) fn count_unknown_children(
    el: &RawElement,
    known: &[&str],
    skipped: &mut BTreeMap<String, usize>,
) {
    for c in el
        .children
        .iter()
        .filter(|c| !known.contains(&c.name.as_str()))
    {
        *skipped
            .entry(format!("{}/{}", el.name, c.name))
            .or_default() += 1;
    }
}

pub(super) fn check_transformation(t: &Attrs, connection: Option<&str>, d: &mut Diagnostics) {
    const TYPES: &[&str] = &["ConcatColumns", "TransformDate", "WhereValue"];
    const OPERATORS: &[&str] = &[
        "Equals",
        "NotEquals",
        "Contains",
        "NotContains",
        "StartsWith",
        "EndsWith",
        "Regex",
    ];
    match t.get("Type") {
        Some(v) if TYPES.contains(&v) => {}
        Some(v) => d.push(
            Diagnostic::error(
                t.origin_of("Type"),
                format!("Transformation Type=\"{v}\" is not known"),
            )
            .hint(format!("use one of {}", TYPES.join(", "))),
        ),
        None => d.push(
            Diagnostic::error(t.el.origin(), "<Transformation> has no Type attribute")
                .hint(format!("add Type=\"...\", one of {}", TYPES.join(", "))),
        ),
    }
    if let Some(op) = t.get("WhereOperator")
        && !OPERATORS.contains(&op)
    {
        d.push(
            Diagnostic::error(
                t.origin_of("WhereOperator"),
                format!("WhereOperator=\"{op}\" is not known"),
            )
            .hint(format!("use one of {}", OPERATORS.join(", "))),
        );
    }
    if let (Some(table), Some(conn)) = (t.get("Table"), connection) {
        let ok = crate::table_name::TableName::parse(table)
            .is_some_and(|n| n.table().is_some() && n.belongs_to(&Ident::new(conn)));
        if !ok {
            d.push(
                Diagnostic::error(
                    t.origin_of("Table"),
                    format!("Transformation Table=\"{table}\" is not a table of connection {conn}"),
                )
                .hint(format!("write Table=\"{conn}_<dataset>\"")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cron;
    use chrono::TimeZone;

    #[test]
    fn five_fields_are_minute_first_and_six_second_first() {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 2, 10, 7, 30)
            .unwrap();
        let next = |e: &str| {
            parse_cron(e)
                .unwrap()
                .find_next_occurrence(&at, false)
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(next("*/15 * * * *"), "2026-12-02T10:15:00+00:00");
        assert_eq!(next("0 */15 * * * *"), "2026-12-02T10:15:00+00:00");
        assert_eq!(next("*/2 * * * * *"), "2026-12-02T10:07:32+00:00");
        assert_eq!(next("30 2 * * *"), "2026-12-03T02:30:00+00:00");
        assert!(parse_cron("0 0 * *").is_err());
        assert!(parse_cron("0 0 0 * * * 2027").is_err());
    }
}
