//! `connagent run` through the binary: hot reload of every kind of file change, rejected edits,
//! restart-required settings, the systemd notify protocol, graceful and hard stops, the scheduler,
//! and the unit file.

use crate::support::agent::*;
use crate::support::*;
use connagent::grpc::proto as pb;
use serde_json::{Value, json};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "daemon-token-canary-4a1c";

fn workspace() -> Workspace {
    let mut ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n");
    let db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(db);
    ws.settings(settings());
    ws.xml("a.xml", &format!(
        "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"People v1\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"Slow\" DisplayName_L1=\"Endless\" Connector=\"HR\" Package=\"Sqlite\"/>
<ExportTask Identifier=\"ExportPeople\" DisplayName_L1=\"p\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"People\" IgnoreCookieFile=\"true\"/>",
        connector_xml()
    ));
    ws.xml("extra.xml", "<Connection Identifier=\"Extra\" DisplayName_L1=\"Extra v1\" Connector=\"HR\" Package=\"Csv\"/>");
    ws.env.push(("RUST_LOG".into(), "connagent=debug".into()));
    ws
}

fn settings() -> Value {
    json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [{"Name": "test", "Sha256": sha(TOKEN), "Role": "admin"}]},
        "Shutdown": {"GraceSeconds": 1},
        "Reload": {"PollSeconds": 3600},
        "Connections": {
            "People": {"Path": "in/people.csv"},
            "Extra": {"Path": "in/people.csv"},
            "Slow": {"ConnectionString": "Data Source=hr.db",
                     "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"}
        }
    })
}

fn run(ws: &Workspace) -> Proc {
    Proc::start(ws.command(&["--json", "run"]))
}

async fn status(c: &mut Client) -> pb::AgentStatus {
    c.get_status(auth(pb::GetStatusRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner()
}

async fn display_name(c: &mut Client, id: &str) -> Option<String> {
    let l = c
        .list_connections(auth(pb::ListConnectionsRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    l.connections
        .into_iter()
        .find(|x| x.identifier == id)
        .map(|x| x.display_name)
}

/// Waits until the status satisfies `pred` (a bounded wait; nothing is asserted about speed).
async fn wait_status(
    c: &mut Client,
    what: &str,
    pred: impl Fn(&pb::AgentStatus) -> bool,
) -> pb::AgentStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(c).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that one change gives exactly one reload: the generation goes up by one and stays.
async fn expect_one_reload(c: &mut Client, from: u64, what: &str) {
    wait_status(c, what, |s| s.configuration_generation > from).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(c).await;
    assert_eq!(
        s.configuration_generation,
        from + 1,
        "{what}: applied more than once"
    );
    assert!(s.last_reload.unwrap().applied, "{what}");
}

fn replace_by_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_file_change_is_applied_once() {
    let ws = workspace();
    // The settings file is a symbolic link, as configuration is mounted in containers.
    let real = ws.path("conf-v1/appsettings.agent.json");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::rename(ws.settings_path(), &real).unwrap();
    std::os::unix::fs::symlink(&real, ws.settings_path()).unwrap();
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let mut g = status(&mut c).await.configuration_generation;
    assert_eq!(g, 1);
    let extra = ws.path("xml-config/extra.xml");
    let xml = |v: &str| {
        format!(
            "<ConfigurationFile><Connection Identifier=\"Extra\" DisplayName_L1=\"Extra {v}\" Connector=\"HR\" Package=\"Csv\"/></ConfigurationFile>"
        )
    };

    // 1. An XML file edited in place.
    std::fs::write(&extra, xml("v2")).unwrap();
    expect_one_reload(&mut c, g, "in-place XML edit").await;
    g += 1;
    assert_eq!(
        display_name(&mut c, "Extra").await.as_deref(),
        Some("Extra v2")
    );
    // 2. Saved the way editors do: a new file renamed over the old one.
    replace_by_rename(&extra, &xml("v3"));
    expect_one_reload(&mut c, g, "rename-save of an XML file").await;
    g += 1;
    assert_eq!(
        display_name(&mut c, "Extra").await.as_deref(),
        Some("Extra v3")
    );
    // 3. Deleted, then created again.
    std::fs::remove_file(&extra).unwrap();
    expect_one_reload(&mut c, g, "XML file deleted").await;
    g += 1;
    assert_eq!(display_name(&mut c, "Extra").await, None);
    std::fs::write(&extra, xml("v4")).unwrap();
    expect_one_reload(&mut c, g, "XML file recreated").await;
    g += 1;
    assert_eq!(
        display_name(&mut c, "Extra").await.as_deref(),
        Some("Extra v4")
    );
    // 4. The settings file: its link swapped to another target.
    let mut s = settings();
    s["Connections"]["Extra"]["Separator"] = json!(";");
    let v2 = ws.path("conf-v2/appsettings.agent.json");
    std::fs::create_dir_all(v2.parent().unwrap()).unwrap();
    std::fs::write(&v2, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    let link_tmp = ws.path("appsettings.agent.json.new");
    std::os::unix::fs::symlink(&v2, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, ws.settings_path()).unwrap();
    expect_one_reload(&mut c, g, "symbolic-link swap of the settings file").await;
    g += 1;
    let d = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "Extra".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.settings
            .iter()
            .find(|x| x.name == "Separator")
            .unwrap()
            .value,
        ";"
    );
    // 5. The settings file replaced by rename, then edited in place.
    s["Connections"]["Extra"]["Separator"] = json!("|");
    std::fs::remove_file(ws.settings_path()).unwrap();
    std::fs::copy(&v2, ws.settings_path()).unwrap();
    replace_by_rename(
        &ws.settings_path(),
        &serde_json::to_string_pretty(&s).unwrap(),
    );
    expect_one_reload(&mut c, g, "settings file replaced").await;
    g += 1;
    s["Connections"]["Extra"]["Separator"] = json!("\t");
    std::fs::write(
        ws.settings_path(),
        serde_json::to_string_pretty(&s).unwrap(),
    )
    .unwrap();
    expect_one_reload(&mut c, g, "settings file edited in place").await;
    g += 1;
    // 6. The target of the settings file's link edited in place.
    let target = ws.path("conf-v3/appsettings.agent.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    std::fs::remove_file(ws.settings_path()).unwrap();
    std::os::unix::fs::symlink(&target, ws.settings_path()).unwrap();
    // Same content: nothing to apply. Let the watcher settle on the new link first.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        status(&mut c).await.configuration_generation,
        g,
        "an unchanged configuration was applied again"
    );
    s["Connections"]["Extra"]["Separator"] = json!(",");
    std::fs::write(&target, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    expect_one_reload(&mut c, g, "in-place edit of the link's target").await;
    g += 1;
    // 7. The settings file deleted (rejected: the configuration in force stays), then recreated.
    std::fs::remove_file(ws.settings_path()).unwrap();
    let st = wait_status(&mut c, "deleted settings rejected", |st| {
        !st.last_reload.as_ref().unwrap().applied
    })
    .await;
    assert_eq!(st.configuration_generation, g);
    assert!(st.last_reload.unwrap().errors[0].contains("cannot read the settings file"));
    std::fs::write(
        ws.settings_path(),
        serde_json::to_string_pretty(&s).unwrap(),
    )
    .unwrap();
    expect_one_reload(&mut c, g, "settings file recreated").await;
    g += 1;
    // 8. The XML folder swapped by a link, the way container configuration is mounted.
    let v2 = ws.path("xml-v2");
    std::fs::create_dir_all(&v2).unwrap();
    for f in ["a.xml", "extra.xml"] {
        std::fs::copy(ws.path("xml-config").join(f), v2.join(f)).unwrap();
    }
    std::fs::write(v2.join("extra.xml"), xml("v5")).unwrap();
    let mut s2 = s.clone();
    s2["XmlConfigurationPath"] = json!("current");
    std::os::unix::fs::symlink(ws.path("xml-config"), ws.path("current")).unwrap();
    std::fs::write(
        ws.settings_path(),
        serde_json::to_string_pretty(&s2).unwrap(),
    )
    .unwrap();
    expect_one_reload(&mut c, g, "XML folder moved behind a link").await;
    g += 1;
    std::os::unix::fs::symlink(&v2, ws.path("current.new")).unwrap();
    std::fs::rename(ws.path("current.new"), ws.path("current")).unwrap();
    expect_one_reload(&mut c, g, "symbolic-link swap of the XML folder").await;
    g += 1;
    assert_eq!(
        display_name(&mut c, "Extra").await.as_deref(),
        Some("Extra v5")
    );
    // 9. SIGHUP reloads too (nothing changed: the same configuration is applied again).
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    expect_one_reload(&mut c, g, "SIGHUP").await;
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_edits_are_rejected_and_the_old_configuration_stays() {
    let ws = workspace();
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let mut watch = c
        .watch_events(auth(pb::WatchEventsRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    // A broken XML file.
    std::fs::write(
        ws.path("xml-config/extra.xml"),
        "<ConfigurationFile><Connection Identifier=\"Extra\"",
    )
    .unwrap();
    let s = wait_status(&mut c, "a rejected reload", |s| {
        !s.last_reload.as_ref().unwrap().applied
    })
    .await;
    assert_eq!(s.configuration_generation, 1);
    let errors = s.last_reload.unwrap().errors;
    assert!(errors[0].contains("extra.xml:1:"), "{errors:?}");
    assert!(errors[0].contains("not well-formed"), "{errors:?}");
    assert_eq!(
        display_name(&mut c, "Extra").await.as_deref(),
        Some("Extra v1"),
        "the old configuration is still served"
    );
    // (Schema events from the discovery at start may come first.)
    let o = loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::agent_event::Event::Configuration(o)) = ev.event {
            break o;
        }
    };
    assert!(!o.applied);
    assert!(o.errors[0].contains("not well-formed"), "{:?}", o.errors);
    // Removing a connection that an export task still uses: rejected, naming the task.
    std::fs::write(ws.path("xml-config/extra.xml"), "<ConfigurationFile/>").unwrap();
    wait_status(&mut c, "the fixed file applied", |s| {
        s.configuration_generation == 2
    })
    .await;
    let a = std::fs::read_to_string(ws.path("xml-config/a.xml")).unwrap();
    std::fs::write(ws.path("xml-config/a.xml"), a.replace("<Connection Identifier=\"People\" DisplayName_L1=\"People v1\" Connector=\"HR\" Package=\"Csv\"/>", "")).unwrap();
    let s = wait_status(&mut c, "removal rejected", |s| {
        !s.last_reload.as_ref().unwrap().applied
    })
    .await;
    let errors = s.last_reload.unwrap().errors;
    assert!(
        errors[0].contains("connection People would be removed or renamed, but export task ExportPeople still uses it"),
        "{errors:?}"
    );
    assert_eq!(s.configuration_generation, 2);
    assert!(display_name(&mut c, "People").await.is_some());
    // The same for a connection that only a mapping uses (one file holding both).
    std::fs::write(ws.path("xml-config/a.xml"), a.clone()).unwrap();
    let g = wait_status(&mut c, "a.xml restored", |s| {
        s.configuration_generation >= 3 && s.last_reload.as_ref().unwrap().applied
    })
    .await
    .configuration_generation;
    std::fs::write(
        ws.path("xml-config/extra.xml"),
        "<ConfigurationFile><Connection Identifier=\"Extra\" DisplayName_L1=\"e\" Connector=\"HR\" Package=\"Csv\"/>
<EntityTypeMapping Identifier=\"E\" Connector=\"HR\" ConnectionTable=\"Extra_x\"/></ConfigurationFile>",
    )
    .unwrap();
    let g = wait_status(&mut c, "mapping added", |s| s.configuration_generation > g)
        .await
        .configuration_generation;
    std::fs::write(ws.path("xml-config/extra.xml"), "<ConfigurationFile><EntityTypeMapping Identifier=\"E\" Connector=\"HR\" ConnectionTable=\"Extra_x\"/></ConfigurationFile>").unwrap();
    let s = wait_status(&mut c, "removal rejected", |s| {
        !s.last_reload.as_ref().unwrap().applied
    })
    .await;
    assert_eq!(s.configuration_generation, g);
    let errors = s.last_reload.unwrap().errors;
    assert!(
        errors[0].contains(
            "connection Extra would be removed or renamed, but entity type mapping E still uses it"
        ),
        "{errors:?}"
    );
    // A setting that needs a restart: applied, and reported as such.
    let mut st = settings();
    st["Grpc"]["Listen"] = json!("127.0.0.1:1");
    st["TempFolderPath"] = json!("Elsewhere");
    ws.settings(st);
    std::fs::write(ws.path("xml-config/extra.xml"), "<ConfigurationFile/>").unwrap();
    let s = wait_status(&mut c, "restart required", |s| {
        s.configuration_generation > g
            && !s.last_reload.as_ref().unwrap().restart_required.is_empty()
    })
    .await;
    let r = s.last_reload.unwrap().restart_required;
    assert!(
        r.iter()
            .any(|x| x.starts_with("Grpc:Listen changed: restart the agent")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|x| x.starts_with("TempFolderPath changed")),
        "{r:?}"
    );
    // Still listening where it was.
    status(&mut c).await;
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    assert!(
        stderr.contains("configuration rejected; the previous one stays in force"),
        "{stderr}"
    );
}

/// A datagram socket standing in for systemd's notify socket.
fn notify_socket(ws: &Workspace) -> (UnixDatagram, std::path::PathBuf) {
    let path = ws.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (sock, path)
}

fn next_message(sock: &UnixDatagram, pred: impl Fn(&str) -> bool) -> String {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("a notification");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if pred(&m) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_notify_protocol_in_order() {
    let mut ws = workspace();
    let (sock, path) = notify_socket(&ws);
    ws.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    ws.env.push(("WATCHDOG_USEC".into(), "400000".into()));
    let agent = run(&ws);
    let ready = next_message(&sock, |m| m.contains("READY=1"));
    assert!(
        ready.contains("STATUS=3 connections served, 0 runs in progress, configuration 1 applied"),
        "{ready}"
    );
    let wd = next_message(&sock, |m| m.contains("WATCHDOG=1"));
    assert!(wd.contains("STATUS="), "{wd}");
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    let reloading = next_message(&sock, |m| m.contains("RELOADING=1"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready2 = next_message(&sock, |m| m.contains("READY=1"));
    assert!(ready2.contains("configuration 2 applied"), "{ready2}");
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let stopping = next_message(&sock, |m| m.contains("STOPPING=1"));
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
    let mut agent = agent;
    assert_eq!(agent.child.wait().unwrap().code(), Some(0));
    // A rejected reload shows in the status line.
    let agent = run(&ws);
    next_message(&sock, |m| m.contains("READY=1"));
    std::fs::write(ws.path("xml-config/extra.xml"), "<nope").unwrap();
    let rejected = next_message(&sock, |m| m.contains("READY=1") && m.contains("REJECTED"));
    assert!(rejected.contains("last reload REJECTED"), "{rejected}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_export_cancels_after_the_grace_period() {
    let ws = workspace();
    ws.write("Temp/ExportOutput/Slow.csv", "previous\n");
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let mut s = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                mode: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let run_id = s.message().await.unwrap().unwrap().run_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Slow.csv.partial").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("grace period over: cancelling"), "{stderr}");
    assert_eq!(ws.output_names(), ["Slow.csv"]);
    assert_eq!(
        std::fs::read_to_string(ws.output_file("Slow.csv")).unwrap(),
        "previous\n"
    );
    let rec: Value = serde_json::from_slice(
        &std::fs::read(ws.path(&format!("Work/Runs/{run_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_an_export_then_restart() {
    let ws = workspace();
    let mut agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let mut s = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                mode: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let run_id = s.message().await.unwrap().unwrap().run_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Slow.csv.partial").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert!(
        ws.output_file("Slow.csv.partial").exists(),
        "the crash left a partial file"
    );
    drop(agent);
    let agent = run(&ws);
    assert!(
        ws.output_names().is_empty(),
        "the partial file was not removed at start: {:?}",
        ws.output_names()
    );
    let mut c = client(&agent.addr()).await;
    let r = c
        .get_run(auth(pb::GetRunRequest { run_id }, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::RunState::Failed as i32);
    assert!(r.error.contains("interrupted"), "{}", r.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_jobs_fire_and_levels_stop_on_failure() {
    let ws = workspace();
    ws.xml("jobs.xml", "<ExportTask Identifier=\"Broken\" DisplayName_L1=\"b\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Extra\" IgnoreCookieFile=\"true\"/>
<Job Identifier=\"EveryTwoSeconds\" DisplayName_L1=\"j\" Agent=\"Local\" CronTabExpression=\"*/2 * * * * *\">
  <Step Task=\"ExportPeople\" Level=\"0\"/>
</Job>
<Job Identifier=\"Stops\" DisplayName_L1=\"s\" Agent=\"Local\" CronTabExpression=\"*/3 * * * * *\" CronTimeZone=\"1\">
  <Step Task=\"Broken\" Level=\"0\"/>
  <Step Task=\"ExportPeople\" Level=\"1\"/>
</Job>");
    let mut s = settings();
    s["Connections"]["Extra"] = json!({"Path": "in/missing.csv"});
    ws.settings(s);
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = c
            .list_runs(auth(pb::ListRunsRequest::default(), TOKEN))
            .await
            .unwrap()
            .into_inner()
            .runs;
        let by_job = runs
            .iter()
            .filter(|r| {
                r.started_by == "scheduler:EveryTwoSeconds"
                    && r.state == pb::RunState::Succeeded as i32
            })
            .count();
        let broken = runs
            .iter()
            .filter(|r| r.started_by == "scheduler:Stops")
            .count();
        if by_job >= 2 && broken >= 1 {
            break runs;
        }
        assert!(Instant::now() < deadline, "the jobs did not fire: {runs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The failing level 0 of "Stops" kept its level 1 from running.
    let stops: Vec<&pb::RunInfo> = runs
        .iter()
        .filter(|r| r.started_by == "scheduler:Stops")
        .collect();
    assert!(
        stops
            .iter()
            .all(|r| r.task == "Broken" && r.state == pb::RunState::Failed as i32),
        "{stops:?}"
    );
    let (_, stderr) = agent.stop();
    assert!(
        stderr.contains("job stopped after a failed task"),
        "{stderr}"
    );
    assert!(ws.output_file("People.csv").exists());
}

#[test]
fn bad_cron_expression_is_a_configuration_error() {
    let ws = workspace();
    ws.xml("jobs.xml", "<Job Identifier=\"J\" DisplayName_L1=\"j\" CronTabExpression=\"0 0 * *\" CronTimeZone=\"Mars\"/>");
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains("jobs.xml:3:40: error: CronTabExpression=\"0 0 * *\" is not a cron expression of five fields (minute first) or six (second first)"), "{}", out.stderr);
    assert!(
        out.stderr.contains("CronTimeZone=\"Mars\" is not known"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let analyze =
        which("systemd-analyze").expect("systemd-analyze is needed: apt-get install systemd");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/connagent.service"),
    )
    .unwrap();
    for must in [
        "Type=notify",
        "ExecStartPre=/usr/local/bin/connagent validate",
        "ExecReload=/usr/local/bin/connagent validate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "UMask=0077",
        "LimitCORE=0",
    ] {
        assert!(unit.contains(must), "the unit lacks {must}");
    }
    // verify checks that the binaries exist: point them at the one built for the tests.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connagent.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/connagent", BIN)).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    assert!(
        !text.contains("connagent.service:"),
        "systemd-analyze reported problems:\n{text}"
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_ends_within_the_grace_period_is_published_and_json_logs() {
    let ws = workspace();
    let mut s = settings();
    s["Shutdown"]["GraceSeconds"] = json!(120);
    s["Logging"] = json!({"Format": "json", "Level": "info"});
    s["Connections"]["Slow"]["SqlCommand"] = json!(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1500000) SELECT x FROM n"
    );
    ws.settings(s);
    let mut ws = ws;
    ws.env.retain(|(k, _)| k != "RUST_LOG");
    ws.log_override = None;
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let before = c
        .list_connections(auth(pb::ListConnectionsRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    let first_seen = before
        .connections
        .iter()
        .find(|x| x.identifier == "People")
        .unwrap()
        .first_seen;
    let mut st = c
        .run_export(auth(
            pb::RunExportRequest {
                target: Some(pb::run_export_request::Target::Connection("Slow".into())),
                mode: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    st.message().await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.output_file("Slow.csv.partial").exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
    // The run finished within the grace period: published whole.
    assert_eq!(ws.output_names(), ["Slow.csv"]);
    let lines = std::fs::read_to_string(ws.output_file("Slow.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 1_500_001);
    // Logging:Format=json: every log line is a JSON object, without colour codes.
    let log_lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!log_lines.is_empty());
    for l in &log_lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string(), "{l}");
        // Logging:Level=info: nothing below info.
        assert!(
            matches!(v["level"].as_str(), Some("INFO" | "WARN" | "ERROR")),
            "{l}"
        );
        assert!(!l.contains('\u{1b}'), "colour codes: {l}");
    }
    // First-seen survives a restart.
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let after = c
        .list_connections(auth(pb::ListConnectionsRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after
            .connections
            .iter()
            .find(|x| x.identifier == "People")
            .unwrap()
            .first_seen,
        first_seen
    );
    let cli = ws.run(&["connections", "--json"]).json();
    let people = cli["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["identifier"] == "People")
        .unwrap()
        .clone();
    assert!(
        people["first_seen"].is_string() && people["last_modified"].is_string(),
        "{people}"
    );
}

/// A daemon whose stdout and stderr readers are gone (its parent died, the journal restarted)
/// still stops on SIGTERM: writing to a closed stream must not panic the stop sequence.
#[test]
fn sigterm_stops_the_agent_after_its_output_streams_closed() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let ws = workspace();
    let mut child = ws
        .command(&["--json", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("listening"), "{first}");
    // Both readers go away (the stdout reader went with the BufReader above).
    drop(child.stderr.take());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not stop within 60 s of SIGTERM once its output was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// The encrypted overlay is part of the watched configuration: `protect` while the daemon runs
/// is applied once, like any other edit.
#[tokio::test(flavor = "multi_thread")]
async fn a_protected_value_is_applied_once_by_the_running_daemon() {
    use std::io::Write;
    let ws = workspace();
    ws.write("in/other.csv", "id,name\n9,Zed\n");
    assert_eq!(ws.run(&["keygen"]).code, 0);
    let agent = run(&ws);
    let mut c = client(&agent.addr()).await;
    let g = status(&mut c).await.configuration_generation;
    let mut child = ws
        .command(&["protect", "Connections:People:Path"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"in/other.csv\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    expect_one_reload(&mut c, g, "protect").await;
    let d = c
        .get_connection(auth(
            pb::GetConnectionRequest {
                identifier: "People".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // Applied, and, coming from the encrypted overlay, named by its origin, never shown.
    let path = d.settings.iter().find(|s| s.name == "Path").unwrap();
    assert!(
        path.value
            .starts_with("(from encrypted setting Connections:People:Path"),
        "{}",
        path.value
    );
    assert!(!path.value.contains("other.csv"), "{}", path.value);
}
