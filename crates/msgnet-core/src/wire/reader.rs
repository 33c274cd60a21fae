//! A checked cursor over a byte slice, in the style of rustls' `Reader`.
//!
//! Every read either returns the requested bytes and advances, or returns
//! [`WireError::Truncated`] (or a varint error) and leaves the cursor where it was. No
//! method panics on any input.

use super::error::WireError;
use super::varint::read_varint;

/// A cursor over a borrowed byte slice. Integers are big-endian.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Number of unread bytes.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Consumes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(WireError::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    /// Consumes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    /// Consumes one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// Consumes a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Consumes a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Consumes a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Consumes a big-endian unsigned integer of `len` bytes (0..=8).
    ///
    /// A `len` above 8 is [`WireError::InvalidValue`].
    pub fn uint(&mut self, len: usize) -> Result<u64, WireError> {
        if len > 8 {
            return Err(WireError::InvalidValue("integer length"));
        }
        let bytes = self.bytes(len)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Consumes a varint (see [`crate::wire::read_varint`]).
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let (v, n) = read_varint(self.buf)?;
        self.buf = self.buf.get(n..).unwrap_or_default();
        Ok(v)
    }

    /// Consumes a varint and checks it is at most `max`, else
    /// [`WireError::InvalidValue`]`(what)`.
    pub fn varint_max(&mut self, max: u64, what: &'static str) -> Result<u64, WireError> {
        let v = self.varint()?;
        if v > max {
            return Err(WireError::InvalidValue(what));
        }
        Ok(v)
    }

    /// Consumes every remaining byte.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// [`WireError::TrailingBytes`] unless every byte has been read.
    pub fn expect_end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_bounds() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0xac, 0x02, 0xee]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Err(WireError::Truncated));
        assert_eq!(r.remaining(), 5);
        assert_eq!(r.uint(2), Ok(0x0809));
        assert_eq!(r.varint(), Ok(300));
        assert_eq!(r.expect_end(), Err(WireError::TrailingBytes));
        assert_eq!(r.bytes(2), Err(WireError::Truncated));
        assert_eq!(r.rest(), &[0xee]);
        assert_eq!(r.expect_end(), Ok(()));
        assert_eq!(r.u8(), Err(WireError::Truncated));
        assert_eq!(r.uint(9), Err(WireError::InvalidValue("integer length")));
    }

    #[test]
    fn failed_varint_does_not_advance() {
        let mut r = Reader::new(&[0x80, 0x00]);
        assert_eq!(r.varint(), Err(WireError::NonMinimalVarint));
        assert_eq!(r.remaining(), 2);
        let mut r = Reader::new(&[0x81, 0x01]);
        assert_eq!(r.varint_max(128, "x"), Err(WireError::InvalidValue("x")));
    }
}
