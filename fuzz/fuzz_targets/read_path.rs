//! Fuzzes the read path's parse loop: a connection's bytes through its transport framing
//! (length-prefixed, or a client's WebSocket frames with fragments, control frames and
//! close), with the lookahead that hints packets before they are fed, cut into two reads at
//! an arbitrary point. Invariants: never panic; what the engine is handed (packets,
//! replies, whether the session stops) does not depend on where the stream was cut; on
//! length-prefixed framing every packet fed was hinted first, in order, at most LOOKAHEAD
//! packets ahead, and nothing else was hinted; on WebSocket nothing is hinted.
#![no_main]

use im_shards::fuzz_api::{parse_reads, Parsed, LOOKAHEAD};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fn check_hints(ws: bool, p: &Parsed) {
    if ws {
        assert!(p.hinted.is_empty());
        return;
    }
    assert_eq!(p.hinted, p.fed);
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, stream)) = data.split_first() else {
        return;
    };
    let ws = head & 1 == 1;
    let cut = usize::from(head >> 1) * stream.len() / 127;
    let whole = parse_reads(ws, &[stream], MAX);
    let split = parse_reads(ws, &[&stream[..cut], &stream[cut..]], MAX);
    assert!(whole.fed.iter().all(|p| p.len() <= MAX));
    assert_eq!(whole.fed, split.fed);
    assert_eq!(whole.replies, split.replies);
    assert_eq!(whole.stopped, split.stopped);
    check_hints(ws, &whole);
    check_hints(ws, &split);
    if !ws {
        // One read: packet i is fed once at least i + 1 and at most i + LOOKAHEAD packets
        // have been hinted.
        for (i, &n) in whole.hinted_at_feed.iter().enumerate() {
            assert!(n > i && n <= i + LOOKAHEAD, "packet {i} fed with {n} hinted");
        }
    }
});
