//! The server side: answering FIND_NODE, GET_VALUE, PUT_VALUE, ADD_PROVIDER,
//! GET_PROVIDERS and PING as go-libp2p and rust-libp2p do.
//!
//! Responses mirror rust-libp2p's byte for byte: `clusterLevelRaw` 9 on FIND_NODE,
//! GET_VALUE and GET_PROVIDERS responses; PUT_VALUE echoes key and record (key, value);
//! PING answers PING; ADD_PROVIDER has no response and only accepts the sender itself as
//! provider (both implementations require that). Closer peers never include the requester.

use crate::kad::Kademlia;
use crate::key::KeyHash;
use crate::record::{wire_peer, PeerInfo, Record};
use crate::wire::{Message, MessageType};
use crate::{KadError, Mode};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use std::time::{Duration, Instant};

/// rust-libp2p's `clusterLevelRaw` in responses.
const RESPONSE_CLUSTER_LEVEL: i32 = 9;

/// A response to send (`None`: send nothing), or why the request was refused.
type Answer = Result<Option<Vec<u8>>, KadError>;

impl Kademlia {
    /// Answers an inbound request from `from`. `from_addrs` are its *listen* addresses if
    /// the host knows it serves `/ipfs/kad/1.0.0` (then it is learned into the routing
    /// table), or empty for a client or an unknown peer (then an existing entry is only
    /// refreshed). Returns the response to send back; `Ok(None)` means send nothing.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: PeerId,
        from_addrs: &[Multiaddr],
        request: &[u8],
    ) -> Result<Option<Vec<u8>>, KadError> {
        self.now = now;
        if self.config.mode == Mode::Client {
            return Err(KadError::ClientMode);
        }
        self.stats.requests_in += 1;
        let result = self.answer(from, from_addrs, request);
        match &result {
            Err(KadError::Malformed(_) | KadError::TooLarge) => self.stats.malformed += 1,
            Err(_) => self.stats.invalid += 1,
            Ok(_) => self.learn(from, from_addrs, now),
        }
        result
    }

    fn answer(&mut self, from: PeerId, from_addrs: &[Multiaddr], request: &[u8]) -> Answer {
        if request.len() > self.config.max_message_size {
            return Err(KadError::TooLarge);
        }
        let req = Message::decode(request)?;
        let keyed = [
            MessageType::FIND_NODE,
            MessageType::GET_VALUE,
            MessageType::GET_PROVIDERS,
            MessageType::ADD_PROVIDER,
        ];
        if keyed.contains(&req.ty) && req.key.is_empty() {
            return Err(KadError::InvalidRequest("empty key"));
        }
        let now = self.now;
        let mut reply = Message::new(req.ty, RESPONSE_CLUSTER_LEVEL, Vec::new());
        match req.ty {
            MessageType::PING => return Ok(Some(Message::new(req.ty, 0, Vec::new()).encode())),
            MessageType::PUT_VALUE => return self.put(req),
            MessageType::ADD_PROVIDER => return self.add_provider_of(from, from_addrs, req),
            MessageType::FIND_NODE => {}
            MessageType::GET_VALUE => {
                let stored = self.records.records.get(&req.key);
                reply.record = stored.filter(|r| r.expires > now).map(|r| {
                    let ttl = u32::try_from((r.expires - now).as_secs()).unwrap_or(u32::MAX);
                    r.record.to_wire(ttl.max(1))
                });
            }
            MessageType::GET_PROVIDERS => {
                let providers = self.providers.get(&req.key, now).into_iter();
                reply.provider_peers = providers
                    .map(|p| match p.peer == self.local {
                        true => wire_peer(&p.peer, &self.local_addrs),
                        false => wire_peer(&p.peer, &p.addrs),
                    })
                    .collect();
            }
            _ => return Err(KadError::InvalidRequest("unknown message type")),
        }
        Ok(Some(self.with_closer(reply, &req.key, &from)))
    }

    /// ADD_PROVIDER: stores the sender as a provider (it may announce no one else).
    fn add_provider_of(&mut self, from: PeerId, from_addrs: &[Multiaddr], req: Message) -> Answer {
        let provider = req
            .provider_peers
            .into_iter()
            .filter_map(PeerInfo::from_wire)
            .find(|p| p.peer == from)
            .ok_or(KadError::InvalidRequest(
                "ADD_PROVIDER without the sender as provider",
            ))?;
        let addrs = if provider.addrs.is_empty() {
            from_addrs.to_vec()
        } else {
            provider.addrs
        };
        if addrs.is_empty() {
            return Err(KadError::InvalidRequest("ADD_PROVIDER without addresses"));
        }
        let info = PeerInfo::new(from, addrs);
        let expires = self.now + self.config.provider_ttl;
        if !self.providers.add(&req.key, info, expires) {
            return Err(KadError::StoreFull);
        }
        Ok(None)
    }

    fn put(&mut self, req: Message) -> Answer {
        let r = req
            .record
            .ok_or(KadError::InvalidRequest("PUT_VALUE without record"))?;
        if !req.key.is_empty() && req.key != r.key {
            return Err(KadError::InvalidRequest("PUT_VALUE key mismatch"));
        }
        let wire_ttl = r.ttl;
        let record = Record::from_wire(r).ok_or(KadError::InvalidRequest("bad publisher"))?;
        if !self.acceptable(&record) {
            return Err(KadError::InvalidRecord);
        }
        let now = self.now;
        if let Some(old) = self.records.get(&record.key, now) {
            if *old != record && self.config.validator.select(&record.key, &[&record, old]) != 0 {
                return Err(KadError::InvalidRequest("stored record is better"));
            }
        }
        let mut ttl = self.config.record_ttl;
        if wire_ttl > 0 {
            ttl = ttl.min(Duration::from_secs(u64::from(wire_ttl)));
        }
        // The echo carries key and value only, as rust-libp2p's does.
        let echo = Record::new(record.key.clone(), record.value.clone());
        let reply = Message {
            record: Some(echo.to_wire(0)),
            ..Message::new(MessageType::PUT_VALUE, 0, echo.key.clone())
        };
        if !self.records.put(record, now + ttl, false) {
            return Err(KadError::StoreFull);
        }
        Ok(Some(reply.encode()))
    }

    /// Encodes `msg` with up to k closer peers to `key` (excluding `exclude`), copied from
    /// the routing table's pre-encoded entries.
    fn with_closer(&self, msg: Message, key: &[u8], exclude: &PeerId) -> Vec<u8> {
        let closest = self.table.closest(&KeyHash::of(key), self.config.k + 1);
        let raw: Vec<&[u8]> = closest
            .into_iter()
            .filter(|e| e.peer != *exclude)
            .take(self.config.k)
            .map(|e| e.wire.as_slice())
            .collect();
        msg.encode_with_raw_closer(&raw)
    }
}
