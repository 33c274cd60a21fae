//! Truncation and expansion of packet numbers and message sequence numbers.
//!
//! Both follow RFC 9000 Appendix A.2 (sending) and A.3 (receiving) exactly. The neutral
//! helpers [`truncate_len`] and [`expand`] serve both number spaces;
//! [`encode_pn_len`] and [`decode_pn`] are the packet-number spellings with the RFC's
//! arguments.
//!
//! Correctness condition (the RFC's): the receiver recovers the full number if it differs
//! from the receiver's `expected_next` by less than half the window (2^(8·len−1)).
//! [`truncate_len`] picks `len` so that this holds while the receiver has seen at least
//! `acked`. Full numbers must stay below 2^62, as in QUIC.

/// Bytes needed to send `full` when the peer is known to have received `acked`
/// (`None`: nothing acknowledged yet). Always 1..=4.
///
/// RFC 9000 A.2: enough bits to represent twice the number of unacknowledged numbers
/// (`full − acked`, or `full + 1` when nothing is acknowledged). Beyond what 4 bytes can
/// represent the result stays 4; the caller must not let more than 2^31 numbers go
/// unacknowledged.
pub fn truncate_len(full: u64, acked: Option<u64>) -> usize {
    let unacked = match acked {
        Some(acked) => full.saturating_sub(acked),
        None => full.saturating_add(1),
    };
    let range = unacked.saturating_mul(2);
    match range {
        0..0x100 => 1,
        0x100..0x1_0000 => 2,
        0x1_0000..0x100_0000 => 3,
        _ => 4,
    }
}

/// Recovers a full number from its `len`-byte truncation, given the number the receiver
/// expects next (largest received + 1, or 0 when nothing was received). RFC 9000 A.3.
///
/// `len` is clamped to 1..=4 and `truncated` is masked to `len` bytes, so any input gives
/// some result without panicking.
pub fn expand(expected_next: u64, truncated: u64, len: usize) -> u64 {
    let bits = 8 * len.clamp(1, 4) as u32;
    let win: u64 = 1 << bits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected_next & !mask) | (truncated & mask);
    let below = expected_next
        .checked_sub(hwin)
        .is_some_and(|low| candidate <= low);
    if below && candidate < (1u64 << 62) - win {
        return candidate + win;
    }
    if candidate > expected_next.saturating_add(hwin) && candidate >= win {
        return candidate - win;
    }
    candidate
}

/// Packet-number length (1..=4 bytes) for `full_pn`, RFC 9000 A.2; see [`truncate_len`].
pub fn encode_pn_len(full_pn: u64, largest_acked: Option<u64>) -> usize {
    truncate_len(full_pn, largest_acked)
}

/// Full packet number from its truncation, RFC 9000 A.3; `largest_received = None` means
/// the expected packet number is 0. See [`expand`].
pub fn decode_pn(largest_received: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest_received.map_or(0, |l| l.saturating_add(1));
    expand(expected, truncated, pn_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        // RFC 9000 A.2: largest acked 0xabe8b3, sending 0xac5c02 needs 16 bits;
        // sending 0xace8fe needs 18 bits, so 3 bytes.
        assert_eq!(encode_pn_len(0xac5c02, Some(0xabe8b3)), 2);
        assert_eq!(encode_pn_len(0xace8fe, Some(0xabe8b3)), 3);
        // RFC 9000 A.3: largest 0xa82f30ea, truncated 0x9b32 (16 bits) -> 0xa82f9b32.
        assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
    }

    #[test]
    fn small_and_edges() {
        assert_eq!(encode_pn_len(0, None), 1);
        assert_eq!(encode_pn_len(127, None), 2);
        assert_eq!(encode_pn_len(126, None), 1);
        assert_eq!(encode_pn_len(5, Some(10)), 1);
        assert_eq!(encode_pn_len(u64::MAX, None), 4);
        assert_eq!(decode_pn(None, 0, 1), 0);
        assert_eq!(decode_pn(None, 5, 1), 5);
        assert_eq!(decode_pn(Some(255), 0, 1), 256);
        assert_eq!(
            decode_pn(Some(u64::MAX), 7, 9),
            decode_pn(Some(u64::MAX), 7, 4)
        );
        assert_eq!(expand(0, u64::MAX, 0), 0xff);
    }
}
