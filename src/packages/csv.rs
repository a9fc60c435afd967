//! The `Csv` package: a delimited text file, re-written as a UTF-8, comma-separated connection table.

use super::spec::{Section, SettingKind, SettingSpec, Settings};
use super::value::Value;
use super::{
    Category, ConnectionRef, ExportMode, ExportOutcome, Package, PackageError, PackageInfo,
    Problem, RowSink, TestReport, run_blocking,
};
use crate::schema::{KeyType, Schema, SchemaColumn, SchemaTable, ValueType};
use async_trait::async_trait;
use chrono::Utc;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

pub struct CsvPackage;

const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "Path",
        section: Section::General,
        kind: SettingKind::Path,
        default: None,
        required: false,
        secured: false,
        description: "The file read by a complete export. Path or PathIncremental is required.",
    },
    SettingSpec {
        name: "PathIncremental",
        section: Section::General,
        kind: SettingKind::Path,
        default: None,
        required: false,
        secured: false,
        description: "The file read by an incremental export.",
    },
    SettingSpec {
        name: "IsFileNameRegex",
        section: Section::Additional,
        kind: SettingKind::Boolean,
        default: Some("false"),
        required: false,
        secured: false,
        description: "The file name part of Path/PathIncremental is a regular expression; the newest matching file is read.",
    },
    SettingSpec {
        name: "Separator",
        section: Section::Additional,
        kind: SettingKind::Text,
        default: Some(","),
        required: false,
        secured: false,
        description: "The input's field separator, one character. Output is always comma-separated.",
    },
    SettingSpec {
        name: "Encoding",
        section: Section::Additional,
        kind: SettingKind::Text,
        default: Some("UTF-8"),
        required: false,
        secured: false,
        description: "The input's encoding (UTF-8, UTF-16LE, UTF-16BE, Windows-1252, ISO-8859-1, ...). A byte-order mark wins.",
    },
    SettingSpec {
        name: "NumberOfLinesToSkip",
        section: Section::Additional,
        kind: SettingKind::Integer,
        default: Some("0"),
        required: false,
        secured: false,
        description: "Lines to skip before the header line.",
    },
    SettingSpec {
        name: "ValuesToTrim",
        section: Section::Additional,
        kind: SettingKind::TextList,
        default: None,
        required: false,
        secured: false,
        description: "Strings trimmed from both ends of headers and values, one after the other, in order.",
    },
];

static INFO: PackageInfo = PackageInfo {
    id: "Csv",
    aliases: &[
        "Usercube.CSV@0000001",
        "Usercube.CSV.Complete@0000001",
        "CSV",
    ],
    category: Category::File,
    description: "Delimited text file",
    has_incremental: true,
    settings: SETTINGS,
};

pub use super::decode::encoding_for;

fn separator(settings: &Settings) -> Result<u8, Problem> {
    let s = settings.text("Separator").unwrap_or(",");
    let s = if s.eq_ignore_ascii_case("\\t") || s.eq_ignore_ascii_case("tab") {
        "\t"
    } else {
        s
    };
    match s.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(Problem::new(
            Some("Separator"),
            format!(
                "Separator must be one ASCII character other than a quote or a line break, not {}",
                settings.quote("Separator")
            ),
            "use for example \",\", \";\", \"|\" or \"\\t\"",
        )),
    }
}

/// The file a mode reads: `Ok(None)` when the mode has no path configured.
fn path_setting(mode: ExportMode) -> &'static str {
    match mode {
        ExportMode::Complete => "Path",
        ExportMode::Incremental => "PathIncremental",
    }
}

/// A path derived from a setting, as a message may show it: never when the setting's value is
/// concealed (it came from a reference): then the setting's value is named instead.
fn shown_path(settings: &Settings, setting: &str, p: &Path) -> String {
    if settings.is_concealed(setting) {
        settings.quote(setting)
    } else {
        p.display().to_string()
    }
}

/// Picks the file for a configured path: itself, or the newest file whose name matches the regex.
fn select_file(settings: &Settings, setting: &str, path: &Path) -> Result<PathBuf, PackageError> {
    if !settings.boolean("IsFileNameRegex") {
        if !path.is_file() {
            return Err(PackageError::config(format!(
                "{setting}: the file {} does not exist",
                shown_path(settings, setting, path)
            )));
        }
        return Ok(path.to_path_buf());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let pattern = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let re = file_name_regex(&pattern).map_err(|e| {
        PackageError::config(format!(
            "{setting}: the file name is not a usable regular expression: {e}"
        ))
    })?;
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PackageError::config(format!(
            "{setting}: cannot list the folder of {}: {e}",
            shown_path(settings, setting, path)
        ))
    })?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !re.is_match(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let when = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let p = entry.path();
        if best.as_ref().is_none_or(|(t, bp)| (when, &p) > (*t, bp)) {
            best = Some((when, p));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        PackageError::config(if settings.is_concealed(setting) {
            format!("{setting}: no file matches {}", settings.quote(setting))
        } else {
            format!(
                "{setting}: no file in {} matches the regular expression {pattern:?}",
                dir.display()
            )
        })
    })
}

/// The longest file-name pattern accepted: file names are at most 255 bytes, so a pattern far
/// longer than that is a mistake (and compiling a huge one costs memory and time).
pub const MAX_FILE_NAME_PATTERN: usize = 4096;

/// A file-name regular expression, anchored at both ends, with bounded size: the pattern at most
/// [`MAX_FILE_NAME_PATTERN`] bytes, its compiled form at most 1 MiB, at most 64 nested groups.
/// The error is one line (regex's own span several, with a caret diagram).
pub fn file_name_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_FILE_NAME_PATTERN {
        return Err(format!(
            "it is {} bytes long; file-name patterns are limited to {MAX_FILE_NAME_PATTERN} bytes",
            pattern.len()
        ));
    }
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .nest_limit(64)
            .build()
            .map_err(|e| one_line_regex_error(&e))
    };
    // The pattern alone first, so that an error's position is one in what the user wrote (and
    // an unbalanced parenthesis cannot pair with the anchoring group's).
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

/// A regex error on one line: "unclosed group (at character 5)" instead of the multi-line
/// report with the pattern and a caret under the error.
pub fn one_line_regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let message = lines
                .iter()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or("not a regular expression");
            // The caret line sits under the pattern line, both indented alike; its first caret
            // is the position.
            let caret = lines.iter().position(|l| {
                l.trim_start().starts_with('^') && l.trim().chars().all(|c| c == '^')
            });
            let at = caret.filter(|i| *i > 0).and_then(|i| {
                let indent = lines[i - 1].len() - lines[i - 1].trim_start().len();
                lines[i].find('^').map(|col| col.saturating_sub(indent) + 1)
            });
            match at {
                Some(col) => format!("{message} (at character {col})"),
                None => message.to_string(),
            }
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than {limit} bytes; write a simpler pattern")
        }
        other => other.to_string().replace('\n', " "),
    }
}

fn trim<'a>(mut s: &'a str, trims: &[String]) -> &'a str {
    for t in trims.iter().filter(|t| !t.is_empty()) {
        while let Some(rest) = s.strip_prefix(t.as_str()) {
            s = rest;
        }
        while let Some(rest) = s.strip_suffix(t.as_str()) {
            s = rest;
        }
    }
    s
}

/// An open input file: its header (kept columns) and a record reader. [`Input::next_row`]
/// gives the rows one by one, each checked (see [`InputGuard`] and the field count).
pub struct Input {
    file: PathBuf,
    /// (index in the input record, header name)
    columns: Vec<(usize, String)>,
    /// How many fields the header line has (columns without a name included).
    header_fields: usize,
    /// The header's line in the file (after NumberOfLinesToSkip).
    header_line: u64,
    reader: csv::Reader<Box<dyn Read + Send>>,
    trims: Vec<String>,
    record: csv::StringRecord,
}

impl Input {
    /// Opens `file` with a connection's settings (Separator, Encoding, NumberOfLinesToSkip,
    /// ValuesToTrim) and reads its header.
    pub fn open(settings: &Settings, file: PathBuf) -> Result<Input, PackageError> {
        open_input(settings, file)
    }

    /// The kept columns' names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(_, n)| n.clone()).collect()
    }

    /// The next row (one value per kept column; empty values are NULL), `None` at the end. An
    /// error names the file and the line: a row whose field count is not the header's, a quoted
    /// field open at the end of the file, a NUL byte, bytes not valid in the encoding.
    pub fn next_row(&mut self) -> Result<Option<Vec<Value>>, PackageError> {
        match self.reader.read_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                return Err(PackageError::source(format!(
                    "{}: {e}",
                    self.file.display()
                )));
            }
        }
        let record = &self.record;
        // A row must have the header's fields: more means a value holding the separator
        // without quotes (the columns shift), fewer a cut line; either would export wrong data
        // without a word.
        if record.len() != self.header_fields {
            // The reader counts from the header line.
            let line = record
                .position()
                .map_or(0, |p| p.line() + self.header_line - 1);
            return Err(PackageError::source(format!(
                "{}: line {line} has {} field{} but the header line has {}: {}; nothing is exported from this file",
                self.file.display(),
                record.len(),
                if record.len() == 1 { "" } else { "s" },
                self.header_fields,
                if record.len() > self.header_fields {
                    "a value holding the separator must be quoted"
                } else {
                    "the line is cut short, or a separator is missing"
                }
            )));
        }
        Ok(Some(
            self.columns
                .iter()
                .map(
                    |(i, _)| match record.get(*i).map(|v| trim(v, &self.trims)) {
                        None | Some("") => Value::Null,
                        Some(v) => Value::Text(v.to_string()),
                    },
                )
                .collect(),
        ))
    }
}

/// Where the reader is in the CSV grammar the `csv` crate reads (RFC 4180 quoting, a quote that
/// is not at the start of a field taken literally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first of a doubled quote.
    QuoteInQuoted,
}

/// Watches the decoded text on its way to the CSV reader for what the reader would accept
/// silently: a quoted field still open at the end of the file (a truncated or corrupt file whose
/// last rows would vanish into one field) and NUL bytes (binary data, or UTF-16 read as UTF-8).
/// Either fails the read with the line to look at.
struct InputGuard<R> {
    inner: R,
    separator: u8,
    state: Lex,
    /// Line breaks seen so far (the current line is `lines + 1`).
    lines: u64,
    /// The line where the open quoted field started.
    quote_line: u64,
    /// A NUL byte is next: every further read fails.
    at_nul: bool,
}

impl<R> InputGuard<R> {
    fn new(inner: R, separator: u8, first_line: u64) -> Self {
        InputGuard {
            inner,
            separator,
            state: Lex::FieldStart,
            lines: first_line.saturating_sub(1),
            quote_line: 0,
            at_nul: false,
        }
    }

    fn scan(&mut self, mut buf: &[u8]) {
        let sep = self.separator;
        while let Some(&b) = buf.first() {
            match self.state {
                Lex::FieldStart | Lex::QuoteInQuoted => {
                    let quoted_before = self.state == Lex::QuoteInQuoted;
                    self.state = if b == b'"' {
                        if !quoted_before {
                            self.quote_line = self.lines + 1;
                        }
                        Lex::Quoted
                    } else if b == sep || b == b'\r' {
                        Lex::FieldStart
                    } else if b == b'\n' {
                        self.lines += 1;
                        Lex::FieldStart
                    } else {
                        Lex::Unquoted
                    };
                    buf = &buf[1..];
                }
                Lex::Unquoted => match memchr::memchr3(sep, b'\n', b'\r', buf) {
                    Some(i) => {
                        if buf[i] == b'\n' {
                            self.lines += 1;
                        }
                        self.state = Lex::FieldStart;
                        buf = &buf[i + 1..];
                    }
                    None => return,
                },
                Lex::Quoted => match memchr::memchr(b'"', buf) {
                    Some(i) => {
                        self.lines += memchr::memchr_iter(b'\n', &buf[..i]).count() as u64;
                        self.state = Lex::QuoteInQuoted;
                        buf = &buf[i + 1..];
                    }
                    None => {
                        self.lines += memchr::memchr_iter(b'\n', buf).count() as u64;
                        return;
                    }
                },
            }
        }
    }
}

impl<R: Read> Read for InputGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.at_nul {
            let n = self.inner.read(buf)?;
            let data = &buf[..n];
            match memchr::memchr(0, data) {
                None => {
                    if n == 0 && !buf.is_empty() && self.state == Lex::Quoted {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the quoted field that starts on line {} is not closed at the end of the file: the file is truncated or a quote is missing; nothing is exported from it",
                                self.quote_line
                            ),
                        ));
                    }
                    self.scan(data);
                    return Ok(n);
                }
                Some(at) => {
                    // What comes before the NUL is handed over first, so that the rows before
                    // it are read and the error comes where the reader meets it.
                    self.at_nul = true;
                    if at > 0 {
                        self.scan(&buf[..at]);
                        return Ok(at);
                    }
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "line {} holds a NUL byte: the file is binary, or UTF-16 read as another encoding (set Encoding, e.g. UTF-16LE)",
                self.lines + 1
            ),
        ))
    }
}

fn open_input(settings: &Settings, file: PathBuf) -> Result<Input, PackageError> {
    let sep = separator(settings).map_err(|p| PackageError::config(p.message))?;
    let enc_name = settings.text("Encoding").unwrap_or("UTF-8");
    let enc = encoding_for(enc_name).ok_or_else(|| {
        PackageError::config(format!("unknown Encoding {}", settings.quote("Encoding")))
    })?;
    let f = std::fs::File::open(&file)
        .map_err(|e| PackageError::source(format!("cannot open {}: {e}", file.display())))?;
    // Decodes to UTF-8 as it reads; a byte-order mark overrides the configured encoding.
    let decoded = super::decode::StrictDecoder::new(f, enc);
    let mut buffered = BufReader::with_capacity(64 * 1024, decoded);
    let skip = settings.integer("NumberOfLinesToSkip").unwrap_or(0).max(0);
    let first_line = u64::try_from(skip).unwrap_or(0) + 1;
    let mut line = Vec::new();
    for n in 0..skip {
        line.clear();
        let read = buffered
            .read_until(b'\n', &mut line)
            .map_err(|e| PackageError::source(format!("{}: {e}", file.display())))?;
        if read == 0 {
            return Err(PackageError::source(format!(
                "{}: the file has only {n} lines, but NumberOfLinesToSkip is {skip}",
                file.display()
            )));
        }
    }
    let boxed: Box<dyn Read + Send> = Box::new(InputGuard::new(buffered, sep, first_line));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(true)
        .flexible(true)
        .from_reader(boxed);
    let headers = reader
        .headers()
        .map_err(|e| {
            PackageError::source(format!(
                "{}: cannot read the header line: {e}",
                file.display()
            ))
        })?
        .clone();
    let trims = settings.list("ValuesToTrim");
    let header_fields = headers.len();
    let mut columns: Vec<(usize, String)> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let h = trim(h.trim_start_matches('\u{feff}'), trims).trim();
        if h.is_empty() {
            continue; // columns without a header are dropped
        }
        if let Some((j, _)) = columns.iter().find(|(_, c)| c == h) {
            return Err(PackageError::source(format!(
                "{}: the header names column {h:?} twice (columns {} and {}); rename one",
                file.display(),
                j + 1,
                i + 1
            )));
        }
        columns.push((i, h.to_string()));
    }
    if columns.is_empty() {
        return Err(PackageError::source(format!(
            "{}: the header line has no column names (is Separator {:?} right?)",
            file.display(),
            sep as char
        )));
    }
    Ok(Input {
        file,
        columns,
        header_fields,
        header_line: first_line,
        reader,
        trims: trims.to_vec(),
        record: csv::StringRecord::new(),
    })
}

impl CsvPackage {
    fn input_for(conn: &ConnectionRef, mode: ExportMode) -> Result<Option<Input>, PackageError> {
        let setting = path_setting(mode);
        let Some(path) = conn.settings.path(setting) else {
            return Ok(None);
        };
        let file = select_file(&conn.settings, setting, &path)?;
        open_input(&conn.settings, file).map(Some)
    }

    /// The input for test/discover: the complete file, else the incremental one.
    fn any_input(conn: &ConnectionRef) -> Result<Input, PackageError> {
        for mode in [ExportMode::Complete, ExportMode::Incremental] {
            if let Some(i) = Self::input_for(conn, mode)? {
                return Ok(i);
            }
        }
        Err(PackageError::config(
            "neither Path nor PathIncremental is set",
        ))
    }
}

#[async_trait]
impl Package for CsvPackage {
    fn info(&self) -> &'static PackageInfo {
        &INFO
    }

    fn check(&self, settings: &Settings) -> Vec<Problem> {
        let mut problems = Vec::new();
        if settings.non_empty("Path").is_none() && settings.non_empty("PathIncremental").is_none() {
            problems.push(Problem::new(
                Some("Path"),
                "neither Path nor PathIncremental is set",
                "set Path to the file read by complete exports (and PathIncremental for incremental ones)",
            ));
        }
        if let Err(p) = separator(settings) {
            problems.push(p);
        }
        if let Some(e) = settings.text("Encoding")
            && encoding_for(e).is_none()
        {
            problems.push(Problem::new(
                Some("Encoding"),
                format!("unknown Encoding {}", settings.quote("Encoding")),
                "use UTF-8, UTF-16LE, UTF-16BE, Windows-1252 or ISO-8859-1 (WHATWG encoding labels are accepted)",
            ));
        }
        if settings
            .integer("NumberOfLinesToSkip")
            .is_some_and(|n| n < 0)
        {
            problems.push(Problem::new(
                Some("NumberOfLinesToSkip"),
                "NumberOfLinesToSkip cannot be negative",
                "use 0 or a positive number of lines",
            ));
        }
        for setting in ["Path", "PathIncremental"] {
            let Some(path) = settings.path(setting) else {
                continue;
            };
            if settings.boolean("IsFileNameRegex") {
                let name = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Err(e) = file_name_regex(&name) {
                    problems.push(Problem::new(
                        Some(if setting == "Path" {
                            "Path"
                        } else {
                            "PathIncremental"
                        }),
                        if settings.is_concealed(setting) {
                            format!(
                                "the file name in {} is not a usable regular expression: {e}",
                                settings.quote(setting)
                            )
                        } else {
                            format!(
                                "the file name {name:?} is not a usable regular expression: {e}"
                            )
                        },
                        "fix the regular expression, or set IsFileNameRegex to false",
                    ));
                }
            }
        }
        problems
    }

    fn source_paths(&self, settings: &Settings) -> Vec<(&'static str, PathBuf)> {
        let regex = settings.boolean("IsFileNameRegex");
        ["Path", "PathIncremental"]
            .into_iter()
            .filter_map(|s| {
                let p = settings.path(s)?;
                let p = if regex {
                    p.parent().map(Path::to_path_buf)?
                } else {
                    p
                };
                Some((
                    if s == "Path" {
                        "Path"
                    } else {
                        "PathIncremental"
                    },
                    p,
                ))
            })
            .collect()
    }

    async fn test(&self, conn: &ConnectionRef) -> Result<TestReport, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let mut checks = Vec::new();
            for mode in [ExportMode::Complete, ExportMode::Incremental] {
                if let Some(input) = Self::input_for(&conn, mode)? {
                    checks.push(format!(
                        "{}: {} is readable, {} columns: {}",
                        path_setting(mode),
                        input.file.display(),
                        input.columns.len(),
                        input
                            .columns
                            .iter()
                            .map(|(_, c)| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            if checks.is_empty() {
                return Err(PackageError::config(
                    "neither Path nor PathIncremental is set",
                ));
            }
            Ok(TestReport { checks })
        })
        .await
    }

    async fn discover(&self, conn: &ConnectionRef) -> Result<Schema, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let input = Self::any_input(&conn)?;
            Ok(Schema {
                connection: conn.identifier.to_string(),
                package: INFO.id.to_string(),
                discovered_at: Utc::now(),
                tables: vec![SchemaTable {
                    name: conn.identifier.to_string(),
                    source: input.file.display().to_string(),
                    columns: input
                        .columns
                        .iter()
                        .map(|(_, name)| SchemaColumn {
                            name: name.clone(),
                            value_type: ValueType::String,
                            key_type: KeyType::None,
                            multivalued: false,
                            nullable: None,
                            source_type: None,
                        })
                        .collect(),
                    source_table: false,
                }],
            })
        })
        .await
    }

    async fn export(
        &self,
        conn: &ConnectionRef,
        mode: ExportMode,
        sink: RowSink,
    ) -> Result<ExportOutcome, PackageError> {
        let conn = conn.clone();
        run_blocking(move || {
            let Some(mut input) = Self::input_for(&conn, mode)? else {
                let (missing, other) = match mode {
                    ExportMode::Complete => ("Path", "run an incremental export, or set Path"),
                    ExportMode::Incremental => ("PathIncremental", "run a complete export (--complete), or set PathIncremental"),
                };
                let asked = match mode {
                    ExportMode::Complete => "a complete",
                    ExportMode::Incremental => "an incremental",
                };
                return Ok(ExportOutcome::NotRun {
                    reason: format!(
                        "{asked} export was asked for, but {missing} is not set; reading the other file instead could make the synchronization delete or duplicate data: {other}"
                    ),
                });
            };
            let mut writer = sink.table(None, input.column_names())?;
            while let Some(row) = input.next_row()? {
                writer.push_blocking(row)?;
            }
            writer.finish_blocking()?;
            Ok(ExportOutcome::Exported)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_in_order() {
        let t = vec!["$".to_string(), "%".to_string()];
        assert_eq!(trim("$%I am an example$%", &t), "I am an example$");
    }

    #[test]
    fn encodings_by_name() {
        use super::super::decode::InputEncoding::{Latin1, Whatwg};
        assert_eq!(encoding_for("UTF-8"), Some(Whatwg(encoding_rs::UTF_8)));
        assert_eq!(encoding_for("Unicode"), Some(Whatwg(encoding_rs::UTF_16LE)));
        assert_eq!(
            encoding_for("utf-16be"),
            Some(Whatwg(encoding_rs::UTF_16BE))
        );
        assert_eq!(encoding_for("ISO-8859-1"), Some(Latin1));
        assert_eq!(
            encoding_for("Windows-1252"),
            Some(Whatwg(encoding_rs::WINDOWS_1252))
        );
        assert_eq!(encoding_for("klingon"), None);
    }
}
