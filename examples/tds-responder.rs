//! A standalone TDS responder for benchmarks: the test suite's scripted SQL Server stand-in
//! (tests/support/tds) serving generated tables until killed.
//!
//! ```text
//! cargo run --release --example tds-responder -- [--rows N] [--wide] [--no-tls]
//! ```
//!
//! Prints `PORT <n>` on stdout (127.0.0.1, a free port), then serves. Login `bench` /
//! `bench-pass`, database `bench`. Answers:
//! * any batch containing `people` (e.g. `SELECT * FROM dbo.people`): N rows of
//!   `id bigint NOT NULL, name nvarchar(50) NOT NULL, email varchar(100) NULL (every 17th row
//!   NULL), active bit NOT NULL, created datetime2(3) NOT NULL`;
//! * with `--wide`, also any batch containing `wide`: N rows of a 30-column table mixing the common
//!   types (integers, decimals, money, floats, strings, dates and times, GUIDs, binary), some
//!   nullable with NULLs;
//! * `SELECT 1`, `SELECT @@VERSION`, `SET ...` and the other built-ins of the responder.
//!
//! `--rows` defaults to 1,000,000; rows are generated while streaming, so memory stays flat.
//! TLS is offered as SQL Server does (ADO `Encrypt=false` encrypts only the login, `Encrypt=true`
//! everything, `Encrypt=DANGER_PLAINTEXT` nothing); the path of the CA certificate that issued the
//! server certificate (for localhost/127.0.0.1) is printed on stderr as `CA <path>`. With
//! `--no-tls`, only clients that do not ask for encryption connect.

#[allow(dead_code)]
#[path = "../tests/support/tds/mod.rs"]
mod tds;

use std::io::Write;

use tds::{Cell, Column, Matcher, Reply, Responder, ResultSet, Script, SqlType};

const USAGE: &str = "usage: tds-responder [--rows N] [--wide] [--no-tls]";

/// 2023-11-14T22:13:20Z, the first `created` value.
const EPOCH: i64 = 1_700_000_000;

fn people(rows: u64) -> ResultSet {
    use SqlType::*;
    ResultSet::generated(
        vec![
            Column::not_null("id", BigInt),
            Column::not_null("name", NVarChar(50)),
            Column::new("email", VarChar(100)),
            Column::not_null("active", Bit),
            Column::not_null("created", DateTime2(3)),
        ],
        rows,
        |i| {
            vec![
                Cell::Int(i as i64 + 1),
                Cell::Str(format!("Person {i}")),
                if i % 17 == 16 {
                    Cell::Null
                } else {
                    Cell::Str(format!("person{i}@example.com"))
                },
                Cell::Bit(i % 3 != 0),
                Cell::unix_datetime(EPOCH + i as i64, (i % 1000) as u32 * 1_000_000),
            ]
        },
    )
}

fn wide(rows: u64) -> ResultSet {
    use SqlType::*;
    let types = [
        Int,
        NVarChar(100),
        Decimal(18, 4),
        DateTime2(7),
        Float,
        Bit,
        VarChar(50),
        UniqueIdentifier,
        Date,
        Money,
        SmallInt,
        NVarChar(20),
        BigInt,
        DateTime,
        Real,
        TinyInt,
        NChar(10),
        Numeric(10, 2),
        Time(3),
        VarBinary(16),
        DateTimeOffset(3),
        Int,
        NVarChar(200),
        Decimal(38, 10),
        SmallMoney,
        Char(8),
        BigInt,
        Float,
        NVarChar(100),
    ];
    let mut columns = vec![Column::not_null("id", BigInt)];
    columns.extend(types.iter().enumerate().map(|(c, ty)| Column {
        name: format!("c{:02}", c + 1),
        ty: *ty,
        nullable: c % 4 == 1,
    }));
    ResultSet::generated(columns, rows, move |i| {
        let mut row = vec![Cell::Int(i as i64 + 1)];
        for (c, ty) in types.iter().enumerate() {
            if c % 4 == 1 && (i + c as u64).is_multiple_of(9) {
                row.push(Cell::Null);
                continue;
            }
            let n = i as i64 * 31 + c as i64;
            row.push(match ty {
                TinyInt => Cell::Int(n.rem_euclid(256)),
                SmallInt => Cell::Int(n.rem_euclid(32_000)),
                Int | BigInt => Cell::Int(n),
                Bit => Cell::Bit(n % 2 == 0),
                Decimal(..) | Numeric(..) => {
                    Cell::Decimal(format!("{}.{:02}", n / 100, n.rem_euclid(100)))
                }
                Money | SmallMoney => {
                    Cell::Decimal(format!("{}.{:04}", n % 100_000, n.rem_euclid(10_000)))
                }
                Float | Real => Cell::Float(n as f64 / 8.0),
                NVarChar(len) | VarChar(len) => {
                    let mut s = format!("value {n} of column {c}");
                    s.truncate(usize::from(*len));
                    Cell::Str(s)
                }
                NChar(_) | Char(_) => Cell::Str(format!("{}", n % 1_000_000)),
                DateTime2(_) | DateTime | DateTimeOffset(_) => {
                    Cell::unix_datetime(EPOCH + n, (n.rem_euclid(1000) as u32) * 1_000_000)
                }
                Date => match Cell::unix_datetime(EPOCH + n * 3600, 0) {
                    Cell::DateTime(d, _) => Cell::Date(d),
                    other => other,
                },
                Time(_) => Cell::time((n % 24) as u32, (n % 60) as u32, (n % 59) as u32, 0),
                UniqueIdentifier => {
                    let mut g = [0u8; 16];
                    g[..8].copy_from_slice(&n.to_be_bytes());
                    g[8..].copy_from_slice(&(c as u64).to_be_bytes());
                    Cell::Guid(g)
                }
                VarBinary(_) => Cell::Bytes(n.to_le_bytes().to_vec()),
                _ => Cell::Null,
            });
        }
        row
    })
}

fn main() {
    let mut rows: u64 = 1_000_000;
    let mut with_wide = false;
    let mut tls = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => match args.next().and_then(|v| v.replace('_', "").parse().ok()) {
                Some(n) => rows = n,
                None => {
                    eprintln!("--rows needs a number\n{USAGE}");
                    std::process::exit(2);
                }
            },
            "--wide" => with_wide = true,
            "--no-tls" => tls = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let mut script = Script {
        tls,
        ..Script::default()
    }
    .user("bench", "bench-pass")
    .database("bench")
    .reply(Matcher::Contains("people".into()), Reply::set(people(rows)));
    if with_wide {
        script = script.reply(Matcher::Contains("wide".into()), Reply::set(wide(rows)));
    }
    let responder = Responder::start(script);
    if tls {
        eprintln!("CA {}", responder.ca_path().display());
    }
    println!("PORT {}", responder.port());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
