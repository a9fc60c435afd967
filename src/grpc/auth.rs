//! Bearer-token authentication and roles. Tokens are configured by their SHA-256; a presented
//! token is hashed and compared with every configured hash in constant time.

use crate::config::{ApiToken, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The caller behind a request's `authorization: Bearer <token>` header. With no tokens
/// configured (allowed only on loopback), every caller is an anonymous admin.
pub fn authenticate(tokens: &[ApiToken], md: &MetadataMap) -> Result<Caller, Status> {
    if tokens.is_empty() {
        return Ok(Caller {
            name: "anonymous (no tokens configured)".into(),
            role: Role::Admin,
        });
    }
    let header = md.get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "missing authorization metadata: send `authorization: Bearer <token>`",
        )
    })?;
    let value = header
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
        })?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Compare with every configured token, without stopping early.
    let mut found: Option<&ApiToken> = None;
    for t in tokens {
        if bool::from(t.sha256.ct_eq(&presented)) {
            found = Some(t);
        }
    }
    found
        .map(|t| Caller {
            name: t.name.clone(),
            role: t.role,
        })
        .ok_or_else(|| Status::unauthenticated("unknown token"))
}

/// Checks that the caller's role allows a method.
pub fn authorize(caller: &Caller, method: &str, needed: Role) -> Result<(), Status> {
    if caller.role >= needed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{method} needs the {needed:?} role; token {} has {:?}",
            caller.name, caller.role
        )))
    }
}
