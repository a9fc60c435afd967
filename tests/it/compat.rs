//! Configurations written the way the Netwrix Identity Manager (Usercube) documentation shows
//! them (`../shared/COMPAT.md`) run unchanged, through the binary.

use crate::support::agent::*;
use crate::support::*;
use connagent::grpc::proto as pb;
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "compat-token-canary-77d2";

/// A documented complete job: an export declared inside the job, then the agent's prepare-sync
/// and the server's synchronization; a job with steps written without Level; a dependency; a
/// server job (no Agent).
fn jobs_workspace() -> Workspace {
    let mut ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n");
    ws.write("in/sites.csv", "code\nFR\n");
    ws.settings(json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [{"Name": "test", "Sha256": sha(TOKEN), "Role": "admin"}]},
        "Shutdown": {"GraceSeconds": 1},
        "Connections": {
            "People": {"Path": "in/people.csv"},
            "Sites": {"Path": "in/sites.csv"},
            "Missing": {"Path": "in/missing.csv"}
        }
    }));
    ws.xml(
        "a.xml",
        &format!(
            "{}
<Connection Identifier=\"People\" DisplayName_L1=\"People\" Connector=\"HR\" Package=\"Usercube.CSV@0000001\"/>
<Connection Identifier=\"Sites\" DisplayName_L1=\"Sites\" Connector=\"HR\" Package=\"Usercube.CSV@0000001\"/>
<Connection Identifier=\"Missing\" DisplayName_L1=\"Missing\" Connector=\"HR\" Package=\"Usercube.CSV@0000001\"/>
<Job Identifier=\"HR_Complete\" DisplayName_L1=\"HR complete\" Agent=\"Local\" CronTabExpression=\"*/2 * * * * *\">
  <ExportTask Identifier=\"HR_ExportPeople\" DisplayName_L1=\"export\" OpenIdClient=\"Job\" Connection=\"People\" IgnoreCookieFile=\"true\"/>
  <PrepareSynchronizationTask Identifier=\"HR_Prepare\" DisplayName_L1=\"prepare\" Agent=\"Local\" OpenIdClient=\"Job\" Connector=\"HR\" SynchronizationMode=\"Complete\"/>
  <SynchronizeTask Identifier=\"HR_Synchronize\" DisplayName_L1=\"synchronize\" Connector=\"HR\"/>
</Job>
<ExportTask Identifier=\"ExportMissing\" DisplayName_L1=\"m\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Missing\" IgnoreCookieFile=\"true\"/>
<ExportTask Identifier=\"ExportMissingWarn\" DisplayName_L1=\"m\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Missing\" ContinueOnError=\"true\" IgnoreCookieFile=\"true\"/>
<ExportTask Identifier=\"ExportSites\" DisplayName_L1=\"s\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Sites\" IgnoreCookieFile=\"true\"/>
<ExportTask Identifier=\"ExportSitesAfterWarn\" DisplayName_L1=\"s\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Sites\" IgnoreCookieFile=\"true\">
  <TaskDependsOnTask ParentTask=\"ExportMissingWarn\"/>
</ExportTask>
<Job Identifier=\"InOrder\" DisplayName_L1=\"in order\" Agent=\"Local\" CronTabExpression=\"*/2 * * * * *\">
  <Step Identifier=\"ExportMissing\"/>
  <Step Identifier=\"ExportSites\"/>
</Job>
<Job Identifier=\"Depends\" DisplayName_L1=\"depends\" Agent=\"Local\" CronTabExpression=\"*/2 * * * * *\">
  <Step Identifier=\"ExportMissingWarn\"/>
  <Step Identifier=\"ExportSitesAfterWarn\"/>
</Job>
<Job Identifier=\"ServerJob\" DisplayName_L1=\"the server's\" CronTabExpression=\"*/2 * * * * *\">
  <Step Identifier=\"ExportSites\"/>
</Job>
<Job Identifier=\"Quarterly\" DisplayName_L1=\"five fields\" Agent=\"Local\" CronTabExpression=\"*/15 * * * *\">
  <Step Identifier=\"ExportSites\"/>
</Job>",
            connector_xml()
        ),
    );
    ws.env.push(("RUST_LOG".into(), "connagent=debug".into()));
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_jobs_run_as_documented() {
    let ws = jobs_workspace();
    // validate accepts it and lists what this agent does not run.
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(
        v.stdout.contains("other tasks: 2 not run by this agent: HR_Prepare (PrepareSynchronizationTask), HR_Synchronize (SynchronizeTask)"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("not scheduled here: ServerJob"),
        "{}",
        v.stdout
    );
    // A task declared inside a job is a task of its own.
    let e = ws.run(&["export", "--task", "HR_ExportPeople"]);
    assert_eq!(e.code, 0, "{}", e.all());
    std::fs::remove_file(ws.output_file("People.csv")).unwrap();

    let agent = Proc::start(ws.command(&["--json", "run"]));
    let mut c = client(&agent.addr()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = c
            .list_runs(auth(pb::ListRunsRequest::default(), TOKEN))
            .await
            .unwrap()
            .into_inner()
            .runs;
        let by = |job: &str| {
            runs.iter()
                .filter(|r| r.started_by == format!("scheduler:{job}"))
                .count()
        };
        // Each job fired at least twice.
        if by("HR_Complete") >= 2 && by("InOrder") >= 2 && by("Depends") >= 2 {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs did not fire: {runs:?}\n{}",
            agent.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, log) = agent.stop();
    let of = |job: &str| -> Vec<&pb::RunInfo> {
        runs.iter()
            .filter(|r| r.started_by == format!("scheduler:{job}"))
            .collect()
    };
    // The export inside the job ran; the other steps were logged and skipped, in order.
    assert!(
        of("HR_Complete")
            .iter()
            .all(|r| r.task == "HR_ExportPeople" && r.state == pb::RunState::Succeeded as i32)
    );
    assert!(
        log.contains("not run by this agent: PrepareSynchronizationTask"),
        "{log}"
    );
    assert!(
        log.contains("not run by this agent: SynchronizeTask"),
        "{log}"
    );
    assert!(ws.output_file("People.csv").exists());
    // Steps without Level run one after the other: the failure of the first stops the job.
    assert!(
        of("InOrder")
            .iter()
            .all(|r| r.task == "ExportMissing" && r.state == pb::RunState::Failed as i32),
        "{:?}",
        of("InOrder")
    );
    // A task whose parent failed (ContinueOnError) in the run does not run.
    assert!(
        of("Depends").iter().all(|r| r.task == "ExportMissingWarn"),
        "{:?}",
        of("Depends")
    );
    assert!(
        log.contains("task not run: the task it depends on did not succeed in this job run"),
        "{log}"
    );
    // The server's job is not scheduled here. (The five-field job is accepted; when it fires is
    // checked by the parser's own test: minute first.)
    assert_eq!(of("ServerJob").len(), 0);
}

#[test]
fn a_dependency_on_a_task_outside_the_job_is_said() {
    let ws = jobs_workspace();
    ws.xml(
        "b.xml",
        "<Job Identifier=\"Lonely\" DisplayName_L1=\"l\" Agent=\"Local\"><Step Identifier=\"ExportSitesAfterWarn\"/></Job>",
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(
        v.stderr.contains("task ExportSitesAfterWarn depends on task ExportMissingWarn, which is not a step of job Lonely: the job never runs ExportSitesAfterWarn"),
        "{}",
        v.stderr
    );
    ws.xml(
        "b.xml",
        "<ExportTask Identifier=\"Orphan\" DisplayName_L1=\"o\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Sites\"><TaskDependsOnTask ParentTask=\"Ghost\"/></ExportTask>",
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(
        v.stderr
            .contains("b.xml:3:1: error: task Orphan depends on task Ghost, which is not declared"),
        "{}",
        v.stderr
    );
}

#[test]
fn postgres_accepts_the_documented_read_uncommitted() {
    let pg = crate::support::pg::Pg::start();
    let password = "pg-compat-canary-3b";
    pg.sql("postgres", "CREATE DATABASE hr");
    pg.sql(
        "postgres",
        &format!("CREATE ROLE agent LOGIN PASSWORD '{password}'"),
    );
    pg.sql(
        "hr",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); GRANT SELECT ON t TO agent;",
    );
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {"Pg": {
        "ConnectionString": pg.url("agent", password, "hr"),
        "SqlCommand": "SELECT id FROM t ORDER BY id",
        "IsolationLevel": "ReadUncommitted"
    }}}));
    ws.xml("c.xml", &format!("{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"Usercube.SQL.PostgreSQL@0000001\"/>", connector_xml()));
    let out = ws.run(&["export", "--connection", "Pg", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        python_csv(&ws.output_file("Pg.csv")),
        vec![vec!["id"], vec!["1"], vec!["2"]]
    );
    // Npgsql's own spellings: the port in Host, DB, PSW.
    ws.settings(json!({"Connections": {"Pg": {
        "ConnectionString": format!("Host=127.0.0.1:{};DB=hr;Username=agent;PSW={password};SSL Mode=Disable", pg.port),
        "SqlCommand": "SELECT id FROM t ORDER BY id",
        "ProviderClassFullName": "Npgsql.NpgsqlFactory",
        "ProviderDllName": "Npgsql.dll"
    }}}));
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(
        !v.stderr.contains("Provider"),
        "accepted silently: {}",
        v.stderr
    );
    let out = ws.run(&["export", "--connection", "Pg", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(password));
    let shown = ws.run(&["connections", "--show-settings"]);
    assert!(!shown.all().contains(password), "{}", shown.all());
}

#[test]
fn a_connection_table_of_no_declared_connection_is_a_warning() {
    let ws = Workspace::new();
    ws.settings(json!({}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<EntityAssociationMapping Identifier=\"A\" Connector=\"HR\" ConnectionTable=\"Ghost_member\" Column1=\"a\" Column2=\"b\"/>",
            connector_xml()
        ),
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(
        v.stderr.contains("c.xml:5:1: warning: entity association mapping A reads ConnectionTable \"Ghost_member\", which belongs to no declared connection"),
        "{}",
        v.stderr
    );
}

#[test]
fn an_identifier_too_long_for_a_file_name_is_refused_at_validation() {
    let ws = Workspace::new();
    let id = format!("L{}", "o".repeat(249));
    ws.write("in/p.csv", "id\n1\n");
    ws.settings(json!({"Connections": {id.clone(): {"Path": "in/p.csv"}}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"{id}\" DisplayName_L1=\"long\" Connector=\"HR\" Package=\"Csv\"/>",
            connector_xml()
        ),
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(
        v.stderr
            .contains("connection identifier is 250 characters long")
            && v.stderr.contains("over the file system's limit of 255")
            && v.stderr.contains("at most 243 characters"),
        "{}",
        v.stderr
    );
    // 243 characters: the longest name is exactly 255 bytes, and the export works.
    let id = format!("L{}", "o".repeat(242));
    ws.settings(json!({"Connections": {id.clone(): {"Path": "in/p.csv"}}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"{id}\" DisplayName_L1=\"long\" Connector=\"HR\" Package=\"Csv\"/>",
            connector_xml()
        ),
    );
    let out = ws.run(&["export", "--connection", &id, "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(ws.output_file(&format!("{id}.csv")).exists());
}

/// The .NET configuration reader takes comments and trailing commas, so the Netwrix agent's
/// settings files may hold them.
#[test]
fn settings_files_with_comments_and_trailing_commas() {
    let ws = Workspace::new();
    ws.write("in/people.csv", "id\n1\n");
    let secret = "jsonc-canary-pw";
    let original = format!(
        "// the agent's settings
{{
  /* connections */
  \"Connections\": {{
    \"People\": {{ \"Path\": \"in/people.csv\", }}, // a CSV drop
    \"Mssql\": {{
      \"ConnectionString\": \"Server=db;User ID=agent;Password={secret}\",
      \"SqlCommand\": \"SELECT 1 -- not a // comment\",
    }},
  }},
}}
"
    );
    std::fs::write(ws.settings_path(), &original).unwrap();
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>\n<Connection Identifier=\"Mssql\" DisplayName_L1=\"m\" Connector=\"HR\" Package=\"SqlServer\"/>",
            connector_xml()
        ),
    );
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    // Positions stay true: the plain-text warning points at the connection string's line.
    assert!(
        v.stderr.contains("appsettings.agent.json:7:7: warning: Connections:Mssql:ConnectionString holds a secret in plain text"),
        "{}",
        v.stderr
    );
    let shown = ws.run(&["connections", "--show-settings", "--json"]);
    assert!(
        shown.stdout.contains("SELECT 1 -- not a // comment"),
        "{}",
        shown.stdout
    );
    assert!(!shown.all().contains(secret));
    assert_eq!(
        ws.run(&["export", "--connection", "People", "--complete"])
            .code,
        0
    );
    // protect --all keeps the comments and blanks the secret in place.
    assert_eq!(ws.run(&["keygen"]).code, 0);
    let out = ws.run(&["protect", "--all"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let now = std::fs::read_to_string(ws.settings_path()).unwrap();
    assert_eq!(
        now,
        original.replace(
            &format!("\"Server=db;User ID=agent;Password={secret}\""),
            "\"\""
        )
    );
    assert!(files_containing(&ws.path(""), secret).is_empty());
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
}
