//! Fuzzes the WebSocket side: the upgrade handshake parser and frame header parsing with
//! in-place unmasking. Invariants: never panic; a parsed frame never exceeds the maximum;
//! masking twice restores the payload.
#![no_main]

use im_protocol::ws;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ws::server_handshake(data, "/ws");
    let mut buf = data.to_vec();
    let mut pos = 0;
    while let Ok(Some(h)) = ws::parse_header(&buf[pos..], 4096) {
        assert!(h.payload_len <= 4096);
        if buf.len() - pos < h.frame_len() {
            break;
        }
        let range = pos + h.header_len..pos + h.frame_len();
        if let Some(m) = h.mask {
            let before = buf[range.clone()].to_vec();
            ws::apply_mask(&mut buf[range.clone()], m);
            ws::apply_mask(&mut buf[range.clone()], m);
            assert_eq!(buf[range.clone()], before[..]);
        }
        pos += h.frame_len();
    }
});
