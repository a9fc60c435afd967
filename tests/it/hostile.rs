//! Hostile input and faults, through the binary: configuration files that are deep, huge, not
//! files at all, or full of references to secrets; CSV drops that are cut or corrupt; signals at
//! any moment; sources that freeze, stall or close the connection. Each case: a clear message
//! naming the place, a non-zero exit, nothing lost, no panic, no hang, no secret printed (the
//! harness searches every output for "canary"), and the daemon keeps serving.

use crate::support::agent::*;
use crate::support::*;
use connagent::grpc::proto as pb;
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "hostile-token-canary-2f8e";

fn deep_xml(depth: usize) -> String {
    format!(
        "<ConfigurationFile>\n{}{}</ConfigurationFile>\n",
        "<Unknown>".repeat(depth),
        "</Unknown>".repeat(depth)
    )
}

fn csv_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("in/people.csv", "id,name\n1,Ann\n");
    ws.settings(json!({"Connections": {"People": {"Path": "in/people.csv"}}}));
    ws.xml(
        "a.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>",
            connector_xml()
        ),
    );
    ws
}

fn make_fifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every diagnostic line of `validate` has the `file:line:col: error|warning: ` shape (or is a
/// `fix:` line, or the summary): nothing spills onto lines of its own.
fn assert_diagnostic_shape(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let ok = line.starts_with("  fix: ")
            || line.starts_with("configuration invalid")
            || line.contains(": error: ")
            || line.contains(": warning: ");
        assert!(
            ok,
            "a line outside the diagnostic shape: {line:?}\n{stderr}"
        );
    }
}

#[test]
fn deep_xml_and_json_are_refused_with_their_place() {
    let ws = csv_workspace();
    for depth in [4_000, 50_000] {
        ws.write("xml-config/deep.xml", deep_xml(depth));
        let out = ws.run(&["validate"]);
        assert_eq!(out.code, 78, "depth {depth}: {}", out.all());
        assert!(
            out.stderr.contains("deep.xml:2:")
                && out
                    .stderr
                    .contains("elements are nested more than 64 levels deep"),
            "{}",
            out.stderr
        );
    }
    std::fs::remove_file(ws.path("xml-config/deep.xml")).unwrap();
    // 100,000 '[' in the settings file: refused at its place by the JSON reader.
    let settings = std::fs::read_to_string(ws.settings_path()).unwrap();
    ws.write(
        "appsettings.agent.json",
        format!(
            "{{\"Deep\": {}{}, \"Connections\": {{\"People\": {{\"Path\": \"in/people.csv\"}}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains("appsettings.agent.json:1:")
            && out.stderr.contains("recursion limit exceeded"),
        "{}",
        out.stderr
    );
    ws.write("appsettings.agent.json", &settings);
    // An environment override naming 40,000 nested sections.
    let mut ws = ws;
    ws.env.push((
        format!("CONNAGENT__{}", "A__".repeat(40_000) + "B"),
        "x".into(),
    ));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("the variable names 40001 nested sections; settings are at most 16 deep"),
        "{}",
        out.stderr
    );
}

#[test]
fn files_that_are_not_files_or_too_large_are_refused_without_blocking() {
    let ws = csv_workspace();
    // A FIFO named like an XML file: refused at once (it used to block validate forever).
    make_fifo(&ws.path("xml-config/pipe.xml"));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains(
            "pipe.xml: error: cannot read the XML configuration file: it is a FIFO (named pipe), not a regular file"
        ),
        "{}",
        out.stderr
    );
    std::fs::remove_file(ws.path("xml-config/pipe.xml")).unwrap();
    // An XML file that is a link to /dev/zero (it used to grow the process to gigabytes).
    std::os::unix::fs::symlink("/dev/zero", ws.path("xml-config/zero.xml")).unwrap();
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("zero.xml: error: cannot read the XML configuration file: it is a character device, not a regular file"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(ws.path("xml-config/zero.xml")).unwrap();
    // A huge XML file: refused by size, unread.
    let big = std::fs::File::create(ws.path("xml-config/big.xml")).unwrap();
    big.set_len(65 * 1024 * 1024).unwrap();
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains(
            "big.xml: error: cannot read the XML configuration file: it is larger than 64 MiB, the most the agent reads for an XML configuration file"
        ),
        "{}",
        out.stderr
    );
    std::fs::remove_file(ws.path("xml-config/big.xml")).unwrap();
    // ${file:} targets: a device, a FIFO, a file over 1 MiB.
    make_fifo(&ws.path("secret.fifo"));
    ws.write("huge.txt", vec![b'x'; 2 * 1024 * 1024]);
    for (target, says) in [
        ("/dev/zero", "it is a character device, not a regular file"),
        (
            "secret.fifo",
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            "huge.txt",
            "it is larger than 1 MiB, the most the agent reads for a file holding one value",
        ),
    ] {
        ws.settings(json!({"Connections": {"People": {"Path": "in/people.csv", "Separator": format!("${{file:{target}}}")}}}));
        let out = ws.run(&["validate"]);
        assert_eq!(out.code, 78, "{target}: {}", out.all());
        assert!(
            out.stderr
                .contains("Connections:People:Separator: cannot read the file of ${file:")
                && out.stderr.contains(says),
            "{target}: {}",
            out.stderr
        );
    }
    // The settings file itself as a FIFO.
    std::fs::remove_file(ws.settings_path()).unwrap();
    make_fifo(&ws.settings_path());
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains(
            "cannot read the settings file: it is a FIFO (named pipe), not a regular file"
        ),
        "{}",
        out.stderr
    );
    // A file-name pattern far longer than any file name, given through the environment.
    let mut ws2 = csv_workspace();
    ws2.settings(
        json!({"Connections": {"People": {"Path": "in/people.csv", "IsFileNameRegex": true}}}),
    );
    ws2.env.push((
        "CONNAGENT__Connections__People__Path".into(),
        format!("in/{}", "a".repeat(100_000)),
    ));
    let out = ws2.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("is not a usable regular expression: it is 100000 bytes long; file-name patterns are limited to 4096 bytes"),
        "{}",
        out.stderr
    );
}

#[test]
fn values_from_references_and_the_overlay_are_named_never_quoted() {
    let ws = csv_workspace();
    ws.write("secrets/pg.pass", "sep-canary-7d1e\n");
    ws.write("passwd", "root:x:0:0:canary-root:/root:/bin/bash\n");
    let mut ws = ws;
    ws.env
        .push(("LINES_CANARY".into(), "lines-canary-55ab".into()));
    ws.env.push(("ENC_CANARY".into(), "enc-canary-0c2d".into()));
    ws.settings(json!({
        "Connections": {"People": {
            "Path": "in/people.csv",
            "Separator": "${file:secrets/pg.pass}",
            "NumberOfLinesToSkip": "${env:LINES_CANARY}",
            "Encoding": "${env:ENC_CANARY}"
        }}
    }));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains(
            "Connections:People:NumberOfLinesToSkip: expected an integer, found the value of ${env:LINES_CANARY}"
        ),
        "{}",
        out.stderr
    );
    // The same through every command that loads the configuration.
    for args in [
        vec!["connections", "--show-settings"],
        vec!["export", "--all", "--complete"],
        vec!["test", "People"],
        vec!["validate", "--json"],
    ] {
        let o = ws.run(&args);
        assert_ne!(o.code, 0, "{args:?}: {}", o.all());
    }
    // A valid configuration whose values come from references: the listing names them.
    ws.write("secrets/sep", ";");
    ws.write("in/people.csv", "id;name\n1;Ann\n");
    ws.env.push(("ENC_OK".into(), "UTF-8".into()));
    ws.settings(json!({
        "Connections": {"People": {
            "Path": "in/people.csv",
            "Separator": "${file:secrets/sep}",
            "Encoding": "${env:ENC_OK}"
        }}
    }));
    let out = ws.run(&["connections", "--show-settings"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("(from ${file:secrets/sep})")
            && out.stdout.contains("(from ${env:ENC_OK})"),
        "{}",
        out.stdout
    );
    // A bad value behind a reference, caught by the package's own check: named, not quoted.
    ws.settings(json!({
        "Connections": {"People": {"Path": "in/people.csv", "Separator": "${file:secrets/pg.pass}"}}
    }));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("not the value of ${file:secrets/pg.pass}"),
        "{}",
        out.stderr
    );
    // A folder setting read from a file that holds anything at all: named by its reference.
    ws.settings(json!({"XmlConfigurationPath": "${file:passwd}"}));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("appsettings.agent.json:2:3: error: the XML configuration folder does not exist: the value of ${file:passwd}"),
        "{}",
        out.stderr
    );
}

#[test]
fn csv_input_that_would_lose_rows_fails_the_table_and_keeps_the_previous_file() {
    let ws = csv_workspace();
    assert_eq!(ws.run(&["export", "--all", "--complete"]).code, 0);
    let before = std::fs::read(ws.output_file("People.csv")).unwrap();
    for (content, says) in [
        (
            b"a,b\n1,2\n3,\"unterminated\n5,6\n7,8\n".to_vec(),
            "the quoted field that starts on line 3 is not closed at the end of the file",
        ),
        (
            b"a,b\n1,2\n3,4,5\n".to_vec(),
            "line 3 has 3 fields but the header line has 2: a value holding the separator must be quoted",
        ),
        (
            b"a,b\n1,2\n3\n".to_vec(),
            "line 3 has 1 field but the header line has 2: the line is cut short",
        ),
        (
            b"a,b\n1,2\n3,x\0y\n".to_vec(),
            "line 3 holds a NUL byte: the file is binary, or UTF-16 read as another encoding",
        ),
    ] {
        ws.write("in/people.csv", &content);
        let out = ws.run(&["export", "--all", "--complete"]);
        assert_eq!(out.code, 1, "{says}: {}", out.all());
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
        assert!(out.stderr.contains("failed (Source)"), "{}", out.stderr);
        assert_eq!(std::fs::read(ws.output_file("People.csv")).unwrap(), before);
        assert_eq!(ws.output_names(), ["People.csv"]);
    }
    // Quoted fields that are closed, with doubled quotes and line breaks inside: fine.
    ws.write("in/people.csv", "a,b\n1,\"x\"\"y\nz\"\n2,\"\"\n");
    let out = ws.run(&["export", "--all", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        python_csv(&ws.output_file("People.csv")),
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["1".to_string(), "x\"y\nz".to_string()],
            vec!["2".to_string(), String::new()],
        ]
    );
}

#[test]
fn messages_keep_their_shape_and_point_at_the_setting() {
    let ws = csv_workspace();
    // A regular expression error is one line.
    ws.settings(json!({"Connections": {"People": {"Path": "in/people_(\\d+.csv", "IsFileNameRegex": true}}}));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("the file name \"people_(\\\\d+.csv\" is not a usable regular expression: unclosed group (at character 8)"),
        "{}",
        out.stderr
    );
    assert_diagnostic_shape(&out.stderr);
    // WorkFolderPath and TempFolderPath naming a file: at the setting, with a fix that fits.
    ws.write("not-a-folder", "x");
    ws.settings(
        json!({"WorkFolderPath": "not-a-folder", "TempFolderPath": "not-a-folder",
        "Connections": {"People": {"Path": "in/people.csv"}}}),
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    for key in ["WorkFolderPath", "TempFolderPath"] {
        assert!(
            out.stderr.contains(&format!("{key} names "))
                && out.stderr.contains("which is a file, not a folder"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("fix: set {key} to a folder")),
            "{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("readable"), "{}", out.stderr);
    assert_diagnostic_shape(&out.stderr);
    // Grpc:Listen accepts localhost.
    ws.settings(json!({"Grpc": {"Listen": "localhost:0"},
        "Connections": {"People": {"Path": "in/people.csv"}}}));
    let agent = Proc::start(ws.command(&["--json", "serve"]));
    assert!(agent.addr().starts_with("127.0.0.1:"), "{}", agent.addr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_the_output_folder_is_named_for_what_it_is() {
    let ws = csv_workspace();
    ws.settings(json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [{"Name": "t", "Sha256": sha(TOKEN), "Role": "operator"}]},
        "Connections": {"People": {"Path": "in/people.csv"}}
    }));
    std::fs::create_dir_all(ws.path("Temp/ExportOutput")).unwrap();
    make_fifo(&ws.output_file("People_x.csv"));
    let agent = Proc::start(ws.command(&["--json", "serve"]));
    let mut c = client(&agent.addr()).await;
    let r = c
        .read_connection_table(auth(
            pb::ReadConnectionTableRequest {
                file: "People_x.csv".into(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await;
    let status = match r {
        Err(s) => s,
        Ok(s) => s.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("People_x.csv is a FIFO (named pipe), not a regular file"),
        "{}",
        status.message()
    );
}

/// The daemon meets each hostile file on a reload (file change and SIGHUP): it rejects it, says
/// why, keeps the configuration in force, and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_survives_every_hostile_file_on_reload() {
    let mut ws = csv_workspace();
    ws.settings(json!({
        "Grpc": {"Listen": "127.0.0.1:0", "Tokens": [{"Name": "t", "Sha256": sha(TOKEN), "Role": "admin"}]},
        "Reload": {"PollSeconds": 3600},
        "Connections": {"People": {"Path": "in/people.csv"}}
    }));
    ws.env.push(("RUST_LOG".into(), "connagent=info".into()));
    let good_settings = std::fs::read_to_string(ws.settings_path()).unwrap();
    let agent = Proc::start(ws.command(&["--json", "run"]));
    let pid = agent.child.id() as i32;
    let mut c = client(&agent.addr()).await;
    let status = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.get_status(auth(pb::GetStatusRequest {}, TOKEN))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let generation = status(&mut c).await.configuration_generation;
    assert_eq!(generation, 1);
    // Each case: install the hostile input, reload (by the watcher, then by SIGHUP), expect a
    // rejection holding `says`, then undo it.
    type Step = Box<dyn Fn(&Workspace)>;
    let cases: Vec<(&str, Step, Step, &str)> = vec![
        (
            "4,000 nested elements",
            Box::new(|ws| {
                ws.write("xml-config/deep.xml", deep_xml(4_000));
            }),
            Box::new(|ws| std::fs::remove_file(ws.path("xml-config/deep.xml")).unwrap()),
            "elements are nested more than 64 levels deep",
        ),
        (
            "50,000 nested elements",
            Box::new(|ws| {
                ws.write("xml-config/deep.xml", deep_xml(50_000));
            }),
            Box::new(|ws| std::fs::remove_file(ws.path("xml-config/deep.xml")).unwrap()),
            "elements are nested more than 64 levels deep",
        ),
        (
            "a FIFO named *.xml",
            Box::new(|ws| make_fifo(&ws.path("xml-config/pipe.xml"))),
            Box::new(|ws| std::fs::remove_file(ws.path("xml-config/pipe.xml")).unwrap()),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            "a link to /dev/zero named *.xml",
            Box::new(|ws| {
                std::os::unix::fs::symlink("/dev/zero", ws.path("xml-config/zero.xml")).unwrap()
            }),
            Box::new(|ws| std::fs::remove_file(ws.path("xml-config/zero.xml")).unwrap()),
            "it is a character device, not a regular file",
        ),
        (
            "100,000 nested arrays in the settings file",
            Box::new(|ws| {
                ws.write(
                    "appsettings.agent.json",
                    format!(
                        "{{\"Deep\": {}{}}}",
                        "[".repeat(100_000),
                        "]".repeat(100_000)
                    ),
                );
            }),
            Box::new(move |ws| {
                ws.write("appsettings.agent.json", &good_settings);
            }),
            "recursion limit exceeded",
        ),
    ];
    let mut generation = generation;
    for (name, install, undo, says) in &cases {
        install(&ws);
        // The time of the last rejection seen: each trigger must bring a new one.
        let mut seen: Option<prost_types::Timestamp> = None;
        for trigger in ["file change", "SIGHUP"] {
            if trigger == "SIGHUP" {
                unsafe { libc::kill(pid, libc::SIGHUP) };
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let s = status(&mut c).await;
                let r = s.last_reload.clone().unwrap_or_default();
                if !r.applied && r.errors.iter().any(|e| e.contains(says)) && r.at != seen {
                    assert_eq!(s.configuration_generation, generation, "{name}");
                    seen = r.at;
                    break;
                }
                assert!(
                    agent_alive(pid),
                    "{name} ({trigger}): the agent died: {}",
                    agent.stderr_text()
                );
                assert!(
                    Instant::now() < deadline,
                    "{name} ({trigger}): no rejection seen; last reload: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        undo(&ws);
        unsafe { libc::kill(pid, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status(&mut c).await;
            if s.configuration_generation > generation
                && s.last_reload.as_ref().is_some_and(|r| r.applied)
            {
                generation = s.configuration_generation;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not applied again after the undo"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}

fn agent_alive(pid: i32) -> bool {
    // Signal 0 checks that the process exists; a zombie (exited, not reaped) is dead too.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !stat.contains(") Z ")
}

// ---- signals on a command-line export

/// A SQLite connection whose export never ends (a recursive query), after a first export of a
/// small table that published `HRDb.csv`.
fn endless_sqlite() -> (Workspace, Vec<u8>) {
    let ws = Workspace::new();
    let db = rusqlite::Connection::open(ws.path("hr.db")).unwrap();
    db.execute_batch("CREATE TABLE a (v TEXT); INSERT INTO a VALUES ('kept');")
        .unwrap();
    drop(db);
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"HRDb\" DisplayName_L1=\"db\" Connector=\"HR\" Package=\"Sqlite\"/>",
            connector_xml()
        ),
    );
    ws.settings(json!({"Connections": {"HRDb": {"ConnectionString": "Data Source=hr.db", "SqlCommand": "SELECT v FROM a"}}}));
    assert_eq!(ws.run(&["export", "--all"]).code, 0);
    let before = std::fs::read(ws.output_file("HRDb.csv")).unwrap();
    ws.settings(json!({"Connections": {"HRDb": {"ConnectionString": "Data Source=hr.db",
        "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"}}}));
    (ws, before)
}

fn wait_for_partial(ws: &Workspace, name: &str, bytes: u64) {
    let partial = ws.output_file(&format!("{name}.partial"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(
            Instant::now() < deadline,
            "the export never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child (at most a minute: a hang fails the test) and returns its output.
fn finish(child: std::process::Child) -> std::process::Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.unwrap();
            assert_no_canary("an export's output", &String::from_utf8_lossy(&out.stderr));
            assert_no_canary("an export's output", &String::from_utf8_lossy(&out.stdout));
            out
        }
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the export did not end within a minute");
        }
    }
}

#[test]
fn sigterm_sighup_and_sigquit_cancel_an_export_like_ctrl_c() {
    use std::os::unix::process::ExitStatusExt;
    let (ws, before) = endless_sqlite();
    for (signal, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGHUP, "SIGHUP", 129),
        (libc::SIGQUIT, "SIGQUIT", 131),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let child = ws
            .command(&["export", "--all"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_partial(&ws, "HRDb.csv", 100_000);
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = finish(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), None, "{name}: killed by the signal");
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted ({name})")),
            "{stderr}"
        );
        assert!(stderr.contains("failed (Cancelled)"), "{stderr}");
        assert_eq!(ws.output_names(), ["HRDb.csv"], "{name}");
        assert_eq!(std::fs::read(ws.output_file("HRDb.csv")).unwrap(), before);
    }
}

/// A signal sent the moment the process starts is never lost: the export is either cancelled
/// (exit 128+N) or the process ends by the signal before it did anything; it never publishes.
#[test]
fn an_early_signal_is_never_lost() {
    use std::os::unix::process::ExitStatusExt;
    let (ws, before) = endless_sqlite();
    // A query that ends, so that a lost signal would show as a published file.
    ws.settings(json!({"Connections": {"HRDb": {"ConnectionString": "Data Source=hr.db",
        "SqlCommand": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) SELECT x FROM n"}}}));
    for trial in 0..40 {
        let (signal, code) = if trial % 2 == 0 {
            (libc::SIGINT, 130)
        } else {
            (libc::SIGTERM, 143)
        };
        let child = ws
            .command(&["export", "--all"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // After a delay that sweeps the start-up: 0 to ~20 ms.
        std::thread::sleep(Duration::from_micros(500 * (trial as u64 % 40)));
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = finish(child);
        let by_signal = out.status.signal() == Some(signal);
        assert!(
            by_signal || out.status.code() == Some(code),
            "trial {trial}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(ws.output_file("HRDb.csv")).unwrap() == before,
            "trial {trial}: the export published despite the signal: {:?}",
            out.status
        );
        assert_eq!(ws.output_names(), ["HRDb.csv"], "trial {trial}");
    }
}

// ---- sources that freeze, stall or close the connection

const PG_PASSWORD: &str = "pg-hostile-canary-3c7a";

fn pg_workspace(pg: &crate::support::pg::Pg, port: u16, extra: serde_json::Value) -> Workspace {
    pg.sql("postgres", "CREATE DATABASE hr");
    pg.sql(
        "postgres",
        &format!("CREATE ROLE agent LOGIN PASSWORD '{PG_PASSWORD}'"),
    );
    let ws = Workspace::new();
    let mut s = json!({
        "ConnectionString": format!("host=127.0.0.1 port={port} dbname=hr user=agent password={PG_PASSWORD} sslmode=disable connect_timeout=2"),
        "SqlCommand": "SELECT g, md5(g::text) FROM (SELECT generate_series(1, 50000000) AS g) s"
    });
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    ws.settings(json!({"Connections": {"Pg": s}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"PostgreSql\"/>",
            connector_xml()
        ),
    );
    ws.write("Temp/ExportOutput/Pg.csv", "g,md5\nprevious\n");
    ws
}

fn spawn_export(ws: &Workspace) -> std::process::Child {
    ws.command(&["export", "--connection", "Pg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_failed_and_kept(ws: &Workspace, out: &std::process::Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{says}: {stderr}");
    assert!(stderr.contains(says), "{says}: {stderr}");
    assert_eq!(ws.output_names(), ["Pg.csv"], "{says}");
    assert_eq!(
        std::fs::read_to_string(ws.output_file("Pg.csv")).unwrap(),
        "g,md5\nprevious\n",
        "{says}"
    );
}

/// PostgreSQL stopped by SIGSTOP (as a hung host looks): before the export, the connection is
/// bounded by connect_timeout; in the middle of it, each read by ReadTimeout.
#[test]
fn a_frozen_postgres_is_bounded_on_the_client_side() {
    let pg = crate::support::pg::Pg::start();
    let ws = pg_workspace(&pg, pg.port, json!({"ReadTimeout": 2, "Timeout": 600}));
    // Frozen before the export starts.
    pg.signal_all(libc::SIGSTOP);
    let out = finish(spawn_export(&ws));
    pg.signal_all(libc::SIGCONT);
    assert_failed_and_kept(
        &ws,
        &out,
        "no answer within the connect timeout of 2 s (connect_timeout in ConnectionString)",
    );
    // Frozen in the middle of a table.
    let child = spawn_export(&ws);
    wait_for_partial(&ws, "Pg.csv", 100_000);
    pg.signal_all(libc::SIGSTOP);
    let out = finish(child);
    pg.signal_all(libc::SIGCONT);
    assert_failed_and_kept(&ws, &out, "no data from the server for 2 s (ReadTimeout)");
}

/// A network path that stalls (a proxy that stops forwarding): the whole query is bounded by
/// Timeout on the client side too, and a cancel says it was a cancel.
#[test]
fn a_stalled_connection_is_bounded_by_timeout_and_a_cancel_says_cancelled() {
    use std::os::unix::process::ExitStatusExt;
    let pg = crate::support::pg::Pg::start();
    let proxy = crate::support::proxy::Proxy::start(([127, 0, 0, 1], pg.port).into());
    // No ReadTimeout: only the whole-query bound (Timeout 2 s + 5 s for the server) applies.
    let ws = pg_workspace(&pg, proxy.port, json!({"ReadTimeout": 0, "Timeout": 2}));
    let child = spawn_export(&ws);
    wait_for_partial(&ws, "Pg.csv", 100_000);
    proxy.stall();
    let out = finish(child);
    assert_failed_and_kept(
        &ws,
        &out,
        "the server did not end the query within the Timeout of 2 seconds (and 5 s more for it to stop the query itself); stopped by the agent",
    );
    proxy.resume();
    // A cancel during a stall, with no bound at all: the message says cancelled (the database
    // exists already: a second workspace on the same server).
    let ws2 = {
        let w = Workspace::new();
        w.settings(json!({"Connections": {"Pg": {
            "ConnectionString": format!("host=127.0.0.1 port={} dbname=hr user=agent password={PG_PASSWORD} sslmode=disable", proxy.port),
            "SqlCommand": "SELECT g, md5(g::text) FROM (SELECT generate_series(1, 50000000) AS g) s",
            "ReadTimeout": 0}}}));
        w.xml(
            "c.xml",
            &format!(
                "{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"PostgreSql\"/>",
                connector_xml()
            ),
        );
        w.write("Temp/ExportOutput/Pg.csv", "g,md5\nprevious\n");
        w
    };
    let child = spawn_export(&ws2);
    wait_for_partial(&ws2, "Pg.csv", 100_000);
    proxy.stall();
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "{stderr}");
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("failed (Cancelled): the export was cancelled"),
        "{stderr}"
    );
    assert!(!stderr.contains("Timeout"), "{stderr}");
    assert_eq!(ws2.output_names(), ["Pg.csv"]);
}

/// A backend terminated by an administrator: the message carries the server's reason when it
/// reached the agent (a session waiting on a slow query), and what broke when the server's reset
/// discarded it (a session streaming rows), with how far the export got.
#[test]
fn a_terminated_postgres_session_says_why() {
    let pg = crate::support::pg::Pg::start();
    let ws = pg_workspace(
        &pg,
        pg.port,
        json!({"SqlCommand": "SELECT pg_sleep(120) AS s"}),
    );
    let child = spawn_export(&ws);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'connagent' AND query LIKE 'COPY%'",
    )
    .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the export's query never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    pg.sql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'connagent'",
    );
    let out = finish(child);
    assert_failed_and_kept(
        &ws,
        &out,
        "query SELECT pg_sleep(120) AS s: the server ended the session: terminating connection due to administrator command (57P01)",
    );
    // While rows stream, the server's reset discards its message: what broke, and after how much.
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {"Pg": {
        "ConnectionString": format!("host=127.0.0.1 port={} dbname=hr user=agent password={PG_PASSWORD} sslmode=disable", pg.port),
        "SqlCommand": "SELECT g, md5(g::text) FROM (SELECT generate_series(1, 50000000) AS g) s"}}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"Pg\" DisplayName_L1=\"pg\" Connector=\"HR\" Package=\"PostgreSql\"/>",
            connector_xml()
        ),
    );
    ws.write("Temp/ExportOutput/Pg.csv", "g,md5\nprevious\n");
    let child = spawn_export(&ws);
    wait_for_partial(&ws, "Pg.csv", 100_000);
    pg.sql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'connagent'",
    );
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the server ended the session: terminating connection due to administrator command"
        ) || (stderr.contains("broke: ") && stderr.contains(" rows)")),
        "{stderr}"
    );
    assert!(!stderr.contains("connection closed\n"), "{stderr}");
    assert_eq!(ws.output_names(), ["Pg.csv"]);
}

/// An LDAP server whose connection is cut in the middle of a table: said so, with the count.
#[test]
fn an_ldap_connection_closed_midway_says_so_with_the_entry_count() {
    use crate::support::slapd::{Slapd, people_ldif};
    let sl = Slapd::start(&people_ldif(5000, 2, 5));
    let target: std::net::SocketAddr = sl
        .url()
        .trim_start_matches("ldap://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = crate::support::proxy::Proxy::start(target);
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {"Dir": {
        "Servers": [{"Server": format!("ldap://127.0.0.1:{}", proxy.port), "AuthType": "Basic", "Login": sl.admin_dn}],
        "Password": crate::support::slapd::ADMIN_PASSWORD,
        "Tables": [{"Table": "entries", "BaseDN": "ou=people,dc=example,dc=com", "Filter": "(objectClass=inetOrgPerson)"}],
        "Attributes": ["uid", "cn", "jpegPhoto"],
        "PageSize": 10
    }}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"Dir\" DisplayName_L1=\"dir\" Connector=\"HR\" Package=\"Ldap\"/>",
            connector_xml()
        ),
    );
    let child = ws
        .command(&["export", "--connection", "Dir"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial(&ws, "Dir_entries.csv", 5_000);
    proxy.cut();
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server closed the connection while table entries was read, after "),
        "{stderr}"
    );
    assert!(!stderr.contains("channel closed"), "{stderr}");
    assert!(ws.output_names().is_empty(), "{:?}", ws.output_names());
}
