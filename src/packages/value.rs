//! Values read from sources, and their one canonical text form in CSV (the same in every package).
//!
//! | value | text |
//! |---|---|
//! | NULL | empty field |
//! | text | as is |
//! | integer | decimal digits, `-` sign |
//! | decimal | exact digits as the source holds them, no exponent |
//! | floating point | shortest text that reads back to the same number; `NaN`, `Infinity`, `-Infinity` |
//! | boolean | `true` / `false` |
//! | binary | base64 (RFC 4648, with padding) |
//! | date | `YYYY-MM-DD` |
//! | time | `HH:MM:SS` with up to 9 fractional digits, trailing zeros dropped |
//! | date and time | `YYYY-MM-DDTHH:MM:SS[.fraction]` (no zone in the source: none written) |
//! | date, time and offset | `YYYY-MM-DDTHH:MM:SS[.fraction]+HH:MM` |
//! | GUID | lower-case `8-4-4-4-12` hex |
//! | multi-valued | the values' texts joined with `\n` in one field |

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::borrow::Cow;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    /// An exact decimal number, already in plain digits (`-12.50`).
    Decimal(String),
    Float(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTime(NaiveDateTime),
    DateTimeOffset(DateTime<FixedOffset>),
    Guid([u8; 16]),
    Multi(Vec<Value>),
}

pub type Row = Vec<Value>;

impl Value {
    /// Appends the canonical text of this value to `out` (what `to_text` returns, without an
    /// allocation for numbers, dates and borrowed text).
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Null => {}
            Value::Text(s) | Value::Decimal(s) => out.push_str(s),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => match special_float(*f) {
                Some(s) => out.push_str(s),
                None => {
                    let _ = write!(out, "{f}");
                }
            },
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
            Value::Multi(values) => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    v.write_text(out);
                }
            }
            other => out.push_str(&other.to_text()),
        }
    }

    /// The canonical text of this value.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Text(s) | Value::Decimal(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(float_text(*f)),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Bytes(b) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
            Value::Date(d) => Cow::Owned(d.format("%Y-%m-%d").to_string()),
            Value::Time(t) => Cow::Owned(time_text(*t)),
            Value::DateTime(dt) => Cow::Owned(format!(
                "{}T{}",
                dt.date().format("%Y-%m-%d"),
                time_text(dt.time())
            )),
            Value::DateTimeOffset(dt) => Cow::Owned(format!(
                "{}T{}{}",
                dt.date_naive().format("%Y-%m-%d"),
                time_text(dt.time()),
                dt.offset()
            )),
            Value::Guid(g) => Cow::Owned(guid_text(g)),
            Value::Multi(values) => {
                let mut out = String::new();
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(&v.to_text());
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Shortest round-trip text; Rust's `Display` for f64 gives that, without exponent.
pub fn float_text(f: f64) -> String {
    special_float(f).map_or_else(|| f.to_string(), str::to_string)
}

/// The text of the floating-point values that have no digits: NaN, the infinities, and zero
/// (written `0` whatever its sign).
pub fn special_float(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f.is_infinite() {
        Some(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else if f == 0.0 {
        Some("0")
    } else {
        None
    }
}

fn time_text(t: NaiveTime) -> String {
    let mut s = t.format("%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        let _ = write!(s, ".{}", frac.trim_end_matches('0'));
    }
    s
}

fn guid_text(g: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in g.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let t = NaiveTime::from_hms_nano_opt(7, 5, 9, 120_000_000).unwrap();
        let off = FixedOffset::east_opt(3600 + 1800).unwrap();
        let cases = vec![
            (Value::Null, ""),
            (Value::Int(-42), "-42"),
            (Value::Float(0.1), "0.1"),
            (Value::Float(1e21), "1000000000000000000000"),
            (Value::Float(-0.0), "0"),
            (Value::Float(f64::NAN), "NaN"),
            (Value::Float(f64::NEG_INFINITY), "-Infinity"),
            (Value::Bool(true), "true"),
            (Value::Bytes(vec![0, 255, 16]), "AP8Q"),
            (Value::Date(d), "2024-02-29"),
            (Value::Time(t), "07:05:09.12"),
            (Value::DateTime(d.and_time(t)), "2024-02-29T07:05:09.12"),
            (
                Value::DateTimeOffset(d.and_time(t).and_local_timezone(off).unwrap()),
                "2024-02-29T07:05:09.12+01:30",
            ),
            (
                Value::Guid([
                    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
                ]),
                "12345678-9abc-def0-0001-020304050607",
            ),
            (
                Value::Multi(vec![Value::Text("a".into()), Value::Int(2)]),
                "a\n2",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(v.to_text(), want, "{v:?}");
            let mut out = String::from("x");
            v.write_text(&mut out);
            assert_eq!(out, format!("x{want}"), "write_text of {v:?}");
        }
    }
}
