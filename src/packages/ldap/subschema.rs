//! The subschema: attribute types and object classes read from the server, and the columns of
//! `<connection>_entries` derived from them.

use super::*;

/// One `attributeTypes` value of the subschema (RFC 4512 §4.1.2), as far as export needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct AttributeType {
    pub(super) oid: String,
    pub(super) names: Vec<String>,
    pub(super) sup: Option<String>,
    /// The syntax OID, without a `{length}` bound.
    pub(super) syntax: Option<String>,
    pub(super) single_value: bool,
    pub(super) obsolete: bool,
    /// `USAGE userApplications` (the default): not an operational attribute.
    pub(super) user: bool,
}

/// One `objectClasses` value of the subschema (RFC 4512 §4.1.1), as far as export needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct ObjectClass {
    pub(super) oid: String,
    pub(super) names: Vec<String>,
    pub(super) sup: Vec<String>,
    pub(super) must: Vec<String>,
    pub(super) may: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Open,
    Close,
    Quoted(String),
    Word(String),
}

pub(super) fn tokens(def: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = def.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    s.push(c);
                }
                out.push(Token::Quoted(s));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '\'') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    out
}

/// Keywords of schema definitions that stand alone, without a value.
pub(super) const FLAG_KEYWORDS: &[&str] = &[
    "SINGLE-VALUE",
    "OBSOLETE",
    "COLLECTIVE",
    "NO-USER-MODIFICATION",
    "STRUCTURAL",
    "AUXILIARY",
    "ABSTRACT",
];

/// A keyword of a schema definition (upper case) and its values.
pub(super) type Field = (String, Vec<String>);

/// A schema definition (`( oid KEYWORD value KEYWORD ( a $ b ) FLAG ... )`): the OID and the
/// keywords (upper case) with their values (none for a flag). `None` when it is not one.
pub(super) fn definition(def: &str) -> Option<(String, Vec<Field>)> {
    let mut it = tokens(def).into_iter().peekable();
    if it.next() != Some(Token::Open) {
        return None;
    }
    let oid = match it.next()? {
        Token::Word(w) | Token::Quoted(w) => w,
        _ => return None,
    };
    let mut fields = Vec::new();
    while let Some(t) = it.next() {
        let keyword = match t {
            Token::Word(k) => k.to_ascii_uppercase(),
            Token::Close => break,
            _ => continue,
        };
        if FLAG_KEYWORDS.contains(&keyword.as_str()) {
            fields.push((keyword, Vec::new()));
            continue;
        }
        // One word or quoted string, or a parenthesized list of them separated by spaces and/or
        // `$` (`( sn $ cn )`, `(sn$cn)`). A quoted string is taken whole.
        let mut values = Vec::new();
        match it.next() {
            Some(Token::Open) => {
                for t in it.by_ref() {
                    match t {
                        Token::Close => break,
                        Token::Word(w) => push_words(&mut values, &w),
                        Token::Quoted(w) => values.push(w),
                        Token::Open => {}
                    }
                }
            }
            Some(Token::Word(w)) => push_words(&mut values, &w),
            Some(Token::Quoted(w)) => values.push(w),
            Some(Token::Close) | None => {
                fields.push((keyword, values));
                break;
            }
        }
        fields.push((keyword, values));
    }
    Some((oid, fields))
}

/// The names of an unquoted word of a list (`sn$cn` is two names; a lone `$` is none).
pub(super) fn push_words(values: &mut Vec<String>, w: &str) {
    values.extend(w.split('$').filter(|p| !p.is_empty()).map(str::to_string));
}

pub(super) fn first(values: &[String]) -> Option<String> {
    values.first().cloned()
}

/// Parses an attribute type description; `None` when it is not one.
pub(super) fn parse_attribute_type(def: &str) -> Option<AttributeType> {
    let (oid, fields) = definition(def)?;
    let mut at = AttributeType {
        oid,
        user: true,
        ..AttributeType::default()
    };
    for (keyword, values) in fields {
        match keyword.as_str() {
            "NAME" => at.names = values,
            "SUP" => at.sup = first(&values),
            "SYNTAX" => {
                at.syntax =
                    first(&values).map(|s| s.split('{').next().unwrap_or_default().to_string());
            }
            "SINGLE-VALUE" => at.single_value = true,
            "OBSOLETE" => at.obsolete = true,
            "USAGE" => {
                at.user = values
                    .first()
                    .is_none_or(|u| u.eq_ignore_ascii_case("userApplications"));
            }
            _ => {}
        }
    }
    Some(at)
}

/// Parses an object class description; `None` when it is not one or is obsolete.
pub(super) fn parse_object_class(def: &str) -> Option<ObjectClass> {
    let (oid, fields) = definition(def)?;
    let mut oc = ObjectClass {
        oid,
        ..ObjectClass::default()
    };
    for (keyword, values) in fields {
        match keyword.as_str() {
            "NAME" => oc.names = values,
            "SUP" => oc.sup = values,
            "MUST" => oc.must = values,
            "MAY" => oc.may = values,
            "OBSOLETE" => return None,
            _ => {}
        }
    }
    Some(oc)
}

/// The OID of an `ldapSyntaxes` value whose values are not text: marked
/// `X-NOT-HUMAN-READABLE 'TRUE'` or `X-BINARY-TRANSFER-REQUIRED 'TRUE'` (RFC 4517, OpenLDAP).
pub(super) fn binary_syntax_oid(def: &str) -> Option<String> {
    let (oid, fields) = definition(def)?;
    fields
        .iter()
        .any(|(k, v)| {
            matches!(
                k.as_str(),
                "X-NOT-HUMAN-READABLE" | "X-BINARY-TRANSFER-REQUIRED"
            ) && v.first().is_some_and(|v| v.eq_ignore_ascii_case("TRUE"))
        })
        .then_some(oid)
}

/// The attribute types, object classes and binary syntaxes of a subschema subentry.
#[derive(Debug, Clone, Default)]
pub(super) struct Subschema {
    pub(super) types: Vec<AttributeType>,
    /// Lower-case names and OIDs to indexes of `types`.
    pub(super) index: HashMap<String, usize>,
    pub(super) classes: Vec<ObjectClass>,
    /// Lower-case names and OIDs to indexes of `classes`.
    pub(super) class_index: HashMap<String, usize>,
    /// Syntax OIDs that the server's `ldapSyntaxes` marks as not human-readable.
    pub(super) binary_syntaxes: HashSet<String>,
}

impl Subschema {
    /// A subschema of attribute types only.
    #[cfg(test)]
    pub(super) fn parse<'a>(types: impl IntoIterator<Item = &'a str>) -> Subschema {
        Subschema::from_parts(types, [], [])
    }

    pub(super) fn from_parts<'a>(
        types: impl IntoIterator<Item = &'a str>,
        classes: impl IntoIterator<Item = &'a str>,
        syntaxes: impl IntoIterator<Item = &'a str>,
    ) -> Subschema {
        let mut s = Subschema::default();
        for at in types.into_iter().filter_map(parse_attribute_type) {
            let i = s.types.len();
            s.index.entry(at.oid.to_ascii_lowercase()).or_insert(i);
            for n in &at.names {
                s.index.entry(n.to_ascii_lowercase()).or_insert(i);
            }
            s.types.push(at);
        }
        for oc in classes.into_iter().filter_map(parse_object_class) {
            let i = s.classes.len();
            s.class_index
                .entry(oc.oid.to_ascii_lowercase())
                .or_insert(i);
            for n in &oc.names {
                s.class_index.entry(n.to_ascii_lowercase()).or_insert(i);
            }
            s.classes.push(oc);
        }
        s.binary_syntaxes = syntaxes.into_iter().filter_map(binary_syntax_oid).collect();
        s
    }

    pub(super) fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type of an attribute description (options ignored).
    pub(super) fn find(&self, desc: &str) -> Option<&AttributeType> {
        let base = desc
            .split(';')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.index.get(&base).and_then(|i| self.types.get(*i))
    }

    /// How an attribute description is matched, whatever name, alias or OID it is written with:
    /// the type's OID (or the lower-case name of a type the subschema does not know), then the
    /// options other than `binary` and `range=`, lower case and sorted (`2.5.4.3;lang-fr`).
    pub(super) fn key(&self, desc: &str) -> String {
        let mut parts = desc.split(';');
        let base = parts.next().unwrap_or_default();
        let mut out = match self.find(base) {
            Some(at) => at.oid.to_ascii_lowercase(),
            None => base.to_ascii_lowercase(),
        };
        let mut options: Vec<String> = parts
            .filter(|o| {
                !o.is_empty()
                    && !o.eq_ignore_ascii_case("binary")
                    && strip_prefix_ci(o, "range=").is_none()
            })
            .map(str::to_ascii_lowercase)
            .collect();
        options.sort();
        for o in options {
            out.push(';');
            out.push_str(&o);
        }
        out
    }

    /// The syntax, inherited from the supertypes when the type has none.
    pub(super) fn syntax_of<'a>(&'a self, at: &'a AttributeType) -> Option<&'a str> {
        let mut current = at;
        for _ in 0..32 {
            if let Some(s) = &current.syntax {
                return Some(s.as_str());
            }
            current = self.find(current.sup.as_deref()?)?;
        }
        None
    }

    /// The syntax of an attribute description, when the subschema knows it.
    pub(super) fn syntax(&self, desc: &str) -> Option<&str> {
        self.find(desc).and_then(|at| self.syntax_of(at))
    }

    pub(super) fn is_binary_syntax(&self, syntax: &str) -> bool {
        BINARY_SYNTAXES.contains(&syntax) || self.binary_syntaxes.contains(syntax)
    }

    /// Whether a column is binary: decided once from what was asked (`;binary`, a well-known
    /// binary name) and the syntax, never from the values.
    pub(super) fn is_binary(&self, desc: &str) -> bool {
        is_binary_name(desc) || self.syntax(desc).is_some_and(|s| self.is_binary_syntax(s))
    }

    /// Why a column is text, for the message about a value that is not UTF-8.
    pub(super) fn text_reason(&self, desc: &str) -> String {
        match self.syntax(desc) {
            Some(s) => format!("its syntax {s} is text"),
            None if self.is_empty() => {
                "the subschema could not be read, so its syntax is unknown".to_string()
            }
            None => "the subschema does not describe it".to_string(),
        }
    }

    /// The schema column of an attribute: type from the name and syntax, multi-valued unless
    /// SINGLE-VALUE. Unknown attributes are text and may be multi-valued.
    pub(super) fn column(&self, name: &str, request: &str) -> SchemaColumn {
        let at = self.find(name);
        SchemaColumn {
            name: name.to_string(),
            value_type: if self.is_binary(request) {
                ValueType::Binary
            } else {
                ValueType::String
            },
            key_type: KeyType::None,
            multivalued: !at.is_some_and(|at| at.single_value),
            nullable: None,
            source_type: self.syntax(name).map(str::to_string),
        }
    }

    /// The attributes that entries of these object classes may hold (MUST and MAY of the classes
    /// and their superclasses), as the first name of each type, sorted ignoring case: user
    /// attributes only, neither obsolete nor [`PASSWORD_ATTRIBUTES`]. Classes the subschema does
    /// not know are skipped.
    pub(super) fn attributes_of_classes<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut todo: Vec<String> = classes
            .into_iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let mut seen_classes: HashSet<usize> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut names: Vec<String> = Vec::new();
        while let Some(c) = todo.pop() {
            let Some(&i) = self.class_index.get(&c) else {
                continue;
            };
            if !seen_classes.insert(i) {
                continue;
            }
            let Some(oc) = self.classes.get(i) else {
                continue;
            };
            todo.extend(oc.sup.iter().map(|s| s.to_ascii_lowercase()));
            for a in oc.must.iter().chain(&oc.may) {
                let at = self.find(a);
                if at.is_some_and(|t| !t.user || t.obsolete) {
                    continue;
                }
                let is_password =
                    |n: &str| PASSWORD_ATTRIBUTES.contains(&n.to_ascii_lowercase().as_str());
                if is_password(a) || at.is_some_and(|t| t.names.iter().any(|n| is_password(n))) {
                    continue;
                }
                if seen.insert(self.key(a)) {
                    names.push(
                        at.and_then(|t| t.names.first())
                            .cloned()
                            .unwrap_or_else(|| a.clone()),
                    );
                }
            }
        }
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names
    }
}

/// The columns of the entries table and how the attribute descriptions the server returns find
/// them (through [`Subschema::key`]).
pub(super) struct Columns {
    pub(super) list: Vec<Column>,
    pub(super) by_key: HashMap<String, Vec<usize>>,
}

impl Columns {
    pub(super) fn new(list: Vec<Column>, schema: &Subschema) -> Columns {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in list.iter().enumerate() {
            by_key.entry(schema.key(&c.request)).or_default().push(i);
        }
        Columns { list, by_key }
    }

    /// An entry as a row: `dn`, `parentdn`, then each column's values. A value that is not
    /// UTF-8 in a text column is an error naming the column.
    pub(super) fn row(&self, entry: Entry, schema: &Subschema) -> Result<Row, String> {
        let Entry { dn, attrs } = entry;
        let mut slots: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.list.len()];
        for (desc, values) in attrs {
            let Some(targets) = self.by_key.get(&schema.key(&desc)) else {
                continue;
            };
            if let Some((last, others)) = targets.split_last() {
                for i in others {
                    if let Some(slot) = slots.get_mut(*i) {
                        slot.extend(values.iter().cloned());
                    }
                }
                if let Some(slot) = slots.get_mut(*last) {
                    slot.extend(values);
                }
            }
        }
        let mut row = Vec::with_capacity(self.list.len() + 2);
        row.push(Value::Null);
        row.push(match parent_dn(&dn) {
            Some(p) => Value::Text(p.to_string()),
            None => Value::Null,
        });
        for (c, values) in self.list.iter().zip(slots) {
            row.push(values_of(values, c.binary).map_err(|NotText| {
                format!(
                    "entry {dn}: a value of {name} is not UTF-8 text, and {name} is exported as text ({why}); write {name};binary in Attributes to export it as base64",
                    name = c.name,
                    why = schema.text_reason(&c.request),
                )
            })?);
        }
        if let Some(first) = row.first_mut() {
            *first = Value::Text(dn);
        }
        Ok(row)
    }
}
