//! Client tokens (the embedded default authentication): Username is the decimal uid, Password an
//! HS256 JWT signed with the configured secret, with claims `sub` (the uid as a decimal
//! string, or a JSON number) and `exp`. Every other claim (`iat`, `nbf`, `jti`, ...) is
//! optional, so a token made by any standard JWT library from just `sub` + `exp` logs in.
//! Runs on whichever shard accepted the connection (pure CPU work). A crate of its own so
//! the load generator and the benchmarks mint tokens without linking the server core.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a CONNECT was refused. Exhaustive on purpose: the server counts each reason in its
/// own metric series, so a new reason must be given one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("username is not a decimal uid")]
    BadUsername,
    #[error("token invalid: {0}")]
    BadToken(String),
    #[error("token expired")]
    Expired,
    #[error("username does not match the token subject")]
    SubjectMismatch,
}

/// What is minted. `iat` is written but never required when verifying.
#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// What is read: only `sub` (string or number); `exp` is checked by the validation.
#[derive(Debug, Deserialize)]
struct Subject {
    sub: SubClaim,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SubClaim {
    Text(String),
    Number(u64),
}

impl SubClaim {
    fn is_uid(&self, uid: u32) -> bool {
        match self {
            SubClaim::Text(s) => s.parse::<u32>() == Ok(uid),
            SubClaim::Number(n) => *n == u64::from(uid),
        }
    }
}

/// Seconds since the Unix epoch (0 for a clock set before 1970).
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies and mints tokens.
pub struct TokenAuth {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl TokenAuth {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // `sub` is required by deserialising [`Subject`] (jsonwebtoken's own check accepts
        // only a string, and some JWT libraries write a numeric subject).
        validation.set_required_spec_claims(&["exp"]);
        Self {
            enc: EncodingKey::from_secret(secret.as_bytes()),
            dec: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A token for `uid` valid for `ttl`.
    pub fn mint(&self, uid: u32, ttl: Duration) -> Result<String, AuthError> {
        let now = unix_secs();
        self.mint_claims(uid, now, now + ttl.as_secs())
    }

    /// A token with explicit times (tests use it for expired tokens).
    pub fn mint_claims(&self, uid: u32, iat: u64, exp: u64) -> Result<String, AuthError> {
        let claims = Claims {
            sub: uid.to_string(),
            exp,
            iat,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map_err(|e| AuthError::BadToken(e.to_string()))
    }

    /// Checks a CONNECT's credentials; returns the uid.
    pub fn verify(&self, username: &[u8], password: &[u8]) -> Result<u32, AuthError> {
        let uid: u32 = std::str::from_utf8(username)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(AuthError::BadUsername)?;
        let token =
            std::str::from_utf8(password).map_err(|_| AuthError::BadToken("not UTF-8".into()))?;
        let data = jsonwebtoken::decode::<Subject>(token, &self.dec, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::BadToken(e.to_string()),
            },
        )?;
        if !data.claims.sub.is_uid(uid) {
            return Err(AuthError::SubjectMismatch);
        }
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_verify_and_refusals() {
        let a = TokenAuth::new("s3cret");
        let t = a.mint(42, Duration::from_secs(60)).unwrap();
        assert_eq!(a.verify(b"42", t.as_bytes()), Ok(42));
        assert_eq!(
            a.verify(b"43", t.as_bytes()),
            Err(AuthError::SubjectMismatch)
        );
        assert_eq!(a.verify(b"x", t.as_bytes()), Err(AuthError::BadUsername));
        let other = TokenAuth::new("other")
            .mint(42, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            a.verify(b"42", other.as_bytes()),
            Err(AuthError::BadToken(_))
        ));
        let old = a.mint_claims(42, 1_000, 2_000).unwrap();
        assert_eq!(a.verify(b"42", old.as_bytes()), Err(AuthError::Expired));
        assert!(a.verify(b"42", b"not-a-jwt").is_err());
    }

    /// A token made by a plain JWT library call with only `sub` and `exp` (no `iat`), as
    /// the configuration file documents, logs in; `sub` may also be a JSON number.
    #[test]
    fn only_sub_and_exp_is_enough() {
        let key = EncodingKey::from_secret(b"s3cret");
        let exp = unix_secs() + 60;
        let a = TokenAuth::new("s3cret");
        for claims in [
            serde_json::json!({"sub": "42", "exp": exp}),
            serde_json::json!({"sub": 42, "exp": exp}),
            serde_json::json!({"sub": "42", "exp": exp, "nbf": exp - 120, "jti": "x"}),
        ] {
            let t = jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap();
            assert_eq!(a.verify(b"42", t.as_bytes()), Ok(42), "{claims}");
            assert_eq!(
                a.verify(b"43", t.as_bytes()),
                Err(AuthError::SubjectMismatch)
            );
        }
        // Without `exp` or `sub` a token is refused.
        for claims in [
            serde_json::json!({"sub": "42"}),
            serde_json::json!({"exp": exp}),
        ] {
            let t = jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap();
            assert!(matches!(
                a.verify(b"42", t.as_bytes()),
                Err(AuthError::BadToken(_))
            ));
        }
    }
}
