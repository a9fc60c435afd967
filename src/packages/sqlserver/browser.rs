//! The SQL Server Browser client ([MC-SQLR]): asks a host which TCP port a named instance
//! (`Server=host\INSTANCE`) listens on.
//!
//! Request `CLNT_UCAST_INST`: byte 0x04, the instance name, byte 0x00, as one UDP datagram to
//! port 1434. Answer `SVR_RESP`: byte 0x05, a little-endian u16 length, then text such as
//! `ServerName;DB1;InstanceName;HR;IsClustered;No;Version;16.0.1000.6;tcp;1433;;`.

use std::time::Duration;
use tokio::net::UdpSocket;

/// Resolves `instance` on `host` through the Browser service at `browser_port` (1434).
pub async fn resolve(
    host: &str,
    instance: &str,
    browser_port: u16,
    wait: Duration,
) -> Result<u16, String> {
    if instance.len() > 32 || !instance.is_ascii() {
        return Err(format!(
            "the instance name {instance:?} is not a valid SQL Server instance name (at most 32 ASCII characters)"
        ));
    }
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, browser_port))
        .await
        .map_err(|e| format!("cannot resolve the host {host}: {e}"))?
        .collect();
    let target = addrs
        .first()
        .copied()
        .ok_or_else(|| format!("the host {host} has no address"))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot open a UDP socket for the SQL Server Browser: {e}"))?;
    let mut request = Vec::with_capacity(instance.len() + 2);
    request.push(0x04);
    request.extend_from_slice(instance.as_bytes());
    request.push(0x00);
    socket
        .send_to(&request, target)
        .await
        .map_err(|e| format!("cannot ask the SQL Server Browser on {host}:{browser_port}: {e}"))?;
    let mut buf = vec![0u8; 65535];
    let received = tokio::time::timeout(wait, async {
        loop {
            let (n, from) = socket.recv_from(&mut buf).await?;
            if from.ip() == target.ip() {
                return Ok::<usize, std::io::Error>(n);
            }
        }
    })
    .await;
    let n = match received {
        Err(_) => {
            return Err(format!(
                "the SQL Server Browser on {host} (UDP {browser_port}) did not answer for instance {instance} within {} s (it stays silent for instances it does not know); check the instance name, that the SQL Server Browser service runs and that UDP {browser_port} is open, or give the port: Server={host},PORT",
                wait.as_secs()
            ));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "the SQL Server Browser on {host} (UDP {browser_port}) could not be reached: {e}; give the port instead: Server={host},PORT"
            ));
        }
        Ok(Ok(n)) => n,
    };
    let text = parse_response(&buf[..n])?;
    port_of(&text, instance).ok_or_else(|| {
        format!("the SQL Server Browser on {host} knows no instance {instance} listening on TCP")
    })
}

/// The text of an `SVR_RESP` datagram.
pub fn parse_response(datagram: &[u8]) -> Result<String, String> {
    match datagram {
        [0x05, lo, hi, rest @ ..] => {
            let len = usize::from(u16::from_le_bytes([*lo, *hi]));
            let body = rest.get(..len).unwrap_or(rest);
            // The text is in the server's code page; the parts we read are ASCII.
            Ok(String::from_utf8_lossy(body).into_owned())
        }
        _ => Err("the SQL Server Browser answered with something that is not SVR_RESP".into()),
    }
}

/// The TCP port of `instance` in a Browser answer (one or more `;;`-terminated records).
pub fn port_of(text: &str, instance: &str) -> Option<u16> {
    for record in text.split(";;").filter(|r| !r.is_empty()) {
        let fields: Vec<&str> = record.split(';').collect();
        let get = |key: &str| {
            fields
                .chunks(2)
                .find(|kv| kv.first().is_some_and(|k| k.eq_ignore_ascii_case(key)))
                .and_then(|kv| kv.get(1).copied())
        };
        if get("InstanceName").is_some_and(|n| n.eq_ignore_ascii_case(instance)) {
            return get("tcp").and_then(|p| p.trim().parse().ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let text = "ServerName;DB1;InstanceName;MSSQLSERVER;IsClustered;No;Version;16.0.1000.6;tcp;1433;;\
                    ServerName;DB1;InstanceName;HR;IsClustered;No;Version;16.0.1000.6;tcp;50123;np;\\\\DB1\\pipe\\MSSQL$HR\\sql\\query;;";
        assert_eq!(port_of(text, "hr"), Some(50123));
        assert_eq!(port_of(text, "MSSQLSERVER"), Some(1433));
        assert_eq!(port_of(text, "OTHER"), None);
        let mut d = vec![0x05];
        d.extend_from_slice(&(text.len() as u16).to_le_bytes());
        d.extend_from_slice(text.as_bytes());
        assert_eq!(parse_response(&d).unwrap(), text);
        assert!(parse_response(&[0x04, 0, 0]).is_err());
        assert!(parse_response(&[]).is_err());
        // Only named pipes: no TCP port.
        assert_eq!(
            port_of(
                "ServerName;X;InstanceName;P;IsClustered;No;Version;1;np;\\\\x;;",
                "P"
            ),
            None
        );
    }
}
