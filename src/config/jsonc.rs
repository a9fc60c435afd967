//! The JSON the .NET configuration reader accepts, and the Netwrix agent's files therefore may
//! hold: `//` and `/* */` comments, and a comma before a closing `}` or `]`. [`relaxed`] blanks
//! them with spaces (newlines kept), so that the result is strict JSON with every byte at the
//! same offset: serde_json's line:column and the position scanner stay true to the file.

use zeroize::Zeroizing;

/// A copy of `text` with comments and trailing commas replaced by spaces. The copy may hold
/// secrets: it is wiped when dropped. An unterminated block comment is left as it is (the JSON
/// parser then reports it where it starts).
pub fn relaxed(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    out.extend_from_slice(text.as_bytes());
    blank_comments(&mut out);
    blank_trailing_commas(&mut out);
    // Only ASCII bytes were replaced, whole characters at a time: still UTF-8.
    let s = String::from_utf8(std::mem::take(&mut *out)).unwrap_or_default();
    Zeroizing::new(s)
}

/// Replaces `bytes[from..to]` by spaces, keeping line breaks.
fn blank(bytes: &mut [u8], from: usize, to: usize) {
    for b in &mut bytes[from..to] {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
}

fn blank_comments(b: &mut [u8]) {
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match (c, b.get(i + 1)) {
            (b'"', _) => {
                in_string = true;
                i += 1;
            }
            (b'/', Some(b'/')) => {
                let end = b[i..]
                    .iter()
                    .position(|x| *x == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(b, i, end);
                i = end;
            }
            (b'/', Some(b'*')) => {
                let Some(p) = b[i + 2..].windows(2).position(|w| w == b"*/") else {
                    return;
                };
                let end = i + 2 + p + 2;
                blank(b, i, end);
                i = end;
            }
            _ => i += 1,
        }
    }
}

fn blank_trailing_commas(b: &mut [u8]) {
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b',' => {
                let next = b[i + 1..].iter().find(|x| !x.is_ascii_whitespace());
                if matches!(next, Some(b'}' | b']')) {
                    b[i] = b' ';
                }
            }
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::relaxed;

    #[test]
    fn comments_and_trailing_commas_become_spaces_in_place() {
        let text = "{\n  // a note\n  \"A\": \"x//y\", /* b */\n  \"B\": [1, 2,],\n  \"C\": \"q\\\"/*\",\n}\n";
        let r = relaxed(text);
        assert_eq!(r.len(), text.len());
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["A"], "x//y");
        assert_eq!(v["B"], serde_json::json!([1, 2]));
        assert_eq!(v["C"], "q\"/*");
        // Lines keep their numbers.
        assert_eq!(r.lines().count(), text.lines().count());
        assert!(r.lines().nth(2).unwrap().starts_with("  \"A\""));
        // Strict JSON is unchanged; an unterminated comment is left for the parser to report.
        assert_eq!(*relaxed("{\"a\": 1}"), "{\"a\": 1}");
        assert!(serde_json::from_str::<serde_json::Value>(&relaxed("{\"a\": 1 /* x")).is_err());
        // Not UTF-8 sensitive: a comment holding é is blanked whole.
        let r = relaxed("{\"a\": 1 // é\n}");
        assert!(serde_json::from_str::<serde_json::Value>(&r).is_ok());
    }
}
