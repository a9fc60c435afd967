//! SQL Server Browser (MC-SQLR, the SQL Server Resolution Protocol) over UDP.
//!
//! Requests: CLNT_BCAST_EX (0x02) and CLNT_UCAST_EX (0x03) list every instance; CLNT_UCAST_INST
//! (0x04) followed by an instance name (MBCS, optionally NUL-terminated) asks for one instance;
//! CLNT_UCAST_DAC (0x0F, protocol version 0x01, instance name) asks for the dedicated admin port.
//! The answer, SVR_RESP, is 0x05, a little-endian u16 size, then for each instance
//! `ServerName;<name>;InstanceName;<instance>;IsClustered;No;Version;<version>;tcp;<port>;;`.
//! A request for an instance that does not exist gets no answer, as the protocol specifies.
//! The DAC answer is 0x05, size 6, version 1 and the port (here the ordinary port).

use std::sync::Arc;

use tokio::net::UdpSocket;

use super::server::Shared;

/// The ServerName the browser reports.
pub const BROWSER_SERVER_NAME: &str = "localhost";

pub async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(answer) = answer(&buf[..n], &shared) {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

fn instance_name(shared: &Shared) -> &str {
    shared.script.instance.as_deref().unwrap_or("MSSQLSERVER")
}

fn svr_resp(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x05];
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn answer(request: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    let name = instance_name(shared);
    let listing = format!(
        "ServerName;{BROWSER_SERVER_NAME};InstanceName;{name};IsClustered;No;Version;{};tcp;{};;",
        shared.script.version, shared.port
    );
    let asked = |bytes: &[u8]| {
        let requested = bytes.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(requested).eq_ignore_ascii_case(name)
    };
    match *request.first()? {
        0x02 | 0x03 => Some(svr_resp(listing.as_bytes())),
        0x04 if asked(&request[1..]) => Some(svr_resp(listing.as_bytes())),
        0x0F if request.get(1) == Some(&0x01) && asked(request.get(2..)?) => {
            let mut out = vec![0x05, 0x06, 0x00, 0x01];
            out.extend_from_slice(&shared.port.to_le_bytes());
            Some(out)
        }
        _ => None,
    }
}
