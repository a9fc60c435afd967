//! TLS for the responder: a throw-away CA and a "localhost"/127.0.0.1 server certificate, rustls
//! server configurations (ring provider), and the PRELOGIN framing TDS 7.x wraps the handshake in.
//!
//! In TDS 7.x the TLS handshake travels inside PRELOGIN (0x12) packets; once it completes, TLS
//! records flow bare on the socket and TDS packets travel inside them (MS-TDS 2.2.6.5, 3.2.5.2).
//! [`Wrapped`] does the framing while `wrapping` is set. TDS 8.0 "strict" connections start TLS
//! on the bare socket (ALPN `tds/8.0`) and run the whole TDS conversation, PRELOGIN included,
//! inside it; they use [`Wrapped`] with framing off from the start.
//!
//! Like SQL Server before TDS 8.0, the framed handshake offers TLS 1.2 only; strict mode also
//! offers TLS 1.3. TLS 1.3 session tickets are disabled: a server sends them after its side of the
//! handshake, when the client has already stopped unwrapping PRELOGIN framing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::packet::{HEADER, PRELOGIN};

/// The certificate authority and acceptors for one responder.
pub struct Pki {
    pub ca_pem: String,
    /// For TLS inside PRELOGIN packets (TDS 7.x).
    pub framed: TlsAcceptor,
    /// For TDS 8.0 strict mode (TLS first, ALPN `tds/8.0`).
    pub strict: TlsAcceptor,
}

impl Pki {
    /// A new CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
    pub fn generate() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tds responder test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        let chain = vec![
            CertificateDer::from(cert.der().to_vec()),
            CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut framed = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .expect("server certificate and key");
        framed.send_tls13_tickets = 0;

        let mut strict = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        strict.alpn_protocols = vec![b"tds/8.0".to_vec()];
        strict.send_tls13_tickets = 0;

        Pki {
            ca_pem: ca_cert.pem(),
            framed: TlsAcceptor::from(Arc::new(framed)),
            strict: TlsAcceptor::from(Arc::new(strict)),
        }
    }
}

/// A TCP stream that, while `wrapping` is set, carries TLS bytes inside PRELOGIN packets: reads
/// strip packet headers (and reject any other packet type), writes are buffered and framed into
/// packets on flush — rustls flushes after each handshake flight.
pub struct Wrapped {
    inner: TcpStream,
    wrapping: bool,
    header: [u8; HEADER],
    header_len: usize,
    remaining: usize,
    pending: Vec<u8>,
    framed: Vec<u8>,
    framed_pos: usize,
}

impl Wrapped {
    pub fn new(inner: TcpStream, wrapping: bool) -> Wrapped {
        Wrapped {
            inner,
            wrapping,
            header: [0; HEADER],
            header_len: 0,
            remaining: 0,
            pending: Vec::new(),
            framed: Vec::new(),
            framed_pos: 0,
        }
    }

    /// The handshake is over: from now on TLS records go bare on the socket.
    pub fn end_handshake(&mut self) {
        self.wrapping = false;
    }

    pub fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Writes out the framed packets not yet on the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let chunks = self.pending.chunks(4096 - HEADER);
            let count = chunks.len();
            for (i, chunk) in chunks.enumerate() {
                let len = (chunk.len() + HEADER) as u16;
                let status = u8::from(i + 1 == count);
                self.framed.extend_from_slice(&[PRELOGIN, status]);
                self.framed.extend_from_slice(&len.to_be_bytes());
                self.framed.extend_from_slice(&[0, 0, 1 + i as u8, 0]);
                self.framed.extend_from_slice(chunk);
            }
            self.pending.clear();
        }
        while self.framed_pos < self.framed.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.framed[self.framed_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.framed_pos += n;
        }
        self.framed.clear();
        self.framed_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Wrapped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.wrapping {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.remaining == 0 {
            while this.header_len < HEADER {
                let mut hb = ReadBuf::new(&mut this.header[this.header_len..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut hb))?;
                let n = hb.filled().len();
                if n == 0 {
                    if this.header_len == 0 {
                        return Poll::Ready(Ok(())); // end of stream between packets
                    }
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                this.header_len += n;
            }
            this.header_len = 0;
            if this.header[0] != PRELOGIN {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "packet type {:#04x} during the TLS handshake (expected PRELOGIN)",
                        this.header[0]
                    ),
                )));
            }
            let len = usize::from(u16::from_be_bytes([this.header[2], this.header[3]]));
            this.remaining = len.checked_sub(HEADER).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "packet shorter than its header")
            })?;
        }
        let max = this.remaining.min(buf.remaining());
        let n = {
            let mut sub = ReadBuf::new(buf.initialize_unfilled_to(max));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
            sub.filled().len()
        };
        if n == 0 && max > 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.advance(n);
        this.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wrapped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wrapping {
            this.pending.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The connection's byte stream: plain TCP, or TLS over a (possibly PRELOGIN-framed) TCP stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<Wrapped>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, data),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
