//! Fuzzes the CONNECT path as the server runs it before a session exists: decode the first
//! packet, and if it is a CONNECT, check its credentials with the token verifier. Invariants:
//! never panic; a token accepted for a username names exactly that uid (the decimal username);
//! verification is deterministic. Half the inputs get a valid token spliced in, so the
//! verifier's success path (and its subject check) is reached, not only its parse errors.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use im_protocol::ClientPacket;
use im_shards::TokenAuth;
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static (TokenAuth, String) {
    static A: OnceLock<(TokenAuth, String)> = OnceLock::new();
    A.get_or_init(|| {
        let a = TokenAuth::new("fuzz-secret");
        let t = a.mint(42, Duration::from_secs(3600)).unwrap_or_default();
        (a, t)
    })
}

fuzz_target!(|data: &[u8]| {
    let (auth, good) = auth();
    let Ok(ClientPacket::Connect {
        username, password, ..
    }) = ClientPacket::decode(data)
    else {
        return;
    };
    let password = if data.first().is_some_and(|b| b & 1 == 1) {
        good.as_bytes()
    } else {
        password
    };
    let r = auth.verify(username, password);
    if let Ok(uid) = r {
        assert_eq!(std::str::from_utf8(username).ok().and_then(|s| s.parse().ok()), Some(uid));
    }
    assert_eq!(auth.verify(username, password), r);
});
