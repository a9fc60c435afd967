//! TDS packets (MS-TDS 2.2.3): an 8-byte header — type, status (bit 0 = end of message),
//! big-endian length including the header, big-endian SPID, packet id, window — then payload.
//! A message is a run of packets of one type ending with an end-of-message packet.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER: usize = 8;

/// Client packet types.
pub const SQL_BATCH: u8 = 0x01;
pub const RPC: u8 = 0x03;
pub const ATTENTION: u8 = 0x06;
pub const TRANSACTION_MANAGER: u8 = 0x0E;
pub const LOGIN7: u8 = 0x10;
pub const PRELOGIN: u8 = 0x12;
/// Server replies are all "tabular result" packets.
pub const TABULAR_RESULT: u8 = 0x04;

const STATUS_EOM: u8 = 0x01;
const STATUS_IGNORE: u8 = 0x02;

/// The packet size before the login negotiates another one.
pub const DEFAULT_PACKET_SIZE: usize = 4096;

/// One client message, reassembled from its packets.
pub struct Message {
    pub ty: u8,
    pub payload: Vec<u8>,
}

/// Reads the next message. `Ok(None)` is a clean end of stream between messages. Messages the
/// client marked "ignore" (status bit 1, a cancelled partial send) are skipped. A message over
/// `limit` bytes, a bad length or a type change mid-message is an `InvalidData` error.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<Option<Message>> {
    loop {
        let mut payload = Vec::new();
        let mut ty = None;
        loop {
            let mut h = [0u8; HEADER];
            let n = r.read(&mut h[..1]).await?;
            if n == 0 {
                if ty.is_none() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            r.read_exact(&mut h[1..]).await?;
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if len < HEADER {
                return Err(invalid(format!(
                    "packet length {len} is shorter than its header"
                )));
            }
            match ty {
                None => ty = Some(h[0]),
                Some(t) if t != h[0] => {
                    return Err(invalid(format!(
                        "packet type changed from {t:#04x} to {:#04x} within a message",
                        h[0]
                    )));
                }
                Some(_) => {}
            }
            let start = payload.len();
            if start + len - HEADER > limit {
                return Err(invalid(format!("message longer than {limit} bytes")));
            }
            payload.resize(start + len - HEADER, 0);
            r.read_exact(&mut payload[start..]).await?;
            if h[1] & STATUS_EOM != 0 {
                if h[1] & STATUS_IGNORE != 0 {
                    break; // the client abandoned this message; read the next one
                }
                return Ok(ty.map(|ty| Message { ty, payload }));
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Cuts a server message into packets of at most the negotiated packet size. Bytes are buffered
/// until a packet is full; each full packet is written and flushed, and [`end`](Self::end) sends
/// the last one with the end-of-message status. Memory stays at one packet however long the
/// message is. The writer is passed to each call so the transport can change under it (TLS).
pub struct PacketWriter {
    buf: Vec<u8>,
    size: usize,
    spid: u16,
    id: u8,
}

impl PacketWriter {
    pub fn new(spid: u16) -> PacketWriter {
        PacketWriter {
            buf: vec![0; HEADER],
            size: DEFAULT_PACKET_SIZE,
            spid,
            id: 1,
        }
    }

    /// Takes effect for the packets of the next message.
    pub fn set_packet_size(&mut self, size: usize) {
        self.size = size.clamp(512, 32767);
    }

    /// Appends message bytes, sending every packet that fills up.
    pub async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        mut data: &[u8],
    ) -> io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() == self.size {
                self.emit(w, false).await?;
            }
            let n = (self.size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Sends what is buffered as a packet that does not end the message (for a slow or
    /// interrupted stream, so the client sees rows already produced).
    pub async fn flush_partial<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        if self.buf.len() > HEADER {
            self.emit(w, false).await?;
        }
        Ok(())
    }

    /// Sends the last packet of the message (end-of-message status).
    pub async fn end<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        self.emit(w, true).await?;
        self.id = 1;
        Ok(())
    }

    async fn emit<W: AsyncWrite + Unpin>(&mut self, w: &mut W, last: bool) -> io::Result<()> {
        let len = self.buf.len() as u16;
        self.buf[0] = TABULAR_RESULT;
        self.buf[1] = if last { STATUS_EOM } else { 0 };
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4..6].copy_from_slice(&self.spid.to_be_bytes());
        self.buf[6] = self.id;
        self.buf[7] = 0;
        w.write_all(&self.buf).await?;
        w.flush().await?;
        self.buf.truncate(HEADER);
        self.id = self.id.wrapping_add(1);
        Ok(())
    }
}
