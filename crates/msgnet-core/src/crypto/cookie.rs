//! Stateless cookies, as WireGuard uses them, for an endpoint under a handshake flood.
//!
//! Instead of creating handshake state, a loaded endpoint answers with a cookie: a keyed
//! BLAKE2s-128 MAC of the sender's address and sender index under a secret that rotates
//! every [`COOKIE_SECRET_LIFETIME`]. The sender repeats its handshake with the cookie,
//! proving it receives at that address; the endpoint checks it without having stored
//! anything per sender. A cookie stays valid across one rotation (the previous secret is
//! kept), so for between one and two lifetimes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

/// Length of a cookie in bytes.
pub const COOKIE_LEN: usize = 16;

/// How long a cookie secret is used before it is rotated.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// Issues and verifies stateless cookies bound to an address and a sender index.
pub struct CookieJar {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    rotated_at: Instant,
}

impl CookieJar {
    /// Creates a jar with a fresh secret drawn from `rng`, valid from `now`.
    pub fn new(rng: &mut (impl RngCore + CryptoRng), now: Instant) -> Self {
        let mut current = [0u8; 32];
        rng.fill_bytes(&mut current);
        CookieJar {
            current,
            previous: None,
            rotated_at: now,
        }
    }

    /// The cookie for a handshake from `addr` with sender index `sender_index`.
    ///
    /// Rotates the secret first if it is older than [`COOKIE_SECRET_LIFETIME`].
    pub fn cookie(
        &mut self,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
        addr: &SocketAddr,
        sender_index: u32,
    ) -> [u8; COOKIE_LEN] {
        self.rotate(now, rng);
        mac(&self.current, addr, sender_index)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `cookie` was issued for `addr` and `sender_index` under the current or the
    /// previous secret. The comparison is constant-time.
    pub fn verify(
        &mut self,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
        addr: &SocketAddr,
        sender_index: u32,
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        self.rotate(now, rng);
        let current_ok = mac(&self.current, addr, sender_index)
            .verify_slice(cookie)
            .is_ok();
        let previous_ok = match &self.previous {
            Some(prev) => mac(prev, addr, sender_index).verify_slice(cookie).is_ok(),
            None => false,
        };
        current_ok | previous_ok
    }

    fn rotate(&mut self, now: Instant, rng: &mut (impl RngCore + CryptoRng)) {
        let elapsed = now.saturating_duration_since(self.rotated_at);
        if elapsed < COOKIE_SECRET_LIFETIME {
            return;
        }
        let mut fresh = [0u8; 32];
        rng.fill_bytes(&mut fresh);
        if elapsed < COOKIE_SECRET_LIFETIME * 2 {
            // One rotation: the current secret becomes the previous one.
            if let Some(old) = self.previous.as_mut() {
                old.zeroize();
            }
            self.previous = Some(self.current);
            self.rotated_at += COOKIE_SECRET_LIFETIME;
        } else {
            // Two or more rotations missed: nothing issued before is valid any more.
            if let Some(old) = self.previous.as_mut() {
                old.zeroize();
            }
            self.previous = None;
            self.rotated_at = now;
        }
        self.current.zeroize();
        self.current = fresh;
        fresh.zeroize();
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

impl Drop for CookieJar {
    fn drop(&mut self) {
        self.current.zeroize();
        if let Some(prev) = self.previous.as_mut() {
            prev.zeroize();
        }
    }
}

/// Keyed BLAKE2s-128 over IP bytes || port (BE) || sender index (BE).
fn mac(secret: &[u8; 32], addr: &SocketAddr, sender_index: u32) -> Blake2sMac<U16> {
    let mut m = <Blake2sMac<U16> as KeyInit>::new(secret.into());
    match addr.ip() {
        IpAddr::V4(ip) => Mac::update(&mut m, &ip.octets()),
        IpAddr::V6(ip) => Mac::update(&mut m, &ip.octets()),
    }
    Mac::update(&mut m, &addr.port().to_be_bytes());
    Mac::update(&mut m, &sender_index.to_be_bytes());
    m
}
