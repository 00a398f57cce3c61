//! Fuzzes the HTTP authentication callback's reply parser. Invariants: never panic; a
//! "pass" verdict always carries a non-zero uid; parsing is deterministic.
#![no_main]

use im_shards::callback::{parse_reply, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = parse_reply(data);
    if let Verdict::Pass(uid) = v {
        assert_ne!(uid, 0);
    }
    assert_eq!(parse_reply(data), v);
});
