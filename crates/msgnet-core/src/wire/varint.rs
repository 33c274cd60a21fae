//! Unsigned LEB128 varints (multiformats `unsigned-varint`).
//!
//! Seven value bits per byte, least significant group first, the high bit of a byte set
//! when another byte follows. At most 9 bytes, so values are below 2^63, and the encoding
//! must be minimal: a last group of `0x00` after the first byte is
//! [`WireError::NonMinimalVarint`].

use super::error::WireError;

/// The largest value a varint can carry: 2^63 − 1.
pub const MAX_VARINT: u64 = (1 << 63) - 1;

/// The longest varint encoding, in bytes.
pub const MAX_VARINT_LEN: usize = 9;

/// Number of bytes [`write_varint`] writes for `v` (1..=9).
///
/// Values above [`MAX_VARINT`] are counted as `v & MAX_VARINT`, as [`write_varint`]
/// writes them.
pub fn varint_len(v: u64) -> usize {
    let v = v & MAX_VARINT;
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Appends the minimal varint encoding of `v` to `out`.
///
/// Precondition: `v <= MAX_VARINT`. A larger value is a caller bug: it trips a
/// `debug_assert!`, and in release builds only its low 63 bits are written.
pub fn write_varint(out: &mut Vec<u8>, v: u64) {
    debug_assert!(v <= MAX_VARINT, "varint value {v} exceeds 2^63-1");
    let mut v = v & MAX_VARINT;
    loop {
        let group = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

/// Decodes one varint from the start of `buf`, returning the value and its length.
pub fn read_varint(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let byte = *buf.get(i).ok_or(WireError::Truncated)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(WireError::NonMinimalVarint);
            }
            return Ok((value, i + 1));
        }
    }
    Err(WireError::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v));
        out
    }

    #[test]
    fn edges() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(16383), [0xff, 0x7f]);
        assert_eq!(enc(16384), [0x80, 0x80, 0x01]);
        let max = enc(MAX_VARINT);
        assert_eq!(max, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        for v in [
            0,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            MAX_VARINT,
        ] {
            let e = enc(v);
            assert_eq!(read_varint(&e), Ok((v, e.len())));
        }
    }

    #[test]
    fn trailing_input_is_left_alone() {
        assert_eq!(read_varint(&[0x80, 0x01, 0xff]), Ok((128, 2)));
    }

    #[test]
    fn overflow() {
        assert_eq!(read_varint(&[0xff; 9]), Err(WireError::VarintOverflow));
        assert_eq!(read_varint(&[0xff; 12]), Err(WireError::VarintOverflow));
        let mut ten = vec![0x80; 9];
        ten.push(0x01);
        assert_eq!(read_varint(&ten), Err(WireError::VarintOverflow));
    }

    #[test]
    fn non_minimal() {
        assert_eq!(read_varint(&[0x80, 0x00]), Err(WireError::NonMinimalVarint));
        assert_eq!(read_varint(&[0x81, 0x00]), Err(WireError::NonMinimalVarint));
        assert_eq!(
            read_varint(&[0xff, 0x80, 0x00]),
            Err(WireError::NonMinimalVarint)
        );
        // A lone zero is the minimal encoding of 0.
        assert_eq!(read_varint(&[0x00]), Ok((0, 1)));
    }

    #[test]
    fn truncated() {
        assert_eq!(read_varint(&[]), Err(WireError::Truncated));
        assert_eq!(read_varint(&[0x80]), Err(WireError::Truncated));
        assert_eq!(read_varint(&[0xff; 8]), Err(WireError::Truncated));
    }
}
