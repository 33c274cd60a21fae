//! The server side: answering FIND_NODE, GET_VALUE, PUT_VALUE, ADD_PROVIDER,
//! GET_PROVIDERS and PING as go-libp2p and rust-libp2p do.
//!
//! Responses mirror rust-libp2p's byte for byte: `clusterLevelRaw` 9 on FIND_NODE,
//! GET_VALUE and GET_PROVIDERS responses; PUT_VALUE echoes key and record (key, value);
//! PING answers PING; ADD_PROVIDER has no response and only accepts the sender itself as
//! provider (both implementations require that). Closer peers never include the requester.

use crate::kad::{parse_peer, Kademlia};
use crate::key::KeyHash;
use crate::record::{PeerInfo, Record};
use crate::wire::{Message, MessageType, WireRecord};
use crate::{KadError, Mode};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use std::time::Instant;

/// rust-libp2p's `clusterLevelRaw` in responses.
const RESPONSE_CLUSTER_LEVEL: i32 = 9;

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
        let result = self.answer(now, from, from_addrs, request);
        match &result {
            Err(KadError::Malformed(_) | KadError::TooLarge) => self.stats.malformed += 1,
            Err(_) => self.stats.invalid += 1,
            Ok(_) => self.learn(from, from_addrs, now),
        }
        result
    }

    fn answer(
        &mut self,
        now: Instant,
        from: PeerId,
        from_addrs: &[Multiaddr],
        request: &[u8],
    ) -> Result<Option<Vec<u8>>, KadError> {
        if request.len() > self.config.max_message_size {
            return Err(KadError::TooLarge);
        }
        let req = Message::decode(request)?;
        let reply = |ty: MessageType| Message {
            ty,
            cluster_level_raw: RESPONSE_CLUSTER_LEVEL,
            ..Message::default()
        };
        match req.ty {
            MessageType::PING => Ok(Some(
                Message {
                    ty: MessageType::PING,
                    ..Message::default()
                }
                .encode(),
            )),
            MessageType::FIND_NODE => {
                let key = nonempty(&req.key)?;
                Ok(Some(self.with_closer(
                    reply(MessageType::FIND_NODE),
                    key,
                    &from,
                )))
            }
            MessageType::GET_VALUE => {
                let key = nonempty(&req.key)?;
                let record = self
                    .records
                    .records
                    .get(key)
                    .filter(|r| r.expires > now)
                    .map(|r| WireRecord {
                        key: r.record.key.clone(),
                        value: r.record.value.clone(),
                        publisher: r.record.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
                        ttl: u32::try_from((r.expires - now).as_secs())
                            .unwrap_or(u32::MAX)
                            .max(1),
                        ..WireRecord::default()
                    });
                let msg = Message {
                    record,
                    ..reply(MessageType::GET_VALUE)
                };
                Ok(Some(self.with_closer(msg, key, &from)))
            }
            MessageType::GET_PROVIDERS => {
                let key = nonempty(&req.key)?;
                let provider_peers = self
                    .providers
                    .get(key, now)
                    .into_iter()
                    .map(|p| {
                        let addrs = if p.peer == self.local {
                            &self.local_addrs
                        } else {
                            &p.addrs
                        };
                        self.wire_peer(&p.peer, addrs, false)
                    })
                    .collect();
                let msg = Message {
                    provider_peers,
                    ..reply(MessageType::GET_PROVIDERS)
                };
                Ok(Some(self.with_closer(msg, key, &from)))
            }
            MessageType::PUT_VALUE => self.put(now, req).map(|m| Some(m.encode())),
            MessageType::ADD_PROVIDER => {
                let key = nonempty(&req.key)?;
                let provider = req
                    .provider_peers
                    .into_iter()
                    .filter_map(parse_peer)
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
                if !self.providers.add(
                    key,
                    PeerInfo { peer: from, addrs },
                    now + self.config.provider_ttl,
                ) {
                    return Err(KadError::StoreFull);
                }
                Ok(None)
            }
            _ => Err(KadError::InvalidRequest("unknown message type")),
        }
    }

    fn put(&mut self, now: Instant, req: Message) -> Result<Message, KadError> {
        let r = req
            .record
            .ok_or(KadError::InvalidRequest("PUT_VALUE without record"))?;
        if r.key.is_empty() || (!req.key.is_empty() && req.key != r.key) {
            return Err(KadError::InvalidRequest("PUT_VALUE key mismatch"));
        }
        if r.value.len() > self.config.max_value_size {
            return Err(KadError::InvalidRecord);
        }
        let publisher = match r.publisher.is_empty() {
            true => None,
            false => Some(
                PeerId::from_bytes(&r.publisher)
                    .map_err(|_| KadError::InvalidRequest("bad publisher"))?,
            ),
        };
        let record = Record {
            key: r.key,
            value: r.value,
            publisher,
        };
        if !self.config.validator.validate(&record) {
            return Err(KadError::InvalidRecord);
        }
        if let Some(old) = self.records.get(&record.key, now) {
            if *old != record && self.config.validator.select(&record.key, &[&record, old]) != 0 {
                return Err(KadError::InvalidRequest("stored record is better"));
            }
        }
        let mut ttl = self.config.record_ttl;
        if r.ttl > 0 {
            ttl = ttl.min(std::time::Duration::from_secs(u64::from(r.ttl)));
        }
        let reply = Message {
            ty: MessageType::PUT_VALUE,
            key: record.key.clone(),
            record: Some(WireRecord {
                key: record.key.clone(),
                value: record.value.clone(),
                ..WireRecord::default()
            }),
            ..Message::default()
        };
        if !self.records.put(record, now + ttl, false) {
            return Err(KadError::StoreFull);
        }
        Ok(reply)
    }

    /// Encodes `msg` with up to k closer peers to `key` (excluding `exclude`), copied from
    /// the routing table's pre-encoded entries.
    fn with_closer(&self, msg: Message, key: &[u8], exclude: &PeerId) -> Vec<u8> {
        let closest = self.table.closest(&KeyHash::of(key), self.config.k + 1);
        let raw: Vec<(&[u8], bool)> = closest
            .into_iter()
            .filter(|e| e.peer != *exclude)
            .take(self.config.k)
            .map(|e| (e.wire.as_slice(), e.connected))
            .collect();
        msg.encode_with_raw_closer(&raw)
    }
}

fn nonempty(key: &[u8]) -> Result<&[u8], KadError> {
    if key.is_empty() {
        Err(KadError::InvalidRequest("empty key"))
    } else {
        Ok(key)
    }
}
