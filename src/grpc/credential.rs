//! The agent's credential for the control plane: the client certificate it obtained once by
//! enrollment (`connagent enroll`), its private key, and the control plane's CA. Kept under
//! `<WorkFolderPath>/Credentials/` with mode 0600, read at every connection (a new enrollment is
//! used without a restart), and the TLS configurations built from it.

use crate::config::ControlPlaneSettings;
use crate::fsutil::{limits, read_limited};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

pub const FOLDER: &str = "Credentials";
pub const KEY_FILE: &str = "agent.key";
pub const CERTIFICATE_FILE: &str = "agent.crt";
pub const CA_FILE: &str = "control-plane-ca.crt";

/// The folder of the enrollment credential.
pub fn folder(work: &Path) -> PathBuf {
    work.join(FOLDER)
}

/// What the agent presents and trusts on the way to the control plane.
pub struct Credential {
    /// The client certificate (PEM) and its key (PEM, wiped when dropped); `None` before
    /// enrollment (and without `ControlPlane:CertificateFile`).
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// The CA the server's certificate must chain to (PEM); `None`: the public roots.
    pub ca: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_limited(path, limits::PEM_FILE, "a PEM file")
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The credential in force: `ControlPlane:CertificateFile`/`KeyFile` and `CaFile` when set, else
/// the enrollment's files under `Work/Credentials`.
pub fn load(work: &Path, s: &ControlPlaneSettings) -> Result<Credential, String> {
    let dir = folder(work);
    let identity = match (&s.certificate_file, &s.key_file) {
        (Some(c), Some(k)) => Some((read(c)?, Zeroizing::new(read(k)?))),
        _ if dir.join(CERTIFICATE_FILE).is_file() => Some((
            read(&dir.join(CERTIFICATE_FILE))?,
            Zeroizing::new(read(&dir.join(KEY_FILE))?),
        )),
        _ => None,
    };
    let ca = match &s.ca_file {
        Some(ca) => Some(read(ca)?),
        None if dir.join(CA_FILE).is_file() => Some(read(&dir.join(CA_FILE))?),
        None => None,
    };
    Ok(Credential { identity, ca })
}

/// Stores a new credential (replacing any earlier one), each file written atomically with mode
/// 0600.
pub fn store(work: &Path, certificate: &[u8], key: &[u8], ca: &[u8]) -> Result<PathBuf, String> {
    let dir = folder(work);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    for (name, bytes) in [
        (KEY_FILE, key),
        (CERTIFICATE_FILE, certificate),
        (CA_FILE, ca),
    ] {
        let path = dir.join(name);
        crate::fsutil::write_atomically_with_mode(&path, bytes, Some(0o600))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}

/// The roots a server certificate must chain to: the CA given, else the public web roots.
pub fn roots(ca: Option<&[u8]>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// A certificate chain and its key from PEM.
pub fn identity(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("the key is not PEM: {e}"))?
        .ok_or_else(|| "the key file holds no private key".to_string())?;
    Ok((certs, key))
}

/// The TLS client configuration for the control plane: the server verified against the
/// credential's CA (or the public roots), the client certificate presented when there is one.
/// `alpn` is the protocol to offer (`h2`).
pub fn client_config(c: &Credential, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::install_crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots(c.ca.as_deref())?);
    let mut config = match &c.identity {
        Some((cert, key)) => {
            let (certs, key) = identity(cert, key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("the client certificate cannot be used: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}
