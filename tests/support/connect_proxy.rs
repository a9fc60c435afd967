//! An HTTP CONNECT proxy for the tests: it answers `CONNECT host:port`, optionally only with the
//! right `Proxy-Authorization: Basic` (else 407), and then relays bytes both ways. It records
//! the targets asked for and the authorizations refused.

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct ConnectProxy {
    pub port: u16,
    /// The CONNECT targets served.
    pub tunnels: Arc<Mutex<Vec<String>>>,
    /// How many requests were refused with 407.
    pub refused: Arc<Mutex<u32>>,
}

impl ConnectProxy {
    /// `credentials`: the `user:password` the proxy wants, or none.
    pub fn start(credentials: Option<&str>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the CONNECT proxy");
        let port = listener.local_addr().expect("address").port();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let want =
            credentials.map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_bytes()));
        let (t, r) = (tunnels.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (t, r, want) = (t.clone(), r.clone(), want.clone());
                std::thread::spawn(move || serve(client, want, t, r));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refused,
        }
    }
}

fn serve(
    client: TcpStream,
    want: Option<String>,
    tunnels: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u32>>,
) {
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("proxy-authorization")
        {
            auth = v.trim().strip_prefix("Basic ").map(str::to_string);
        }
    }
    let mut client = client;
    let parts: Vec<&str> = first.split_whitespace().collect();
    if parts.len() < 2 || parts[0] != "CONNECT" {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    }
    if want.is_some() && auth != want {
        *refused.lock().unwrap() += 1;
        let _ = client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    }
    let Ok(server) = TcpStream::connect(parts[1]) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    tunnels.lock().unwrap().push(parts[1].to_string());
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    // Whatever the reader buffered past the head belongs to the tunnel.
    let buffered = reader.buffer().to_vec();
    let mut to_server = server.try_clone().expect("clone");
    if !buffered.is_empty() {
        let _ = to_server.write_all(&buffered);
    }
    let (mut c2, mut s2) = (client.try_clone().expect("clone"), server);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Both);
    });
    let mut c = client;
    let mut buf = [0u8; 16384];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to_server.shutdown(std::net::Shutdown::Both);
}
