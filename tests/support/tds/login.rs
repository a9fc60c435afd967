//! PRELOGIN (MS-TDS 2.2.6.5) and LOGIN7 (2.2.6.4) parsing, and the PRELOGIN answer.
//! Everything here reads client bytes, so every offset is bounds-checked and a malformed message
//! is an error, never a panic.

use zeroize::Zeroizing;

/// PRELOGIN option tokens.
const VERSION: u8 = 0x00;
const ENCRYPTION: u8 = 0x01;
const INSTOPT: u8 = 0x02;
const THREADID: u8 = 0x03;
const MARS: u8 = 0x04;
const TERMINATOR: u8 = 0xFF;

/// ENCRYPTION option values.
pub const ENCRYPT_OFF: u8 = 0x00;
pub const ENCRYPT_ON: u8 = 0x01;
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

/// What the client's PRELOGIN asked for.
pub struct PreLogin {
    pub encryption: u8,
    /// INSTOPT: the instance the client wants the server to confirm (empty = none).
    pub instance: String,
    pub mars: bool,
}

fn be16(p: &[u8], at: usize) -> Result<usize, String> {
    p.get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| "PRELOGIN option table is truncated".to_string())
}

/// Parses the option table (token, big-endian offset, big-endian length; 0xFF ends it).
pub fn parse_prelogin(p: &[u8]) -> Result<PreLogin, String> {
    let mut pre = PreLogin {
        encryption: ENCRYPT_NOT_SUP,
        instance: String::new(),
        mars: false,
    };
    let mut at = 0;
    loop {
        let token = *p.get(at).ok_or("PRELOGIN has no terminator")?;
        if token == TERMINATOR {
            return Ok(pre);
        }
        let offset = be16(p, at + 1)?;
        let len = be16(p, at + 3)?;
        let data = p
            .get(offset..offset + len)
            .ok_or_else(|| format!("PRELOGIN option {token} points outside the message"))?;
        match token {
            ENCRYPTION => pre.encryption = *data.first().ok_or("empty ENCRYPTION option")?,
            INSTOPT => {
                let name = data.split(|b| *b == 0).next().unwrap_or_default();
                pre.instance = String::from_utf8_lossy(name).into_owned();
            }
            MARS => pre.mars = data.first().is_some_and(|b| *b != 0),
            _ => {}
        }
        at += 5;
    }
}

/// The server's PRELOGIN: VERSION (major, minor, big-endian build, sub-build), ENCRYPTION,
/// INSTOPT (0x00 = the requested instance is this one, 0x01 = it is not), an empty THREADID and
/// MARS off.
pub fn prelogin_response(version: (u8, u8, u16), encryption: u8, instance_ok: bool) -> Vec<u8> {
    let mut data = Vec::new();
    let mut table = Vec::new();
    let options: [(u8, Vec<u8>); 5] = [
        (VERSION, {
            let mut v = vec![version.0, version.1];
            v.extend_from_slice(&version.2.to_be_bytes());
            v.extend_from_slice(&[0, 0]);
            v
        }),
        (ENCRYPTION, vec![encryption]),
        (INSTOPT, vec![u8::from(!instance_ok)]),
        (THREADID, Vec::new()),
        (MARS, vec![0]),
    ];
    let base = options.len() * 5 + 1;
    for (token, value) in options {
        table.push(token);
        table.extend_from_slice(&((base + data.len()) as u16).to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(&value);
    }
    table.push(TERMINATOR);
    table.extend_from_slice(&data);
    table
}

/// The parts of LOGIN7 the responder uses. The password stays in a zeroizing buffer, already
/// de-obfuscated, as UTF-16LE bytes; this type has no `Debug` so it cannot be printed.
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub read_only_intent: bool,
    pub host_name: String,
    pub user: String,
    pub password_utf16: Zeroizing<Vec<u8>>,
    pub app_name: String,
    pub server_name: String,
    pub library: String,
    pub language: String,
    pub database: String,
}

fn le16(p: &[u8], at: usize) -> Result<usize, String> {
    p.get(at..at + 2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(|| "LOGIN7 is truncated".to_string())
}

fn le32(p: &[u8], at: usize) -> Result<u32, String> {
    p.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "LOGIN7 is truncated".to_string())
}

/// The bytes of a variable field whose (offset, character count) pair sits at `at`.
fn field(p: &[u8], at: usize) -> Result<&[u8], String> {
    let offset = le16(p, at)?;
    let chars = le16(p, at + 2)?;
    p.get(offset..offset + chars * 2)
        .ok_or_else(|| format!("LOGIN7 field at {at} points outside the message"))
}

fn utf16_lossy(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Parses LOGIN7. Fixed part: length, TDS version, packet size, client version, PID, connection
/// id, four flag bytes (TypeFlags bit 5 = read-only application intent), time zone, LCID; then
/// (offset, length) pairs for host name, user name, password, app name, server name, extension,
/// client library, language, database, the 6-byte client id, SSPI, attach-db file and change
/// password. The password is de-obfuscated by XOR 0xA5 then swapping nibbles (the client swapped
/// then XORed).
pub fn parse_login7(p: &[u8]) -> Result<Login7, String> {
    if p.len() < 94 {
        return Err(format!("LOGIN7 of {} bytes is too short", p.len()));
    }
    let text = |at| field(p, at).map(utf16_lossy);
    let mut password_utf16 = Zeroizing::new(field(p, 44)?.to_vec());
    for b in password_utf16.iter_mut() {
        *b = (*b ^ 0xA5).rotate_left(4);
    }
    Ok(Login7 {
        tds_version: le32(p, 4)?,
        packet_size: le32(p, 8)?,
        read_only_intent: p[26] & 0x20 != 0,
        host_name: text(36)?,
        user: text(40)?,
        password_utf16,
        app_name: text(48)?,
        server_name: text(52)?,
        library: text(60)?,
        language: text(64)?,
        database: text(68)?,
    })
}
