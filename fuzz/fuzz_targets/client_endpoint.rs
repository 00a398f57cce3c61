//! Fuzzes the Rust client's endpoint parser (`tcp://`, `tls://`, `ws://`, `wss://`
//! addresses from configuration). Invariants: never panic; whatever parses prints as a URL
//! that parses back to the same endpoint.
#![no_main]

use imclient::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = s.parse::<Endpoint>() {
        let again: Endpoint = e.url().parse().expect("a printed endpoint parses");
        assert_eq!(again, e);
    }
});
