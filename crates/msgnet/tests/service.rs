//! `msgnet::service`: a small sans-IO service (a ping with a one-way note and a timer) run
//! by `ServiceHandle` on two real loopback UDP hosts (127.0.0.1 only). Every wait is
//! bounded by a failure guard; assertions are on contents, counts and error variants.

use std::future::Future;
use std::time::{Duration, Instant};

use msgnet::service::{
    dialable_listen_addrs, Closed, Outcome, Output, OutputKind, Reply, Service, ServiceHandle,
};
use msgnet::{Bytes, Host, HostError, IncomingMessage, Keypair, Multiaddr, PeerId, SendError};

const GUARD: Duration = Duration::from_secs(60);
const PROTOCOL: &str = "/test/ping/1";

/// Answers requests with `pong:` + payload, counts one-way notes and where they came from.
/// Its command `ping` sends a request and a note to a peer and is done once both have an
/// outcome; it then arms a timer, whose expiry is counted.
#[derive(Default)]
struct Ping {
    outputs: Vec<Output>,
    next_token: u64,
    /// Running pings: command id, request outcome, note outcome.
    pings: Vec<(u64, Option<Outcome>, Option<Outcome>)>,
    done: Vec<(u64, (Outcome, Outcome))>,
    notes: Vec<(PeerId, Bytes, Vec<Multiaddr>)>,
    timer: Option<Instant>,
    timeouts: u32,
}

impl Ping {
    /// Starts a ping of `peer` at `addrs`; refuses an empty payload.
    fn ping(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        payload: &'static str,
    ) -> Result<u64, &'static str> {
        if payload.is_empty() {
            return Err("empty payload");
        }
        let id = self.next_token;
        for kind in [OutputKind::Request, OutputKind::Message] {
            self.outputs.push(Output {
                token: self.next_token,
                peer,
                addrs: addrs.clone(),
                protocol: PROTOCOL.to_string(),
                payload: Bytes::from(payload),
                kind,
                timeout: Duration::from_secs(20),
            });
            self.next_token += 1;
        }
        self.pings.push((id, None, None));
        Ok(id)
    }
}

impl Service for Ping {
    type Done = (Outcome, Outcome);

    fn handle_message(
        &mut self,
        _now: Instant,
        msg: &IncomingMessage,
        remote: &[Multiaddr],
    ) -> Option<Reply> {
        if !msg.is_request() {
            self.notes
                .push((msg.peer, msg.payload.clone(), remote.to_vec()));
            return None;
        }
        match &msg.payload[..] {
            b"fail" => Some(Err((7, "asked to fail".into()))),
            b"drop" => None,
            p => Some(Ok(Bytes::from([b"pong:", p].concat()))),
        }
    }

    fn handle_outcome(&mut self, now: Instant, token: u64, outcome: Outcome) {
        let i = self
            .pings
            .iter()
            .position(|(id, _, _)| *id == token & !1)
            .expect("a ping of ours");
        let slot = if token & 1 == 0 {
            &mut self.pings[i].1
        } else {
            &mut self.pings[i].2
        };
        assert!(slot.replace(outcome).is_none(), "outcome reported twice");
        if let (id, Some(_), Some(_)) = &self.pings[i] {
            let id = *id;
            let (_, request, note) = self.pings.remove(i);
            self.done
                .push((id, (request.expect("set"), note.expect("set"))));
            self.timer = Some(now + Duration::from_millis(50));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        assert!(
            self.timer.is_some_and(|t| now >= t),
            "timer called early or unarmed"
        );
        self.timer = None;
        self.timeouts += 1;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    fn poll_output(&mut self) -> Option<Output> {
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    fn poll_done(&mut self) -> Option<(u64, Self::Done)> {
        self.done.pop()
    }
}

async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {GUARD:?}"),
    }
}

async fn host() -> Host {
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().expect("valid multiaddr");
    Host::builder(Keypair::generate_ed25519())
        .listen(listen)
        .build()
        .await
        .expect("host builds")
}

async fn ping(
    svc: &ServiceHandle<Ping>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    payload: &'static str,
) -> (Outcome, Outcome) {
    let done = svc.command(move |s, _| s.ping(peer, addrs, payload));
    guard("ping", done)
        .await
        .expect("task running")
        .expect("ping started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answers_sends_and_is_told_outcomes_and_timeouts() {
    let (a, b) = (host().await, host().await);
    let sa = ServiceHandle::spawn(&a, &[], Ping::default()).expect("spawn a");
    let sb = ServiceHandle::spawn(&b, &[PROTOCOL], Ping::default()).expect("spawn b");
    assert!(matches!(
        ServiceHandle::spawn(&b, &[PROTOCOL], Ping::default()),
        Err(HostError::AlreadyHandled(p)) if p == PROTOCOL
    ));
    let (pb, b_addrs) = (b.local_peer_id(), dialable_listen_addrs(&b));
    assert_eq!(b_addrs, b.listen_addrs(), "127.0.0.1 is dialable");

    // The driver gives b's address (from the output) to a's host, sends the request and
    // the note, and reports both outcomes; b answered the request and got the note with
    // a's UDP address.
    let (request, note) = ping(&sa, pb, b_addrs.clone(), "hello").await;
    assert_eq!(request.payload(), Some(&b"pong:hello"[..]));
    assert_eq!(note, Outcome::Sent(Ok(())));
    assert_eq!(note.payload(), Some(&[][..]));
    let notes = guard("note", async {
        loop {
            let notes = sb.call(|s| s.notes.clone()).await.expect("b running");
            if !notes.is_empty() {
                return notes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].0, &notes[0].1[..]),
        (a.local_peer_id(), &b"hello"[..])
    );
    assert_eq!(
        notes[0].2,
        a.listen_addrs(),
        "the sender's UDP listen address"
    );

    // A failed answer reaches the requester as the service's code and reason; a request
    // left unanswered fails with the host's code.
    let (request, _) = ping(&sa, pb, vec![], "fail").await;
    assert!(matches!(
        request,
        Outcome::Response(Err(SendError::Remote { code: 7, .. }))
    ));
    assert_eq!(request.payload(), None);
    let (request, _) = ping(&sa, pb, vec![], "drop").await;
    assert!(matches!(
        request,
        Outcome::Response(Err(SendError::Remote { code: 1, .. }))
    ));

    // The timer armed after each ping fires (at most once per arming).
    guard("timer", async {
        while sa.call(|s| s.timeouts).await.expect("a running") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // A command the service refuses is not waited for.
    let refused = sa.command(move |s, _| s.ping(pb, vec![], "")).await;
    assert_eq!(refused.expect("task running"), Err("empty payload"));

    // a handles nothing: b's requests to it fail as unsupported.
    let pa = a.local_peer_id();
    let (request, note) = ping(&sb, pa, dialable_listen_addrs(&a), "to a").await;
    assert!(matches!(
        request,
        Outcome::Response(Err(SendError::UnsupportedProtocol(_)))
    ));
    assert!(matches!(
        note,
        Outcome::Sent(Err(SendError::UnsupportedProtocol(_)))
    ));

    // Closing b's task removes its handler and fails later calls.
    sb.close().await;
    assert_eq!(sb.call(|s| s.timeouts).await, Err(Closed));
    let (request, _) = ping(&sa, pb, vec![], "after close").await;
    assert!(matches!(
        request,
        Outcome::Response(Err(SendError::UnsupportedProtocol(_)))
    ));

    // Dropping the last handle stops a's task too: the protocol can be handled again.
    let sa2 = sa.clone();
    drop(sa);
    assert!(
        sa2.call(|s| s.timeouts).await.is_ok(),
        "a clone keeps the task"
    );
    sa2.close().await;
    let again = ServiceHandle::spawn(&b, &[PROTOCOL], Ping::default()).expect("handler free");
    again.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_listen_addresses_are_not_dialable() {
    let listen: Multiaddr = "/ip4/0.0.0.0/udp/0".parse().expect("valid multiaddr");
    let h = Host::builder(Keypair::generate_ed25519())
        .listen(listen)
        .build()
        .await
        .expect("host");
    assert!(!h.listen_addrs().is_empty());
    assert!(
        dialable_listen_addrs(&h).is_empty(),
        "{:?}",
        h.listen_addrs()
    );
    h.close().await;
}
