//! Fuzzes both packet decoders. Invariants: never panic; whatever decodes re-encodes to the
//! exact input with the announced length.
#![no_main]

use im_protocol::{ClientPacket, ServerPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ClientPacket::decode(data) {
        assert_eq!(p.encoded_len(), data.len());
        assert_eq!(p.to_vec(), data);
    }
    if let Ok(p) = ServerPacket::decode(data) {
        assert_eq!(p.encoded_len(), data.len());
        assert_eq!(p.to_vec(), data);
    }
});
