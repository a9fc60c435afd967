//! `connagent enroll`: the agent makes its own key pair, sends a certificate request with a
//! one-time token to the control plane's `EnrollmentService`, checks the certificate it gets
//! back (issued for this agent and this key), and stores it with the key and the control
//! plane's CA under `<Work>/Credentials/` (mode 0600). The token is sent once over TLS and never
//! written anywhere.

use super::credential;
use super::proto as pb;
use super::proto::enrollment_service_client::EnrollmentServiceClient;
use crate::config::ControlPlaneSettings;
use std::path::{Path, PathBuf};

/// What an enrollment produced.
#[derive(Debug)]
pub struct Enrolled {
    pub agent: String,
    pub folder: PathBuf,
    /// When the certificate expires (RFC 3339).
    pub not_after: String,
    /// Whether an earlier credential was replaced.
    pub replaced: bool,
}

/// Why it failed; the messages never hold the token.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The control plane refused the token (unknown, used, expired).
    #[error("the control plane refused the enrollment: {0}")]
    Refused(String),
    /// It could not be reached, or answered something unusable.
    #[error("{0}")]
    Failed(String),
}

pub async fn enroll(
    work: &Path,
    settings: &ControlPlaneSettings,
    agent: &str,
    token: &str,
) -> Result<Enrolled, EnrollError> {
    let failed = EnrollError::Failed;
    let key = rcgen::KeyPair::generate().map_err(|e| failed(format!("cannot make a key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, agent);
    params.distinguished_name = dn;
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| failed(format!("cannot make the certificate request: {e}")))?;
    let channel = super::dial::grpc_channel(settings, work).map_err(failed)?;
    let mut client = EnrollmentServiceClient::new(channel);
    let response = client
        .enroll(pb::EnrollRequest {
            token: token.to_string(),
            agent_identifier: agent.to_string(),
            certificate_request_pem: request,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                EnrollError::Refused(s.message().to_string())
            }
            tonic::Code::InvalidArgument => {
                EnrollError::Refused(format!("the request was refused: {}", s.message()))
            }
            code => failed(format!(
                "cannot enroll with {}: {:?}: {}",
                settings.url,
                code,
                s.message()
            )),
        })?
        .into_inner();
    let not_after = check_certificate(&response.certificate_pem, agent, &key)?;
    credential::roots(Some(response.ca_certificate_pem.as_bytes())).map_err(|e| {
        failed(format!(
            "the control plane sent a CA certificate that cannot be used: {e}"
        ))
    })?;
    let replaced = credential::folder(work)
        .join(credential::CERTIFICATE_FILE)
        .exists();
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let folder = credential::store(
        work,
        response.certificate_pem.as_bytes(),
        key_pem.as_bytes(),
        response.ca_certificate_pem.as_bytes(),
    )
    .map_err(failed)?;
    Ok(Enrolled {
        agent: response.agent_identifier,
        folder,
        not_after,
        replaced,
    })
}

/// The certificate must be for this agent and this key; returns when it expires.
fn check_certificate(pem: &str, agent: &str, key: &rcgen::KeyPair) -> Result<String, EnrollError> {
    let failed = |m: String| {
        EnrollError::Failed(format!(
            "the control plane sent an unusable certificate: {m}"
        ))
    };
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| failed("no certificate in its answer".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| failed(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default();
    if !cn.eq_ignore_ascii_case(agent) {
        return Err(failed(format!("it names agent {cn:?}, not {agent:?}")));
    }
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err(failed("it is not for the key this agent made".into()));
    }
    Ok(
        chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    )
}
