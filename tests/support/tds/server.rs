//! The connection state machine: PRELOGIN, optional TLS, LOGIN7, then requests until the client
//! leaves. Each connection runs on its own task; a second task reads client packets and hands them
//! over a channel, so that while a reply streams the responder notices ATTENTION and a vanished
//! client between rows (and during [`Fault::SlowRows`] sleeps).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::login::{self, ENCRYPT_NOT_SUP, ENCRYPT_OFF, ENCRYPT_ON};
use super::packet::{
    ATTENTION, LOGIN7, Message, PRELOGIN, PacketWriter, RPC, SQL_BATCH, TRANSACTION_MANAGER,
    read_message,
};
use super::tls::{Pki, Transport, Wrapped};
use super::token::{
    self, CMD_NONE, CMD_SELECT, DONE, DONE_ATTN, DONE_COUNT, DONE_ERROR, DONE_FINAL, DONE_MORE,
    DONEINPROC, DONEPROC,
};
use super::{
    Cell, Column, Fault, LoginInfo, Request, ResultSet, Rows, Script, SqlType, TlsUse, browser,
    normalize,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MAX_LOGIN_MESSAGE: usize = 1 << 20;
const MAX_REQUEST: usize = 64 << 20;

/// What the responder recorded.
#[derive(Default)]
pub struct Log {
    pub requests: Vec<(u32, Request)>,
    pub logins: Vec<LoginInfo>,
}

/// State shared by the listener, the browser and every connection.
pub struct Shared {
    pub script: Script,
    pub port: u16,
    pub version: (u8, u8, u16),
    pub pki: Option<Pki>,
    log: Mutex<Log>,
    accepted: AtomicU32,
    open: AtomicUsize,
}

impl Shared {
    pub fn new(script: Script, port: u16, version: (u8, u8, u16), pki: Option<Pki>) -> Shared {
        Shared {
            script,
            port,
            version,
            pki,
            log: Mutex::new(Log::default()),
            accepted: AtomicU32::new(0),
            open: AtomicUsize::new(0),
        }
    }

    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn instance_name(&self) -> &str {
        self.script.instance.as_deref().unwrap_or("MSSQLSERVER")
    }

    fn default_database(&self) -> &str {
        self.script
            .databases
            .first()
            .map_or("master", String::as_str)
    }

    /// The script's spelling of a database name, or `None` if the script does not know it.
    fn known_database(&self, name: &str) -> Option<String> {
        if self.script.databases.is_empty() {
            return Some(name.to_owned());
        }
        self.script
            .databases
            .iter()
            .find(|d| d.eq_ignore_ascii_case(name))
            .cloned()
    }
}

/// Counts a connection as open for as long as its task lives.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Open {
        shared.open.fetch_add(1, Ordering::SeqCst);
        Open(shared.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Prints connection errors to stderr when `TDS_RESPONDER_LOG` is set (and not "0").
fn note(conn: u32, msg: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("TDS_RESPONDER_LOG").is_some_and(|v| v != "0")) {
        eprintln!("tds responder: connection {conn}: {msg}");
    }
}

/// Accepts connections and serves the browser until `stop` changes.
pub async fn run(
    tcp: std::net::TcpListener,
    udp: std::net::UdpSocket,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(tcp) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tds responder: cannot listen: {e}");
            return;
        }
    };
    match UdpSocket::from_std(udp) {
        Ok(socket) => {
            tokio::spawn(browser::serve(socket, shared.clone()));
        }
        Err(e) => eprintln!("tds responder: no browser: {e}"),
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let conn = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _open = Open::new(&shared);
                        if let Err(e) = connection(conn, tcp, &shared).await {
                            note(conn, &e.to_string());
                        }
                    });
                }
                Err(e) => {
                    note(0, &format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// A second handle on the socket, to shut it down abruptly whatever is layered on top of it.
struct Killer(Option<std::net::TcpStream>);

impl Killer {
    fn new(tcp: &TcpStream) -> Killer {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            Killer(
                tcp.as_fd()
                    .try_clone_to_owned()
                    .ok()
                    .map(std::net::TcpStream::from),
            )
        }
        #[cfg(not(unix))]
        {
            let _ = tcp;
            Killer(None)
        }
    }

    fn kill(&self) {
        if let Some(s) = &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The PRELOGIN ENCRYPTION answer and the TLS use that follows, per the MS-TDS 2.2.6.5 table for
/// a server that supports but does not require encryption (or supports none).
fn negotiate(strict: bool, client: u8, tls: bool) -> (u8, TlsUse) {
    if strict {
        return (ENCRYPT_ON, TlsUse::Strict);
    }
    if !tls {
        return (ENCRYPT_NOT_SUP, TlsUse::None);
    }
    match client {
        ENCRYPT_OFF => (ENCRYPT_OFF, TlsUse::LoginOnly),
        ENCRYPT_NOT_SUP => (ENCRYPT_NOT_SUP, TlsUse::None),
        _ => (ENCRYPT_ON, TlsUse::Full),
    }
}

fn utf16le(s: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(s.encode_utf16().flat_map(u16::to_le_bytes).collect())
}

async fn connection(conn: u32, tcp: TcpStream, shared: &Arc<Shared>) -> Result<(), Error> {
    tcp.set_nodelay(true)?;
    let killer = Killer::new(&tcp);
    let mut out = PacketWriter::new(50u16.wrapping_add(conn as u16));

    // A TLS record (0x16) first means TDS 8.0 strict; anything else starts with PRELOGIN.
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(());
    }
    let strict = first[0] == 0x16;
    let mut io = if strict {
        let pki = shared
            .pki
            .as_ref()
            .ok_or("the client opened with TLS (TDS 8.0 strict) but Script::tls is false")?;
        Transport::Tls(Box::new(pki.strict.accept(Wrapped::new(tcp, false)).await?))
    } else {
        Transport::Plain(tcp)
    };

    let msg = read_message(&mut io, MAX_LOGIN_MESSAGE)
        .await?
        .ok_or("closed before PRELOGIN")?;
    if msg.ty != PRELOGIN {
        return Err(format!("expected PRELOGIN, got packet type {:#04x}", msg.ty).into());
    }
    let pre = login::parse_prelogin(&msg.payload)?;
    let (answer, tls_use) = negotiate(strict, pre.encryption, shared.pki.is_some());
    let instance_ok =
        pre.instance.is_empty() || pre.instance.eq_ignore_ascii_case(shared.instance_name());
    let response = login::prelogin_response(shared.version, answer, instance_ok);
    out.write(&mut io, &response).await?;
    out.end(&mut io).await?;

    if matches!(tls_use, TlsUse::LoginOnly | TlsUse::Full) {
        io = match io {
            Transport::Plain(tcp) => {
                let pki = shared.pki.as_ref().ok_or("TLS negotiated without TLS")?;
                let mut tls = pki.framed.accept(Wrapped::new(tcp, true)).await?;
                tls.get_mut().0.end_handshake();
                Transport::Tls(Box::new(tls))
            }
            tls => tls,
        };
    }

    let msg = read_message(&mut io, MAX_LOGIN_MESSAGE)
        .await?
        .ok_or("closed before LOGIN7")?;
    if msg.ty != LOGIN7 {
        let hint = if msg.ty == PRELOGIN && shared.pki.is_none() {
            " (the client is starting TLS but Script::tls is false; tiberius encrypts the login \
             unless its encryption level is NotSupported)"
        } else {
            ""
        };
        return Err(format!("expected LOGIN7, got packet type {:#04x}{hint}", msg.ty).into());
    }
    let payload = Zeroizing::new(msg.payload);
    let login = login::parse_login7(&payload)?;
    drop(payload);

    if tls_use == TlsUse::LoginOnly {
        // ENCRYPT_OFF: only LOGIN7 was encrypted; the client drops TLS right after sending it.
        io = match io {
            Transport::Tls(tls) => Transport::Plain(tls.into_inner().0.into_inner()),
            plain => plain,
        };
    }

    let script = &shared.script;
    let password_ok = script.users.is_empty()
        || script.users.iter().any(|(user, password)| {
            user.eq_ignore_ascii_case(&login.user) && *utf16le(password) == *login.password_utf16
        });
    let wanted = if login.database.is_empty() {
        shared.default_database().to_owned()
    } else {
        login.database.clone()
    };
    let database = shared.known_database(&wanted);
    let packet_size = match login.packet_size {
        0 => 4096,
        n => n.clamp(512, 32767),
    };
    let login_failed = (
        18456,
        14,
        format!("Login failed for user '{}'.", login.user),
    );
    let failure: Option<Vec<(u32, u8, String)>> = match &script.login_fault {
        Some(Fault::LoginFails) => Some(vec![login_failed]),
        Some(Fault::ErrorAfterRows {
            number, message, ..
        }) => Some(vec![(*number, 14, message.clone())]),
        Some(Fault::ResetAfterRows(_)) => Some(Vec::new()),
        _ if !password_ok => Some(vec![login_failed]),
        _ if database.is_none() => Some(vec![
            (
                4060,
                11,
                format!(
                    "Cannot open database \"{wanted}\" requested by the login. The login failed."
                ),
            ),
            login_failed,
        ]),
        _ => None,
    };
    shared.log().logins.push(LoginInfo {
        conn,
        user: login.user.clone(),
        password_ok,
        database: login.database.clone(),
        app_name: login.app_name.clone(),
        host_name: login.host_name.clone(),
        server_name: login.server_name.clone(),
        library: login.library.clone(),
        read_only_intent: login.read_only_intent,
        encryption: pre.encryption.into(),
        tls: tls_use,
        instance: pre.instance.clone(),
        packet_size: login.packet_size,
        tds_version: login.tds_version,
        accepted: failure.is_none(),
    });
    if let Some(Fault::SlowRows(delay)) = &script.login_fault {
        tokio::time::sleep(*delay).await;
    }

    let mut tokens = Vec::new();
    if let Some(errors) = failure {
        if errors.is_empty() {
            killer.kill();
            return Ok(());
        }
        for (number, class, text) in &errors {
            token::error(&mut tokens, *number, *class, text);
        }
        token::done(&mut tokens, DONE, DONE_ERROR, CMD_NONE, 0);
        out.write(&mut io, &tokens).await?;
        out.end(&mut io).await?;
        let _ = io.shutdown().await;
        return Ok(());
    }
    let database = database.unwrap_or_default();
    let (major, minor, build) = shared.version;
    token::env_database(&mut tokens, &database, "master");
    token::info(
        &mut tokens,
        5701,
        &format!("Changed database context to '{database}'."),
    );
    token::env_collation(&mut tokens);
    token::env_language(&mut tokens, "us_english");
    token::info(&mut tokens, 5703, "Changed language setting to us_english.");
    token::login_ack(&mut tokens, major, minor, build);
    token::env_packet_size(&mut tokens, packet_size, 4096);
    token::done(&mut tokens, DONE, DONE_FINAL, CMD_NONE, 0);
    out.write(&mut io, &tokens).await?;
    out.end(&mut io).await?;
    out.set_packet_size(packet_size as usize);

    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(8);
    let _reader = AbortOnDrop(tokio::spawn(read_loop(conn, rd, tx)));
    let mut session = Session {
        conn,
        shared: shared.clone(),
        out,
        wr,
        rx,
        db: database,
        user: login.user,
        tran: None,
        tran_seq: 0,
        killer,
        row: Vec::new(),
    };
    session.serve().await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads client messages and forwards them; ends (closing the channel) on end of stream or error.
async fn read_loop(conn: u32, mut rd: ReadHalf<Transport>, tx: mpsc::Sender<Message>) {
    loop {
        match read_message(&mut rd, MAX_REQUEST).await {
            Ok(Some(msg)) => {
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                note(conn, &format!("read: {e}"));
                return;
            }
        }
    }
}

/// Bounds-checked reading of client message bodies.
struct Reader<'a> {
    p: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.p.len() {
            return Err("request is truncated".into());
        }
        let (head, rest) = self.p.split_at(n);
        self.p = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Skips ALL_HEADERS (a u32 total length including itself), required since TDS 7.2.
fn after_all_headers(p: &[u8]) -> Result<&[u8], String> {
    let total = p
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("request without ALL_HEADERS")?;
    if total < 4 {
        return Err(format!("ALL_HEADERS length {total} is invalid"));
    }
    p.get(total..)
        .ok_or_else(|| format!("ALL_HEADERS length {total} exceeds the request"))
}

fn utf16_lossy(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// A PLP value: u64 total length (all ones = NULL), u32-prefixed chunks, zero terminator.
fn read_plp(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, String> {
    if r.u64()? == u64::MAX {
        return Ok(None);
    }
    let mut value = Vec::new();
    loop {
        let chunk = r.u32()? as usize;
        if chunk == 0 {
            return Ok(Some(value));
        }
        value.extend_from_slice(r.take(chunk)?);
    }
}

/// RPC request (MS-TDS 2.2.6.6): ALL_HEADERS, procedure name or id, option flags, parameters.
/// For `sp_executesql` the statement is read from the first parameter (NVARCHAR/NCHAR, possibly
/// PLP, or NTEXT).
fn parse_rpc(p: &[u8]) -> Result<(String, Option<String>), String> {
    let mut r = Reader {
        p: after_all_headers(p)?,
    };
    let switch = r.u16()?;
    let procedure = if switch == 0xFFFF {
        match r.u16()? {
            1 => "sp_cursor".to_string(),
            2 => "sp_cursoropen".into(),
            3 => "sp_cursorprepare".into(),
            4 => "sp_cursorexecute".into(),
            5 => "sp_cursorprepexec".into(),
            6 => "sp_cursorunprepare".into(),
            7 => "sp_cursorfetch".into(),
            8 => "sp_cursoroption".into(),
            9 => "sp_cursorclose".into(),
            10 => "sp_executesql".into(),
            11 => "sp_prepare".into(),
            12 => "sp_execute".into(),
            13 => "sp_prepexec".into(),
            14 => "sp_prepexecrpc".into(),
            15 => "sp_unprepare".into(),
            id => format!("procedure id {id}"),
        }
    } else {
        utf16_lossy(r.take(usize::from(switch) * 2)?)
    };
    r.u16()?; // option flags
    if !procedure.eq_ignore_ascii_case("sp_executesql") {
        return Ok((procedure, None));
    }
    let name_len = usize::from(r.u8()?);
    r.take(name_len * 2)?;
    r.u8()?; // status flags
    let statement = match r.u8()? {
        0xE7 | 0xEF => {
            let max = r.u16()?;
            r.take(5)?; // collation
            if max == 0xFFFF {
                read_plp(&mut r)?
            } else {
                match r.u16()? {
                    0xFFFF => None,
                    len => Some(r.take(usize::from(len))?.to_vec()),
                }
            }
        }
        0x63 => {
            r.u32()?; // max length
            r.take(5)?; // collation
            let len = r.u32()? as usize;
            Some(r.take(len)?.to_vec())
        }
        other => return Err(format!("sp_executesql statement of type {other:#04x}")),
    };
    let statement = statement.ok_or("sp_executesql with a NULL statement")?;
    Ok((procedure, Some(utf16_lossy(&statement))))
}

/// Whitespace collapsed, trimmed, trailing semicolons dropped; case kept.
fn collapse(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    out
}

fn version_text(version: &str, major: u8) -> String {
    let year = match major {
        16 => "2022",
        15 => "2019",
        14 => "2017",
        13 => "2016",
        12 => "2014",
        11 => "2012",
        10 => "2008",
        _ => "",
    };
    format!(
        "Microsoft SQL Server {year} (RTM) - {version} (X64) \n\tTDS responder (test double)\n\t\
         Developer Edition (64-bit) on Linux <X64>"
    )
}

fn isolation_name(level: u8) -> String {
    match level {
        1 => "READ UNCOMMITTED",
        2 => "READ COMMITTED",
        3 => "REPEATABLE READ",
        4 => "SERIALIZABLE",
        5 => "SNAPSHOT",
        _ => "UNSPECIFIED",
    }
    .into()
}

/// One step of a reply.
enum Item<'a> {
    Set(Cow<'a, ResultSet>),
    /// A statement without a result set: its tokens (ENVCHANGE, INFO), then a DONE.
    Statement {
        tokens: Vec<u8>,
        cur_cmd: u16,
    },
    /// An error that ends the reply.
    Error {
        number: u32,
        class: u8,
        message: String,
    },
}

struct Plan<'a> {
    items: Vec<Item<'a>>,
    fault: Option<Fault>,
}

/// Where a fault strikes, and how.
enum Trigger {
    Error(u32, u8, String),
    Reset,
}

#[derive(Clone, Copy)]
enum Style {
    /// SQL batch: DONE after each statement.
    Batch,
    /// RPC: DONEINPROC after each statement, then RETURNSTATUS and DONEPROC.
    Rpc,
}

enum Flow {
    Continue,
    Close,
}

enum Control {
    Go,
    Attention,
    Closed,
}

struct Session {
    conn: u32,
    shared: Arc<Shared>,
    out: PacketWriter,
    wr: WriteHalf<Transport>,
    rx: mpsc::Receiver<Message>,
    db: String,
    user: String,
    tran: Option<[u8; 8]>,
    tran_seq: u32,
    killer: Killer,
    row: Vec<u8>,
}

impl Session {
    async fn serve(&mut self) -> Result<(), Error> {
        while let Some(msg) = self.rx.recv().await {
            let flow = match msg.ty {
                SQL_BATCH => {
                    let sql = utf16_lossy(after_all_headers(&msg.payload)?);
                    self.record(Request::Batch { sql: sql.clone() });
                    self.answer(&sql, Style::Batch).await?
                }
                RPC => match parse_rpc(&msg.payload) {
                    Ok((procedure, sql)) => {
                        self.record(Request::Rpc {
                            procedure: procedure.clone(),
                            sql: sql.clone(),
                        });
                        match sql {
                            Some(sql) => self.answer(&sql, Style::Rpc).await?,
                            None => {
                                let message =
                                    format!("Could not find stored procedure '{procedure}'.");
                                self.fail(Style::Rpc, 2812, 16, &message, 0).await?
                            }
                        }
                    }
                    Err(e) => self.fail(Style::Rpc, 8009, 16, &e, 0).await?,
                },
                TRANSACTION_MANAGER => self.transaction(&msg.payload).await?,
                ATTENTION => {
                    self.record(Request::Attention);
                    self.ack_attention().await?
                }
                other => {
                    return Err(format!("unexpected packet type {other:#04x} after login").into());
                }
            };
            if let Flow::Close = flow {
                break;
            }
        }
        Ok(())
    }

    fn record(&self, request: Request) {
        self.shared.log().requests.push((self.conn, request));
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write(&mut self.wr, bytes).await?;
        Ok(())
    }

    async fn end(&mut self) -> Result<(), Error> {
        self.out.end(&mut self.wr).await?;
        Ok(())
    }

    /// Answers a batch (or `sp_executesql` statement): a scripted reply, built-ins, or error 208.
    async fn answer(&mut self, sql: &str, style: Style) -> Result<Flow, Error> {
        let shared = self.shared.clone();
        let normalized = normalize(sql);
        let scripted = shared
            .script
            .results
            .iter()
            .find(|(matcher, _)| matcher.matches(&normalized));
        let plan = match scripted {
            Some((_, reply)) => Plan {
                items: reply
                    .sets
                    .iter()
                    .map(|s| Item::Set(Cow::Borrowed(s)))
                    .collect(),
                fault: reply.fault.clone(),
            },
            None => self.builtins(sql),
        };
        self.respond(plan, style).await
    }

    /// Built-in statements, if every statement of the batch is one; error 208 otherwise.
    fn builtins(&mut self, sql: &str) -> Plan<'static> {
        let collapsed = collapse(sql);
        let mut items = Vec::new();
        for statement in collapsed
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match self.builtin(statement) {
                Some(item) => {
                    let stop = matches!(item, Item::Error { .. });
                    items.push(item);
                    if stop {
                        break;
                    }
                }
                None => {
                    let snippet: String = collapsed.chars().take(200).collect();
                    return Plan {
                        items: vec![Item::Error {
                            number: 208,
                            class: 16,
                            message: format!("Invalid object name '{snippet}'."),
                        }],
                        fault: None,
                    };
                }
            }
        }
        Plan { items, fault: None }
    }

    fn builtin(&mut self, statement: &str) -> Option<Item<'static>> {
        let lower = statement.to_ascii_lowercase();
        let scalar = |ty: SqlType, nullable: bool, value: Cell| {
            let column = Column {
                name: String::new(),
                ty,
                nullable,
            };
            Item::Set(Cow::Owned(ResultSet::fixed(
                vec![column],
                vec![vec![value]],
            )))
        };
        let no_result = |tokens: Vec<u8>| Item::Statement {
            tokens,
            cur_cmd: CMD_NONE,
        };
        match lower.as_str() {
            "select 1" => Some(scalar(SqlType::Int, false, Cell::Int(1))),
            "select @@version" => {
                let text = version_text(&self.shared.script.version, self.shared.version.0);
                Some(scalar(SqlType::NVarChar(300), true, Cell::Str(text)))
            }
            "select db_name()" => Some(scalar(
                SqlType::NVarChar(128),
                true,
                Cell::Str(self.db.clone()),
            )),
            "begin tran" | "begin transaction" => {
                self.tran_seq += 1;
                let descriptor =
                    ((u64::from(self.conn) << 32) | u64::from(self.tran_seq)).to_le_bytes();
                self.tran = Some(descriptor);
                let mut tokens = Vec::new();
                token::env_transaction(&mut tokens, 8, descriptor);
                Some(no_result(tokens))
            }
            "commit"
            | "commit tran"
            | "commit transaction"
            | "rollback"
            | "rollback tran"
            | "rollback transaction" => {
                let commit = lower.starts_with("commit");
                Some(match self.tran.take() {
                    Some(descriptor) => {
                        let mut tokens = Vec::new();
                        token::env_transaction(
                            &mut tokens,
                            if commit { 9 } else { 10 },
                            descriptor,
                        );
                        no_result(tokens)
                    }
                    None => Item::Error {
                        number: if commit { 3902 } else { 3903 },
                        class: 16,
                        message: format!(
                            "The {} TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                            if commit { "COMMIT" } else { "ROLLBACK" }
                        ),
                    },
                })
            }
            _ if lower.starts_with("set ") => Some(no_result(Vec::new())),
            _ if lower.starts_with("use ") => {
                let name = statement[4..]
                    .trim()
                    .trim_matches(|c| matches!(c, '[' | ']' | '"'));
                Some(match self.shared.known_database(name) {
                    Some(db) => {
                        let mut tokens = Vec::new();
                        token::env_database(&mut tokens, &db, &self.db);
                        token::info(
                            &mut tokens,
                            5701,
                            &format!("Changed database context to '{db}'."),
                        );
                        self.db = db;
                        no_result(tokens)
                    }
                    None => Item::Error {
                        number: 911,
                        class: 16,
                        message: format!(
                            "Database '{name}' does not exist. Make sure that the name is entered correctly."
                        ),
                    },
                })
            }
            _ => None,
        }
    }

    /// Streams a reply: each item, rows one at a time, faults, attention and disconnects.
    async fn respond(&mut self, plan: Plan<'_>, style: Style) -> Result<Flow, Error> {
        let trigger = match &plan.fault {
            Some(Fault::ErrorAfterRows {
                rows,
                number,
                message,
            }) => Some((*rows, Trigger::Error(*number, 16, message.clone()))),
            Some(Fault::ResetAfterRows(rows)) => Some((*rows, Trigger::Reset)),
            Some(Fault::LoginFails) => Some((
                0,
                Trigger::Error(18456, 14, format!("Login failed for user '{}'.", self.user)),
            )),
            Some(Fault::SlowRows(_)) | None => None,
        };
        let slow = match &plan.fault {
            Some(Fault::SlowRows(d)) => Some(*d),
            _ => None,
        };
        let mut total = 0u64;
        let count = plan.items.len();
        for (index, item) in plan.items.iter().enumerate() {
            let more = index + 1 < count;
            match item {
                Item::Statement { tokens, cur_cmd } => {
                    self.write(tokens).await?;
                    self.item_done(style, more, 0, *cur_cmd, 0).await?;
                }
                Item::Error {
                    number,
                    class,
                    message,
                } => return self.fail(style, *number, *class, message, 0).await,
                Item::Set(set) => {
                    let mut meta = Vec::new();
                    if let Err(e) = token::col_metadata(&mut meta, &set.columns) {
                        return self.script_error(style, &e).await;
                    }
                    self.write(&meta).await?;
                    let mut in_set = 0u64;
                    for i in 0..set.rows.len() {
                        if let Some((at, how)) = &trigger
                            && total >= *at
                        {
                            return self.fire(style, how, in_set).await;
                        }
                        match self.control(slow).await? {
                            Control::Go => {}
                            Control::Attention => return self.ack_attention().await,
                            Control::Closed => return Ok(Flow::Close),
                        }
                        let generated;
                        let cells: &[Cell] = match &set.rows {
                            Rows::Fixed(rows) => &rows[i as usize],
                            Rows::Generated { row, .. } => {
                                generated = row(i);
                                &generated
                            }
                        };
                        self.row.clear();
                        if let Err(e) =
                            token::row(&mut self.row, &set.columns, cells, set.null_bitmap)
                        {
                            return self.script_error(style, &format!("row {i}: {e}")).await;
                        }
                        self.out.write(&mut self.wr, &self.row).await?;
                        total += 1;
                        in_set += 1;
                    }
                    if !more && let Some((_, how)) = &trigger {
                        return self.fire(style, how, in_set).await;
                    }
                    self.item_done(style, more, DONE_COUNT, CMD_SELECT, in_set)
                        .await?;
                }
            }
        }
        if count == 0
            && let Some((_, how)) = &trigger
        {
            return self.fire(style, how, 0).await;
        }
        let mut tokens = Vec::new();
        match style {
            Style::Batch if count == 0 => {
                token::done(&mut tokens, DONE, DONE_FINAL, CMD_NONE, 0);
            }
            Style::Batch => {}
            Style::Rpc => {
                token::return_status(&mut tokens, 0);
                token::done(&mut tokens, DONEPROC, DONE_FINAL, CMD_NONE, 0);
            }
        }
        self.write(&tokens).await?;
        self.end().await?;
        Ok(Flow::Continue)
    }

    /// The DONE (batch) or DONEINPROC (RPC) closing one statement.
    async fn item_done(
        &mut self,
        style: Style,
        more: bool,
        status: u16,
        cur_cmd: u16,
        rows: u64,
    ) -> Result<(), Error> {
        let mut tokens = Vec::new();
        match style {
            Style::Batch => {
                let more = if more { DONE_MORE } else { 0 };
                token::done(&mut tokens, DONE, status | more, cur_cmd, rows);
            }
            Style::Rpc => token::done(&mut tokens, DONEINPROC, status | DONE_MORE, cur_cmd, rows),
        }
        self.write(&tokens).await
    }

    async fn fire(&mut self, style: Style, how: &Trigger, in_set: u64) -> Result<Flow, Error> {
        match how {
            Trigger::Error(number, class, message) => {
                self.fail(style, *number, *class, message, in_set).await
            }
            Trigger::Reset => {
                self.out.flush_partial(&mut self.wr).await?;
                self.killer.kill();
                Ok(Flow::Close)
            }
        }
    }

    /// ERROR, then the final DONE (DONEPROC for RPC) with the error bit; ends the message.
    async fn fail(
        &mut self,
        style: Style,
        number: u32,
        class: u8,
        message: &str,
        rows: u64,
    ) -> Result<Flow, Error> {
        let mut tokens = Vec::new();
        token::error(&mut tokens, number, class, message);
        match style {
            Style::Batch => token::done(&mut tokens, DONE, DONE_ERROR, CMD_SELECT, rows),
            Style::Rpc => token::done(&mut tokens, DONEPROC, DONE_ERROR, CMD_NONE, 0),
        }
        self.write(&tokens).await?;
        self.end().await?;
        Ok(Flow::Continue)
    }

    /// A script mistake found while streaming (a cell that does not fit its column): reported to
    /// stderr and to the client as error 50000.
    async fn script_error(&mut self, style: Style, message: &str) -> Result<Flow, Error> {
        eprintln!("tds responder script error: {message}");
        let message = format!("tds responder script error: {message}");
        self.fail(style, 50000, 16, &message, 0).await
    }

    /// DONE with the ATTN bit, ending the current message.
    async fn ack_attention(&mut self) -> Result<Flow, Error> {
        let mut tokens = Vec::new();
        token::done(&mut tokens, DONE, DONE_ATTN, CMD_NONE, 0);
        self.write(&tokens).await?;
        self.end().await?;
        Ok(Flow::Continue)
    }

    /// Between rows: sleeps for a slow reply (flushing first), and looks for an ATTENTION or a
    /// vanished client.
    async fn control(&mut self, slow: Option<Duration>) -> Result<Control, Error> {
        if let Some(delay) = slow {
            self.out.flush_partial(&mut self.wr).await?;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                msg = self.rx.recv() => return Ok(self.classify(msg)),
            }
        }
        Ok(match self.rx.try_recv() {
            Ok(msg) => self.classify(Some(msg)),
            Err(TryRecvError::Empty) => Control::Go,
            Err(TryRecvError::Disconnected) => Control::Closed,
        })
    }

    fn classify(&self, msg: Option<Message>) -> Control {
        match msg {
            Some(m) if m.ty == ATTENTION => {
                self.record(Request::Attention);
                Control::Attention
            }
            Some(m) => {
                let what = format!("packet type {:#04x} arrived during a reply", m.ty);
                note(self.conn, &what);
                Control::Closed
            }
            None => Control::Closed,
        }
    }

    /// Transaction manager request (MS-TDS 2.2.6.9): ALL_HEADERS, request type, payload.
    async fn transaction(&mut self, payload: &[u8]) -> Result<Flow, Error> {
        let parsed = after_all_headers(payload).and_then(|body| {
            let mut r = Reader { p: body };
            let ty = r.u16()?;
            let isolation = if ty == 5 { r.u8()? } else { 0 };
            Ok((ty, isolation))
        });
        let (ty, isolation) = match parsed {
            Ok(v) => v,
            Err(e) => return self.fail(Style::Batch, 8009, 16, &e, 0).await,
        };
        let mut tokens = Vec::new();
        match ty {
            5 => {
                self.record(Request::BeginTransaction {
                    isolation: isolation_name(isolation),
                });
                self.tran_seq += 1;
                let descriptor =
                    ((u64::from(self.conn) << 32) | u64::from(self.tran_seq)).to_le_bytes();
                self.tran = Some(descriptor);
                token::env_transaction(&mut tokens, 8, descriptor);
            }
            7 | 8 => {
                let commit = ty == 7;
                self.record(if commit {
                    Request::Commit
                } else {
                    Request::Rollback
                });
                match self.tran.take() {
                    Some(descriptor) => {
                        token::env_transaction(&mut tokens, if commit { 9 } else { 10 }, descriptor)
                    }
                    None => {
                        let message = format!(
                            "The {} TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                            if commit { "COMMIT" } else { "ROLLBACK" }
                        );
                        let number = if commit { 3902 } else { 3903 };
                        return self.fail(Style::Batch, number, 16, &message, 0).await;
                    }
                }
            }
            9 => {} // save point
            other => {
                let message = format!("transaction manager request {other} is not supported");
                return self.fail(Style::Batch, 8009, 16, &message, 0).await;
            }
        }
        token::done(&mut tokens, DONE, DONE_FINAL, CMD_NONE, 0);
        self.write(&tokens).await?;
        self.end().await?;
        Ok(Flow::Continue)
    }
}
