//! Test harness: throw-away agent folders, running the real binary, and reading CSV back with an
//! independent parser (Python's csv module).
#![allow(dead_code)]

pub mod agent;
pub mod connect_proxy;
pub mod gateway;
pub mod ldap_fake;
pub mod pg;
pub mod proxy;
pub mod slapd;
pub mod tds;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_connagent");

/// A temporary agent installation: settings file, XML folder, sources.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` for every run unless `env` sets one: trace by default, so that the canary
    /// search covers the most the agent can log. `None` lets the settings' `Logging:Level` decide.
    pub log_override: Option<&'static str>,
}

/// Every secret value a test uses (passwords, tokens, keys) contains this word, and nothing else
/// does. The harness checks, for every test, that it never appears in what the agent prints
/// (`Workspace::run`, the daemon's output in `agent::Proc`) or in what the agent writes (the
/// `Temp` and `Work` folders), on top of each test's own checks.
pub const CANARY_MARK: &str = "canary";

/// Panics when `text` holds a canary (see [`CANARY_MARK`]).
pub fn assert_no_canary(what: &str, text: &str) {
    if let Some(at) = text.find(CANARY_MARK) {
        let start = text[..at]
            .char_indices()
            .rev()
            .nth(80)
            .map_or(0, |(i, _)| i);
        let end = (at + 80).min(text.len());
        let end = (end..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        panic!(
            "a secret (a value holding {CANARY_MARK:?}) leaked into {what}: ...{}...",
            &text[start..end]
        );
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for folder in ["Temp", "Work"] {
            let leaked = files_containing(&self.path(folder), CANARY_MARK);
            assert!(
                leaked.is_empty(),
                "a secret (a value holding {CANARY_MARK:?}) was written by the agent to {leaked:?}"
            );
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("xml-config")).expect("xml dir");
        Workspace {
            dir,
            env: Vec::new(),
            log_override: Some("connagent=trace"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    /// Writes `xml-config/<name>` wrapping `body` in a ConfigurationFile root.
    pub fn xml(&self, name: &str, body: &str) -> PathBuf {
        self.write(
            &format!("xml-config/{name}"),
            format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ConfigurationFile>\n{body}\n</ConfigurationFile>\n"),
        )
    }

    pub fn settings(&self, v: serde_json::Value) -> PathBuf {
        self.write(
            "appsettings.agent.json",
            serde_json::to_string_pretty(&v).expect("json"),
        )
    }

    pub fn settings_path(&self) -> PathBuf {
        self.path("appsettings.agent.json")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--settings").arg(self.settings_path()).args(args);
        c.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.to_ascii_uppercase().starts_with("CONNAGENT") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        if let Some(filter) = self.log_override {
            c.env("RUST_LOG", filter);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run connagent");
        let out = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_no_canary(
            &format!("the output of `connagent {}`", args.join(" ")),
            &out.all(),
        );
        out
    }

    pub fn output_file(&self, name: &str) -> PathBuf {
        self.path("Temp/ExportOutput").join(name)
    }

    /// Every file name in the output folder, sorted.
    pub fn output_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("Temp/ExportOutput"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A minimal valid configuration: one connector `HR` served by agent `Local`.
pub fn connector_xml() -> &'static str {
    r#"<Agent Identifier="Local" DisplayName_L1="Local"/>
<Connector Identifier="HR" DisplayName_L1="HR" Agent="Local"/>"#
}

/// Reads a CSV file with Python's csv module; returns the rows (header first).
pub fn python_csv(path: &Path) -> Vec<Vec<String>> {
    let script = "import csv, json, sys\n\
with open(sys.argv[1], newline='', encoding='utf-8') as f:\n    rows = list(csv.reader(f, strict=True))\n\
json.dump(rows, sys.stdout)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 is needed by the tests (apt-get install python3)");
    assert!(
        out.status.success(),
        "python csv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python output")
}

/// Every file below `dir` whose content contains `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.is_file() {
                // A FIFO or a device (a test's hostile input) would block or never end.
                continue;
            } else if let Ok(bytes) = std::fs::read(&p)
                && String::from_utf8_lossy(&bytes).contains(needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

/// Runs the binary to completion under GNU time and returns its peak resident set size in KiB.
///
/// Not wait4's rusage of a child spawned from here: std spawns with vfork semantics, and the
/// kernel then carries this test process's own high-water mark over to the child at exec, so
/// every figure would be at least the test binary's size. GNU time forks (a copy of its own small
/// image), so its `%M` is the agent's peak give or take a few hundred KiB.
pub fn peak_rss_kib(ws: &Workspace, args: &[&str]) -> i64 {
    let inner = ws.command(args);
    let report = ws.path("peak-rss.txt");
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(inner.get_program())
        .args(inner.get_args());
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let st = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .status()
        .expect("/usr/bin/time (Debian package `time`) runs");
    assert_eq!(st.code(), Some(0), "export failed: {st:?}");
    let text = std::fs::read_to_string(&report).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("GNU time wrote {text:?}: {e}"))
}
