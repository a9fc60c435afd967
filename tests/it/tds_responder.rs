//! Self-test of the TDS responder (tests/support/tds) against a real TDS client, tiberius: login,
//! errors, the wire encoding of every SQL type, multiple result sets, faults, streaming, RPC,
//! attention, transactions, the browser and TLS.

use std::time::Duration;

use crate::support::tds::*;
use tiberius::numeric::Numeric;
use tiberius::time::{
    Date as TDate, DateTime as TDateTime, DateTime2 as TDateTime2,
    DateTimeOffset as TDateTimeOffset, SmallDateTime as TSmallDateTime, Time as TTime,
};
use tiberius::{AuthMethod, Client, ColumnData, ColumnType, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type TdsClient = Client<Compat<TcpStream>>;

fn config(r: &Responder, user: &str, password: &str) -> Config {
    let mut c = Config::new();
    c.host("127.0.0.1");
    c.port(r.port());
    c.authentication(AuthMethod::sql_server(user, password));
    c.encryption(EncryptionLevel::NotSupported);
    // A regression must fail the test, not hang it.
    c.handshake_timeout(Some(Duration::from_secs(10)));
    c.command_timeout(Some(Duration::from_secs(10)));
    c
}

async fn connect(r: &Responder, config: Config) -> tiberius::Result<TdsClient> {
    let tcp = TcpStream::connect(("127.0.0.1", r.port())).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

async fn plain_client(r: &Responder) -> TdsClient {
    connect(r, config(r, "u", "p")).await.expect("connect")
}

/// Runs a batch to the end. A reply that fails before any metadata already fails the
/// `simple_query` call itself (tiberius reads up to the first COLMETADATA there).
async fn results(client: &mut TdsClient, sql: &str) -> tiberius::Result<Vec<Vec<tiberius::Row>>> {
    client.simple_query(sql).await?.into_results().await
}

/// The one row of a query that must answer exactly one.
async fn one_row(client: &mut TdsClient, sql: &str) -> tiberius::Row {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("one row")
}

/// The rows of a query's first result set.
async fn first_result(client: &mut TdsClient, sql: &str) -> Vec<tiberius::Row> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
}

fn server_error(e: &tiberius::error::Error) -> (u32, String) {
    match e {
        tiberius::error::Error::Server(t) => (t.code(), t.message().to_string()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn values(row: tiberius::Row) -> Vec<ColumnData<'static>> {
    row.into_iter().collect()
}

fn is_null(d: &ColumnData<'_>) -> bool {
    match d {
        ColumnData::U8(v) => v.is_none(),
        ColumnData::I16(v) => v.is_none(),
        ColumnData::I32(v) => v.is_none(),
        ColumnData::I64(v) => v.is_none(),
        ColumnData::F32(v) => v.is_none(),
        ColumnData::F64(v) => v.is_none(),
        ColumnData::Bit(v) => v.is_none(),
        ColumnData::String(v) => v.is_none(),
        ColumnData::Guid(v) => v.is_none(),
        ColumnData::Binary(v) => v.is_none(),
        ColumnData::Numeric(v) => v.is_none(),
        ColumnData::Xml(v) => v.is_none(),
        ColumnData::DateTime(v) => v.is_none(),
        ColumnData::SmallDateTime(v) => v.is_none(),
        ColumnData::Time(v) => v.is_none(),
        ColumnData::Date(v) => v.is_none(),
        ColumnData::DateTime2(v) => v.is_none(),
        ColumnData::DateTimeOffset(v) => v.is_none(),
    }
}

fn string(s: &str) -> ColumnData<'static> {
    ColumnData::String(Some(s.to_string().into()))
}

fn numeric(value: i128, scale: u8) -> ColumnData<'static> {
    ColumnData::Numeric(Some(Numeric::new_with_scale(value, scale)))
}

const GUID: &str = "6F9619FF-8B86-D011-B42D-00C04FC964FF";

/// Every SqlType with a value and what tiberius must decode it to. Expected day counts and time
/// increments were computed independently (Python's datetime).
fn all_types(
    long_nvarchar: &str,
    long_varchar: &str,
) -> Vec<(&'static str, SqlType, Cell, ColumnData<'static>)> {
    use SqlType::*;
    let dt2 = |days, incr, scale| TDateTime2::new(TDate::new(days), TTime::new(incr, scale));
    let blob: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        (
            "tinyint",
            TinyInt,
            Cell::Int(255),
            ColumnData::U8(Some(255)),
        ),
        (
            "smallint",
            SmallInt,
            Cell::Int(-32768),
            ColumnData::I16(Some(-32768)),
        ),
        (
            "int",
            Int,
            Cell::Int(i32::MIN.into()),
            ColumnData::I32(Some(i32::MIN)),
        ),
        (
            "bigint",
            BigInt,
            Cell::Int(i64::MAX),
            ColumnData::I64(Some(i64::MAX)),
        ),
        ("bit", Bit, Cell::Bit(true), ColumnData::Bit(Some(true))),
        (
            "dec18",
            Decimal(18, 4),
            Cell::decimal("-12345.6789"),
            numeric(-123_456_789, 4),
        ),
        (
            "num5",
            Numeric(5, 2),
            Cell::decimal("999.99"),
            numeric(99_999, 2),
        ),
        (
            "dec28",
            Decimal(28, 0),
            Cell::decimal("-9999999999999999999999999999"),
            numeric(-9_999_999_999_999_999_999_999_999_999, 0),
        ),
        (
            "dec38",
            Decimal(38, 10),
            Cell::decimal("12345678901234567890.123456789"),
            numeric(123_456_789_012_345_678_901_234_567_890, 10),
        ),
        (
            "money",
            Money,
            Cell::decimal("-12345.6789"),
            ColumnData::F64(Some(-12345.6789)),
        ),
        (
            "smallmoney",
            SmallMoney,
            Cell::decimal("-214748.3648"),
            ColumnData::F64(Some(-214748.3648)),
        ),
        ("real", Real, Cell::Float(3.5), ColumnData::F32(Some(3.5))),
        (
            "float",
            Float,
            Cell::Float(-1.25e300),
            ColumnData::F64(Some(-1.25e300)),
        ),
        ("char", Char(10), Cell::str("abc"), string("abc       ")),
        (
            "varchar",
            VarChar(20),
            Cell::str("Grüße €"),
            string("Grüße €"),
        ),
        (
            "varcharmax",
            VarCharMax,
            Cell::str(long_varchar),
            string(long_varchar),
        ),
        ("nchar", NChar(5), Cell::str("日本"), string("日本   ")),
        (
            "nvarchar",
            NVarChar(50),
            Cell::str("Ω≈ç√∫ 😀"),
            string("Ω≈ç√∫ 😀"),
        ),
        (
            "nvarcharmax",
            NVarCharMax,
            Cell::str(long_nvarchar),
            string(long_nvarchar),
        ),
        (
            "text",
            Text,
            Cell::str("legacy text é"),
            string("legacy text é"),
        ),
        (
            "ntext",
            NText,
            Cell::str("legacy ntext Ω"),
            string("legacy ntext Ω"),
        ),
        (
            "date",
            Date,
            Cell::date(2024, 2, 29),
            ColumnData::Date(Some(TDate::new(738_944))),
        ),
        (
            "time7",
            Time(7),
            Cell::time(23, 59, 59, 999_999_900),
            ColumnData::Time(Some(TTime::new(863_999_999_999, 7))),
        ),
        (
            "time3",
            Time(3),
            Cell::time(1, 2, 3, 456_000_000),
            ColumnData::Time(Some(TTime::new(3_723_456, 3))),
        ),
        (
            "datetime",
            DateTime,
            Cell::datetime(2024, 2, 29, 13, 14, 15, 123_000_000),
            ColumnData::DateTime(Some(TDateTime::new(45_349, 14_296_537))),
        ),
        (
            "smalldatetime",
            SmallDateTime,
            Cell::datetime(2024, 2, 29, 13, 14, 29, 0),
            ColumnData::SmallDateTime(Some(TSmallDateTime::new(45_349, 794))),
        ),
        (
            "datetime2_7",
            DateTime2(7),
            Cell::datetime(2024, 2, 29, 13, 14, 15, 123_456_700),
            ColumnData::DateTime2(Some(dt2(738_944, 476_551_234_567, 7))),
        ),
        (
            "datetime2_3",
            DateTime2(3),
            Cell::datetime(2024, 2, 29, 13, 14, 15, 123_000_000),
            ColumnData::DateTime2(Some(dt2(738_944, 47_655_123, 3))),
        ),
        (
            "dto",
            DateTimeOffset(7),
            Cell::datetimeoffset(2024, 2, 29, 1, 30, 0, 500_000_000, 330),
            ColumnData::DateTimeOffset(Some(TDateTimeOffset::new(
                dt2(738_943, 720_005_000_000, 7),
                330,
            ))),
        ),
        (
            "guid",
            UniqueIdentifier,
            Cell::guid(GUID),
            ColumnData::Guid(Some(tiberius::Uuid::parse_str(GUID).unwrap())),
        ),
        (
            "binary",
            Binary(4),
            Cell::Bytes(vec![1, 2]),
            ColumnData::Binary(Some(vec![1, 2, 0, 0].into())),
        ),
        (
            "varbinary",
            VarBinary(10),
            Cell::Bytes(vec![0xDE, 0xAD]),
            ColumnData::Binary(Some(vec![0xDE, 0xAD].into())),
        ),
        (
            "varbinarymax",
            VarBinaryMax,
            Cell::Bytes(blob.clone()),
            ColumnData::Binary(Some(blob.into())),
        ),
        (
            "image",
            Image,
            Cell::Bytes(vec![9, 8, 7]),
            ColumnData::Binary(Some(vec![9, 8, 7].into())),
        ),
        (
            "xml",
            Xml,
            Cell::Xml("<a b=\"ü\">Ω</a>".into()),
            ColumnData::Xml(Some(std::borrow::Cow::Owned(tiberius::xml::XmlData::new(
                "<a b=\"ü\">Ω</a>",
            )))),
        ),
        (
            "variant_int",
            Variant,
            Cell::variant(Int, 42),
            ColumnData::I32(Some(42)),
        ),
        (
            "variant_nvarchar",
            Variant,
            Cell::variant(NVarChar(20), "hé"),
            string("hé"),
        ),
        (
            "variant_bigint",
            Variant,
            Cell::variant(BigInt, -5i64),
            ColumnData::I64(Some(-5)),
        ),
        (
            "variant_decimal",
            Variant,
            Cell::variant(Decimal(10, 2), Cell::decimal("12.34")),
            numeric(1234, 2),
        ),
        (
            "variant_varchar",
            Variant,
            Cell::variant(VarChar(10), "é€"),
            string("é€"),
        ),
        (
            "variant_date",
            Variant,
            Cell::variant(Date, Cell::date(2024, 2, 29)),
            ColumnData::Date(Some(TDate::new(738_944))),
        ),
        (
            "variant_guid",
            Variant,
            Cell::variant(UniqueIdentifier, Cell::guid(GUID)),
            ColumnData::Guid(Some(tiberius::Uuid::parse_str(GUID).unwrap())),
        ),
    ]
}

#[tokio::test]
async fn login_select_1_version_set_and_log() {
    let r = Responder::start(
        Script::default()
            .user("reader", "s3cret!")
            .database("sales")
            .database("hr"),
    );
    let mut c = config(&r, "READER", "s3cret!");
    c.database("hr");
    c.application_name("tds-selftest");
    c.readonly(true);
    let mut client = connect(&r, c).await.expect("login");

    let row = one_row(&mut client, "SELECT 1").await;
    assert_eq!(row.get::<i32, _>(0), Some(1));
    assert_eq!(row.columns()[0].column_type(), ColumnType::Int4);

    let row = one_row(&mut client, "select  @@VERSION ;").await;
    let version: &str = row.get(0).unwrap();
    assert!(
        version.starts_with("Microsoft SQL Server 2022"),
        "{version}"
    );
    assert!(version.contains("16.0.4135.4"), "{version}");

    let sets = client
        .simple_query("SET TRANSACTION ISOLATION LEVEL SNAPSHOT; SET NOCOUNT ON")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert!(sets.is_empty());

    let row = one_row(&mut client, "SELECT DB_NAME()").await;
    assert_eq!(row.get::<&str, _>(0), Some("hr"));
    client
        .simple_query("USE sales")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let row = one_row(&mut client, "SELECT DB_NAME()").await;
    assert_eq!(row.get::<&str, _>(0), Some("sales"));
    let err = results(&mut client, "USE nowhere").await.unwrap_err();
    assert_eq!(server_error(&err).0, 911);
    client.close().await.unwrap();

    let logins = r.logins();
    assert_eq!(logins.len(), 1);
    let l = &logins[0];
    assert_eq!(l.user, "READER");
    assert!(l.password_ok && l.accepted);
    assert_eq!(l.database, "hr");
    assert_eq!(l.app_name, "tds-selftest");
    assert!(l.read_only_intent);
    assert_eq!(l.encryption, Encryption::NotSupported);
    assert_eq!(l.tls, TlsUse::None);
    assert_eq!(l.tds_version, 0x7400_0004);
    assert_eq!(l.packet_size, 4096);
    assert!(
        !format!("{logins:?}").contains("s3cret"),
        "the password must not be kept"
    );
    assert_eq!(
        r.batches(),
        [
            "SELECT 1",
            "select  @@VERSION ;",
            "SET TRANSACTION ISOLATION LEVEL SNAPSHOT; SET NOCOUNT ON",
            "SELECT DB_NAME()",
            "USE sales",
            "SELECT DB_NAME()",
            "USE nowhere",
        ]
    );
}

#[tokio::test]
async fn wrong_password_is_error_18456() {
    let r = Responder::start(Script::default().user("reader", "right"));
    let err = connect(&r, config(&r, "reader", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        server_error(&err),
        (18456, "Login failed for user 'reader'.".into())
    );
    let err = connect(&r, config(&r, "nobody", "right"))
        .await
        .unwrap_err();
    assert_eq!(server_error(&err).0, 18456);
    let logins = r.logins();
    assert!(logins.iter().all(|l| !l.password_ok && !l.accepted));
}

#[tokio::test]
async fn unknown_database_is_error_4060() {
    let r = Responder::start(Script::default().database("sales"));
    let mut c = config(&r, "u", "p");
    c.database("nope");
    let err = connect(&r, c).await.unwrap_err();
    assert_eq!(
        server_error(&err),
        (
            4060,
            "Cannot open database \"nope\" requested by the login. The login failed.".into()
        )
    );
}

#[tokio::test]
async fn login_faults() {
    let r = Responder::start(Script {
        login_fault: Some(Fault::LoginFails),
        ..Script::default()
    });
    let err = connect(&r, config(&r, "u", "p")).await.unwrap_err();
    assert_eq!(server_error(&err).0, 18456);

    let r = Responder::start(Script {
        login_fault: Some(Fault::ResetAfterRows(0)),
        ..Script::default()
    });
    let err = connect(&r, config(&r, "u", "p")).await.unwrap_err();
    assert!(matches!(err, tiberius::error::Error::Io { .. }), "{err:?}");

    let r = Responder::start(Script {
        login_fault: Some(Fault::SlowRows(Duration::from_millis(2000))),
        ..Script::default()
    });
    let mut c = config(&r, "u", "p");
    c.handshake_timeout(Some(Duration::from_millis(200)));
    let err = connect(&r, c).await.unwrap_err();
    assert!(
        matches!(
            err,
            tiberius::error::Error::Io {
                kind: std::io::ErrorKind::TimedOut,
                ..
            }
        ),
        "{err:?}"
    );
}

/// The important one: every type, NOT NULL and nullable wire types, NULLs in NBCROW and inline,
/// decoded by tiberius to exactly the expected values.
#[tokio::test]
async fn every_type_decodes_exactly() {
    let long_nvarchar: String = (0..100_000u32)
        .map(|i| ['a', 'é', 'Ω', '日', '😀'][(i % 5) as usize])
        .collect();
    let long_varchar: String = (0..20_000u32)
        .map(|i| ['x', 'ü', '€'][(i % 3) as usize])
        .collect();
    let types = all_types(&long_nvarchar, &long_varchar);
    let not_null: Vec<Column> = types
        .iter()
        .map(|(n, t, _, _)| Column::not_null(n, *t))
        .collect();
    let nullable: Vec<Column> = types
        .iter()
        .map(|(n, t, _, _)| Column::new(n, *t))
        .collect();
    let cells: Vec<Cell> = types.iter().map(|(_, _, c, _)| c.clone()).collect();
    let nulls: Vec<Cell> = types.iter().map(|_| Cell::Null).collect();
    let mut inline = ResultSet::fixed(nullable.clone(), vec![nulls.clone(), cells.clone()]);
    inline.null_bitmap = false;
    let r = Responder::start(Script::default().reply(
        Matcher::Exact("SELECT * FROM all_types".into()),
        Reply::sets(vec![
            ResultSet::fixed(not_null, vec![cells.clone()]),
            ResultSet::fixed(nullable, vec![cells.clone(), nulls]),
            inline,
        ]),
    ));
    let mut client = plain_client(&r).await;
    let mut stream = client
        .simple_query("select *\n  from ALL_TYPES;")
        .await
        .unwrap();
    let mut metas = Vec::new();
    let mut rows = Vec::new();
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            tiberius::QueryItem::Metadata(m) => metas.push(m.columns().to_vec()),
            tiberius::QueryItem::Row(row) => rows.push((row.result_index(), values(row))),
        }
    }
    assert_eq!(metas.len(), 3);
    assert_eq!(rows.len(), 5);

    let check = |values: &[ColumnData<'static>], what: &str| {
        for ((name, _, _, expected), got) in types.iter().zip(values) {
            assert_eq!(got, expected, "{name} ({what})");
        }
    };
    check(&rows[0].1, "NOT NULL");
    check(&rows[1].1, "nullable");
    check(&rows[4].1, "nullable, ROW");
    for (i, what) in [(2, "NBCROW NULL"), (3, "inline NULL")] {
        for ((name, _, _, _), got) in types.iter().zip(&rows[i].1) {
            assert!(is_null(got), "{name} ({what}): {got:?}");
        }
    }
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 1, 2, 2]
    );

    // Realistic metadata: fixed-length types for NOT NULL columns, nullable types otherwise.
    // tiberius folds INTN/FLTN/MONEYN of a given size into the fixed type's ColumnType, so
    // only bit, datetime and smalldatetime show the difference there; the nullable int, float
    // and money columns decoding inline NULLs above proves their nullable wire types.
    let by_name = |n: &str| types.iter().position(|t| t.0 == n).unwrap();
    let kinds = |n: &str| {
        (
            metas[0][by_name(n)].column_type(),
            metas[1][by_name(n)].column_type(),
        )
    };
    for (i, (name, _, _, _)) in types.iter().enumerate() {
        assert_eq!(metas[0][i].name(), *name);
    }
    assert_eq!(kinds("int"), (ColumnType::Int4, ColumnType::Int4));
    assert_eq!(kinds("bit"), (ColumnType::Bit, ColumnType::Bitn));
    assert_eq!(
        kinds("datetime"),
        (ColumnType::Datetime, ColumnType::Datetimen)
    );
    assert_eq!(
        kinds("smalldatetime"),
        (ColumnType::Datetime4, ColumnType::Datetimen)
    );
    assert_eq!(kinds("money"), (ColumnType::Money, ColumnType::Money));
    assert_eq!(kinds("smallmoney"), (ColumnType::Money4, ColumnType::Money));
    assert_eq!(kinds("dec18"), (ColumnType::Decimaln, ColumnType::Decimaln));
    assert_eq!(kinds("num5"), (ColumnType::Numericn, ColumnType::Numericn));
    assert_eq!(kinds("date").1, ColumnType::Daten);
    assert_eq!(kinds("datetime2_7").1, ColumnType::Datetime2);
    assert_eq!(kinds("dto").1, ColumnType::DatetimeOffsetn);
    assert_eq!(kinds("guid").1, ColumnType::Guid);
    assert_eq!(kinds("char").1, ColumnType::BigChar);
    assert_eq!(kinds("varcharmax").1, ColumnType::BigVarChar);
    assert_eq!(kinds("nchar").1, ColumnType::NChar);
    assert_eq!(kinds("nvarcharmax").1, ColumnType::NVarchar);
    assert_eq!(kinds("text").1, ColumnType::Text);
    assert_eq!(kinds("ntext").1, ColumnType::NText);
    assert_eq!(kinds("binary").1, ColumnType::BigBinary);
    assert_eq!(kinds("varbinarymax").1, ColumnType::BigVarBin);
    assert_eq!(kinds("image").1, ColumnType::Image);
    assert_eq!(kinds("xml").1, ColumnType::Xml);
    assert_eq!(kinds("variant_int").1, ColumnType::SSVariant);
}

#[tokio::test]
async fn money_datetime_and_rounding_edges() {
    use SqlType::*;
    let cols = vec![
        Column::not_null("m", Money),
        Column::not_null("dt", DateTime),
        Column::not_null("sdt", SmallDateTime),
        Column::not_null("t0", Time(0)),
        Column::not_null("dto", DateTimeOffset(0)),
    ];
    let row = vec![
        Cell::decimal("922337203685477.5807"),
        Cell::datetime(1753, 1, 1, 0, 0, 0, 0),
        Cell::datetime(2024, 2, 29, 13, 14, 29, 998_000_000),
        Cell::time(12, 0, 0, 600_000_000),
        Cell::datetimeoffset(2024, 1, 1, 0, 0, 0, 0, -60),
    ];
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("edges".into()),
        Reply::set(ResultSet::fixed(cols, vec![row])),
    ));
    let mut client = plain_client(&r).await;
    let row = one_row(&mut client, "SELECT edges").await;
    let v = values(row);
    let ColumnData::F64(Some(m)) = v[0] else {
        panic!("{:?}", v[0])
    };
    // money's maximum, 922337203685477.5807, i.e. i64::MAX ten-thousandths.
    assert!((m - i64::MAX as f64 / 1e4).abs() < 0.01, "{m}");
    assert_eq!(v[1], ColumnData::DateTime(Some(TDateTime::new(-53_690, 0))));
    assert_eq!(
        v[2],
        ColumnData::SmallDateTime(Some(TSmallDateTime::new(45_349, 795)))
    );
    assert_eq!(v[3], ColumnData::Time(Some(TTime::new(43_201, 0))));
    // 2024-01-01 00:00 at -01:00 is 2024-01-01 01:00 UTC.
    let utc = TDateTime2::new(TDate::new(738_885), TTime::new(3600, 0));
    assert_eq!(
        v[4],
        ColumnData::DateTimeOffset(Some(TDateTimeOffset::new(utc, -60)))
    );
}

#[tokio::test]
async fn multiple_result_sets_and_multi_statement_builtins() {
    let a = ResultSet::fixed(
        vec![Column::not_null("a", SqlType::Int)],
        vec![vec![1.into()], vec![2.into()]],
    );
    let b = ResultSet::fixed(
        vec![
            Column::new("b", SqlType::NVarChar(10)),
            Column::new("c", SqlType::Bit),
        ],
        vec![vec!["x".into(), true.into()]],
    );
    let empty = ResultSet::fixed(vec![Column::new("e", SqlType::Int)], vec![]);
    let r = Responder::start(Script::default().reply(
        Matcher::StartsWith("EXEC dbo.entitlements".into()),
        Reply::sets(vec![a, empty, b]),
    ));
    let mut client = plain_client(&r).await;
    let sets = client
        .simple_query("exec dbo.entitlements @user = 'x'")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(sets.iter().map(Vec::len).collect::<Vec<_>>(), [2, 0, 1]);
    assert_eq!(sets[0][1].get::<i32, _>(0), Some(2));
    assert_eq!(sets[2][0].get::<&str, _>("b"), Some("x"));
    assert_eq!(sets[2][0].get::<bool, _>("c"), Some(true));

    let sets = client
        .simple_query("SET NOCOUNT ON; SELECT 1; SELECT @@VERSION")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(sets.len(), 2);
}

#[tokio::test]
async fn unknown_batch_is_error_208_and_connection_survives() {
    let r = Responder::start(Script::default());
    let mut client = plain_client(&r).await;
    let err = results(&mut client, "SELECT * FROM dbo.missing")
        .await
        .unwrap_err();
    let (code, message) = server_error(&err);
    assert_eq!(code, 208);
    assert!(message.contains("SELECT * FROM dbo.missing"), "{message}");
    let row = one_row(&mut client, "SELECT 1").await;
    assert_eq!(row.get::<i32, _>(0), Some(1));
}

fn numbered(count: u64) -> ResultSet {
    ResultSet::generated(
        vec![
            Column::not_null("id", SqlType::BigInt),
            Column::new("name", SqlType::NVarChar(40)),
        ],
        count,
        |i| {
            vec![
                Cell::Int(i as i64),
                if i % 7 == 3 {
                    Cell::Null
                } else {
                    Cell::Str(format!("name {i}"))
                },
            ]
        },
    )
}

#[tokio::test]
async fn error_after_rows_gives_rows_then_the_error() {
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("boom".into()),
        Reply::set(numbered(10)).with_fault(Fault::ErrorAfterRows {
            rows: 3,
            number: 50001,
            message: "it went boom".into(),
        }),
    ));
    let mut client = plain_client(&r).await;
    let mut rows = client
        .simple_query("SELECT boom")
        .await
        .unwrap()
        .into_row_stream();
    let mut got = 0;
    let err = loop {
        match rows.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("no error after {got} rows"),
        }
    };
    assert_eq!(got, 3);
    assert_eq!(server_error(&err), (50001, "it went boom".into()));
    drop(rows);
    let row = one_row(&mut client, "SELECT 1").await;
    assert_eq!(row.get::<i32, _>(0), Some(1));

    // A reply that is only an error.
    let r = Responder::start(
        Script::default().reply(Matcher::Exact("x".into()), Reply::error(229, "denied")),
    );
    let mut client = plain_client(&r).await;
    let err = results(&mut client, "x").await.unwrap_err();
    assert_eq!(server_error(&err), (229, "denied".into()));
}

#[tokio::test]
async fn reset_after_rows_gives_an_io_error() {
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("flaky".into()),
        Reply::set(numbered(100)).with_fault(Fault::ResetAfterRows(5)),
    ));
    let mut client = plain_client(&r).await;
    let mut rows = client
        .simple_query("SELECT flaky")
        .await
        .unwrap()
        .into_row_stream();
    let mut got = 0;
    let err = loop {
        match rows.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended cleanly after {got} rows"),
        }
    };
    assert_eq!(got, 5);
    assert!(matches!(err, tiberius::error::Error::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn generated_200k_rows_stream_at_a_negotiated_packet_size() {
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("big".into()),
        Reply::set(numbered(200_000)),
    ));
    let mut c = config(&r, "u", "p");
    c.packet_size(16384);
    let mut client = connect(&r, c).await.unwrap();
    let mut rows = client
        .simple_query("SELECT * FROM big")
        .await
        .unwrap()
        .into_row_stream();
    let (mut count, mut sum, mut nulls) = (0u64, 0i64, 0u64);
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        sum += row.get::<i64, _>(0).unwrap();
        if row.get::<&str, _>(1).is_none() {
            nulls += 1;
        } else {
            assert_eq!(
                row.get::<&str, _>(1).unwrap(),
                format!("name {}", row.get::<i64, _>(0).unwrap())
            );
        }
        count += 1;
    }
    assert_eq!(count, 200_000);
    assert_eq!(sum, 199_999 * 200_000 / 2);
    assert_eq!(nulls, (0..200_000u64).filter(|i| i % 7 == 3).count() as u64);
    assert_eq!(r.logins()[0].packet_size, 16384);
}

#[tokio::test]
async fn rpc_query_and_execute_are_answered_and_recorded() {
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("FROM dbo.people".into()),
        Reply::set(ResultSet::fixed(
            vec![Column::new("name", SqlType::NVarChar(50))],
            vec![vec!["Ada".into()], vec!["Grace".into()]],
        )),
    ));
    let mut client = plain_client(&r).await;
    let rows = client
        .query("SELECT name FROM dbo.people WHERE id > @P1", &[&7i32])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].get::<&str, _>(0), Some("Grace"));
    let long = format!("SELECT name FROM dbo.people /* {} */", "x".repeat(5000));
    let rows = client
        .query(long.as_str(), &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let done = client.execute("SET NOCOUNT ON", &[]).await.unwrap();
    assert_eq!(done.total(), 0);
    let err = client.query("SELECT nothing", &[]).await.unwrap_err();
    assert_eq!(server_error(&err).0, 208);
    assert_eq!(
        r.batches(),
        [
            "SELECT name FROM dbo.people WHERE id > @P1",
            long.as_str(),
            "SET NOCOUNT ON",
            "SELECT nothing"
        ]
    );
    assert!(
        matches!(&r.requests()[0].1, Request::Rpc { procedure, .. } if procedure == "sp_executesql")
    );
}

#[tokio::test]
async fn attention_cancels_a_slow_reply_and_disconnects_are_noticed() {
    let slow = || Reply::set(numbered(1000)).with_fault(Fault::SlowRows(Duration::from_millis(20)));
    let r = Responder::start(Script::default().reply(Matcher::Contains("slow".into()), slow()));
    let mut client = plain_client(&r).await;
    {
        let mut rows = client
            .simple_query("SELECT slow")
            .await
            .unwrap()
            .into_row_stream();
        for _ in 0..3 {
            rows.next().await.unwrap().unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(5), client.cancel_query())
        .await
        .unwrap()
        .unwrap();
    let row = one_row(&mut client, "SELECT 1").await;
    assert_eq!(row.get::<i32, _>(0), Some(1));
    assert!(r.requests().iter().any(|(_, q)| *q == Request::Attention));

    // A client that goes away mid-reply: the responder's connection task ends promptly.
    let mut client = plain_client(&r).await;
    {
        let mut rows = client
            .simple_query("SELECT slow")
            .await
            .unwrap()
            .into_row_stream();
        rows.next().await.unwrap().unwrap();
    }
    drop(client);
    let start = std::time::Instant::now();
    while r.open_connections() > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "connection task leaked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn transactions_through_the_transaction_manager_and_tsql() {
    let r = Responder::start(Script::default());
    let mut client = plain_client(&r).await;
    client
        .begin_transaction_with_isolation(tiberius::IsolationLevel::Snapshot)
        .await
        .unwrap();
    client.commit_transaction().await.unwrap();
    assert!(
        client.rollback_transaction().await.is_err(),
        "no transaction to roll back"
    );
    client
        .simple_query("BEGIN TRAN")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client
        .simple_query("ROLLBACK")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let requests: Vec<Request> = r.requests().into_iter().map(|(_, q)| q).collect();
    assert_eq!(
        requests[..3],
        [
            Request::BeginTransaction {
                isolation: "SNAPSHOT".into()
            },
            Request::Commit,
            Request::Rollback
        ]
    );
}

#[tokio::test]
async fn concurrent_connections() {
    let r = Responder::start(
        Script::default().reply(Matcher::Contains("big".into()), Reply::set(numbered(5000))),
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = config(&r, "u", "p");
            let port = r.port();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let mut client = Client::connect(c, tcp.compat_write()).await.unwrap();
                let rows = first_result(&mut client, "SELECT big").await;
                rows.len()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 5000);
    }
    assert_eq!(r.connections(), 8);
}

#[tokio::test]
async fn script_errors_surface_as_server_errors() {
    let r = Responder::start(Script::default().reply(
        Matcher::Contains("bad".into()),
        Reply::set(ResultSet::generated(
            vec![Column::not_null("n", SqlType::Int)],
            3,
            |i| {
                vec![if i == 1 {
                    Cell::str("oops")
                } else {
                    Cell::Int(1)
                }]
            },
        )),
    ));
    let mut client = plain_client(&r).await;
    let err = client
        .simple_query("SELECT bad")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap_err();
    let (code, message) = server_error(&err);
    assert_eq!(code, 50000);
    assert!(
        message.contains("script error") && message.contains("row 1"),
        "{message}"
    );
}

#[test]
fn browser_answers_instance_listing_and_dac_requests() {
    let r = Responder::start(Script {
        instance: Some("SQLEXPRESS".into()),
        ..Script::default()
    });
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = |request: &[u8]| -> Option<Vec<u8>> {
        udp.send_to(request, ("127.0.0.1", r.browser_port()))
            .unwrap();
        let mut buf = [0u8; 2048];
        udp.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
    };
    let listing = format!(
        "ServerName;localhost;InstanceName;SQLEXPRESS;IsClustered;No;Version;16.0.4135.4;tcp;{};;",
        r.port()
    );
    for request in [&b"\x04sqlexpress"[..], b"\x04SQLEXPRESS\0", b"\x03"] {
        let answer = ask(request).expect("an answer");
        assert_eq!(answer[0], 0x05);
        assert_eq!(
            usize::from(u16::from_le_bytes([answer[1], answer[2]])),
            answer.len() - 3
        );
        assert_eq!(std::str::from_utf8(&answer[3..]).unwrap(), listing);
    }
    let mut dac = vec![0x0F, 0x01];
    dac.extend_from_slice(b"SQLEXPRESS");
    let port = r.port().to_le_bytes();
    assert_eq!(
        ask(&dac).unwrap(),
        [0x05, 0x06, 0x00, 0x01, port[0], port[1]]
    );
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(ask(b"\x04OTHER"), None, "unknown instances get no answer");
}

#[tokio::test]
async fn prelogin_confirms_only_the_scripted_instance() {
    let r = Responder::start(Script {
        instance: Some("SQLEXPRESS".into()),
        ..Script::default()
    });
    let mut c = config(&r, "u", "p");
    c.instance_name("sqlexpress");
    connect(&r, c).await.expect("the scripted instance");
    assert_eq!(r.logins()[0].instance, "sqlexpress");
    let mut c = config(&r, "u", "p");
    c.instance_name("OTHER");
    let err = connect(&r, c).await.unwrap_err();
    assert!(err.to_string().contains("instance"), "{err}");
}

#[tokio::test]
async fn tls_full_login_only_and_strict() {
    let r = Responder::start(
        Script::default().reply(Matcher::Contains("big".into()), Reply::set(numbered(3000))),
    );
    assert!(r.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    // Encrypt=true, validating the certificate against the responder's CA and "localhost".
    let mut c = config(&r, "u", "p");
    c.host("localhost");
    c.encryption(EncryptionLevel::Required);
    c.trust_cert_ca(r.ca_path().display());
    let mut client = connect(&r, c).await.expect("TLS login");
    let rows = first_result(&mut client, "SELECT big").await;
    assert_eq!(rows.len(), 3000);

    // Encrypt=false: only LOGIN7 is encrypted, the rest is plain.
    let mut c = config(&r, "u", "p");
    c.encryption(EncryptionLevel::Off);
    c.trust_cert();
    let mut client = connect(&r, c).await.expect("login-only TLS");
    let rows = first_result(&mut client, "SELECT big").await;
    assert_eq!(rows.len(), 3000);

    // TDS 8.0 strict: TLS first.
    let mut c = config(&r, "u", "p");
    c.encryption(EncryptionLevel::Strict);
    c.trust_cert();
    let mut client = connect(&r, c).await.expect("strict TLS login");
    let row = one_row(&mut client, "SELECT 1").await;
    assert_eq!(row.get::<i32, _>(0), Some(1));

    // A client that does not want encryption still gets plain text.
    let mut client = plain_client(&r).await;
    one_row(&mut client, "SELECT 1").await;

    let used: Vec<(Encryption, TlsUse)> =
        r.logins().iter().map(|l| (l.encryption, l.tls)).collect();
    assert_eq!(
        used,
        [
            (Encryption::Required, TlsUse::Full),
            (Encryption::Off, TlsUse::LoginOnly),
            (Encryption::Required, TlsUse::Strict),
            (Encryption::NotSupported, TlsUse::None),
        ]
    );
}

#[tokio::test]
async fn encryption_required_without_tls_fails_cleanly() {
    let r = Responder::start(Script {
        tls: false,
        ..Script::default()
    });
    let mut c = config(&r, "u", "p");
    c.encryption(EncryptionLevel::Required);
    c.trust_cert();
    let err = connect(&r, c).await.unwrap_err();
    assert!(err.to_string().contains("encryption"), "{err}");
    let mut c = config(&r, "u", "p");
    c.encryption(EncryptionLevel::Strict);
    c.trust_cert();
    assert!(connect(&r, c).await.is_err());
    // tiberius's Encrypt=false still wants TLS for LOGIN7: it starts a handshake, which fails.
    let mut c = config(&r, "u", "p");
    c.encryption(EncryptionLevel::Off);
    c.trust_cert();
    assert!(connect(&r, c).await.is_err());
    assert!(r.logins().is_empty());
}

/// Client side of raw packets, to check framing that tiberius hides.
async fn send_packets(s: &mut TcpStream, ty: u8, payload: &[u8], size: usize) {
    use tokio::io::AsyncWriteExt;
    let mut chunks: Vec<&[u8]> = payload.chunks(size - 8).collect();
    if chunks.is_empty() {
        chunks.push(&[]); // a header-only message, e.g. ATTENTION
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut p = vec![ty, u8::from(last)];
        p.extend_from_slice(&((chunk.len() + 8) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, (i + 1) as u8, 0]);
        p.extend_from_slice(chunk);
        s.write_all(&p).await.unwrap();
    }
}

/// The packets of one server message: (status, length) of each, and the joined payload.
async fn read_packets(s: &mut TcpStream) -> (Vec<(u8, usize)>, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), read_packets_unbounded(s))
        .await
        .expect("a reply within 10 s")
}

async fn read_packets_unbounded(s: &mut TcpStream) -> (Vec<(u8, usize)>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let (mut packets, mut payload) = (Vec::new(), Vec::new());
    loop {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0], 0x04, "server packets are tabular results");
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let start = payload.len();
        payload.resize(start + len - 8, 0);
        s.read_exact(&mut payload[start..]).await.unwrap();
        packets.push((h[1], len));
        if h[1] & 1 == 1 {
            return (packets, payload);
        }
    }
}

#[tokio::test]
async fn raw_packets_respect_the_negotiated_packet_size() {
    let r = Responder::start(
        Script::default().reply(Matcher::Contains("big".into()), Reply::set(numbered(2000))),
    );
    let mut s = TcpStream::connect(("127.0.0.1", r.port())).await.unwrap();
    // PRELOGIN: VERSION at 11 (6 bytes), ENCRYPTION at 17 = NOT_SUP, terminator.
    let prelogin = [0, 0, 11, 0, 6, 1, 0, 17, 0, 1, 0xFF, 1, 2, 0, 3, 0, 0, 2];
    send_packets(&mut s, 0x12, &prelogin, 4096).await;
    let (_, answer) = read_packets(&mut s).await;
    assert_eq!(answer[0], 0x00, "VERSION option first");

    // LOGIN7 asking for 512-byte packets, user "u", every other field empty.
    let mut login = vec![0u8; 96];
    login[4..8].copy_from_slice(&0x7400_0004u32.to_le_bytes());
    login[8..12].copy_from_slice(&512u32.to_le_bytes());
    for at in [36, 40, 44, 48, 52, 56, 60, 64, 68, 78, 82, 86] {
        let offset: u16 = if at > 40 { 96 } else { 94 };
        login[at..at + 2].copy_from_slice(&offset.to_le_bytes());
    }
    login[42..44].copy_from_slice(&1u16.to_le_bytes()); // cchUserName
    login[94..96].copy_from_slice(&u16::from(b'u').to_le_bytes());
    login[0..4].copy_from_slice(&96u32.to_le_bytes());
    send_packets(&mut s, 0x10, &login, 4096).await;
    let (_, answer) = read_packets(&mut s).await;
    assert!(answer.contains(&0xAD), "LOGINACK");
    assert_eq!(r.logins()[0].packet_size, 512);

    // A batch longer than a packet, sent in 512-byte packets.
    let sql = format!("SELECT big /* {} */", "-".repeat(600));
    let mut batch = Vec::new();
    batch.extend_from_slice(&22u32.to_le_bytes());
    batch.extend_from_slice(&18u32.to_le_bytes());
    batch.extend_from_slice(&2u16.to_le_bytes());
    batch.extend_from_slice(&[0; 8]);
    batch.extend_from_slice(&1u32.to_le_bytes());
    batch.extend(sql.encode_utf16().flat_map(u16::to_le_bytes));
    send_packets(&mut s, 0x01, &batch, 512).await;
    let (packets, payload) = read_packets(&mut s).await;
    assert!(packets.len() > 20, "{} packets", packets.len());
    let (last, full) = packets.split_last().unwrap();
    assert!(
        full.iter().all(|&p| p == (0, 512)),
        "every packet but the last is full"
    );
    assert_eq!(last.0, 1, "end of message");
    assert!(last.1 <= 512);
    assert_eq!(payload[0], 0x81, "COLMETADATA first");
    let done = &payload[payload.len() - 13..];
    assert_eq!(
        done[..5],
        [0xFD, 0x10, 0x00, 0xC1, 0x00],
        "final DONE with COUNT, SELECT"
    );
    assert_eq!(u64::from_le_bytes(done[5..].try_into().unwrap()), 2000);
    assert_eq!(r.batches(), [sql]);

    // An attention after the reply ended is still acknowledged.
    send_packets(&mut s, 0x06, &[], 512).await;
    let (_, payload) = read_packets(&mut s).await;
    assert_eq!(payload[..3], [0xFD, 0x20, 0x00]);
}
