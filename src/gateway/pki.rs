//! The gateway's certificates: its own CA (made once, `ca.key` mode 0600 and `ca.crt` in its
//! folder), the server certificate it presents to agents (renewed at every start for the names
//! given), and the client certificates it issues at enrollment (the agent's identifier as common
//! name, for client authentication only, five years).

use crate::fsutil::{limits, read_limited, write_atomically_with_mode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;

pub const CA_KEY: &str = "ca.key";
pub const CA_CERTIFICATE: &str = "ca.crt";
/// How long an issued agent certificate is valid.
const AGENT_CERTIFICATE_YEARS: i64 = 5;

/// The CA: its certificate (PEM) and its key.
pub struct Authority {
    pub certificate_pem: String,
    key: KeyPair,
}

/// From yesterday (clocks differ) for `years` years.
fn validity(params: &mut CertificateParams, years: i64) {
    use chrono::Datelike;
    let date = |t: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(
            t.year(),
            u8::try_from(t.month()).unwrap_or(1),
            u8::try_from(t.day()).unwrap_or(1),
        )
    };
    let now = chrono::Utc::now();
    params.not_before = date(now - chrono::Duration::days(1));
    params.not_after = date(now + chrono::Duration::days(365 * years + years / 4));
}

fn read_text(path: &Path) -> Result<String, String> {
    let bytes = read_limited(path, limits::PEM_FILE, "a PEM file")
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not PEM text", path.display()))
}

impl Authority {
    /// Loads the CA from `folder`, or makes one when there is none.
    pub fn load_or_create(folder: &Path, name: &str) -> Result<Authority, String> {
        let (key_path, cert_path) = (folder.join(CA_KEY), folder.join(CA_CERTIFICATE));
        if key_path.exists() || cert_path.exists() {
            let key_pem = zeroize::Zeroizing::new(read_text(&key_path)?);
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| format!("{} is not a private key: {e}", key_path.display()))?;
            let certificate_pem = read_text(&cert_path)?;
            // Checked now, so that a damaged file is named at the start, not at the first
            // enrollment.
            Issuer::from_ca_cert_pem(&certificate_pem, &key)
                .map_err(|e| format!("{} is not a CA certificate: {e}", cert_path.display()))?;
            return Ok(Authority {
                certificate_pem,
                key,
            });
        }
        let key = KeyPair::generate().map_err(|e| format!("cannot make the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("connagent gateway CA ({name})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 20);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        write_atomically_with_mode(&key_path, key_pem.as_bytes(), Some(0o600))
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        write_atomically_with_mode(&cert_path, cert.pem().as_bytes(), Some(0o644))
            .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        Ok(Authority {
            certificate_pem: cert.pem(),
            key,
        })
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, String> {
        Issuer::from_ca_cert_pem(&self.certificate_pem, &self.key)
            .map_err(|e| format!("the CA certificate cannot sign: {e}"))
    }

    /// A server certificate for `names` (DNS names or IP addresses): its PEM and its key's PEM.
    pub fn server_certificate(
        &self,
        names: &[String],
    ) -> Result<(String, zeroize::Zeroizing<String>), String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| format!("{n:?} is not a host name: {e}")),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, 1);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| format!("cannot sign the server certificate: {e}"))?;
        Ok((cert.pem(), zeroize::Zeroizing::new(key.serialize_pem())))
    }

    /// Signs an agent's certificate request: the subject becomes the agent's identifier
    /// whatever the request said, for client authentication only. Returns the PEM and the
    /// SHA-256 of its DER (the fingerprint the gateway accepts from then on).
    pub fn issue_agent_certificate(
        &self,
        agent: &str,
        request_pem: &str,
    ) -> Result<(String, String), String> {
        let mut csr = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| format!("the certificate request is not a valid PKCS#10 request: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = Vec::new();
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &fastrand::u64(..).to_be_bytes(),
        ));
        validity(&mut csr.params, AGENT_CERTIFICATE_YEARS);
        let cert = csr
            .signed_by(&self.issuer()?)
            .map_err(|e| format!("cannot sign the agent's certificate: {e}"))?;
        Ok((cert.pem(), super::store::sha256_hex(cert.der())))
    }
}

/// The common name of a certificate (DER), and the SHA-256 of the DER.
pub fn peer_identity(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())?
        .to_string();
    Some((cn, super::store::sha256_hex(der)))
}
