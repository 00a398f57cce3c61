//! loadgen's in-place MQTT parser (`loadgen/src/mqtt_wire.rs`, included by path: loadgen
//! is a binary crate): any bytes give packets, "need more" or an error, never a panic, and
//! a packet never claims more bytes than there are.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../loadgen/src/mqtt_wire.rs"]
#[allow(dead_code)]
mod mqtt_wire;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((packet, len))) = mqtt_wire::next(&data[at..], 1 << 16) {
        assert!(len >= 2 && at + len <= data.len());
        if let mqtt_wire::Packet::Publish { payload, .. } = packet {
            assert!(payload.len() < len);
        }
        at += len;
    }
});
