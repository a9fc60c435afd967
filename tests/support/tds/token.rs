//! Encoders for the server-to-client tokens the responder sends (MS-TDS 2.2.7). Each appends one
//! token to a byte buffer; the packet layer cuts the buffer into packets.

use super::types::{self, COLLATION};
use super::{Cell, Column};

pub const RETURNSTATUS: u8 = 0x79;
pub const COLMETADATA: u8 = 0x81;
pub const ERROR: u8 = 0xAA;
pub const INFO: u8 = 0xAB;
pub const LOGINACK: u8 = 0xAD;
pub const ROW: u8 = 0xD1;
pub const NBCROW: u8 = 0xD2;
pub const ENVCHANGE: u8 = 0xE3;
pub const DONE: u8 = 0xFD;
pub const DONEPROC: u8 = 0xFE;
pub const DONEINPROC: u8 = 0xFF;

/// DONE status bits (MS-TDS 2.2.7.6).
pub const DONE_FINAL: u16 = 0x00;
pub const DONE_MORE: u16 = 0x01;
pub const DONE_ERROR: u16 = 0x02;
pub const DONE_COUNT: u16 = 0x10;
pub const DONE_ATTN: u16 = 0x20;

/// DONE CurCmd values.
pub const CMD_SELECT: u16 = 0xC1;
pub const CMD_NONE: u16 = 0x00;

/// The server name put in ERROR and INFO tokens.
pub const SERVER_NAME: &str = "TDSRESPONDER";

/// B_VARCHAR: a byte count of UTF-16 units, then the units (longer strings are cut at 255).
pub fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// US_VARCHAR: a u16 count of UTF-16 units, then the units (cut at 65535).
pub fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(65535).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// DONE, DONEPROC or DONEINPROC: status, current command, 8-byte row count (TDS 7.2+).
pub fn done(out: &mut Vec<u8>, token: u8, status: u16, cur_cmd: u16, rows: u64) {
    out.push(token);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&cur_cmd.to_le_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
}

/// ERROR or INFO: number, state, class, message (cut at 4000 characters so the token's u16
/// length cannot overflow), server name, procedure name, line number.
pub fn message(out: &mut Vec<u8>, token: u8, number: u32, state: u8, class: u8, text: &str) {
    let text: String = text.chars().take(4000).collect();
    let mut body = Vec::new();
    body.extend_from_slice(&number.to_le_bytes());
    body.push(state);
    body.push(class);
    us_varchar(&mut body, &text);
    b_varchar(&mut body, SERVER_NAME);
    b_varchar(&mut body, "");
    body.extend_from_slice(&1u32.to_le_bytes());
    out.push(token);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

pub fn error(out: &mut Vec<u8>, number: u32, class: u8, text: &str) {
    message(out, ERROR, number, 1, class, text);
}

pub fn info(out: &mut Vec<u8>, number: u32, text: &str) {
    message(out, INFO, number, 1, 0, text);
}

/// LOGINACK: interface 1 (T-SQL), TDS version 7.4 (big-endian 0x74000004), program name, and the
/// program version as major, minor, build (high byte), build (low byte).
pub fn login_ack(out: &mut Vec<u8>, major: u8, minor: u8, build: u16) {
    let mut body = vec![1, 0x74, 0x00, 0x00, 0x04];
    b_varchar(&mut body, "Microsoft SQL Server");
    body.extend_from_slice(&[major, minor]);
    body.extend_from_slice(&build.to_be_bytes());
    out.push(LOGINACK);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

fn env(out: &mut Vec<u8>, ty: u8, body: &[u8]) {
    out.push(ENVCHANGE);
    out.extend_from_slice(&(body.len() as u16 + 1).to_le_bytes());
    out.push(ty);
    out.extend_from_slice(body);
}

fn env_strings(out: &mut Vec<u8>, ty: u8, new: &str, old: &str) {
    let mut body = Vec::new();
    b_varchar(&mut body, new);
    b_varchar(&mut body, old);
    env(out, ty, &body);
}

/// ENVCHANGE type 1: database.
pub fn env_database(out: &mut Vec<u8>, new: &str, old: &str) {
    env_strings(out, 1, new, old);
}

/// ENVCHANGE type 2: language.
pub fn env_language(out: &mut Vec<u8>, new: &str) {
    env_strings(out, 2, new, "");
}

/// ENVCHANGE type 4: packet size, as decimal text.
pub fn env_packet_size(out: &mut Vec<u8>, new: u32, old: u32) {
    env_strings(out, 4, &new.to_string(), &old.to_string());
}

/// ENVCHANGE type 7: SQL collation (B_VARBYTE new value, empty old value).
pub fn env_collation(out: &mut Vec<u8>) {
    let mut body = vec![COLLATION.len() as u8];
    body.extend_from_slice(&COLLATION);
    body.push(0);
    env(out, 7, &body);
}

/// ENVCHANGE type 8 (begin transaction: new descriptor), 9 (commit) or 10 (rollback: old
/// descriptor, empty new value).
pub fn env_transaction(out: &mut Vec<u8>, ty: u8, descriptor: [u8; 8]) {
    let mut body = Vec::new();
    if ty == 8 {
        body.push(8);
        body.extend_from_slice(&descriptor);
        body.push(0);
    } else {
        body.push(0);
        body.push(8);
        body.extend_from_slice(&descriptor);
    }
    env(out, ty, &body);
}

pub fn return_status(out: &mut Vec<u8>, status: i32) {
    out.push(RETURNSTATUS);
    out.extend_from_slice(&status.to_le_bytes());
}

/// COLMETADATA: column count, then per column UserType (u32 0), Flags (u16: nullable bit, and
/// "updateable unknown" as SQL Server sends for query results), TYPE_INFO and the column name.
pub fn col_metadata(out: &mut Vec<u8>, columns: &[Column]) -> Result<(), String> {
    if columns.is_empty() || columns.len() > 4096 {
        return Err(format!(
            "a result set needs 1 to 4096 columns, not {}",
            columns.len()
        ));
    }
    out.push(COLMETADATA);
    out.extend_from_slice(&(columns.len() as u16).to_le_bytes());
    for c in columns {
        out.extend_from_slice(&0u32.to_le_bytes());
        let flags: u16 = 0x0008 | u16::from(c.nullable);
        out.extend_from_slice(&flags.to_le_bytes());
        types::type_info(c.ty, c.nullable, out).map_err(|e| format!("column {:?}: {e}", c.name))?;
        if c.name.encode_utf16().count() > 128 {
            return Err(format!("column name {:?} is longer than 128", c.name));
        }
        b_varchar(out, &c.name);
    }
    Ok(())
}

/// One row: NBCROW (a null bitmap, then only the non-NULL values) when `null_bitmap` is set and
/// the row has a NULL, as SQL Server does; otherwise ROW with every value, NULLs inline.
pub fn row(
    out: &mut Vec<u8>,
    columns: &[Column],
    cells: &[Cell],
    null_bitmap: bool,
) -> Result<(), String> {
    if cells.len() != columns.len() {
        return Err(format!(
            "a row has {} cells for {} columns",
            cells.len(),
            columns.len()
        ));
    }
    let nbc = null_bitmap && cells.iter().any(Cell::is_null);
    if nbc {
        out.push(NBCROW);
        let mut bitmap = vec![0u8; columns.len().div_ceil(8)];
        for (i, cell) in cells.iter().enumerate() {
            if cell.is_null() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
    } else {
        out.push(ROW);
    }
    for (c, cell) in columns.iter().zip(cells) {
        if nbc && cell.is_null() {
            continue;
        }
        types::write_value(c.ty, c.nullable, cell, out)
            .map_err(|e| format!("column {:?}: {e}", c.name))?;
    }
    Ok(())
}
