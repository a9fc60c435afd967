//! `connagent validate` and `connections` through the binary: a valid multi-file configuration, and
//! one fixture per kind of configuration error, each checked for message, location and exit code.

use crate::support::*;
use serde_json::json;

fn base_settings(ws: &Workspace) -> serde_json::Value {
    ws.write("sources/people.csv", "id,name\n1,Ann\n");
    json!({
        "Agent": {"Identifier": "Local"},
        "Connections": {
            "hrpeople": {"Path": "sources/people.csv"}
        }
    })
}

#[test]
fn valid_multi_file_configuration_with_namespace_and_foreign_elements() {
    let ws = Workspace::new();
    ws.settings(base_settings(&ws));
    ws.write(
        "xml-config/a/agent.xml",
        r#"<?xml version="1.0"?>
<ConfigurationFile xmlns="http://www.usercube.com/configuration">
  <Agent Identifier="Local" DisplayName_L1="Local"/>
  <Connector Identifier="HR" DisplayName_L1="HR" Agent="local"/>
  <EntityType Identifier="HR_Person"><Property Identifier="Id"/></EntityType>
  <Role Identifier="R1"/>
</ConfigurationFile>"#,
    );
    ws.write(
        "xml-config/b/connections.xml",
        r#"<ConfigurationFile>
  <Connection Identifier="HRPeople" DisplayName_L1="People" Connector="hr" Package="usercube.csv@0000001"/>
  <ExportTask Identifier="T1" DisplayName_L1="t" Agent="LOCAL" OpenIdClient="Job" Connection="HRPEOPLE" IgnoreCookieFile="true"/>
  <EntityTypeMapping Identifier="HR_Person" Connector="HR" ConnectionTable="hrpeople.csv">
    <Property Identifier="Id" ConnectionColumn="id" IsPrimaryKey="true"/>
  </EntityTypeMapping>
  <Job Identifier="J" DisplayName_L1="j"><Step Task="t1" Level="0"/></Job>
  <Role Identifier="R2"/>
</ConfigurationFile>"#,
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("connections: 1 (1 served here)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("skipped:     3 elements"),
        "{}",
        out.stdout
    );
    let j = ws.run(&["validate", "--json"]).json();
    assert_eq!(j["valid"], true);
    assert_eq!(j["summary"]["skipped_elements"]["Role"], 2);
    assert_eq!(j["summary"]["skipped_elements"]["EntityType"], 1);
    assert_eq!(j["summary"]["xml_files"].as_array().map(Vec::len), Some(2));

    // Listing keeps the XML spelling and finds the settings case-insensitively.
    let l = ws.run(&["connections", "--json"]).json();
    let c = &l["connections"][0];
    assert_eq!(c["identifier"], "HRPeople");
    assert_eq!(c["settings"], "ok");
    assert_eq!(c["served"], "here");
    assert_eq!(c["category"], "File");
    assert_eq!(c["usage_count"], 2);
    let names: Vec<&str> = c["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["T1", "HR_Person"]);
    let text = ws.run(&["connections"]);
    assert!(text.stdout.contains("HRPeople"), "{}", text.stdout);
    assert!(text.stdout.contains("1 task, 1 mapping"), "{}", text.stdout);
}

#[test]
fn connections_filters() {
    let ws = Workspace::new();
    ws.write("db.sqlite", "");
    ws.settings(json!({}));
    ws.xml(
        "c.xml",
        &format!(
            "{}\n<Connector Identifier=\"Other\" DisplayName_L1=\"o\" Agent=\"Remote\"/>
<Connection Identifier=\"HRPeople\" DisplayName_L1=\"People file\" Connector=\"HR\" Package=\"Csv\"/>
<Connection Identifier=\"HRDb\" DisplayName_L1=\"Database\" Connector=\"HR\" Package=\"Sqlite\"/>
<Connection Identifier=\"Far\" DisplayName_L1=\"Remote people\" Connector=\"Other\" Package=\"Csv\"/>",
            connector_xml()
        ),
    );
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["connections", "--json"];
        a.extend_from_slice(args);
        let j = ws.run(&a).json();
        j["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["identifier"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--search", "PEOPLE"]), ["HRPeople", "Far"]);
    assert_eq!(ids(&["--category", "database"]), ["HRDb"]);
    assert_eq!(ids(&["--connector", "other"]), ["Far"]);
    let j = ws
        .run(&["connections", "--json", "--connector", "other"])
        .json();
    assert_eq!(j["connections"][0]["served"], "other agent: Remote");
    assert_eq!(j["connections"][0]["served_by"], "Remote");
    let text = ws.run(&["connections", "--connector", "other"]);
    assert!(
        text.stdout.contains("other agent: Remote"),
        "{}",
        text.stdout
    );
    assert_eq!(j["connections"][0]["settings"], "missing");
    let bad = ws.run(&["connections", "--category", "Printer"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("unknown category"), "{}", bad.stderr);
}

/// One configuration error: what to write, and what the user must see.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    settings: serde_json::Value,
    /// `file:line:col` suffix expected before the message (the file's name and position).
    at: &'static str,
    message: &'static str,
}

/// A whole file: the XML declaration, the root, the agent and connector, then `extra` from line 5.
fn conn(extra: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<ConfigurationFile>\n{}\n{extra}\n</ConfigurationFile>\n",
        connector_xml()
    )
}

fn cases() -> Vec<Case> {
    let csv_settings = json!({"Connections": {"HRPeople": {"Path": "sources/people.csv"}}});
    vec![
        Case {
            name: "malformed xml",
            files: vec![("x.xml", "<ConfigurationFile>\n  <Connector Identifier=\"HR\"\n</ConfigurationFile>".into())],
            settings: json!({}),
            at: "x.xml:3:1",
            message: "not well-formed XML",
        },
        Case {
            name: "dtd refused",
            files: vec![("x.xml", "<?xml version=\"1.0\"?>\n<!DOCTYPE c [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n<ConfigurationFile>&e;</ConfigurationFile>".into())],
            settings: json!({}),
            at: "x.xml:2:1",
            message: "DTD and entity declarations are not allowed",
        },
        Case {
            name: "wrong root",
            files: vec![("x.xml", "<?xml version=\"1.0\"?>\n<Configuration/>".into())],
            settings: json!({}),
            at: "x.xml:2:1",
            message: "the root element is <Configuration>, expected <ConfigurationFile>",
        },
        Case {
            name: "underscore in identifier",
            files: vec![("x.xml", conn("<Connection Identifier=\"HR_People\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({}),
            at: "x.xml:5:13",
            message: "contains '_'",
        },
        Case {
            name: "identifier starts with a digit",
            files: vec![("x.xml", conn("<Connection Identifier=\"1HR\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({}),
            at: "x.xml:5:13",
            message: "must start with a letter",
        },
        Case {
            name: "duplicate across files, other case",
            files: vec![
                ("a.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>")),
                ("b.xml", "<ConfigurationFile>\n<Connection Identifier=\"hrpeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>\n</ConfigurationFile>".into()),
            ],
            settings: csv_settings.clone(),
            at: "b.xml:2:1",
            message: "connection hrpeople is declared twice; identifiers are compared without case, and it was first declared at /",
        },
        Case {
            name: "unknown connector",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"Payroll\" Package=\"Csv\"/>"))],
            settings: csv_settings.clone(),
            at: "x.xml:5:54",
            message: "connection HRPeople names connector Payroll, which is not declared",
        },
        Case {
            name: "export task to unknown connection",
            files: vec![("x.xml", conn("<ExportTask Identifier=\"T\" DisplayName_L1=\"t\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"Nope\"/>"))],
            settings: json!({}),
            at: "x.xml:5:1",
            message: "export task T names connection Nope, which is not declared",
        },
        Case {
            name: "mapping to unknown connector and table",
            files: vec![("x.xml", conn("<EntityTypeMapping Identifier=\"P\" Connector=\"Nope\" ConnectionTable=\"Ghost_entries\"/>"))],
            settings: json!({}),
            at: "x.xml:5:1",
            message: "entity type mapping P names connector Nope, which is not declared",
        },
        Case {
            name: "association mapping to unknown connector",
            files: vec![("x.xml", conn("<EntityAssociationMapping Identifier=\"A\" Connector=\"Nope\" Column1=\"a\" Column2=\"b\"/>"))],
            settings: json!({}),
            at: "x.xml:5:1",
            message: "entity association mapping A names connector Nope, which is not declared",
        },
        Case {
            name: "two settings sections for one connection",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({"Connections": {"HRPeople": {"Path": "sources/people.csv"}, "hrpeople": {"Path": "sources/people.csv"}}}),
            at: "appsettings.agent.json:6:5",
            message: "settings sections Connections:HRPeople and Connections:hrpeople name the same connection",
        },
        Case {
            name: "transformation table of another connection (non-ASCII)",
            files: vec![("x.xml", conn("<Connection Identifier=\"A\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\">\n  <Transformation Type=\"WhereValue\" Table=\"éx\"/>\n</Connection>"))],
            settings: json!({}),
            at: "x.xml:6:37",
            message: "Transformation Table=\"éx\" is not a table of connection A",
        },
        Case {
            name: "unknown package",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Usercube.Excel@0000001\"/>"))],
            settings: json!({}),
            at: "x.xml:5:69",
            message: "unknown package \"Usercube.Excel@0000001\"",
        },
        Case {
            name: "exported connection without settings",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>\n<ExportTask Identifier=\"T\" DisplayName_L1=\"t\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"HRPeople\"/>"))],
            settings: json!({}),
            at: "x.xml:5:1",
            message: "connection HRPeople is exported by a task of this agent but has no settings section Connections:HRPeople",
        },
        Case {
            name: "missing required setting",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRDb\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Sqlite\"/>"))],
            settings: json!({"Connections": {"HRDb": {"SqlCommand": "select 1"}}}),
            at: "appsettings.agent.json:3:5",
            message: "Connections:HRDb: the required setting ConnectionString is missing",
        },
        Case {
            name: "wrong setting type",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({"Connections": {"HRPeople": {"NumberOfLinesToSkip": "two", "Path": "sources/people.csv"}}}),
            at: "appsettings.agent.json:4:7",
            message: "Connections:HRPeople:NumberOfLinesToSkip: expected an integer, found \"two\"",
        },
        Case {
            name: "csv without any path",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({"Connections": {"HRPeople": {"Separator": ";"}}}),
            at: "appsettings.agent.json:3:5",
            message: "connection HRPeople: neither Path nor PathIncremental is set",
        },
        Case {
            name: "bad Tables list",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRDb\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Sqlite\"/>"))],
            settings: json!({"Connections": {"HRDb": {"ConnectionString": "Data Source=db.sqlite", "Tables": [{"Table": "people"}]}}}),
            at: "appsettings.agent.json:5:7",
            message: "Tables item 1: Name is missing",
        },
        Case {
            name: "source path outside SourcesRootPaths through ..",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"))],
            settings: json!({"SourcesRootPaths": ["sources"], "Connections": {"HRPeople": {"Path": "sources/../secret/people.csv"}}}),
            at: "appsettings.agent.json:4:7",
            message: "is outside SourcesRootPaths",
        },
        Case {
            name: "missing attribute",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\"/>"))],
            settings: json!({}),
            at: "x.xml:5:1",
            message: "<Connection> has no Package attribute",
        },
        Case {
            name: "bad boolean",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>\n<ExportTask Identifier=\"T\" DisplayName_L1=\"t\" Agent=\"Local\" OpenIdClient=\"Job\" Connection=\"HRPeople\" IgnoreCookieFile=\"yes\"/>"))],
            settings: csv_settings.clone(),
            at: "x.xml:6:102",
            message: "IgnoreCookieFile=\"yes\" is not a boolean",
        },
        Case {
            name: "job step to unknown task",
            files: vec![("x.xml", conn("<Job Identifier=\"J\" DisplayName_L1=\"j\">\n  <Step Task=\"Ghost\" Level=\"0\"/>\n</Job>"))],
            settings: json!({}),
            at: "x.xml:6:3",
            message: "job J has a step for task Ghost, which is not declared",
        },
        Case {
            name: "invalid json settings",
            files: vec![("x.xml", conn(""))],
            settings: json!(null),
            at: "appsettings.agent.json:2:13",
            message: "the settings file is not valid JSON",
        },
        Case {
            name: "settings file not an object",
            files: vec![("x.xml", conn(""))],
            settings: json!(["Connections"]),
            at: "appsettings.agent.json:1:1",
            message: "the settings file must hold a JSON object",
        },
        Case {
            name: "settings file not UTF-8",
            files: vec![("x.xml", conn(""))],
            settings: json!("not utf-8"),
            at: "appsettings.agent.json",
            message: "cannot read the settings file: invalid utf-8 sequence",
        },
        Case {
            name: "missing xml folder",
            files: vec![],
            settings: json!({"XmlConfigurationPath": "nowhere"}),
            // At the setting, not at the folder.
            at: "appsettings.agent.json:2:3",
            message: "the XML configuration folder does not exist",
        },
        Case {
            name: "unknown transformation type",
            files: vec![("x.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\">\n  <Transformation Type=\"Upcase\" Table=\"HRPeople_x\"/>\n</Connection>"))],
            settings: csv_settings.clone(),
            at: "x.xml:6:19",
            message: "Transformation Type=\"Upcase\" is not known",
        },
        Case {
            name: "bad MaxTaskBatchSize",
            files: vec![("x.xml", conn(""))],
            settings: json!({"Jobs": {"MaxTaskBatchSize": 0}}),
            at: "appsettings.agent.json:3:5",
            message: "Jobs:MaxTaskBatchSize is 0",
        },
    ]
}

#[test]
fn every_kind_of_configuration_error_is_located_and_exits_78() {
    for case in cases() {
        let ws = Workspace::new();
        ws.write("sources/people.csv", "id\n1\n");
        ws.write("secret/people.csv", "id\n1\n");
        ws.write("db.sqlite", "");
        if case.settings.is_null() {
            ws.write("appsettings.agent.json", "{\n  \"Agent\": {:\n}");
        } else if case.settings == json!("not utf-8") {
            // Latin-1 "é" in a value: not UTF-8.
            ws.write(
                "appsettings.agent.json",
                b"{\"Agent\": {\"Identifier\": \"caf\xe9\"}}\n",
            );
        } else {
            ws.settings(case.settings.clone());
        }
        for (name, body) in &case.files {
            ws.write(&format!("xml-config/{name}"), body);
        }
        let out = ws.run(&["validate"]);
        assert_eq!(
            out.code,
            78,
            "case {:?}: exit code\n{}",
            case.name,
            out.all()
        );
        if case.name.starts_with("duplicate") {
            assert!(
                out.stderr.contains("xml-config/a.xml:5:1"),
                "first place not named: {}",
                out.stderr
            );
        }
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(case.message))
            .unwrap_or_else(|| {
                panic!(
                    "case {:?}: message {:?} not found in:\n{}",
                    case.name, case.message, out.stderr
                )
            });
        assert!(
            line.contains(&format!("{}: error: ", case.at)),
            "case {:?}: expected location {:?} in {line:?}",
            case.name,
            case.at
        );
        // Every error comes with a fix.
        let after = out.stderr.split(line).nth(1).unwrap_or("");
        assert!(
            after.trim_start().starts_with("fix: "),
            "case {:?}: no fix after {line:?}",
            case.name
        );
        // The JSON form carries the same diagnostics.
        let j = ws.run(&["validate", "--json"]);
        assert_eq!(j.code, 78);
        assert_eq!(j.json()["valid"], false, "case {:?}", case.name);
        // Commands that act refuse to run on an invalid configuration.
        let e = ws.run(&["export", "--all"]);
        assert_eq!(
            e.code,
            78,
            "case {:?}: export on invalid configuration\n{}",
            case.name,
            e.all()
        );
        assert!(
            ws.output_names().is_empty(),
            "case {:?}: export wrote files",
            case.name
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let ws = Workspace::new();
    ws.settings(json!({"Connections": {"Ghost": {}}}));
    ws.write("xml-config/a.xml", conn("<Connection Identifier=\"A_1\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"));
    ws.xml(
        "b.xml",
        "<Connection Identifier=\"B\" DisplayName_L1=\"p\" Connector=\"Nope\" Package=\"Excel\"/>",
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78);
    for m in [
        "contains '_'",
        "names connector Nope",
        "unknown package \"Excel\"",
        "Connections:Ghost matches no <Connection>",
    ] {
        assert!(out.stderr.contains(m), "missing {m:?} in\n{}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("configuration invalid: 3 errors, 3 warnings"),
        "{}",
        out.stderr
    );
}

#[test]
fn symbolic_link_out_of_sources_root_is_refused() {
    let ws = Workspace::new();
    ws.write("outside/people.csv", "id\n1\n");
    std::fs::create_dir_all(ws.path("sources")).unwrap();
    std::os::unix::fs::symlink(ws.path("outside/people.csv"), ws.path("sources/people.csv"))
        .unwrap();
    ws.settings(json!({"SourcesRootPaths": ["sources"], "Connections": {"HRPeople": {"Path": "sources/people.csv"}}}));
    ws.write("xml-config/a.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(out.stderr.contains("(resolved to "), "{}", out.stderr);
    assert!(
        out.stderr.contains("is outside SourcesRootPaths"),
        "{}",
        out.stderr
    );
    // Inside the root, the same file is accepted.
    std::fs::remove_file(ws.path("sources/people.csv")).unwrap();
    ws.write("sources/people.csv", "id\n1\n");
    assert_eq!(ws.run(&["validate"]).code, 0);
}

#[test]
fn warnings_do_not_fail_validation() {
    let ws = Workspace::new();
    ws.write("sources/people.csv", "id\n1\n");
    ws.settings(json!({"Connections": {"HRPeople": {"Path": "sources/people.csv", "Colour": "blue"}, "Stale": {"Path": "x"}}}));
    ws.write("xml-config/a.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\" Colour=\"red\"/>\n<Connection Identifier=\"NoSettings\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.all());
    for m in [
        "a.xml:5:83: warning: <Connection> has no attribute Colour; it is ignored",
        "appsettings.agent.json:4:7: warning: Connections:HRPeople: unknown setting Colour; it is ignored",
        "appsettings.agent.json:7:5: warning: settings section Connections:Stale matches no <Connection>",
        "a.xml:6:1: warning: connection NoSettings has no settings section",
    ] {
        assert!(out.stderr.contains(m), "missing {m:?} in\n{}", out.stderr);
    }
    assert!(out.stdout.contains("warnings:    4"), "{}", out.stdout);
}

#[test]
fn environment_overrides_the_file_and_is_named_in_errors() {
    let mut ws = Workspace::new();
    ws.write("sources/people.csv", "id\n1\n");
    ws.settings(json!({"Connections": {"HRPeople": {"Path": "sources/people.csv"}}}));
    ws.write("xml-config/a.xml", conn("<Connection Identifier=\"HRPeople\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"));
    ws.env.push((
        "CONNAGENT__Connections__HRPEOPLE__NumberOfLinesToSkip".into(),
        "many".into(),
    ));
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78, "{}", out.all());
    assert!(
        out.stderr.contains("environment variable CONNAGENT__Connections__HRPEOPLE__NumberOfLinesToSkip: error: Connections:HRPeople:NumberOfLinesToSkip: expected an integer"),
        "{}",
        out.stderr
    );
    ws.env = vec![(
        "CONNAGENT__Connections__hrpeople__Path".into(),
        "sources/missing.csv".into(),
    )];
    let out = ws.run(&["connections", "--json"]);
    let shown = &out.json()["connections"][0]["setting_values"][0];
    assert_eq!(shown["name"], "Path");
    assert_eq!(shown["shown"], "sources/missing.csv");
    // The settings file can be named by CONNAGENT_SETTINGS too.
    let mut c = std::process::Command::new(BIN);
    c.arg("validate")
        .env("CONNAGENT_SETTINGS", ws.settings_path())
        .current_dir("/");
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn missing_settings_file_and_usage_errors() {
    let ws = Workspace::new();
    let out = ws.run(&["validate"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr.contains("cannot read the settings file"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("fix: pass --settings FILE"),
        "{}",
        out.stderr
    );
    assert_eq!(ws.run(&["export"]).code, 2);
    assert_eq!(ws.run(&["frobnicate"]).code, 2);
    assert_eq!(ws.run(&["export", "--all", "--task", "x"]).code, 2);
    assert_eq!(ws.run(&["--help"]).code, 0);
}

#[test]
fn dotted_identifiers_work_in_the_file_and_in_the_environment() {
    let mut ws = Workspace::new();
    ws.write("sources/a.csv", "id\n1\n");
    ws.write("sources/b.csv", "id\n2\n");
    ws.settings(json!({"Connections": {"hr.people-2": {"Path": "sources/a.csv"}}}));
    ws.write("xml-config/a.xml", conn("<Connection Identifier=\"HR.People-2\" DisplayName_L1=\"p\" Connector=\"HR\" Package=\"Csv\"/>"));
    let out = ws.run(&["export", "--connection", "hr.PEOPLE-2", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        python_csv(&ws.output_file("HR.People-2.csv")),
        [["id"], ["1"]]
    );
    ws.env.push((
        "CONNAGENT__Connections__HR.People-2__Path".into(),
        "sources/b.csv".into(),
    ));
    let out = ws.run(&["export", "--connection", "HR.People-2", "--complete"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        python_csv(&ws.output_file("HR.People-2.csv")),
        [["id"], ["2"]]
    );
}
