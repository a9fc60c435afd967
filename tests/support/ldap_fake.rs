//! A scripted LDAP server on a loopback port, for what slapd cannot be made to do: paging
//! that makes no progress, limits on a middle page, malformed controls, ranged values.
#![allow(dead_code)]

use ldap3::asn1::{PL, StructureTag, TagClass, parse_tag};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 128 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn octets(b: &[u8]) -> Vec<u8> {
    tlv(0x04, b)
}

fn int(v: u32) -> Vec<u8> {
    let mut bytes: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    tlv(0x02, &bytes)
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// SearchResultDone with a result code.
pub fn done(rc: u8) -> Vec<u8> {
    tlv(0x65, &[tlv(0x0a, &[rc]), octets(b""), octets(b"")].concat())
}

/// SearchResultEntry.
pub fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
    let list: Vec<Vec<u8>> = attrs
        .iter()
        .map(|(name, values)| {
            let vals: Vec<Vec<u8>> = values.iter().map(|v| octets(v)).collect();
            seq(&[octets(name.as_bytes()), tlv(0x31, &vals.concat())])
        })
        .collect();
    tlv(0x64, &[octets(dn.as_bytes()), seq(&list)].concat())
}

/// The paged-results response control with a cookie.
pub fn paged(cookie: &[u8]) -> Vec<u8> {
    control(&seq(&[int(0), octets(cookie)]))
}

/// A paged-results response control with any value.
pub fn control(value: &[u8]) -> Vec<u8> {
    seq(&[
        octets(connagent::packages::ldap::PAGED_RESULTS_OID.as_bytes()),
        octets(value),
    ])
}

/// What the script sees of a search request.
#[derive(Debug, Clone)]
pub struct Search {
    pub base: String,
    pub attrs: Vec<String>,
    /// The paged-results cookie, when the control was sent.
    pub cookie: Option<Vec<u8>>,
    /// The OIDs of the request's controls, with their criticality.
    pub controls: Vec<(String, bool)>,
}

/// An answer: protocol operations, each with its response controls (or none).
pub type Answer = Vec<(Vec<u8>, Option<Vec<u8>>)>;
pub type Script = Arc<dyn Fn(&Search) -> Answer + Send + Sync>;

pub struct Server {
    pub port: u16,
    pub searches: Arc<AtomicUsize>,
}

impl Server {
    pub fn searches(&self) -> usize {
        self.searches.load(Ordering::SeqCst)
    }
}

fn uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b))
}

fn primitive(t: &StructureTag) -> Option<&[u8]> {
    match &t.payload {
        PL::P(b) => Some(b),
        PL::C(_) => None,
    }
}

fn parts(t: &StructureTag) -> &[StructureTag] {
    match &t.payload {
        PL::C(v) => v,
        PL::P(_) => &[],
    }
}

fn search_of(op: &StructureTag, controls: Option<&StructureTag>) -> Search {
    let p = parts(op);
    let text = |t: Option<&StructureTag>| {
        String::from_utf8_lossy(t.and_then(primitive).unwrap_or_default()).into_owned()
    };
    let attrs = p
        .get(7)
        .map(|a| parts(a).iter().map(|t| text(Some(t))).collect())
        .unwrap_or_default();
    let cookie = controls.and_then(|c| {
        parts(c).iter().find_map(|ctrl| {
            let fields = parts(ctrl);
            if text(fields.first()) != connagent::packages::ldap::PAGED_RESULTS_OID {
                return None;
            }
            let value = fields.last().and_then(primitive)?;
            let (_, tag) = parse_tag(value).ok()?;
            parts(&tag).get(1).and_then(primitive).map(<[u8]>::to_vec)
        })
    });
    let controls = controls
        .map(|c| {
            parts(c)
                .iter()
                .map(|ctrl| {
                    let fields = parts(ctrl);
                    // criticality is the BOOLEAN after the OID, when present.
                    let critical = fields
                        .get(1)
                        .filter(|f| f.id == 1)
                        .and_then(primitive)
                        .is_some_and(|b| b.first().is_some_and(|x| *x != 0));
                    (text(fields.first()), critical)
                })
                .collect()
        })
        .unwrap_or_default();
    Search {
        base: text(p.first()),
        attrs,
        cookie,
        controls,
    }
}

pub async fn start(script: Script) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let searches = Arc::new(AtomicUsize::new(0));
    let counter = searches.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, script.clone(), counter.clone()));
        }
    });
    Server { port, searches }
}

async fn serve(mut socket: tokio::net::TcpStream, script: Script, searches: Arc<AtomicUsize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok((rest, msg)) = parse_tag(&buf) {
            let used = buf.len() - rest.len();
            let p = parts(&msg).to_vec();
            buf.drain(..used);
            let id = p.first().and_then(primitive).map(uint).unwrap_or(0) as u32;
            let Some(op) = p.get(1) else { return };
            let controls = p
                .get(2)
                .filter(|c| matches!(c.class, TagClass::Context) && c.id == 0);
            let answer: Answer = match (op.class, op.id) {
                (TagClass::Application, 0) => vec![(
                    tlv(0x61, &[tlv(0x0a, &[0]), octets(b""), octets(b"")].concat()),
                    None,
                )],
                (TagClass::Application, 3) => {
                    searches.fetch_add(1, Ordering::SeqCst);
                    script(&search_of(op, controls))
                }
                (TagClass::Application, 2) => return,
                _ => Vec::new(),
            };
            for (op, ctrls) in answer {
                let mut msg = vec![int(id), op];
                if let Some(c) = ctrls {
                    msg.push(tlv(0xa0, &c));
                }
                if socket.write_all(&seq(&msg)).await.is_err() {
                    return;
                }
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
