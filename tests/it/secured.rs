//! Where secrets may come from besides the settings file: systemd credentials
//! (`$CREDENTIALS_DIRECTORY`, one file per setting path), and references resolved at load time
//! (`${env:NAME}`, `${file:PATH}`, `${credential:NAME}`). Also: the agent keeps no core dumps.

use crate::support::*;
use serde_json::json;

const CANARY: &str = "cred-canary-5d1e;pw";

fn csv_workspace(path_setting: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("in/from-file.csv", "id\nfile\n");
    ws.write("in/from-env.csv", "id\nenv\n");
    ws.write("in/from-credential.csv", "id\ncredential\n");
    ws.settings(json!({"Connections": {"People": {"Path": path_setting}}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>",
            connector_xml()
        ),
    );
    ws
}

fn exported(ws: &Workspace) -> String {
    let out = ws.run(&["export", "--connection", "People", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    std::fs::read_to_string(ws.output_file("People.csv")).unwrap()
}

#[test]
fn credentials_win_over_the_environment_which_wins_over_the_file() {
    let mut ws = csv_workspace("in/from-file.csv");
    assert_eq!(exported(&ws), "id\nfile\n");
    ws.env.push((
        "CONNAGENT__Connections__People__Path".into(),
        "in/from-env.csv".into(),
    ));
    assert_eq!(exported(&ws), "id\nenv\n");
    // systemd writes one file per credential; its name is the setting path (case-insensitive),
    // its content the value (one trailing newline dropped).
    ws.write(
        "creds/connections__people__path",
        "in/from-credential.csv\n",
    );
    ws.write("creds/unrelated-credential", "not a setting path");
    ws.env.push((
        "CREDENTIALS_DIRECTORY".into(),
        ws.path("creds").display().to_string(),
    ));
    assert_eq!(exported(&ws), "id\ncredential\n");
    // A problem with a credential's value names the credential.
    ws.write("creds/Connections__People__NumberOfLinesToSkip", "many");
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("systemd credential Connections__People__NumberOfLinesToSkip"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("environment variable systemd"),
        "{}",
        out.stderr
    );
}

#[test]
fn references_are_resolved_at_load_time() {
    let mut ws = csv_workspace("${env:PEOPLE_FILE}");
    ws.env
        .push(("PEOPLE_FILE".into(), "in/from-env.csv".into()));
    assert_eq!(exported(&ws), "id\nenv\n");

    let ws = csv_workspace("${file:people-path.txt}");
    ws.write("people-path.txt", "in/from-file.csv\n");
    assert_eq!(exported(&ws), "id\nfile\n");

    let mut ws = csv_workspace("${credential:people}");
    ws.write("creds/people", "in/from-credential.csv");
    ws.env.push((
        "CREDENTIALS_DIRECTORY".into(),
        ws.path("creds").display().to_string(),
    ));
    assert_eq!(exported(&ws), "id\ncredential\n");
    // Never written back: the settings file still holds the reference.
    let text = std::fs::read_to_string(ws.settings_path()).unwrap();
    assert!(text.contains("${credential:people}"), "{text}");
}

#[test]
fn broken_references_are_located_errors() {
    let cases = [
        (
            "${env:NO_SUCH_VARIABLE_7}",
            "Connections:People:Path: the reference ${env:NO_SUCH_VARIABLE_7} names an environment variable that is not set",
        ),
        (
            "${file:missing.txt}",
            "Connections:People:Path: cannot read the file of ${file:missing.txt}",
        ),
        (
            "${credential:people}",
            "needs systemd credentials, and CREDENTIALS_DIRECTORY is not set",
        ),
        ("${credential:../etc/passwd}", "is not a credential name"),
        ("${vault:people}", "unknown reference kind \"vault\""),
    ];
    for (reference, message) in cases {
        let ws = csv_workspace(reference);
        let out = ws.run(&["validate"]);
        assert_eq!(out.code, 78, "{reference}: {}", out.all());
        assert!(out.stderr.contains(message), "{reference}: {}", out.stderr);
        // The place in the file: line 4 holds "Path".
        assert!(
            out.stderr.contains("appsettings.agent.json:4:"),
            "{reference}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_secret_from_a_credential_never_shows() {
    let mut ws = Workspace::new();
    ws.settings(json!({"Connections": {"Mssql": {
        "ConnectionString": "${credential:mssql}",
        "SqlCommand": "SELECT 1"
    }}}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"Mssql\" DisplayName_L1=\"m\" Connector=\"HR\" Package=\"SqlServer\"/>",
            connector_xml()
        ),
    );
    ws.write(
        "creds/mssql",
        format!("Server=tcp:127.0.0.1,1;Database=hr;User ID=agent;Password='{CANARY}';Encrypt=false;TrustServerCertificate=true;Connect Timeout=2\n"),
    );
    ws.env.push((
        "CREDENTIALS_DIRECTORY".into(),
        ws.path("creds").display().to_string(),
    ));
    ws.env.push(("RUST_LOG".into(), "trace".into()));
    for args in [
        &["validate"][..],
        &["connections", "--show-settings"],
        &["connections", "--show-settings", "--json"],
        &["test", "Mssql"],
        &["export", "--connection", "Mssql"],
    ] {
        let out = ws.run(args);
        for needle in [CANARY, "cred-canary"] {
            assert!(!out.all().contains(needle), "{args:?}: {}", out.all());
        }
    }
    let shown = ws.run(&["connections", "--show-settings"]);
    assert_eq!(shown.code, 0, "{}", shown.all());
    let leaked: Vec<_> = files_containing(&ws.path(""), "cred-canary")
        .into_iter()
        .filter(|f| !f.starts_with(ws.path("creds")))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[test]
fn the_agent_turns_off_its_core_dumps() {
    let ws = csv_workspace("in/from-file.csv");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.settings_path()).unwrap()).unwrap();
    s["Grpc"] = json!({"Listen": "127.0.0.1:0"});
    ws.settings(s);
    let agent = crate::support::agent::Proc::start(ws.command(&["--json", "serve"]));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{line}");
}

fn protect(ws: &Workspace, setting: &str, value: &str) -> Output {
    protect_bytes(ws, setting, format!("{value}\n").as_bytes())
}

fn protect_bytes(ws: &Workspace, setting: &str, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = ws
        .command(&["protect", setting])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The agent may stop reading early (a value too long): a broken pipe here is expected.
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn encrypted_overlay_round_trip_precedence_wrong_key_tampering_and_rotation() {
    use std::os::unix::fs::PermissionsExt;
    let mut ws = csv_workspace("in/from-file.csv");
    // Without a key, protect says what to do.
    let out = protect(&ws, "Connections:People:Path", "in/from-credential.csv");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("connagent keygen"), "{}", out.stderr);
    let k = ws.run(&["keygen"]);
    assert_eq!(k.code, 0, "{}", k.all());
    assert!(k.stdout.contains("public key age1"), "{}", k.stdout);
    let key = ws.path("agent.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second keygen would orphan the encrypted values: refused.
    assert_eq!(ws.run(&["keygen"]).code, 1);
    // A key that other users can read is refused until its mode is fixed.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = protect(&ws, "Connections:People:Path", "in/from-credential.csv");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("can be read or written by other users (mode 640)")
            && out.stderr.contains("chmod 600"),
        "{}",
        out.stderr
    );
    assert!(!ws.path("appsettings.encrypted.agent.json").exists());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = protect(&ws, "connections:PEOPLE:path", "in/from-credential.csv");
    assert_eq!(out.code, 0, "{}", out.all());
    let overlay = ws.path("appsettings.encrypted.agent.json");
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(text.contains("\"age:v1:"), "{text}");
    assert!(!text.contains("from-credential"), "{text}");
    assert_eq!(
        std::fs::metadata(&overlay).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The overlay wins over the file...
    assert_eq!(exported(&ws), "id\ncredential\n");
    // ...and the environment over the overlay.
    ws.env.push((
        "CONNAGENT__Connections__People__Path".into(),
        "in/from-env.csv".into(),
    ));
    assert_eq!(exported(&ws), "id\nenv\n");
    ws.env.clear();

    // A secret protected this way never shows.
    let out = protect(&ws, "Connections:People:Password", CANARY);
    assert_eq!(out.code, 0, "{}", out.all());
    for args in [&["validate"][..], &["connections", "--show-settings"]] {
        let o = ws.run(args);
        assert!(!o.all().contains("cred-canary"), "{}", o.all());
    }
    assert!(
        files_containing(&ws.path(""), "cred-canary").is_empty(),
        "{:?}",
        files_containing(&ws.path(""), "cred-canary")
    );
    // Loading the overlay with a key others can read: a configuration error, at the overlay.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr
            .contains("appsettings.encrypted.agent.json: error: the key file")
            && out.stderr.contains("chmod 600"),
        "{}",
        out.stderr
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Rotation: a new key, the overlay re-encrypted, the values unchanged.
    let before = std::fs::read_to_string(&key).unwrap();
    let r = ws.run(&["keygen", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("2 encrypted value(s) re-encrypted"),
        "{}",
        r.stdout
    );
    assert_ne!(std::fs::read_to_string(&key).unwrap(), before);
    assert_eq!(exported(&ws), "id\ncredential\n");

    // Tampered ciphertext: a located error, never a value.
    let good = std::fs::read_to_string(&overlay).unwrap();
    let start = good.find("age:v1:").unwrap() + 40;
    let mut bad = good.clone().into_bytes();
    bad[start] = if bad[start] == b'A' { b'B' } else { b'A' };
    std::fs::write(&overlay, &bad).unwrap();
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(
        v.stderr.contains("appsettings.encrypted.agent.json:")
            && (v.stderr.contains("altered") || v.stderr.contains("wrong key")),
        "{}",
        v.stderr
    );
    // Wrong key: the overlay cannot be read with another key.
    std::fs::write(&overlay, &good).unwrap();
    std::fs::write(&key, &before).unwrap();
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(v.stderr.contains("wrong key"), "{}", v.stderr);
    // A plain value in the overlay is refused.
    std::fs::write(
        &overlay,
        "{\"Connections\": {\"People\": {\"Path\": \"in/x.csv\"}}}",
    )
    .unwrap();
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 78, "{}", v.all());
    assert!(
        v.stderr.contains("is not an encrypted value"),
        "{}",
        v.stderr
    );
    assert!(!v.stderr.contains("in/x.csv"), "{}", v.stderr);
}

#[test]
fn a_plain_secret_in_the_settings_file_is_a_warning_naming_the_setting() {
    let mut ws = Workspace::new();
    let conn = |cs: &str| json!({"Connections": {"Mssql": {"ConnectionString": cs, "SqlCommand": "SELECT 1"}}});
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"Mssql\" DisplayName_L1=\"m\" Connector=\"HR\" Package=\"SqlServer\"/>",
            connector_xml()
        ),
    );
    ws.settings(conn(&format!(
        "Server=db;Database=hr;User ID=agent;Password='{CANARY}'"
    )));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains(
            "Connections:Mssql:ConnectionString holds a secret in plain text in the settings file"
        ),
        "{}",
        out.all()
    );
    assert!(
        out.all()
            .contains("connagent protect Connections:Mssql:ConnectionString")
    );
    assert!(!out.all().contains("cred-canary"), "{}", out.all());
    // No password in it, or the secret comes from elsewhere: no warning.
    for cs in ["Server=db;Database=hr;User ID=agent", "${env:MSSQL_CS}"] {
        ws.settings(conn(cs));
        ws.env = vec![(
            "MSSQL_CS".into(),
            format!("Server=db;User ID=a;Password='{CANARY}'"),
        )];
        let out = ws.run(&["validate"]);
        assert!(!out.all().contains("in plain text"), "{cs}: {}", out.all());
        assert!(!out.all().contains("cred-canary"), "{}", out.all());
    }
}

#[test]
fn protect_all_moves_every_plain_secret_into_the_overlay() {
    let ws = Workspace::new();
    ws.write("in/people.csv", "id\n1\n");
    let original = format!(
        "{{\n  \"Connections\": {{\n    \"People\": {{ \"Path\": \"in/people.csv\" }},\n    \"Mssql\": {{\n      \"ConnectionString\": \"Server=db;User ID=agent;Password='{CANARY}'\",\n      \"SqlCommand\": \"SELECT 1\"\n    }}\n  }}\n}}\n"
    );
    std::fs::write(ws.settings_path(), &original).unwrap();
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connection Identifier=\"People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>\n<Connection Identifier=\"Mssql\" DisplayName_L1=\"m\" Connector=\"HR\" Package=\"SqlServer\"/>",
            connector_xml()
        ),
    );
    // Without a key nothing is touched.
    let out = ws.run(&["protect", "--all"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(ws.settings_path()).unwrap(),
        original
    );
    assert_eq!(ws.run(&["keygen"]).code, 0);
    let out = ws.run(&["protect", "--all"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("Connections:Mssql:ConnectionString: encrypted, and blanked"),
        "{}",
        out.stdout
    );
    // The settings file is as written, but for the blanked value.
    let now = std::fs::read_to_string(ws.settings_path()).unwrap();
    assert_eq!(
        now,
        original.replace(
            &format!("\"Server=db;User ID=agent;Password='{CANARY}'\""),
            "\"\""
        )
    );
    assert!(files_containing(&ws.path(""), "cred-canary").is_empty());
    // The value is in force from the overlay, and shown masked.
    let v = ws.run(&["validate"]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(!v.all().contains("in plain text"), "{}", v.all());
    let shown = ws.run(&["connections", "--show-settings"]);
    assert!(shown.stdout.contains("User ID=agent"), "{}", shown.stdout);
    assert!(!shown.all().contains("cred-canary"), "{}", shown.all());
    // Nothing left to move.
    let again = ws.run(&["protect", "--all"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("no secret is written in plain text"),
        "{}",
        again.stdout
    );
}

/// The harness's own suite-wide checks (see `support::CANARY_MARK`) do fail.
#[test]
#[should_panic(expected = "leaked into the output of")]
fn the_harness_catches_a_canary_in_output() {
    crate::support::assert_no_canary("the output of a test", "before canary-x after");
}

#[test]
#[should_panic(expected = "was written by the agent to")]
fn the_harness_catches_a_canary_in_a_written_file() {
    let ws = Workspace::new();
    ws.write("Work/Runs/leak.json", "{\"password\": \"canary-file-1\"}");
    drop(ws);
}

#[test]
fn protect_refuses_a_value_it_cannot_store_and_writes_nothing() {
    let ws = csv_workspace("in/from-file.csv");
    let out = ws.run(&["keygen"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let cases: Vec<(&str, &str, Vec<u8>, i32, &str)> = vec![
        (
            "empty",
            "Connections:People:Path",
            b"\n".to_vec(),
            2,
            "no value on standard input",
        ),
        (
            "too long",
            "Connections:People:Path",
            vec![b'x'; 70 * 1024],
            2,
            "bytes or longer; a secured value must be shorter",
        ),
        (
            "not UTF-8",
            "Connections:People:Path",
            b"caf\xe9-canary\n".to_vec(),
            2,
            "not UTF-8 text",
        ),
        (
            "bad path",
            "Connections::Path",
            b"v-canary\n".to_vec(),
            1,
            "is not a setting path",
        ),
    ];
    for (name, setting, input, code, message) in cases {
        let out = protect_bytes(&ws, setting, &input);
        assert_eq!(out.code, code, "{name}: {}", out.all());
        assert!(out.stderr.contains(message), "{name}: {}", out.stderr);
        crate::support::assert_no_canary("protect's output", &out.all());
        assert!(
            !ws.path("appsettings.encrypted.agent.json").exists(),
            "{name}: the overlay was written"
        );
    }
}

/// How many times each needle is in the writable memory of process `pid` (heap, thread arenas,
/// stacks: everything `rw` in /proc/PID/maps). Reading another process's memory needs ptrace
/// rights over it: the test is its parent (allowed with kernel.yama.ptrace_scope 0 or 1) or root.
fn memory_counts(pid: u32, needles: &[&str]) -> Vec<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap_or_else(|e| {
        panic!("cannot open the agent's memory ({e}): run the tests as root, or with kernel.yama.ptrace_scope at most 1")
    });
    let mut counts = vec![0; needles.len()];
    let (mut read, mut failed) = (0usize, 0usize);
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            failed += 1;
            continue;
        }
        read += buf.len();
        for (i, n) in needles.iter().enumerate() {
            counts[i] += buf.windows(n.len()).filter(|w| *w == n.as_bytes()).count();
        }
    }
    assert!(
        read > 0,
        "none of the agent's memory could be read ({failed} regions failed)"
    );
    counts
}

/// The agent keeps a secret only in the Secret that holds it: the settings file's text, the parsed
/// settings tree, the connection-string parser's buffers and the decrypted overlay are wiped once
/// read, and a reload wipes the secrets of the configuration it replaces. Checked by reading the
/// running daemon's memory. (The connections belong to another agent's connector, so no driver
/// ever receives the values: what a driver copies is outside the agent's reach.)
#[test]
fn the_running_agent_holds_each_secret_only_in_its_secret() {
    const PW1: &str = "mem-canary-first-Q7wz";
    const PW2: &str = "mem-canary-second-L4kx";
    const PWO: &str = "mem-canary-overlay-V2mj";
    let ws = Workspace::new();
    let settings = |pw: &str| {
        json!({
            "Grpc": {"Listen": "127.0.0.1:0", "Tokens": []},
            "Reload": {"PollSeconds": 3600},
            "Connections": {
                "Db": {"ConnectionString": format!("host=127.0.0.1 port=9 user=a password={pw} dbname=x"),
                       "SqlCommand": "SELECT 1"},
                "Db2": {"ConnectionString": "host=127.0.0.1 port=9 user=b dbname=y",
                        "SqlCommand": "SELECT 1"}
            }
        })
    };
    ws.settings(settings(PW1));
    ws.xml(
        "c.xml",
        "<Connector Identifier=\"Far\" DisplayName_L1=\"far\" Agent=\"Elsewhere\"/>
<Connection Identifier=\"Db\" DisplayName_L1=\"db\" Connector=\"Far\" Package=\"PostgreSql\"/>
<Connection Identifier=\"Db2\" DisplayName_L1=\"db2\" Connector=\"Far\" Package=\"PostgreSql\"/>",
    );
    assert_eq!(ws.run(&["keygen"]).code, 0);
    let out = protect(&ws, "Connections:Db2:ConnectionStringOptions:Password", PWO);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut cmd = ws.command(&["--json", "run"]);
    cmd.env("RUST_LOG", "connagent=info");
    let agent = crate::support::agent::Proc::start(cmd);
    let wait_generation = |g: u32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !agent.stderr_text().contains(&format!("generation={g}")) {
            assert!(
                std::time::Instant::now() < deadline,
                "no reload to generation {g}: {}",
                agent.stderr_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let pid = agent.child.id();
    // The counts settle once the load (or reload) that was logged has finished dropping what
    // it replaced, and the watcher has re-read the files: scanned until they match, for a while.
    let settled = |needles: &[&str], expected: Vec<usize>, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let c = memory_counts(pid, needles);
            if c == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: found {c:?} times, expected {expected:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // The text around the password as written in the file: only a copy of the file, of the
    // settings tree or of the whole connection string would hold it.
    let written = |pw: &str| format!("password={pw} dbname=x");
    // PW1: the connection string's secret part. PWO: the option's secret, and the secret part
    // it became in the connection string.
    settled(
        &[PW1, &written(PW1), PWO],
        vec![1, 0, 2],
        "[first password, its written text, overlay password]",
    );
    // Three reloads: the replaced configurations' secrets are wiped, nothing accumulates.
    for (i, pw) in [PW2, PW1, PW2].iter().enumerate() {
        ws.settings(settings(pw));
        wait_generation(i as u32 + 2);
    }
    settled(
        &[PW1, &written(PW1), PW2, &written(PW2), PWO],
        vec![0, 0, 1, 0, 2],
        "[first password, its text, second password, its text, overlay password]",
    );
    // A reload the file watcher does not start (SIGHUP after a referenced file changed, which
    // is not watched) drops the old configuration too.
    let cs = |pw: &str| format!("host=127.0.0.1 port=9 user=a password={pw} dbname=x\n");
    ws.write("db-connection.txt", cs(PW1));
    let mut s = settings("unused");
    s["Connections"]["Db"]["ConnectionString"] = json!("${file:db-connection.txt}");
    ws.settings(s);
    wait_generation(5);
    settled(
        &[PW1, &written(PW1), PW2, &written(PW2), PWO],
        vec![1, 0, 0, 0, 2],
        "from a referenced file: [first password, its text, second password, its text, overlay password]",
    );
    ws.write("db-connection.txt", cs(PW2));
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_generation(6);
    settled(
        &[PW1, &written(PW1), PW2, &written(PW2), PWO],
        vec![0, 0, 1, 0, 2],
        "after SIGHUP: [first password, its text, second password, its text, overlay password]",
    );
}
