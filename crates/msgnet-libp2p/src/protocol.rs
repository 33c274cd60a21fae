//! Stream upgrades and the bridge's length-prefixed I/O.
//!
//! Inbound, one upgrade offers `/msgnet/1.0.0` and every bridged protocol id (the
//! registered handlers) in a single multistream-select; outbound streams use
//! `ReadyUpgrade` with the one protocol wanted.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::io;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::upgrade::{InboundUpgrade, UpgradeInfo};
use libp2p::swarm::Stream;
use libp2p::StreamProtocol;

/// `/msgnet/1.0.0` as a [`StreamProtocol`].
pub(crate) const MSGNET: StreamProtocol = StreamProtocol::new(msgnet_core::stream::PROTOCOL);

/// The inbound upgrade: `/msgnet/1.0.0` first, then the bridged protocols (the
/// registered handlers).
#[derive(Debug, Clone)]
pub struct InboundProtocols {
    pub(crate) bridged: Arc<Vec<StreamProtocol>>,
}

impl UpgradeInfo for InboundProtocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        let mut v = Vec::with_capacity(1 + self.bridged.len());
        v.push(MSGNET);
        v.extend(self.bridged.iter().filter(|p| **p != MSGNET).cloned());
        v.into_iter()
    }
}

impl InboundUpgrade<Stream> for InboundProtocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        ready(Ok((stream, info)))
    }
}

/// Reads one `uvarint length || bytes` message of at most `max` bytes.
pub(crate) async fn read_lp<S: AsyncRead + Unpin>(s: &mut S, max: usize) -> io::Result<Vec<u8>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if len > max as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "message too large"));
        }
        if b[0] & 0x80 == 0 {
            let mut buf = vec![0u8; len as usize];
            s.read_exact(&mut buf).await?;
            return Ok(buf);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "length prefix too long"))
}

/// Writes one `uvarint length || bytes` message and flushes.
pub(crate) async fn write_lp<S: AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(data.len() + 10);
    msgnet_core::wire::write_varint(&mut buf, data.len() as u64);
    buf.extend_from_slice(data);
    s.write_all(&buf).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_round_trip() {
        futures::executor::block_on(async {
            for len in [0usize, 1, 127, 128, 300, 70_000] {
                let data = vec![7u8; len];
                let mut wire = Vec::new();
                write_lp(&mut futures::io::Cursor::new(&mut wire), &data).await.expect("write");
                let back = read_lp(&mut &wire[..], 1 << 20).await.expect("read");
                assert_eq!(back, data);
            }
            assert!(read_lp(&mut &[0x81u8, 0x01][..], 100).await.is_err());
            assert!(read_lp(&mut &[0xffu8; 12][..], usize::MAX).await.is_err());
            assert!(read_lp(&mut &[0x05u8, 1, 2][..], 100).await.is_err());
        });
    }
}
