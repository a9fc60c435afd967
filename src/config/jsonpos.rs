//! Finds where each key of a JSON document is written, so that settings problems can name a line.
//!
//! serde_json tells where a syntax error is, but not where a valid value sits. This scanner walks
//! text that serde_json has already accepted and records, for each object key, its path
//! (lower-cased segments, array indexes as numbers) and its 1-based line and column.

use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct JsonPositions {
    map: HashMap<String, (u32, u32)>,
}

impl JsonPositions {
    /// Position of the key at `path` (segments compared case-insensitively).
    pub fn get(&self, path: &[&str]) -> Option<(u32, u32)> {
        self.map.get(&join(path.iter().copied())).copied()
    }

    pub fn scan(text: &str) -> Self {
        let mut map = HashMap::new();
        // Stack of containers: for arrays the current index; for objects the pending key.
        enum Frame {
            Object(Option<String>),
            Array(usize),
        }
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<String> = Vec::new();
        let (mut line, mut col) = (1u32, 1u32);
        let mut chars = text.chars().peekable();
        // True when the next string in an object is a key.
        let mut expect_key = false;
        while let Some(c) = chars.next() {
            let (start_line, start_col) = (line, col);
            if c == '\n' {
                line += 1;
                col = 1;
                continue;
            }
            col += 1;
            match c {
                '{' => {
                    stack.push(Frame::Object(None));
                    expect_key = true;
                }
                '[' => {
                    stack.push(Frame::Array(0));
                    path.push("0".into());
                    expect_key = false;
                }
                '}' => {
                    if let Some(Frame::Object(Some(_))) = stack.last() {
                        path.pop();
                    }
                    stack.pop();
                    expect_key = false;
                }
                ']' => {
                    path.pop();
                    stack.pop();
                    expect_key = false;
                }
                ',' => match stack.last_mut() {
                    Some(Frame::Object(key)) => {
                        if key.take().is_some() {
                            path.pop();
                        }
                        expect_key = true;
                    }
                    Some(Frame::Array(i)) => {
                        *i += 1;
                        path.pop();
                        path.push(i.to_string());
                    }
                    None => {}
                },
                '"' => {
                    // Only keys are collected: values may be secrets, and are never copied.
                    let mut key_text = expect_key.then(String::new);
                    while let Some(c) = chars.next() {
                        if c == '\n' {
                            line += 1;
                            col = 1;
                        } else {
                            col += 1;
                        }
                        match c {
                            '\\' => {
                                if let Some(e) = chars.next() {
                                    col += 1;
                                    if let Some(k) = key_text.as_mut() {
                                        k.push(e);
                                    }
                                }
                            }
                            '"' => break,
                            other => {
                                if let Some(k) = key_text.as_mut() {
                                    k.push(other);
                                }
                            }
                        }
                    }
                    if let Some(s) = key_text {
                        if let Some(Frame::Object(key)) = stack.last_mut() {
                            path.push(s.to_ascii_lowercase());
                            *key = Some(s);
                            map.insert(
                                join(path.iter().map(String::as_str)),
                                (start_line, start_col),
                            );
                        }
                        expect_key = false;
                    }
                }
                _ => {}
            }
        }
        JsonPositions { map }
    }
}

fn join<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    segments
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "{\n  \"Connections\": {\n    \"HRDb\": { \"Timeout\": \"x\\\"y\",\n      \"Tables\": [ {\"Name\": 1}, {\"Name\": 2} ] }\n  },\n  \"A\": 1\n}";
        let p = JsonPositions::scan(text);
        assert_eq!(p.get(&["Connections"]), Some((2, 3)));
        assert_eq!(p.get(&["connections", "hrdb"]), Some((3, 5)));
        assert_eq!(p.get(&["Connections", "HRDb", "Timeout"]), Some((3, 15)));
        assert_eq!(
            p.get(&["Connections", "HRDb", "Tables", "1", "Name"]),
            Some((4, 33))
        );
        assert_eq!(p.get(&["A"]), Some((6, 3)));
    }
}
