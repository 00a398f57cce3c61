//! Fuzzes the TCP length-prefix framer on a stream cut at arbitrary points. Invariants: never
//! panic; never report a frame above the maximum; feeding the same bytes in two chunks
//! yields the same frames as feeding them at once.
#![no_main]

use im_protocol::framing;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fn frames(buf: &[u8]) -> (Vec<Vec<u8>>, usize, bool) {
    let mut out = Vec::new();
    let r = framing::for_each::<()>(buf, MAX, |p| {
        assert!(p.len() <= MAX);
        out.push(p.to_vec());
        Ok(())
    });
    match r {
        Ok(used) => (out, used, false),
        Err(_) => (out, 0, true),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let (all, _, all_err) = frames(stream);
    let cut = (cut as usize).min(stream.len());
    let (mut first, used, err) = frames(&stream[..cut]);
    if err {
        assert!(all_err);
        return;
    }
    let mut rest = stream[used..cut].to_vec();
    rest.extend_from_slice(&stream[cut..]);
    let (second, _, rest_err) = frames(&rest);
    first.extend(second);
    assert_eq!(all_err, rest_err);
    if !all_err {
        assert_eq!(first, all);
    }
});
