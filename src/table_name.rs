//! The connection-table naming rule, in one place: a connection's tables are `<Connection>.csv`
//! and `<Connection>_<table>.csv`, written as `<name>.csv.partial` until they are complete.
//!
//! Connection identifiers never hold `_` ([`crate::ident::check_connection_identifier`]), so the
//! first `_` of a name separates the connection from the table. The connection part is matched
//! without case, like every identifier; files are written with the identifier's spelling from the
//! XML, and an existing file is found whatever its case. A table part is a plain file-name part
//! (letters, digits, `.`, `-`, `_`; not starting with `.`).

use crate::fsutil::PARTIAL_SUFFIX;
use crate::ident::Ident;

/// The extension of every connection table.
pub const EXTENSION: &str = ".csv";

/// The longest table part accepted.
pub const MAX_TABLE_LEN: usize = 200;

/// One connection table's name: its connection and, for `<Connection>_<table>`, the table part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    connection: String,
    table: Option<String>,
}

/// Why a table part cannot be used in a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connection table name {0:?}: use letters, digits, '.', '-' and '_' only")]
pub struct BadTableName(pub String);

impl TableName {
    /// The table `table` of `connection` (`None`: the connection's single table).
    pub fn new(connection: impl Into<String>, table: Option<&str>) -> Self {
        TableName {
            connection: connection.into(),
            table: table.map(str::to_string),
        }
    }

    /// Checks a table part: a plain file-name part.
    pub fn check_table(table: &str) -> Result<(), BadTableName> {
        let ok = !table.is_empty()
            && table.len() <= MAX_TABLE_LEN
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && !table.starts_with('.');
        if ok {
            Ok(())
        } else {
            Err(BadTableName(table.to_string()))
        }
    }

    /// Reads a name as mappings, requests and files write it: `HRDb`, `HRDb.csv`,
    /// `hrdb_People.CSV`. The case is kept as written. `None` when it cannot be a connection
    /// table's name (empty parts, a folder, an extension other than `.csv`).
    pub fn parse(text: &str) -> Option<TableName> {
        let text = text.trim();
        let stem = strip_suffix_ci(text, EXTENSION).unwrap_or(text);
        if stem.is_empty() || stem.contains(['/', '\\', '\0']) || stem.starts_with('.') {
            return None;
        }
        if stem.contains('.')
            && stem.rsplit_once('.').is_some_and(|(_, ext)| {
                ext.eq_ignore_ascii_case("partial") || ext.eq_ignore_ascii_case("csv")
            })
        {
            return None;
        }
        Some(match stem.split_once('_') {
            None => TableName::new(stem, None),
            Some((c, t)) if !c.is_empty() && !t.is_empty() => TableName::new(c, Some(t)),
            Some(_) => return None,
        })
    }

    /// Reads the name of a table being written: `<name>.csv.partial`.
    pub fn parse_partial(file: &str) -> Option<TableName> {
        let name = strip_suffix_ci(file, PARTIAL_SUFFIX)?;
        strip_suffix_ci(name, EXTENSION)?;
        TableName::parse(name)
    }

    pub fn connection(&self) -> &str {
        &self.connection
    }

    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// Whether this table belongs to connection `id` (compared without case).
    pub fn belongs_to(&self, id: &Ident) -> bool {
        id.matches(&self.connection)
    }

    /// `HRDb` or `HRDb_People`: the name mappings (`ConnectionTable`) and schemas use.
    pub fn stem(&self) -> String {
        match &self.table {
            None => self.connection.clone(),
            Some(t) => format!("{}_{t}", self.connection),
        }
    }

    /// `HRDb_People.csv`.
    pub fn file_name(&self) -> String {
        format!("{}{EXTENSION}", self.stem())
    }

    /// `HRDb_People.csv.partial`: the name while the table is written.
    pub fn partial_file_name(&self) -> String {
        format!("{}{PARTIAL_SUFFIX}", self.file_name())
    }

    /// Whether two names are the same file, case aside (identifiers ignore case, and two tables
    /// that differ only by case would be one file on some file systems).
    pub fn same_file(&self, other: &TableName) -> bool {
        self.file_name().eq_ignore_ascii_case(&other.file_name())
    }

    /// The stem in lower case: a key for look-ups that ignore case.
    pub fn key(&self) -> String {
        self.stem().to_ascii_lowercase()
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.stem())
    }
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_every_form() {
        let t = TableName::new("HRDb", Some("People"));
        assert_eq!(t.stem(), "HRDb_People");
        assert_eq!(t.file_name(), "HRDb_People.csv");
        assert_eq!(t.partial_file_name(), "HRDb_People.csv.partial");
        assert_eq!(TableName::new("HRDb", None).file_name(), "HRDb.csv");
        for text in [
            "HRDb_People",
            "HRDb_People.csv",
            "HRDb_People.CSV",
            " HRDb_People ",
        ] {
            assert_eq!(TableName::parse(text), Some(t.clone()), "{text}");
        }
        // The first '_' separates; the table part may hold more.
        let t = TableName::parse("Dir_member_of.csv").unwrap();
        assert_eq!((t.connection(), t.table()), ("Dir", Some("member_of")));
        assert_eq!(
            TableName::parse_partial("hrdb.csv.partial"),
            Some(TableName::new("hrdb", None))
        );
        assert_eq!(TableName::parse_partial("hrdb.csv"), None);
        for bad in [
            "",
            "_x",
            "x_",
            "../x.csv",
            "a/b",
            ".hidden",
            "x.csv.partial",
        ] {
            assert_eq!(TableName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn case_is_ignored_where_identifiers_ignore_it() {
        let t = TableName::parse("hrdb_people.csv").unwrap();
        assert!(t.belongs_to(&Ident::new("HRDb")));
        assert!(!t.belongs_to(&Ident::new("HR")));
        assert!(t.same_file(&TableName::new("HRDb", Some("People"))));
        assert_eq!(t.key(), "hrdb_people");
    }

    #[test]
    fn table_parts_are_plain_file_name_parts() {
        assert!(TableName::check_table("People.v2-x_y").is_ok());
        for bad in ["", ".x", "a/b", "a b", "é", &"x".repeat(201)] {
            assert!(TableName::check_table(bad).is_err(), "{bad}");
        }
    }
}
