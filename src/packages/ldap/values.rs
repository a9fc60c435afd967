//! Attribute descriptions, values and entries: column names, binary or text, ranged values,
//! parent DNs, and the search result entries as the agent reads them.

use super::*;

/// An attribute description without the transfer options `;binary` and `;range=...`: the
/// column name of the attribute.
pub(super) fn column_name(desc: &str) -> String {
    let mut parts = desc.split(';');
    let mut out = parts.next().unwrap_or_default().to_string();
    for option in parts {
        if option.eq_ignore_ascii_case("binary") || strip_prefix_ci(option, "range=").is_some() {
            continue;
        }
        out.push(';');
        out.push_str(option);
    }
    out
}

/// How returned attribute descriptions are matched to columns (names ignore case).
pub(super) fn attr_key(desc: &str) -> String {
    column_name(desc).to_ascii_lowercase()
}

pub(super) fn is_binary_name(desc: &str) -> bool {
    let mut parts = desc.split(';');
    let base = parts.next().unwrap_or_default().to_ascii_lowercase();
    parts.any(|o| o.eq_ignore_ascii_case("binary")) || KNOWN_BINARY.contains(&base.as_str())
}

/// A ranged attribute description (`member;range=0-1499`, `member;range=1500-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    /// The description without the range option (`member`).
    pub(super) base: String,
    pub(super) low: u64,
    /// `None` for `*`: the last range.
    pub(super) high: Option<u64>,
}

pub(super) fn parse_range(desc: &str) -> Option<Range> {
    let mut base = String::new();
    let mut range = None;
    for (i, part) in desc.split(';').enumerate() {
        if i > 0 {
            if let Some(r) = strip_prefix_ci(part, "range=") {
                range = Some(r);
                continue;
            }
            base.push(';');
        }
        base.push_str(part);
    }
    let (low, high) = range?.split_once('-')?;
    let low: u64 = low.parse().ok()?;
    let high = match high {
        "*" => None,
        h => Some(h.parse::<u64>().ok().filter(|h| *h >= low)?),
    };
    Some(Range { base, low, high })
}

/// The DN of an entry's parent: everything after the first RDN separator that is neither
/// escaped (`\,`) nor quoted (`"a,b"`, LDAPv2). `None` for a DN of one RDN (or empty).
pub(super) fn parent_dn(dn: &str) -> Option<&str> {
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in dn.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                return dn
                    .get(i + 1..)
                    .map(str::trim_start)
                    .filter(|p| !p.is_empty());
            }
            _ => {}
        }
    }
    None
}

/// A value that is not UTF-8 in a text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotText;

/// One value in its column's form: bytes when the column is binary, else text, which must be
/// UTF-8 (never replaced, never switched to bytes for this value alone).
pub(super) fn value_of(v: Vec<u8>, binary: bool) -> Result<Value, NotText> {
    if binary {
        return Ok(Value::Bytes(v));
    }
    String::from_utf8(v).map(Value::Text).map_err(|_| NotText)
}

/// An attribute's values as one field: NULL, one value, or several (joined by the sink), every
/// value in the column's one form.
pub(super) fn values_of(values: Vec<Vec<u8>>, binary: bool) -> Result<Value, NotText> {
    let mut out = values
        .into_iter()
        .map(|v| value_of(v, binary))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match out.len() {
        0 => Value::Null,
        1 => out.pop().unwrap_or(Value::Null),
        _ => Value::Multi(out),
    })
}

/// A search result entry, parsed without panicking on malformed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) dn: String,
    /// Attribute descriptions as the server wrote them, with their raw values.
    pub(super) attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// Parses the BER of a SearchResultEntry (`[APPLICATION 4] SEQUENCE { objectName,
/// attributes SEQUENCE OF SEQUENCE { type, vals SET OF value } }`). ldap3's
/// `SearchEntry::construct` panics on malformed data; this returns an error instead.
pub(super) fn parse_entry(tag: StructureTag) -> Result<Entry, &'static str> {
    if !matches!(tag.class, TagClass::Application) || tag.id != 4 {
        return Err("the server sent a search result that is not an entry");
    }
    let PL::C(parts) = tag.payload else {
        return Err("the server sent a malformed entry");
    };
    let mut parts = parts.into_iter();
    let dn = match parts.next().map(|t| t.payload) {
        Some(PL::P(bytes)) => String::from_utf8(bytes)
            .map_err(|_| "the server sent an entry whose DN is not UTF-8")?,
        _ => return Err("the server sent an entry without a DN"),
    };
    let mut attrs = Vec::new();
    match parts.next().map(|t| t.payload) {
        None => {}
        Some(PL::P(b)) if b.is_empty() => {}
        Some(PL::P(_)) => return Err("the server sent an entry with malformed attributes"),
        Some(PL::C(list)) => {
            for attribute in list {
                let PL::C(pair) = attribute.payload else {
                    return Err("the server sent a malformed attribute");
                };
                let mut pair = pair.into_iter();
                let desc = match pair.next().map(|t| t.payload) {
                    Some(PL::P(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => return Err("the server sent an attribute without a name"),
                };
                let values = match pair.next().map(|t| t.payload) {
                    None => Vec::new(),
                    Some(PL::P(b)) if b.is_empty() => Vec::new(),
                    Some(PL::P(_)) => return Err("the server sent malformed attribute values"),
                    Some(PL::C(values)) => values
                        .into_iter()
                        .map(|v| match v.payload {
                            PL::P(b) => Ok(b),
                            PL::C(_) => Err("the server sent a malformed attribute value"),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                attrs.push((desc, values));
            }
        }
    }
    Ok(Entry { dn, attrs })
}
