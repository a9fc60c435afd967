//! Structured settings (lists of objects such as SQL `Tables`, LDAP `Servers` and `Tables`), read
//! one way for every package:
//!
//! * a value is a list, an object keyed by index (`{"0": {...}, "1": {...}}`: the shape an
//!   environment override of item N takes, `CONNAGENT__Connections__X__Tables__1__Name`), or one
//!   object standing for a list of one;
//! * items are numbered from 1 in messages (`Tables item 2: ...`);
//! * keys are matched without case, and a key the setting does not know is flagged;
//! * every problem is collected (never only the first), each naming the setting.

use super::Problem;
use serde_json::{Map, Value as J};
use std::borrow::Cow;

/// The items of a structured value, in order: a list's items, an index-keyed object's values by
/// index, or the value itself as the only item.
pub fn items(v: &J) -> Vec<&J> {
    match v {
        J::Array(a) => a.iter().collect(),
        J::Object(m) if !m.is_empty() && m.keys().all(|k| k.parse::<usize>().is_ok()) => {
            let mut v: Vec<(usize, &J)> = m
                .iter()
                .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
                .collect();
            v.sort_by_key(|(i, _)| *i);
            v.into_iter().map(|(_, v)| v).collect()
        }
        other => vec![other],
    }
}

/// Reads the items of one structured setting, collecting every problem.
pub struct ListReader<'p> {
    setting: &'static str,
    problems: &'p mut Vec<Problem>,
}

/// One item of a structured setting: its number (from 1) and its keys.
pub struct Item<'v> {
    pub n: usize,
    map: Cow<'v, Map<String, J>>,
}

impl<'p> ListReader<'p> {
    pub fn new(setting: &'static str, problems: &'p mut Vec<Problem>) -> Self {
        ListReader { setting, problems }
    }

    /// A problem of the setting as a whole.
    pub fn problem(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.problems
            .push(Problem::new(Some(self.setting), message, hint));
    }

    /// A problem of item `n`: `<Setting> item <n>: <message>`.
    pub fn item_problem(&mut self, n: usize, message: impl AsRef<str>, hint: impl Into<String>) {
        self.problems.push(Problem::new(
            Some(self.setting),
            format!("{} item {n}: {}", self.setting, message.as_ref()),
            hint,
        ));
    }

    /// The items as objects. An item that is a string stands for `{string_key: "..."}` when
    /// `string_key` is given; any other item that is not an object is a problem. Keys outside
    /// `keys` are flagged (the item is still read).
    pub fn objects<'v>(
        &mut self,
        value: &'v J,
        keys: &[&str],
        string_key: Option<&str>,
        hint: &str,
    ) -> Vec<Item<'v>> {
        let mut out = Vec::new();
        for (i, item) in items(value).into_iter().enumerate() {
            let n = i + 1;
            let map = match (item, string_key) {
                (J::Object(m), _) => Cow::Borrowed(m),
                (J::String(s), Some(k)) => {
                    Cow::Owned(Map::from_iter([(k.to_string(), J::String(s.clone()))]))
                }
                _ => {
                    let expected = match string_key {
                        Some(k) => format!("expected an object or a {}", k.to_ascii_lowercase()),
                        None => "expected an object".to_string(),
                    };
                    self.item_problem(n, expected, hint);
                    continue;
                }
            };
            let unknown: Vec<&str> = map
                .keys()
                .filter(|k| !keys.iter().any(|a| a.eq_ignore_ascii_case(k)))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                let message = format!("unknown key(s) {}", unknown.join(", "));
                self.item_problem(n, message, format!("the keys are {}", keys.join(", ")));
            }
            out.push(Item { n, map });
        }
        out
    }
}

impl Item<'_> {
    /// A key's value (matched without case); `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&J> {
        crate::ident::get_ci(&self.map, key).filter(|v| !v.is_null())
    }

    /// A text field, trimmed; numbers are taken as text; empty text counts as absent.
    pub fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(J::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(J::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("{key} must be text")),
        }
    }

    /// A true/false field (`"true"`/`"false"` too); absent is false.
    pub fn boolean(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(J::Bool(b)) => Ok(*b),
            Some(J::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(J::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(format!("{key} must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_index_keyed_objects_and_single_objects() {
        assert_eq!(items(&json!([1, 2])).len(), 2);
        assert_eq!(items(&json!({"Server": "a"})).len(), 1);
        let indexed = json!({"1": {"Server": "b"}, "0": {"Server": "a"}});
        let v = items(&indexed);
        assert_eq!(v[0]["Server"], "a");
        assert_eq!(v[1]["Server"], "b");
    }

    #[test]
    fn every_problem_is_collected_with_items_numbered_from_one() {
        let mut problems = Vec::new();
        let v = json!([{"Name": "a", "Nmae": "x"}, 7, "host", {"name": " b ", "On": "yes"}]);
        let mut r = ListReader::new("Tables", &mut problems);
        let got = r.objects(&v, &["Name", "On"], Some("Name"), "hint");
        assert_eq!(got.iter().map(|i| i.n).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(got[1].text("Name").unwrap().as_deref(), Some("host"));
        assert_eq!(got[2].text("NAME").unwrap().as_deref(), Some("b"));
        assert!(got[2].boolean("On").is_err());
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Tables item 1: unknown key(s) Nmae",
                "Tables item 2: expected an object or a name"
            ]
        );
    }
}
