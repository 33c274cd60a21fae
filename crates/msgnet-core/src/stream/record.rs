//! Records: `uvarint length || bytes`, the framing of a `/msgnet/1.0.0` stream (and, with
//! a different payload, of the request/response bridge streams).
//!
//! [`RecordDecoder`] cuts an arbitrarily chunked byte stream into records, buffering at
//! most one partial record; [`encode_record`] writes one.

use crate::wire::{read_varint, write_varint, WireError};

use super::StreamError;

/// Largest record body, in bytes (1 MiB).
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Longest minimal uvarint encoding of a length ≤ [`MAX_RECORD_LEN`].
const MAX_PREFIX_LEN: usize = 3;

/// Appends `uvarint(body.len()) || body` to `out`.
///
/// Precondition: `body.len() <= MAX_RECORD_LEN` (checked by `debug_assert!`; a longer
/// body is written anyway and the peer will refuse it).
pub fn encode_record(out: &mut Vec<u8>, body: &[u8]) {
    debug_assert!(body.len() <= MAX_RECORD_LEN, "record too large");
    write_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Parses a length prefix at the start of `buf`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((body_len, prefix_len)))` when complete.
fn parse_prefix(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, StreamError> {
    match read_varint(buf) {
        Ok((len, n)) if len > max as u64 || n > MAX_PREFIX_LEN => {
            Err(StreamError::RecordTooLarge(len))
        }
        Ok((len, n)) => Ok(Some((len as usize, n))),
        Err(WireError::Truncated) if buf.len() < MAX_PREFIX_LEN => Ok(None),
        Err(WireError::Truncated) | Err(WireError::VarintOverflow) => {
            Err(StreamError::RecordTooLarge(u64::MAX))
        }
        Err(e) => Err(StreamError::Wire(e)),
    }
}

/// Cuts a byte stream into records. Holds at most one partial record (≤ the maximum
/// record length plus its prefix).
#[derive(Debug)]
pub struct RecordDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl Default for RecordDecoder {
    fn default() -> Self {
        Self::new(MAX_RECORD_LEN)
    }
}

impl RecordDecoder {
    /// A decoder accepting records of at most `max` bytes (capped at [`MAX_RECORD_LEN`]).
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max: max.min(MAX_RECORD_LEN) }
    }

    /// Bytes of a partial record currently buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds `input`, calling `on_record` with the body of every record it completes, in
    /// order. Stops at the first error (from the framing or from `on_record`); the
    /// decoder is then in an unspecified state and should be dropped.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StreamError>,
    {
        while !input.is_empty() {
            if self.buf.is_empty() {
                // Fast path: whole records straight from the input.
                match parse_prefix(input, self.max)? {
                    Some((len, n)) if input.len() >= n + len => {
                        let (record, rest) = input.split_at(n + len);
                        on_record(record.get(n..).unwrap_or_default())?;
                        input = rest;
                    }
                    _ => {
                        self.buf.extend_from_slice(input);
                        return Ok(());
                    }
                }
                continue;
            }
            // Slow path: complete the buffered prefix, then the buffered record.
            let need = match parse_prefix(&self.buf, self.max)? {
                None => 1,
                Some((len, n)) => (n + len).saturating_sub(self.buf.len()),
            };
            let take = need.min(input.len());
            let (head, rest) = input.split_at(take);
            self.buf.extend_from_slice(head);
            input = rest;
            if let Some((len, n)) = parse_prefix(&self.buf, self.max)? {
                if self.buf.len() == n + len {
                    let record = std::mem::take(&mut self.buf);
                    let result = on_record(record.get(n..).unwrap_or_default());
                    self.buf = record;
                    self.buf.clear();
                    result?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dec: &mut RecordDecoder, input: &[u8]) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut out = Vec::new();
        dec.feed(input, |r| {
            out.push(r.to_vec());
            Ok::<_, StreamError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn chunked_records() {
        let mut wire = Vec::new();
        let bodies: Vec<Vec<u8>> = vec![vec![], vec![1], vec![7; 300], vec![9; 20_000]];
        for b in &bodies {
            encode_record(&mut wire, b);
        }
        for chunk in [1, 2, 3, 7, 128, 1000, wire.len()] {
            let mut dec = RecordDecoder::default();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                got.extend(collect(&mut dec, c).expect("valid"));
            }
            assert_eq!(got, bodies, "chunk {chunk}");
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn too_large() {
        let mut dec = RecordDecoder::default();
        let mut wire = Vec::new();
        write_varint(&mut wire, MAX_RECORD_LEN as u64 + 1);
        assert!(matches!(collect(&mut dec, &wire), Err(StreamError::RecordTooLarge(_))));
        for bytes in [&[0xff, 0xff, 0xff][..], &[0x80, 0x80, 0x80, 0x01]] {
            let mut dec = RecordDecoder::default();
            assert!(matches!(collect(&mut dec, bytes), Err(StreamError::RecordTooLarge(_))));
            let mut dec = RecordDecoder::default();
            let r = bytes.iter().try_for_each(|b| collect(&mut dec, &[*b]).map(drop));
            assert!(matches!(r, Err(StreamError::RecordTooLarge(_))));
        }
        let mut dec = RecordDecoder::default();
        assert!(matches!(collect(&mut dec, &[0x80, 0x00]), Err(StreamError::Wire(_))));
        // Exactly the limit is fine, and a smaller configured limit applies.
        let mut dec = RecordDecoder::new(10);
        assert_eq!(collect(&mut dec, &[10; 11]).expect("ok").len(), 1);
        assert!(collect(&mut dec, &[11]).is_err());
    }
}
