//! Unit tests of the parsers: settings, values, entries, the subschema.

use super::super::spec::SettingValue;
use super::*;
use serde_json::json;
use std::path::Path;

fn settings(values: Vec<(&'static str, SettingValue)>) -> Settings {
    Settings::new(SETTINGS, values, Path::new("/"))
}

fn structured(v: J) -> SettingValue {
    SettingValue::Structured(v)
}

fn entries_only() -> J {
    json!([{"Table": "entries", "BaseDN": "dc=example,dc=com"}])
}

fn messages(p: &[Problem]) -> String {
    p.iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn range_attributes() {
    assert_eq!(
        parse_range("member;range=0-1499"),
        Some(Range {
            base: "member".into(),
            low: 0,
            high: Some(1499)
        })
    );
    assert_eq!(
        parse_range("member;Range=1500-*"),
        Some(Range {
            base: "member".into(),
            low: 1500,
            high: None
        })
    );
    assert_eq!(
        parse_range("userCertificate;binary;range=0-9"),
        Some(Range {
            base: "userCertificate;binary".into(),
            low: 0,
            high: Some(9)
        })
    );
    assert_eq!(parse_range("member"), None);
    assert_eq!(parse_range("member;range=5-2"), None);
    assert_eq!(parse_range("member;range=x-*"), None);
    assert_eq!(parse_range("member;range=0"), None);
}

#[test]
fn parent_dns() {
    assert_eq!(parent_dn("cn=a\\,b,ou=x"), Some("ou=x"));
    assert_eq!(parent_dn("cn=a\\\\,ou=x,dc=y"), Some("ou=x,dc=y"));
    assert_eq!(
        parent_dn("uid=u1, ou=people,dc=example"),
        Some("ou=people,dc=example")
    );
    assert_eq!(parent_dn("cn=\"a,b\",ou=x"), Some("ou=x"));
    assert_eq!(parent_dn("cn=a\\2Cb,ou=x"), Some("ou=x"));
    assert_eq!(parent_dn("dc=com"), None);
    assert_eq!(parent_dn(""), None);
    assert_eq!(parent_dn("cn=trailing,"), None);
}

#[test]
fn binary_attributes_and_column_names() {
    assert!(is_binary_name("objectGUID"));
    assert!(is_binary_name("jpegPhoto"));
    assert!(is_binary_name("userCertificate"));
    assert!(is_binary_name("someThing;binary"));
    assert!(is_binary_name("thumbnailPhoto;range=0-10"));
    assert!(!is_binary_name("cn"));
    assert!(!is_binary_name("member;range=0-1499"));
    assert_eq!(column_name("userCertificate;binary"), "userCertificate");
    assert_eq!(column_name("member;range=0-1499"), "member");
    assert_eq!(column_name("cn;lang-fr"), "cn;lang-fr");
    assert_eq!(attr_key("Member;RANGE=0-*"), "member");
    // The column decides, never the value: a text column with a value that is not UTF-8 is
    // an error (not a field of bytes), a binary column is bytes even for ASCII values.
    assert_eq!(
        values_of(vec![b"a".to_vec(), vec![0xff]], false),
        Err(NotText)
    );
    assert_eq!(
        values_of(vec![b"a".to_vec(), vec![0xff]], true),
        Ok(Value::Multi(vec![
            Value::Bytes(b"a".to_vec()),
            Value::Bytes(vec![0xff])
        ]))
    );
    assert_eq!(
        values_of(vec![b"x".to_vec()], false),
        Ok(Value::Text("x".into()))
    );
    assert_eq!(
        values_of(vec![b"x".to_vec()], true),
        Ok(Value::Bytes(b"x".to_vec()))
    );
    assert_eq!(values_of(vec![], false), Ok(Value::Null));
    assert_eq!(
        values_of(vec![b"a".to_vec(), b"b".to_vec()], false),
        Ok(Value::Multi(vec![
            Value::Text("a".into()),
            Value::Text("b".into())
        ]))
    );
}

#[test]
fn server_addresses() {
    let n = |s: &str, ssl: bool| normalize_server(s, ssl);
    assert_eq!(
        n("ldap://dc1:389", false),
        Ok(("ldap://dc1:389".into(), false))
    );
    assert_eq!(
        n("LDAPS://dc1", false),
        Ok(("ldaps://dc1:636".into(), true))
    );
    assert_eq!(
        n("dc1.corp.local", false),
        Ok(("ldap://dc1.corp.local:389".into(), false))
    );
    assert_eq!(n("dc1:3269", true), Ok(("ldaps://dc1:3269".into(), true)));
    assert_eq!(
        n("ldap://dc1:389/", false),
        Ok(("ldap://dc1:389".into(), false))
    );
    assert_eq!(
        n("[::1]:10389", false),
        Ok(("ldap://[::1]:10389".into(), false))
    );
    assert_eq!(n("::1", false), Ok(("ldap://[::1]:389".into(), false)));
    assert!(n("ldap://dc1:389", true).is_err());
    assert!(n("http://dc1", false).is_err());
    assert!(n("dc1:0", false).is_err());
    assert!(n("dc1:x", false).is_err());
    assert!(n("ldap://dc1/dc=example,dc=com", false).is_err());
    assert!(n("", false).is_err());
    assert!(n("bad host", false).is_err());
}

#[test]
fn servers_and_their_problems() {
    let (servers, problems) = parse_servers(
        Some(&json!([
            {"Server": "ldap://a:389", "Login": "cn=r,dc=x"},
            "b.example.com",
            {"server": "c", "AuthType": "anonymous", "EnableSSL": "true"}
        ])),
        true,
    );
    assert!(problems.is_empty(), "{}", messages(&problems));
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[0].auth, AuthType::Basic);
    assert_eq!(servers[1].auth, AuthType::Anonymous);
    assert_eq!(servers[1].url, "ldap://b.example.com:389");
    assert_eq!(servers[2].url, "ldaps://c:636");

    let (_, problems) = parse_servers(
        Some(&json!([{"Server": "a", "AuthType": "Negotiate", "Login": "u@corp"}])),
        true,
    );
    assert!(messages(&problems).contains("not supported on this platform: use Basic"));

    let (_, problems) = parse_servers(Some(&json!([{"Server": "a", "AuthType": "Basic"}])), true);
    assert!(messages(&problems).contains("needs a Login"));

    let (_, problems) = parse_servers(Some(&json!([{"Server": "a", "Login": "cn=r"}])), false);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].setting, Some("Password"));

    let (_, problems) = parse_servers(
        Some(&json!([{"Server": "a", "EnableSSL": true, "StartTLS": true, "Sever": "x"}])),
        true,
    );
    let m = messages(&problems);
    assert!(m.contains("StartTLS cannot be used"), "{m}");
    assert!(m.contains("unknown key(s) Sever"), "{m}");

    let (_, problems) = parse_servers(
        Some(&json!([{"Server": "a", "Controls": ["PagedResult", "Sort"]}])),
        true,
    );
    assert!(messages(&problems).contains("unknown control \"Sort\""));

    let (_, problems) = parse_servers(Some(&json!([])), true);
    assert!(messages(&problems).contains("empty"));
}

#[test]
fn a_password_inside_servers_is_refused_and_never_shown() {
    let canary = "canary-ldap-5b2e";
    let (servers, problems) = parse_servers(
        Some(&json!([{"Server": "a", "Login": "cn=r", "Password": canary, "AuthType": 7}])),
        false,
    );
    let m = messages(&problems);
    assert!(m.contains("has its own Password"), "{m}");
    assert!(!m.contains(canary), "{m}");
    assert!(!problems.iter().any(|p| p.hint.contains(canary)));
    assert_eq!(
        servers[0].own_password.as_ref().map(Secret::expose),
        Some(canary)
    );
    assert!(!format!("{:?}", servers[0]).contains(canary));
    // The redactor knows it, so that errors quoting it are masked.
    let s = settings(vec![
        (
            "Servers",
            structured(json!([{"Server": "a", "Login": "cn=r", "Password": canary}])),
        ),
        ("Tables", structured(entries_only())),
    ]);
    assert_eq!(redactor(&s).redact(&format!("x {canary} y")), "x *** y");
    // A wrong type for it does not repeat the value either.
    let (_, problems) = parse_servers(Some(&json!([{"Server": "a", "Password": [canary]}])), true);
    assert!(!messages(&problems).contains(canary));
}

#[test]
fn tables_and_their_problems() {
    let (tables, problems) = parse_tables(Some(&json!([
        {"Table": "member", "BaseDN": "ou=groups,dc=x"},
        {"Table": "Entries", "BaseDN": "dc=x", "Scope": "onelevel"},
        {"Table": "manager"}
    ])));
    assert!(problems.is_empty(), "{}", messages(&problems));
    assert_eq!(tables[0].name, "entries");
    assert!(tables[0].is_entries);
    assert_eq!(tables[0].filter, "(objectClass=*)");
    assert_eq!(tables[0].scope, ScopeKind::OneLevel);
    assert_eq!(tables[1].name, "member");
    assert_eq!(tables[1].filter, "(member=*)");
    assert_eq!(
        tables[2].base_dn, "dc=x",
        "a link table inherits the entries' BaseDN"
    );

    let (_, problems) = parse_tables(Some(&json!([{"Table": "member", "BaseDN": "dc=x"}])));
    assert!(messages(&problems).contains("no \"entries\" table"));

    let (_, problems) = parse_tables(Some(&json!([
        {"Table": "entries", "BaseDN": "dc=x", "Filter": "(&(cn=a)", "Scope": "Deep"},
        {"Table": "entries", "BaseDN": "dc=y"},
        {"Table": "member;range=0-1", "BaseDN": "dc=y"},
        {"Table": "dn", "BaseDN": "dc=y"},
        {"BaseDN": "dc=y"}
    ])));
    let m = messages(&problems);
    assert!(
        m.contains("table entries: Filter (&(cn=a) is not a valid LDAP filter"),
        "{m}"
    );
    assert!(m.contains("unknown Scope \"Deep\""), "{m}");
    assert!(m.contains("is listed twice"), "{m}");
    assert!(
        m.contains("\"member;range=0-1\" is not a link attribute name"),
        "{m}"
    );
    assert!(m.contains("\"dn\" is not a link attribute name"), "{m}");
    assert!(m.contains("Table is missing"), "{m}");

    let (_, problems) = parse_tables(Some(&json!([{"Table": "entries"}])));
    assert!(messages(&problems).contains("BaseDN is missing"));
}

#[test]
fn attributes_setting() {
    let list: Vec<String> = [
        "cn",
        "userCertificate;binary",
        "Mail",
        "mail",
        "*",
        "bad name",
        "dn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (columns, problems) = parse_attributes(&list);
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cn", "userCertificate", "Mail"]);
    assert!(columns[1].binary);
    assert_eq!(columns[1].request, "userCertificate;binary");
    let m = messages(&problems);
    assert!(m.contains("names mail twice"), "{m}");
    assert!(m.contains("cannot hold \"*\""), "{m}");
    assert!(m.contains("\"bad name\" is not an attribute name"), "{m}");
    assert!(m.contains("dn is always the first columns"), "{m}");
}

#[test]
fn check_reports_problems_of_every_setting() {
    let package = LdapPackage;
    let ok = settings(vec![
        (
            "Servers",
            structured(json!([{"Server": "ldap://a:389", "Login": "cn=r,dc=x"}])),
        ),
        ("Password", SettingValue::Secret(Secret::new("pw"))),
        ("Tables", structured(entries_only())),
    ]);
    assert!(
        package.check(&ok).is_empty(),
        "{}",
        messages(&package.check(&ok))
    );
    let cfg = Config::load(&ok).expect("valid settings");
    assert_eq!(cfg.page_size, 500);
    assert_eq!(cfg.timeout, Some(Duration::from_secs(30)));
    assert_eq!(cfg.size_limit, 0);

    let bad = settings(vec![
        (
            "Servers",
            structured(json!([{"Server": "ldap://a:389", "AuthType": "Negotiate"}])),
        ),
        (
            "Tables",
            structured(json!([{"Table": "member", "BaseDN": "dc=x"}])),
        ),
        ("PageSize", SettingValue::Integer(0)),
        ("TimeOut", SettingValue::Integer(-1)),
    ]);
    let problems = package.check(&bad);
    let m = messages(&problems);
    assert!(m.contains("Negotiate"), "{m}");
    assert!(m.contains("no \"entries\" table"), "{m}");
    assert!(m.contains("PageSize must be between 1"), "{m}");
    assert!(m.contains("TimeOut must be between 0"), "{m}");
    assert!(problems.iter().any(|p| p.setting == Some("PageSize")));
    assert!(package.source_paths(&bad).is_empty());
}

#[test]
fn attribute_type_descriptions() {
    let defs = [
        "( 2.5.4.41 NAME 'name' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
        "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s) for which the entity is known by' SUP name )",
        "( 0.9.2342.19200300.100.1.60 NAME 'jpegPhoto' DESC 'RFC2798: a JPEG image' SYNTAX 1.3.6.1.4.1.1466.115.121.1.28 )",
        "( 1.2.840.113556.1.4.2 NAME 'objectGUID' SYNTAX '1.3.6.1.4.1.1466.115.121.1.40' SINGLE-VALUE NO-USER-MODIFICATION )",
        "( 2.5.18.1 NAME 'createTimestamp' EQUALITY generalizedTimeMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )",
        "( 2.16.840.1.113730.3.1.39 NAME 'preferredLanguage' DESC 'x' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE X-ORIGIN ( 'RFC 2798' 'user defined' ) )",
        "( 1.1.1 NAME 'old' OBSOLETE SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
        "not a definition",
    ];
    let s = Subschema::parse(defs);
    let cn = s.find("CN").expect("cn");
    assert_eq!(cn.names, ["cn", "commonName"]);
    assert_eq!(s.syntax_of(cn), Some("1.3.6.1.4.1.1466.115.121.1.15"));
    assert!(s.find("commonName;lang-fr").is_some());
    assert!(s.is_binary("jpegPhoto"));
    assert!(s.is_binary("objectGUID"));
    assert!(!s.is_binary("cn"));
    let guid = s.column("objectGUID", "objectGUID");
    assert_eq!(guid.value_type, ValueType::Binary);
    assert!(!guid.multivalued);
    assert!(s.column("cn", "cn").multivalued);
    assert!(
        !s.column("2.16.840.1.113730.3.1.39", "2.16.840.1.113730.3.1.39")
            .multivalued
    );
    let lang = s.find("preferredLanguage").expect("preferredLanguage");
    assert!(lang.single_value);
    assert!(!s.find("createTimestamp").expect("createTimestamp").user);
    // Unknown attributes are text that may repeat.
    let unknown = s.column("fooBar", "fooBar");
    assert_eq!(unknown.value_type, ValueType::String);
    assert!(unknown.multivalued);
}

/// OpenLDAP's definitions, as its subschema writes them (core.ldif, cosine.ldif).
fn openldap_like() -> Subschema {
    Subschema::from_parts(
        [
            "( 2.5.4.0 NAME 'objectClass' EQUALITY objectIdentifierMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.38 )",
            "( 2.5.4.41 NAME 'name' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
            "( 2.5.4.3 NAME ( 'cn' 'commonName' ) SUP name )",
            "( 2.5.4.4 NAME ( 'sn' 'surname' ) SUP name )",
            "( 2.5.4.35 NAME 'userPassword' SYNTAX 1.3.6.1.4.1.1466.115.121.1.40{128} )",
            "( 2.5.4.20 NAME 'telephoneNumber' SYNTAX 1.3.6.1.4.1.1466.115.121.1.50{32} )",
            "( 0.9.2342.19200300.100.1.53 NAME 'personalSignature' SYNTAX 1.3.6.1.4.1.1466.115.121.1.23 )",
            "( 1.3.6.1.4.1.42.2.27.8.1.1 NAME 'faxLike' SYNTAX 1.2.3.4 )",
            "( 2.5.18.1 NAME 'createTimestamp' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE USAGE directoryOperation )",
            "( 1.1.1 NAME 'old' OBSOLETE SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
        ],
        [
            "( 2.5.6.0 NAME 'top' DESC 'top of the superclass chain' ABSTRACT MUST objectClass )",
            "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber $ old $ createTimestamp ) )",
            "( 9.9.9 NAME 'signer' AUXILIARY MAY (personalSignature$faxLike$undefinedAttr) )",
            "( 9.9.8 NAME 'gone' OBSOLETE MAY name )",
        ],
        [
            "( 1.2.3.4 DESC 'Something binary' X-NOT-HUMAN-READABLE 'TRUE' )",
            "( 1.3.6.1.4.1.1466.115.121.1.15 DESC 'Directory String' )",
        ],
    )
}

#[test]
fn names_aliases_and_oids_find_one_key() {
    let s = openldap_like();
    assert_eq!(s.key("cn"), "2.5.4.3");
    assert_eq!(s.key("commonName"), "2.5.4.3");
    assert_eq!(s.key("2.5.4.3"), "2.5.4.3");
    assert_eq!(s.key("CN;Lang-FR"), "2.5.4.3;lang-fr");
    assert_eq!(s.key("cn;x-b;lang-fr"), s.key("commonName;lang-fr;x-b"));
    assert_eq!(s.key("userPassword;binary"), "2.5.4.35");
    assert_eq!(s.key("member;range=0-1499"), "member");
    assert_eq!(Subschema::default().key("commonName"), "commonname");
    // A column asked for by alias or OID gets the values the server returns under its name.
    let mut columns = vec![
        Column::new("commonName"),
        Column::new("2.5.4.4"),
        Column::new("CN"),
        Column::new("telephoneNumber"),
    ];
    for c in columns.iter_mut() {
        c.binary = s.is_binary(&c.request);
    }
    let columns = Columns::new(columns, &s);
    let row = columns
        .row(
            Entry {
                dn: "cn=a,dc=x".into(),
                attrs: vec![
                    ("cn".into(), vec![b"a".to_vec()]),
                    ("sn".into(), vec![b"b".to_vec()]),
                    ("cn;lang-fr".into(), vec![b"ignored".to_vec()]),
                ],
            },
            &s,
        )
        .expect("row");
    assert_eq!(
        row,
        vec![
            Value::Text("cn=a,dc=x".into()),
            Value::Text("dc=x".into()),
            Value::Text("a".into()),
            Value::Text("b".into()),
            Value::Text("a".into()),
            Value::Null,
        ]
    );
}

#[test]
fn binary_is_decided_per_column_from_the_syntax() {
    let s = openldap_like();
    assert!(s.is_binary("personalSignature"), "Fax syntax");
    assert!(s.is_binary("0.9.2342.19200300.100.1.53"));
    assert!(
        s.is_binary("faxLike"),
        "X-NOT-HUMAN-READABLE in ldapSyntaxes"
    );
    assert!(s.is_binary("userPassword"));
    assert!(s.is_binary("cn;binary"));
    assert!(!s.is_binary("cn"));
    assert!(!s.is_binary("unknownAttr"));
    let mut c = Column::new("personalSignature");
    c.binary = s.is_binary(&c.request);
    let mut t = Column::new("telephoneNumber");
    t.binary = s.is_binary(&t.request);
    let columns = Columns::new(vec![c, t], &s);
    let entry = |sig: &[u8], phone: &[u8]| Entry {
        dn: "cn=a".into(),
        attrs: vec![
            ("personalSignature".into(), vec![sig.to_vec()]),
            ("telephoneNumber".into(), vec![phone.to_vec()]),
        ],
    };
    // ASCII or not, a binary column is bytes in every row.
    let r1 = columns.row(entry(b"ASCII", b"1"), &s).expect("row");
    let r2 = columns.row(entry(&[0xff, 0], b"2"), &s).expect("row");
    assert_eq!(r1[2], Value::Bytes(b"ASCII".to_vec()));
    assert_eq!(r2[2], Value::Bytes(vec![0xff, 0]));
    assert_eq!(r1[1], Value::Null, "a DN of one RDN has no parent");
    // A text column with a value that is not UTF-8 fails with the fix.
    let e = columns
        .row(entry(b"x", &[0xfe]), &s)
        .expect_err("not UTF-8");
    assert!(e.contains("telephoneNumber;binary"), "{e}");
    assert!(e.contains("1.3.6.1.4.1.1466.115.121.1.50"), "{e}");
    assert!(e.contains("entry cn=a"), "{e}");
}

#[test]
fn fallback_columns_come_from_the_object_classes() {
    let s = openldap_like();
    // person and top: MUST and MAY, without the password, operational and obsolete ones.
    assert_eq!(
        s.attributes_of_classes(["Person"]),
        ["cn", "objectClass", "sn", "telephoneNumber"]
    );
    // An auxiliary class adds its own; a type the subschema lacks keeps its name; unknown
    // classes are skipped; a class named by OID is found.
    assert_eq!(
        s.attributes_of_classes(["2.5.6.6", "signer", "noSuchClass"]),
        [
            "cn",
            "faxLike",
            "objectClass",
            "personalSignature",
            "sn",
            "telephoneNumber",
            "undefinedAttr"
        ]
    );
    assert!(
        s.attributes_of_classes(["gone"]).is_empty(),
        "obsolete class"
    );
    assert!(s.attributes_of_classes(Vec::<&str>::new()).is_empty());
}

#[test]
fn ranged_answers_are_complete_or_an_error() {
    let s = openldap_like();
    let key = s.key("member");
    let answer = |d: &str| vec![(d.to_string(), vec![b"v".to_vec()])];
    assert_eq!(
        range_answer(&s, &key, "member;range=2-*", 2, answer("member;range=2-*")),
        Ok((vec![b"v".to_vec()], None))
    );
    assert_eq!(
        range_answer(&s, &key, "member;range=2-*", 2, answer("Member;Range=2-3")),
        Ok((vec![b"v".to_vec()], Some(3)))
    );
    let err = |d: Vec<(String, Vec<Vec<u8>>)>| {
        range_answer(&s, &key, "member;range=2-*", 2, d).expect_err("an error")
    };
    assert!(err(answer("member")).contains("without a range"));
    assert!(err(answer("member;range=2-x")).contains("malformed range"));
    assert!(err(answer("member;range=5-*")).contains("answered with member;range=5-*"));
    assert!(err(answer("cn")).contains("returned no values"));
    assert!(err(Vec::new()).contains("returned no values"));
    let mut two = answer("member;range=2-3");
    two.extend(answer("member;range=4-*"));
    assert!(err(two).contains("several ranges"));
    assert_eq!(range_of("member"), Ok(None));
    assert!(range_of("member;range=0-").is_err());
    assert!(range_of("member;range=9-2").is_err());
}

fn primitive(class: TagClass, id: u64, bytes: &[u8]) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::P(bytes.to_vec()),
    }
}

fn constructed(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::C(inner),
    }
}

#[test]
fn entries_parse_without_panics() {
    let attr = |name: &str, values: &[&[u8]]| {
        constructed(
            TagClass::Universal,
            16,
            vec![
                primitive(TagClass::Universal, 4, name.as_bytes()),
                constructed(
                    TagClass::Universal,
                    17,
                    values
                        .iter()
                        .map(|v| primitive(TagClass::Universal, 4, v))
                        .collect(),
                ),
            ],
        )
    };
    let tag = constructed(
        TagClass::Application,
        4,
        vec![
            primitive(TagClass::Universal, 4, b"cn=a\\,b,ou=x"),
            constructed(
                TagClass::Universal,
                16,
                vec![
                    attr("cn", &[b"a,b"]),
                    attr("member;range=0-1", &[b"u1", b"u2"]),
                    attr("member", &[]),
                    attr("jpegPhoto", &[&[0xff, 0xd8]]),
                ],
            ),
        ],
    );
    let entry = parse_entry(tag).expect("entry");
    assert_eq!(entry.dn, "cn=a\\,b,ou=x");
    assert_eq!(entry.attrs.len(), 4);
    let columns = Columns::new(
        vec![
            Column::new("cn"),
            Column::new("member"),
            Column::new("jpegPhoto"),
            Column::new("mail"),
        ],
        &Subschema::default(),
    );
    let row = columns.row(entry, &Subschema::default()).expect("a row");
    assert_eq!(
        row,
        vec![
            Value::Text("cn=a\\,b,ou=x".into()),
            Value::Text("ou=x".into()),
            Value::Text("a,b".into()),
            Value::Multi(vec![Value::Text("u1".into()), Value::Text("u2".into())]),
            Value::Bytes(vec![0xff, 0xd8]),
            Value::Null,
        ]
    );
    // Malformed data is an error, never a panic.
    assert!(parse_entry(primitive(TagClass::Application, 4, b"x")).is_err());
    assert!(parse_entry(constructed(TagClass::Application, 19, vec![])).is_err());
    assert!(parse_entry(constructed(TagClass::Application, 4, vec![])).is_err());
    assert!(
        parse_entry(constructed(
            TagClass::Application,
            4,
            vec![primitive(TagClass::Universal, 4, &[0xff])]
        ))
        .is_err()
    );
    let no_attrs = parse_entry(constructed(
        TagClass::Application,
        4,
        vec![primitive(TagClass::Universal, 4, b"dc=com")],
    ))
    .expect("entry without attributes");
    assert!(no_attrs.attrs.is_empty());
}
