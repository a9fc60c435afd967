//! Keeps ARCHITECTURE.md honest: reads its module map and its table of crates that stay in one
//! module, then reads every file under `src/` and fails on an import the map forbids: a
//! `crate::<module>` path, a `super::` path that climbs into another top-level module, or a
//! confined crate used outside its module. Comments are not code and are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of the markdown table that follows `heading`: each row's cells, trimmed.
fn table_after(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let Some(start) = doc.find(heading) else {
        panic!("ARCHITECTURE.md has no {heading:?} section");
    };
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The names written in backticks in a cell: "`config`, `export`" → [config, export].
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

struct Rules {
    /// module → modules it must never import.
    never: BTreeMap<String, Vec<String>>,
    /// crate → the modules allowed to use it.
    confined: Vec<(String, Vec<String>)>,
}

fn rules() -> Rules {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut never = BTreeMap::new();
    for row in table_after(&doc, "## Module map") {
        let module = ticked(&row[0]);
        assert_eq!(
            module.len(),
            1,
            "a module map row names one module: {row:?}"
        );
        never.insert(
            module[0].clone(),
            ticked(row.last().map_or("", String::as_str)),
        );
    }
    let confined = table_after(&doc, "Crates that stay in one module")
        .into_iter()
        .map(|row| {
            let (c, m) = (ticked(&row[0]), ticked(&row[1]));
            (c[0].clone(), m)
        })
        .collect();
    Rules { never, confined }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/packages/ldap/mod.rs` → [packages, ldap].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root().join("src")).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// A line without its comment (a `//` outside a string literal).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut prev = '\0';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '/' if !in_string && prev == '/' => return &line[..i - 1],
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { '\0' } else { c };
    }
    line
}

/// The top-level modules a line of code reaches: `crate::x` paths, and `super::` chains that
/// climb out of the file's own top-level module.
fn reached(code: &str, path: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident_at = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && code[i..].starts_with("crate::") {
            out.push(ident_at(i + "crate::".len()));
            i += "crate::".len();
            continue;
        }
        if boundary && code[i..].starts_with("super::") {
            let mut k = 0;
            let mut j = i;
            while code[j..].starts_with("super::") {
                k += 1;
                j += "super::".len();
            }
            if k >= path.len() {
                out.push(ident_at(j));
            }
            i = j;
            continue;
        }
        i += code[i..].chars().next().map_or(1, char::len_utf8);
    }
    out
}

fn violations(rules: &Rules) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let path = module_path(&file);
        let Some(top) = path.first() else { continue };
        let text = std::fs::read_to_string(&file).expect("a source file");
        let shown = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            if code.trim_start().starts_with("//") || code.trim().is_empty() {
                continue;
            }
            if let Some(forbidden) = rules.never.get(top) {
                for target in reached(code, &path) {
                    if forbidden.contains(&target) {
                        found.push(format!(
                            "{shown}:{}: module {top} imports {target}, which ARCHITECTURE.md says it must never import",
                            n + 1
                        ));
                    }
                }
            }
            for (krate, only) in &rules.confined {
                let uses = code.contains(&format!("{krate}::")) && reached_crate(code, krate);
                if uses && !only.contains(top) {
                    found.push(format!(
                        "{shown}:{}: module {top} uses the crate {krate}, which ARCHITECTURE.md keeps in {}",
                        n + 1,
                        only.join(", ")
                    ));
                }
            }
        }
    }
    found
}

/// Whether `krate::` appears as a path of its own (not as the end of another name).
fn reached_crate(code: &str, krate: &str) -> bool {
    let pat = format!("{krate}::");
    code.match_indices(&pat).any(|(i, _)| {
        i == 0 || {
            let b = code.as_bytes()[i - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        }
    })
}

#[test]
fn no_module_imports_what_the_architecture_forbids() {
    let rules = rules();
    // The map covers every top-level module of the crate.
    let mut tops: Vec<String> = std::fs::read_dir(root().join("src"))
        .expect("src")
        .flatten()
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .filter(|n| n != "lib" && n != "main")
        .collect();
    tops.sort();
    for t in &tops {
        assert!(
            rules.never.contains_key(t),
            "src/{t} is not in ARCHITECTURE.md's module map"
        );
    }
    let found = violations(&rules);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    let path = vec![
        "packages".to_string(),
        "ldap".to_string(),
        "search".to_string(),
    ];
    assert_eq!(reached("use crate::export::sink;", &path), ["export"]);
    assert_eq!(
        reached("let x = super::super::super::grpc::x;", &path),
        ["grpc"]
    );
    assert!(reached("use super::super::sql;", &path).is_empty());
    // A path inside a string counts (the checker errs on the side of caution); one in a comment
    // does not.
    assert_eq!(
        reached(
            code_of("let s = \"crate::export\"; // crate::runtime"),
            &path
        ),
        ["export"]
    );
    assert_eq!(
        code_of("let u = \"http://x\"; // crate::cli"),
        "let u = \"http://x\"; "
    );
    assert!(reached_crate("use tonic::Status;", "tonic"));
    assert!(!reached_crate("use crate::grpc::tonic_x;", "tonic"));
}
