//! Every byte example in `docs/protocol.md` (a fenced block tagged `hex client` or
//! `hex server`) decodes with this codec and encodes back to the same bytes, so the
//! document a client author reads cannot drift from what the server speaks.

use im_protocol::{ClientPacket, ServerPacket};

const DOC: &str = include_str!("../../docs/protocol.md");

/// (direction, bytes) of each example, in document order.
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(dir) = line.strip_prefix("```hex ") else {
            continue;
        };
        let mut bytes = Vec::new();
        for l in lines.by_ref().take_while(|l| !l.starts_with("```")) {
            for h in l.split_whitespace() {
                bytes.push(u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {h:?}")));
            }
        }
        out.push((dir.trim(), bytes));
    }
    out
}

#[test]
fn every_example_round_trips() {
    let all = examples();
    assert!(all.len() >= 10, "found only {} examples", all.len());
    for (dir, bytes) in all {
        let again = match dir {
            "client" => ClientPacket::decode(&bytes)
                .unwrap_or_else(|e| panic!("client example {bytes:02x?}: {e}"))
                .to_vec(),
            "server" => ServerPacket::decode(&bytes)
                .unwrap_or_else(|e| panic!("server example {bytes:02x?}: {e}"))
                .to_vec(),
            other => panic!("unknown direction {other:?}"),
        };
        assert_eq!(again, bytes, "{dir} example does not round-trip");
    }
}

#[test]
fn the_push_example_carries_the_documented_envelope() {
    let push = examples()
        .into_iter()
        .find(|(d, b)| *d == "server" && b.first() == Some(&3))
        .expect("a push example");
    let Ok(ServerPacket::Push { payload, .. }) = ServerPacket::decode(&push.1) else {
        panic!("not a push");
    };
    assert_eq!(
        payload,
        br#"{"from":"42","to":"43","role":"0","content":"hi"}"#
    );
}
