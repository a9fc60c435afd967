//! Identity and references: identifiers declared twice, agents, tasks and job steps that name
//! what is not declared, and mappings resolved to their connections.

use super::*;

pub(super) fn loc_origin(loc: &Location) -> Option<Origin> {
    Some(Origin::File(loc.clone()))
}

/// Reports the second and later uses of an identifier, naming the first place.
pub(super) fn check_duplicates<'a>(
    kind: &str,
    items: impl Iterator<Item = (&'a Ident, &'a Location)>,
    d: &mut Diagnostics,
) {
    let mut seen: HashMap<&Ident, &Location> = HashMap::new();
    for (id, loc) in items {
        if let Some(first) = seen.get(id) {
            d.push(
                Diagnostic::error(
                    loc_origin(loc),
                    format!("{kind} {id} is declared twice; identifiers are compared without case, and it was first declared at {first}"),
                )
                .hint(format!("rename or remove one of the two {kind} declarations")),
            );
        } else {
            seen.insert(id, loc);
        }
    }
}

/// Every identifier is declared once per kind (compared without case).
pub(super) fn check_identities(declared: &Declared<'_>, conn_ids: &[Ident], d: &mut Diagnostics) {
    check_duplicates(
        "agent",
        declared.agents.iter().map(|a| (&a.identifier, &a.loc)),
        d,
    );
    check_duplicates(
        "connector",
        declared.connectors.iter().map(|c| (&c.identifier, &c.loc)),
        d,
    );
    check_duplicates(
        "connection",
        conn_ids
            .iter()
            .zip(declared.connections.iter().map(|c| &c.0.loc)),
        d,
    );
    check_duplicates(
        "task",
        declared
            .tasks
            .iter()
            .map(|t| (&t.identifier, &t.loc))
            .chain(declared.other_tasks.iter().map(|t| (&t.identifier, &t.loc))),
        d,
    );
    check_duplicates(
        "job",
        declared.jobs.iter().map(|(j, _)| (&j.identifier, &j.loc)),
        d,
    );
    check_duplicates(
        "entity type mapping",
        declared.etms.iter().map(|m| (&m.identifier, &m.loc)),
        d,
    );
    check_duplicates(
        "entity association mapping",
        declared.eams.iter().map(|m| (&m.identifier, &m.loc)),
        d,
    );
}

/// Connectors name this agent or a declared one.
pub(super) fn check_connector_agents(declared: &Declared<'_>, agent: &Ident, d: &mut Diagnostics) {
    let agent_known =
        |id: &Ident| id == agent || declared.agents.iter().any(|a| &a.identifier == id);
    for c in &declared.connectors {
        if let Some(a) = &c.agent
            && !agent_known(a)
        {
            d.push(
                Diagnostic::warning(loc_origin(&c.loc), format!("connector {} names agent {a}, which is neither this agent ({agent}) nor declared with <Agent>", c.identifier))
                    .hint(format!("if this agent should serve it, set Agent=\"{agent}\" or Agent:Identifier in the settings")),
            );
        }
    }
}

/// Export tasks name a declared connection (served here when the task is) and a known agent.
pub(super) fn check_tasks(
    declared: &Declared<'_>,
    connections: &[Connection],
    agent: &Ident,
    d: &mut Diagnostics,
) {
    let agent_known =
        |id: &Ident| id == agent || declared.agents.iter().any(|a| &a.identifier == id);
    for t in &declared.tasks {
        match connections.iter().find(|c| c.identifier == t.connection) {
            None => d.push(
                Diagnostic::error(
                    loc_origin(&t.loc),
                    format!("export task {} names connection {}, which is not declared", t.identifier, t.connection),
                )
                .hint("declare the <Connection> or correct the task's Connection attribute"),
            ),
            Some(c) if t.served && !c.served => d.push(
                Diagnostic::warning(
                    loc_origin(&t.loc),
                    format!("export task {} runs on this agent but connection {} belongs to a connector served by another agent", t.identifier, c.identifier),
                )
                .hint("make the task's Agent and the connector's Agent the same"),
            ),
            Some(_) => {}
        }
        if !agent_known(&t.agent) {
            d.push(
                Diagnostic::warning(
                    loc_origin(&t.loc),
                    format!("export task {} names agent {}, which is neither this agent ({agent}) nor declared with <Agent>", t.identifier, t.agent),
                )
                .hint(format!("set Agent=\"{agent}\" for this agent to run the task")),
            );
        }
    }
}

/// Job steps name declared tasks (of any kind); `TaskDependsOnTask` names a declared task, and
/// one that is a step of every job that runs the dependent task (else the dependent task never
/// runs in that job: a warning says so).
pub(super) fn check_jobs(declared: &Declared<'_>, d: &mut Diagnostics) {
    let declared_task = |id: &Ident| {
        declared.tasks.iter().any(|t| &t.identifier == id)
            || declared.other_tasks.iter().any(|t| &t.identifier == id)
    };
    for (job, steps) in &declared.jobs {
        for (step, loc) in steps {
            if !declared_task(&step.task) {
                d.push(
                    Diagnostic::error(
                        loc_origin(loc),
                        format!(
                            "job {} has a step for task {}, which is not declared",
                            job.identifier, step.task
                        ),
                    )
                    .hint("declare the task (with that Identifier) or correct the step"),
                );
            }
        }
    }
    let dependencies = declared
        .tasks
        .iter()
        .map(|t| (&t.identifier, &t.depends_on, &t.loc))
        .chain(
            declared
                .other_tasks
                .iter()
                .map(|t| (&t.identifier, &t.depends_on, &t.loc)),
        );
    for (task, parents, loc) in dependencies {
        for parent in parents {
            if !declared_task(parent) {
                d.push(
                    Diagnostic::error(
                        loc_origin(loc),
                        format!("task {task} depends on task {parent}, which is not declared"),
                    )
                    .hint("correct ParentTask in <TaskDependsOnTask>, or declare that task"),
                );
                continue;
            }
            for (job, steps) in &declared.jobs {
                let has = |id: &Ident| steps.iter().any(|(s, _)| &s.task == id);
                if has(task) && !has(parent) {
                    d.push(
                        Diagnostic::warning(
                            loc_origin(loc),
                            format!(
                                "task {task} depends on task {parent}, which is not a step of job {}: the job never runs {task}",
                                job.identifier
                            ),
                        )
                        .hint(format!("add a step for {parent} before it, or remove the dependency")),
                    );
                }
            }
        }
    }
}

/// Mappings: their connector is declared and their connection table belongs to a connection.
pub(super) fn resolve_mappings(
    declared: &mut Declared<'_>,
    conn_ids: &[Ident],
    d: &mut Diagnostics,
) {
    let connectors = declared.connectors.clone();
    // Mappings: connector and connection table must resolve.
    let resolve_table = |table: &str| -> Option<Ident> {
        let name = crate::table_name::TableName::parse(table)?;
        conn_ids.iter().find(|c| name.belongs_to(c)).cloned()
    };
    let check_mapping = |kind: &str,
                         id: &Ident,
                         connector: Option<&Ident>,
                         table: Option<&String>,
                         loc: &Location,
                         d: &mut Diagnostics|
     -> Option<Ident> {
        if let Some(c) = connector
            && !connectors.iter().any(|k| &k.identifier == c)
        {
            d.push(
                Diagnostic::error(
                    loc_origin(loc),
                    format!("{kind} {id} names connector {c}, which is not declared"),
                )
                .hint("declare the <Connector> or correct the mapping's Connector attribute"),
            );
        }
        let table = table?;
        match resolve_table(table) {
            Some(conn) => Some(conn),
            None => {
                // The mapping is the server's business (a connection of another agent's files,
                // or one not declared yet): it does not stop this agent's configuration.
                d.push(
                    Diagnostic::warning(
                        loc_origin(loc),
                        format!("{kind} {id} reads ConnectionTable {table:?}, which belongs to no declared connection"),
                    )
                    .hint("connection tables are named <Connection> or <Connection>_<table>; correct ConnectionTable or declare the connection"),
                );
                None
            }
        }
    };
    for m in &mut declared.etms {
        m.connection = check_mapping(
            "entity type mapping",
            &m.identifier,
            m.connector.as_ref(),
            m.connection_table.as_ref(),
            &m.loc,
            d,
        );
    }
    for m in &mut declared.eams {
        m.connection = check_mapping(
            "entity association mapping",
            &m.identifier,
            Some(&m.connector),
            m.connection_table.as_ref(),
            &m.loc,
            d,
        );
    }
}
