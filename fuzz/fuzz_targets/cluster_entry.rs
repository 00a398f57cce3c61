//! An inbox entry from another node (`im_cluster::wire::decode`): any bytes give an entry
//! or a `WireError`, never a panic; whatever decodes encodes back to bytes that decode to
//! the same records.
#![no_main]

use bytes::Bytes;
use im_cluster::wire::{decode, encode};
use im_shards::engine::Time;
use im_shards::Forward;
use libfuzzer_sys::fuzz_target;

fn shape(f: &Forward) -> (u8, Vec<u32>, Option<Vec<u64>>, Vec<u8>) {
    match f {
        Forward::One(d) => (d.hops, vec![d.to], d.seq.map(|s| vec![s]), d.frame.to_vec()),
        Forward::Group(b) => (b.hops, b.uids.to_vec(), b.seqs.clone(), b.frame.to_vec()),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = decode(&Bytes::copy_from_slice(data), Time(0)) {
        let sender = e.sender.unwrap_or_default();
        let again = decode(&Bytes::from(encode(&e.from, sender, &e.records)), Time(0))
            .expect("re-encoded entry decodes");
        assert_eq!(again.from, e.from);
        assert_eq!(again.sender, Some(sender));
        assert_eq!(again.records.len(), e.records.len());
        for (a, b) in again.records.iter().zip(&e.records) {
            assert_eq!(a.sent_ms, b.sent_ms);
            assert_eq!(shape(&a.f), shape(&b.f));
        }
    }
});
