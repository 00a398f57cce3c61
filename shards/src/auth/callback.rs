//! The seed's HTTP authentication callback (`auth.mode = "http"`), as the shards see it: a
//! [`AuthCallback`] answers a CONNECT's username/password/role with a [`Verdict`]. The HTTP
//! client itself lives with the control plane (tokio); this module holds the contract and
//! the parser of the callback's reply, which is untrusted input (fuzzed: `auth_reply`).
//!
//! Reply: `{"result":"pass","uid":<u32>}` accepts as that uid; `{"result":"denied"}`
//! refuses (CONNECT_ACK 3). Anything else — another result, a missing or out-of-range uid,
//! bad JSON, a timeout, a non-2xx status, too many calls in flight — answers CONNECT_ACK 4
//! ("server unavailable, retry later"). A failure never lets anyone in.

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;

/// What the callback decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass(u32),
    Denied,
    /// The callback could not decide (timeout, error status, bad reply, overload).
    Unavailable(String),
}

/// Asks the authentication service. Implemented by the control plane's HTTP client.
pub trait AuthCallback: Send + Sync + 'static {
    fn check(
        &self,
        username: Vec<u8>,
        password: Vec<u8>,
        role: u8,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'static>>;
}

#[derive(Deserialize)]
struct Reply {
    result: String,
    uid: Option<serde_json::Value>,
}

/// Parses a callback reply body.
pub fn parse_reply(body: &[u8]) -> Verdict {
    let reply: Reply = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Verdict::Unavailable(format!("reply is not the expected JSON: {e}")),
    };
    match reply.result.as_str() {
        "denied" => Verdict::Denied,
        "pass" => match reply.uid.as_ref().and_then(serde_json::Value::as_u64) {
            Some(uid) if uid > 0 && uid <= u32::MAX as u64 => Verdict::Pass(uid as u32),
            _ => Verdict::Unavailable("\"pass\" without a uid between 1 and 2^32-1".into()),
        },
        other => Verdict::Unavailable(format!("unknown result {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(br#"{"result":"pass","uid":42}"#),
            Verdict::Pass(42)
        );
        assert_eq!(parse_reply(br#"{"result":"denied"}"#), Verdict::Denied);
        for bad in [
            &br#"{"result":"pass"}"#[..],
            br#"{"result":"pass","uid":0}"#,
            br#"{"result":"pass","uid":4294967296}"#,
            br#"{"result":"pass","uid":"42"}"#,
            br#"{"result":"maybe"}"#,
            b"<html>",
            b"",
        ] {
            assert!(
                matches!(parse_reply(bad), Verdict::Unavailable(_)),
                "{bad:?}"
            );
        }
    }
}
