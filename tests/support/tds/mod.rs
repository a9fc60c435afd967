//! A scripted TDS 7.4 responder: a stand-in for SQL Server that the SQL Server package's tests
//! (and the `tds-responder` benchmark example) talk to over real TCP, since no SQL Server runs
//! here. It is written from MS-TDS (TDS 7.4, plus TDS 8.0 strict TLS) and MC-SQLR, and checked
//! against what tiberius 0.13 sends and expects (`tests/it/tds_responder.rs`). What it implements is
//! what the package may rely on; anything else is answered with a server error, never silence.
//!
//! # Use
//!
//! ```ignore
//! let responder = Responder::start(Script {
//!     users: vec![("reader".into(), "s3cret".into())],
//!     databases: vec!["sales".into()],
//!     results: vec![(
//!         Matcher::Contains("FROM dbo.people".into()),
//!         Reply::set(ResultSet::new(
//!             vec![Column::not_null("id", SqlType::BigInt), Column::new("name", SqlType::NVarChar(50))],
//!             Rows::Fixed(vec![vec![Cell::Int(1), Cell::str("Ada")]]),
//!         )),
//!     )],
//!     ..Script::default()
//! });
//! // connect to 127.0.0.1:responder.port() ... then:
//! assert!(responder.batches().iter().any(|b| b.contains("people")));
//! ```
//!
//! [`Responder::start`] binds 127.0.0.1 on free TCP and UDP ports and serves on a background
//! thread with its own tokio runtime; every connection gets its own task. Dropping the
//! [`Responder`] stops it and closes every connection.
//!
//! # What is answered
//!
//! * PRELOGIN: VERSION, ENCRYPTION, INSTOPT (confirms the script's instance, or `MSSQLSERVER`
//!   when the script has none; any other name is refused), an empty THREADID, MARS off.
//! * Encryption with [`Script::tls`] (the default): ENCRYPT_OFF from the client gets ENCRYPT_OFF
//!   and only LOGIN7 is encrypted (tiberius `EncryptionLevel::Off`, ADO `Encrypt=false`);
//!   ENCRYPT_ON/ENCRYPT_REQ get ENCRYPT_ON and everything after PRELOGIN is encrypted (ADO
//!   `Encrypt=true`); ENCRYPT_NOT_SUP gets plain text (`EncryptionLevel::NotSupported`, ADO
//!   `Encrypt=DANGER_PLAINTEXT`).
//! * With `tls: false` the answer is always ENCRYPT_NOT_SUP. Only a client that does not want
//!   encryption connects; one that requires it fails cleanly on its side ("Server does not allow
//!   the requested encryption level"). tiberius's `EncryptionLevel::Off` fails too: it still
//!   wants TLS for LOGIN7, starts a handshake, and the responder closes the connection. The TLS handshake travels in PRELOGIN packets (TLS 1.2). A
//!   connection that opens with a TLS record is TDS 8.0 strict: TLS first (1.2 or 1.3, ALPN
//!   `tds/8.0`), then the whole TDS conversation inside it. The certificate is for `localhost` and
//!   `127.0.0.1`, issued by a CA made for this responder: [`Responder::ca_pem`] /
//!   [`Responder::ca_path`] (tiberius `trust_cert_ca`), or trust any certificate
//!   (`TrustServerCertificate=true`).
//! * LOGIN7: the user/password must be one of [`Script::users`] (user names compare
//!   case-insensitively; an empty list accepts everyone) and the database one of
//!   [`Script::databases`] (case-insensitive; the first is the default; an empty list accepts any
//!   name, defaulting to `master`). Success: ENVCHANGE database, INFO 5701, ENVCHANGE collation,
//!   ENVCHANGE language, INFO 5703, LOGINACK (TDS 7.4, "Microsoft SQL Server", the script's
//!   version), ENVCHANGE packet size, DONE. Wrong password: ERROR 18456 "Login failed for user
//!   'X'." class 14 and DONE with the error bit, then the connection closes. Unknown database:
//!   ERROR 4060 "Cannot open database "X" requested by the login. The login failed.", then 18456.
//!   The packet size is the client's request clamped to 512..=32767 (0 = 4096).
//! * SQL batches (ALL_HEADERS then UTF-16 text, across any number of packets) and RPC
//!   `sp_executesql` (what tiberius `query`/`execute` send; the statement is the first
//!   parameter; other procedures get ERROR 2812). The first of [`Script::results`] whose [`Matcher`] matches answers. Otherwise the
//!   batch is split on `;` and answered statement by statement if every statement is a built-in:
//!   `SELECT 1` (an unnamed NOT NULL int), `SELECT @@VERSION` (nvarchar(300)), `SELECT DB_NAME()`,
//!   `SET ...` (DONE, no result), `USE db` (ENVCHANGE database; error 911 if unknown),
//!   `BEGIN TRAN[SACTION]`, `COMMIT [TRAN[SACTION]]`, `ROLLBACK [TRAN[SACTION]]` (transaction
//!   ENVCHANGEs). Anything else gets ERROR 208 "Invalid object name '<the batch>'." class 16.
//! * Result sets: COLMETADATA, then ROW per row, or NBCROW for a row with NULLs (unless
//!   [`ResultSet::null_bitmap`] is off, then NULLs go inline: PLP_NULL, 0xFFFF, length 0), then
//!   DONE (MORE|COUNT between sets, COUNT on the last; DONEINPROC and RETURNSTATUS + DONEPROC for
//!   RPC). Type encodings: see [`SqlType`] and [`Cell`].
//! * Transaction manager requests (tiberius `begin_transaction_with_isolation`, `commit_...`,
//!   `rollback_...`): ENVCHANGE begin/commit/rollback + DONE.
//! * ATTENTION: the current reply stops between rows and DONE with the ATTN bit ends it; an
//!   attention after the reply has ended is acknowledged the same way.
//! * Packets: replies are cut at the negotiated packet size; rows are encoded one at a time into
//!   a one-packet buffer that is written and flushed when full, so a million generated rows keep
//!   memory flat.
//!
//! # Faults
//!
//! [`Reply::fault`] (row counts are across all the reply's sets, from the start):
//! * [`Fault::ErrorAfterRows`]: after that many rows, ERROR (class 16) and a final DONE with the
//!   error bit (after the last row if the reply has fewer).
//! * [`Fault::ResetAfterRows`]: after that many rows, the rows produced so far are flushed in a
//!   packet that does not end the message and the socket is shut down (FIN; with TLS no
//!   close_notify): the client sees the end of the stream in the middle of a reply.
//! * [`Fault::SlowRows`]: sleeps before each row, flushing what it has first so the client sees
//!   rows trickle in; a disconnect or an ATTENTION during the sleep is noticed at once.
//! * [`Fault::LoginFails`]: in a reply, ERROR 18456 before any row.
//!
//! [`Script::login_fault`] applies to logins: `LoginFails` refuses every login with 18456;
//! `ErrorAfterRows { number, message, .. }` refuses it with that error; `SlowRows(d)` answers the
//! login after `d`; `ResetAfterRows(_)` closes the connection instead of answering LOGIN7.
//!
//! # Observing
//!
//! [`Responder::batches`] (SQL text of batches and `sp_executesql` calls, in order),
//! [`Responder::requests`] (everything, with the connection number), [`Responder::logins`]
//! ([`LoginInfo`]: user, whether the password matched — never the password —, database, app
//! name, read-only intent, the encryption asked for, how TLS was used), and
//! [`Responder::open_connections`]. Set `TDS_RESPONDER_LOG=1` to print each connection's errors
//! to stderr.

mod browser;
mod login;
mod packet;
mod server;
mod tls;
mod token;
mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

// `Date` and `Time` are for building `Cell::Date(..)` etc.; not every test binary names them.
#[allow(unused_imports)]
pub use types::{Cell, Date, SqlType, Time};

/// What the responder knows and how it answers. `Script::default()` has no users (every login
/// accepted), no databases (any name accepted, default `master`), no instance name, version
/// 16.0.4135.4 (SQL Server 2022), TLS offered (as SQL Server always does) and no scripted
/// results.
#[derive(Clone, Debug)]
pub struct Script {
    /// Accepted (user, password) pairs; empty accepts every login.
    pub users: Vec<(String, String)>,
    /// Known databases, the first being the default; empty accepts any name.
    pub databases: Vec<String>,
    /// The named instance the browser announces and PRELOGIN confirms.
    pub instance: Option<String>,
    /// `major.minor.build[.revision]`, for LOGINACK, PRELOGIN, `SELECT @@VERSION`, the browser.
    pub version: String,
    /// Offer TLS (see the module documentation); true by default.
    pub tls: bool,
    /// Scripted replies; the first whose matcher matches a batch answers it.
    pub results: Vec<(Matcher, Reply)>,
    /// A fault applied to every login (see the module documentation).
    pub login_fault: Option<Fault>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            users: Vec::new(),
            databases: Vec::new(),
            instance: None,
            version: "16.0.4135.4".into(),
            tls: true,
            results: Vec::new(),
            login_fault: None,
        }
    }
}

impl Script {
    pub fn user(mut self, name: &str, password: &str) -> Script {
        self.users.push((name.into(), password.into()));
        self
    }
    pub fn database(mut self, name: &str) -> Script {
        self.databases.push(name.into());
        self
    }
    pub fn reply(mut self, matcher: Matcher, reply: Reply) -> Script {
        self.results.push((matcher, reply));
        self
    }

    /// The version as (major, minor, build).
    fn version_parts(&self) -> Result<(u8, u8, u16), String> {
        let mut it = self.version.split('.');
        let mut next = || it.next().and_then(|p| p.parse::<u32>().ok());
        match (next(), next(), next()) {
            (Some(a), Some(b), Some(c)) if a < 256 && b < 256 && c < 65536 => {
                Ok((a as u8, b as u8, c as u16))
            }
            _ => Err(format!(
                "version {:?} is not major.minor.build[.revision]",
                self.version
            )),
        }
    }

    /// Checks everything that can be checked before serving: the version, column types and
    /// names, and every fixed row against its columns.
    fn validate(&self) -> Result<(), String> {
        self.version_parts()?;
        for (matcher, reply) in &self.results {
            for (i, set) in reply.sets.iter().enumerate() {
                let ctx = |e: String| format!("reply to {matcher:?}, set {i}: {e}");
                let mut scratch = Vec::new();
                token::col_metadata(&mut scratch, &set.columns).map_err(ctx)?;
                if let Rows::Fixed(rows) = &set.rows {
                    for (r, row) in rows.iter().enumerate() {
                        scratch.clear();
                        token::row(&mut scratch, &set.columns, row, set.null_bitmap)
                            .map_err(|e| ctx(format!("row {r}: {e}")))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// How a scripted reply recognises its batch. The batch and the pattern are both compared with
/// runs of whitespace collapsed to one space, surrounding whitespace and trailing `;` removed,
/// and ASCII case ignored.
#[derive(Clone, Debug)]
pub enum Matcher {
    Exact(String),
    Contains(String),
    StartsWith(String),
}

impl Matcher {
    fn matches(&self, normalized_batch: &str) -> bool {
        match self {
            Matcher::Exact(p) => normalized_batch == normalize(p),
            Matcher::Contains(p) => normalized_batch.contains(&normalize(p)),
            Matcher::StartsWith(p) => normalized_batch.starts_with(&normalize(p)),
        }
    }
}

/// Collapses whitespace, trims, drops trailing semicolons, lowercases ASCII.
fn normalize(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    out.make_ascii_lowercase();
    out
}

/// The answer to a batch: any number of result sets (none = just DONE) and an optional fault.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub sets: Vec<ResultSet>,
    pub fault: Option<Fault>,
}

impl Reply {
    /// One result set.
    pub fn set(set: ResultSet) -> Reply {
        Reply {
            sets: vec![set],
            fault: None,
        }
    }
    /// Several result sets.
    pub fn sets(sets: Vec<ResultSet>) -> Reply {
        Reply { sets, fault: None }
    }
    /// No result, just DONE (e.g. for a statement the package sends and ignores).
    pub fn empty() -> Reply {
        Reply::default()
    }
    /// A server error (class 16) and nothing else.
    pub fn error(number: u32, message: &str) -> Reply {
        Reply::default().with_fault(Fault::ErrorAfterRows {
            rows: 0,
            number,
            message: message.into(),
        })
    }
    pub fn with_fault(mut self, fault: Fault) -> Reply {
        self.fault = Some(fault);
        self
    }
}

/// One result set. `null_bitmap` (default true) sends rows with NULLs as NBCROW, as SQL Server
/// does; false sends every row as ROW with NULLs inline.
#[derive(Clone, Debug)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Rows,
    pub null_bitmap: bool,
}

impl ResultSet {
    pub fn new(columns: Vec<Column>, rows: Rows) -> ResultSet {
        ResultSet {
            columns,
            rows,
            null_bitmap: true,
        }
    }
    pub fn fixed(columns: Vec<Column>, rows: Vec<Vec<Cell>>) -> ResultSet {
        ResultSet::new(columns, Rows::Fixed(rows))
    }
    /// `count` rows made on demand by `row(index)`, never all held at once.
    pub fn generated(
        columns: Vec<Column>,
        count: u64,
        row: impl Fn(u64) -> Vec<Cell> + Send + Sync + 'static,
    ) -> ResultSet {
        ResultSet::new(
            columns,
            Rows::Generated {
                count,
                row: Arc::new(row),
            },
        )
    }
}

/// The rows of a result set.
#[derive(Clone)]
pub enum Rows {
    Fixed(Vec<Vec<Cell>>),
    /// Rows produced one at a time while streaming (a million rows keep memory flat).
    Generated {
        count: u64,
        row: Arc<dyn Fn(u64) -> Vec<Cell> + Send + Sync>,
    },
}

impl Rows {
    pub fn len(&self) -> u64 {
        match self {
            Rows::Fixed(rows) => rows.len() as u64,
            Rows::Generated { count, .. } => *count,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rows::Fixed(rows) => f.debug_tuple("Fixed").field(rows).finish(),
            Rows::Generated { count, .. } => write!(f, "Generated({count} rows)"),
        }
    }
}

/// A result column. `nullable` picks the nullable wire type where SQL Server has two.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn new(name: &str, ty: SqlType) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable: true,
        }
    }
    pub fn not_null(name: &str, ty: SqlType) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable: false,
        }
    }
}

/// Misbehaviour to script (see the module documentation).
#[derive(Clone, Debug)]
pub enum Fault {
    ErrorAfterRows {
        rows: u64,
        number: u32,
        message: String,
    },
    ResetAfterRows(u64),
    SlowRows(Duration),
    LoginFails,
}

/// The ENCRYPTION value a client sent in PRELOGIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    Off,
    On,
    NotSupported,
    Required,
    Other(u8),
}

impl From<u8> for Encryption {
    fn from(v: u8) -> Encryption {
        match v {
            0 => Encryption::Off,
            1 => Encryption::On,
            2 => Encryption::NotSupported,
            3 => Encryption::Required,
            other => Encryption::Other(other),
        }
    }
}

/// How a connection used TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsUse {
    /// Plain text throughout.
    None,
    /// Only LOGIN7 was encrypted (ENCRYPT_OFF negotiated).
    LoginOnly,
    /// Everything after PRELOGIN was encrypted.
    Full,
    /// TDS 8.0 strict: TLS before PRELOGIN.
    Strict,
}

/// One LOGIN7 as the responder saw it. The password is never kept: only whether it matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginInfo {
    /// Connection number (1, 2, ...), as in [`Responder::requests`].
    pub conn: u32,
    pub user: String,
    pub password_ok: bool,
    /// As requested ("" = the default database).
    pub database: String,
    pub app_name: String,
    pub host_name: String,
    pub server_name: String,
    pub library: String,
    pub read_only_intent: bool,
    /// PRELOGIN ENCRYPTION as sent by the client.
    pub encryption: Encryption,
    pub tls: TlsUse,
    /// PRELOGIN INSTOPT as sent by the client ("" = none).
    pub instance: String,
    /// Requested packet size.
    pub packet_size: u32,
    /// LOGIN7 TDS version, e.g. 0x74000004.
    pub tds_version: u32,
    /// Whether the login was answered with LOGINACK.
    pub accepted: bool,
}

/// A client request, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Batch {
        sql: String,
    },
    /// An RPC; `sql` is the statement of `sp_executesql`.
    Rpc {
        procedure: String,
        sql: Option<String>,
    },
    /// Transaction manager begin, with the isolation level name (e.g. "SNAPSHOT").
    BeginTransaction {
        isolation: String,
    },
    Commit,
    Rollback,
    Attention,
}

/// A running responder; stops when dropped.
pub struct Responder {
    port: u16,
    browser_port: u16,
    shared: Arc<server::Shared>,
    ca_file: Option<tempfile::NamedTempFile>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Validates the script (panicking with the reason if it is wrong), binds 127.0.0.1 on a free
    /// TCP port and a free UDP port (the browser), and serves on a background thread.
    pub fn start(script: Script) -> Responder {
        if let Err(e) = script.validate() {
            panic!("invalid tds::Script: {e}");
        }
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        tcp.set_nonblocking(true).expect("nonblocking TCP");
        udp.set_nonblocking(true).expect("nonblocking UDP");
        let port = tcp.local_addr().expect("TCP address").port();
        let browser_port = udp.local_addr().expect("UDP address").port();
        let pki = script.tls.then(tls::Pki::generate);
        let ca_file = pki.as_ref().map(|pki| {
            let file = tempfile::Builder::new()
                .prefix("tds-responder-ca-")
                .suffix(".pem")
                .tempfile()
                .expect("CA file");
            std::fs::write(file.path(), &pki.ca_pem).expect("write CA file");
            file
        });
        let version = script.version_parts().unwrap_or((16, 0, 0));
        let shared = Arc::new(server::Shared::new(script, port, version, pki));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tds-responder".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("tds-responder")
                    .enable_all()
                    .build()
                    .expect("responder runtime");
                rt.block_on(server::run(tcp, udp, serving, stopped));
                // Dropping the runtime cancels every connection task and closes its socket.
            })
            .expect("responder thread");
        Responder {
            port,
            browser_port,
            shared,
            ca_file,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The TCP port of the TDS listener on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The UDP port of the SQL Server Browser on 127.0.0.1.
    pub fn browser_port(&self) -> u16 {
        self.browser_port
    }

    /// The CA certificate (PEM) that issued the server certificate (for "localhost" and
    /// 127.0.0.1). Panics if `tls` is off.
    pub fn ca_pem(&self) -> String {
        let pki = self.shared.pki.as_ref();
        pki.expect("Script::tls is false").ca_pem.clone()
    }

    /// A PEM file holding [`ca_pem`](Self::ca_pem), removed with the responder.
    /// Panics if `tls` is off.
    pub fn ca_path(&self) -> PathBuf {
        let file = self.ca_file.as_ref().expect("Script::tls is false");
        Path::to_path_buf(file.path())
    }

    /// SQL text of every batch and `sp_executesql` call received, in order.
    pub fn batches(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|(_, r)| match r {
                Request::Batch { sql } => Some(sql),
                Request::Rpc { sql, .. } => sql,
                _ => None,
            })
            .collect()
    }

    /// Every request with its connection number, in order.
    pub fn requests(&self) -> Vec<(u32, Request)> {
        self.shared.log().requests.clone()
    }

    /// Every LOGIN7 received, in order.
    pub fn logins(&self) -> Vec<LoginInfo> {
        self.shared.log().logins.clone()
    }

    /// Connections currently open (tasks still running).
    pub fn open_connections(&self) -> usize {
        self.shared.open()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.shared.accepted()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
