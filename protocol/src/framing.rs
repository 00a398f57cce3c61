//! TCP stream framing: every packet is prefixed by its length, 4 bytes big-endian, not
//! counting the prefix.

use bytes::BufMut;

use crate::error::FrameError;

/// Size of the length prefix.
pub const PREFIX: usize = 4;

/// Looks for one complete frame at the start of `buf`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some(len))`: the packet is
/// `buf[PREFIX..PREFIX + len]`. A length above `max` is an error as soon as the prefix is
/// readable, so a hostile length never makes the caller buffer it.
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok((buf.len() >= PREFIX + len).then_some(len))
}

/// Writes the length prefix of a packet of `len` bytes.
pub fn put_prefix(out: &mut impl BufMut, len: usize) {
    out.put_u32(len as u32);
}

/// Splits as many complete frames as possible off the front of `buf`, calling `f` for each
/// packet. Returns the number of bytes consumed; stops at the first error.
pub fn for_each<E>(
    buf: &[u8],
    max: usize,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<usize, FramedError<E>> {
    let mut pos = 0;
    while let Some(len) = check(&buf[pos..], max).map_err(FramedError::Frame)? {
        f(&buf[pos + PREFIX..pos + PREFIX + len]).map_err(FramedError::Handler)?;
        pos += PREFIX + len;
    }
    Ok(pos)
}

/// An error from [`for_each`]: the framing itself, or the per-packet handler.
#[derive(Debug)]
pub enum FramedError<E> {
    Frame(FrameError),
    Handler(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_big_endian_and_excludes_itself() {
        let mut v = Vec::new();
        put_prefix(&mut v, 0x0102);
        v.extend_from_slice(&[0u8; 0x0102]);
        assert_eq!(&v[..4], &[0, 0, 1, 2]);
        assert_eq!(check(&v, 1 << 16), Ok(Some(0x0102)));
    }

    #[test]
    fn incomplete_prefix_and_body() {
        assert_eq!(check(&[], 10), Ok(None));
        assert_eq!(check(&[0, 0, 0], 10), Ok(None));
        assert_eq!(check(&[0, 0, 0, 2, 7], 10), Ok(None));
        assert_eq!(check(&[0, 0, 0, 2, 7, 8], 10), Ok(Some(2)));
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        assert_eq!(
            check(&[0xff, 0xff, 0xff, 0xff], 65_536),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                max: 65_536
            })
        );
    }

    #[test]
    fn for_each_splits_several_frames_and_keeps_the_partial_one() {
        let buf = [0, 0, 0, 1, 7, 0, 0, 0, 2, 8, 8, 0, 0, 0, 3, 9];
        let mut seen = Vec::new();
        let used = for_each::<()>(&buf, 100, |p| {
            seen.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(used, 11);
        assert_eq!(seen, vec![vec![7], vec![8, 8]]);
    }
}
