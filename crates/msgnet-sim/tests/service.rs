//! Hosted services: a small timer-driven service on several nodes, checked for what
//! reaches it (messages, responses, outcomes, session changes, timers at the right
//! virtual instants) and for determinism (same seed, same trace hash and same service
//! state; another seed, another run), in the sequential loop and in windowed mode.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use msgnet_core::{EndpointConfig, IncomingMessage, PeerId, SendError, SendOptions};
use msgnet_sim::{LinkParams, Loss, NodeId, Outcome, Output, OutputKind, Reply, Service, SessionChange, Sim};

const PROTO: &str = "/tick/1";

/// Every `period` sends a request ("tick" n) and a one-way message to the next peer of
/// its list, round robin; answers requests with the payload reversed.
struct Ticker {
    peers: Vec<(PeerId, Option<SocketAddr>)>,
    period: Duration,
    next: Option<Instant>,
    n: u64,
    out: Vec<Output>,
    /// (token, response payload) of answered requests.
    answered: Vec<(u64, Bytes)>,
    /// Tokens of failed requests and why.
    failed: Vec<(u64, SendError)>,
    /// Tokens of acknowledged one-way messages.
    acked: Vec<u64>,
    /// Payloads received (requests and messages), with the sender.
    received: Vec<(PeerId, Bytes, bool)>,
    /// Instants the timer fired at.
    fired: Vec<Instant>,
    sessions_up: u32,
}

impl Ticker {
    fn new(peers: Vec<(PeerId, Option<SocketAddr>)>, period: Duration, start: Instant) -> Self {
        Ticker {
            peers,
            period,
            next: Some(start + period),
            n: 0,
            out: Vec::new(),
            answered: Vec::new(),
            failed: Vec::new(),
            acked: Vec::new(),
            received: Vec::new(),
            fired: Vec::new(),
            sessions_up: 0,
        }
    }
}

impl Service for Ticker {
    fn protocols(&self) -> Vec<String> {
        vec![PROTO.to_string()]
    }

    fn handle_message(&mut self, _now: Instant, msg: &IncomingMessage, remote: Option<SocketAddr>) -> Option<Reply> {
        assert!(remote.is_some(), "a message arrives on a session with a remote address");
        self.received.push((msg.peer, msg.payload.clone(), msg.request.is_some()));
        let mut r = msg.payload.to_vec();
        r.reverse();
        Some(Ok(Bytes::from(r)))
    }

    fn handle_outcome(&mut self, _now: Instant, token: u64, outcome: Outcome) {
        match outcome {
            Outcome::Response(Ok(b)) => self.answered.push((token, b)),
            Outcome::Response(Err(e)) => self.failed.push((token, e)),
            Outcome::Sent(Ok(())) => self.acked.push(token),
            Outcome::Sent(Err(e)) => self.failed.push((token, e)),
        }
    }

    fn handle_session(&mut self, _now: Instant, _peer: PeerId, change: SessionChange) {
        if matches!(change, SessionChange::Up(_)) {
            self.sessions_up += 1;
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due = self.next.expect("fired only when armed");
        assert!(now >= due, "timer fired early: {now:?} < {due:?}");
        self.fired.push(now);
        self.next = Some(due + self.period);
        if self.peers.is_empty() {
            return;
        }
        let (peer, addr) = self.peers[(self.n as usize) % self.peers.len()];
        let payload = Bytes::from(format!("tick {}", self.n));
        self.out.push(Output {
            token: 2 * self.n,
            peer,
            addr,
            protocol: PROTO.into(),
            payload: payload.clone(),
            opts: SendOptions::default(),
            kind: OutputKind::Request,
        });
        self.out.push(Output {
            token: 2 * self.n + 1,
            peer,
            addr,
            protocol: PROTO.into(),
            payload,
            opts: SendOptions::default(),
            kind: OutputKind::Message,
        });
        self.n += 1;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }
}

/// Four tickers on a lossy network, each ticking to the three others (addresses given
/// by the service, not by `introduce`), plus one peer id nobody knows an address for.
/// `threads`: see `Sim::set_threads` (0: sequential).
fn scenario(seed: u64, threads: usize) -> (Sim, Vec<NodeId>, PeerId) {
    let mut sim = Sim::new(seed);
    sim.set_threads(threads);
    sim.set_trace_log(true);
    sim.set_default_link(LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        loss: Loss::Random(0.05),
        ..LinkParams::default()
    });
    let n: Vec<NodeId> = (0..5).map(|_| sim.add_ed25519_node(EndpointConfig::default())).collect();
    // The fifth node hosts nothing; its id (without address) is the unknown peer.
    let nowhere = sim.node(n[4]).peer;
    for (i, &a) in n[..4].iter().enumerate() {
        let mut peers: Vec<(PeerId, Option<SocketAddr>)> = n[..4]
            .iter()
            .filter(|&&b| b != a)
            .map(|&b| (sim.node(b).peer, Some(sim.node(b).addr)))
            .collect();
        if i == 0 {
            peers.push((nowhere, None));
        }
        let period = Duration::from_millis(100 + 10 * i as u64);
        let t = Ticker::new(peers, period, sim.instant());
        sim.add_service(a, t);
    }
    sim.run_for(Duration::from_secs(3));
    // Stop ticking, then let everything in flight finish.
    for &a in &n[..4] {
        sim.with_service::<Ticker, _>(a, |t, _| t.next = None).expect("hosted");
    }
    sim.run_for(Duration::from_secs(20));
    (sim, n, nowhere)
}

#[test]
fn service_messages_outcomes_and_timers() {
    check_services(0);
}

/// The same in windowed mode: timers armed inside a window fire inside it, exactly on
/// time.
#[test]
fn service_messages_outcomes_and_timers_windowed() {
    check_services(2);
}

fn check_services(threads: usize) {
    let (sim, n, nowhere) = scenario(3, threads);
    assert_eq!(sim.windows() > 0, threads > 0);
    let epoch = sim.instant() - sim.now();
    for (i, &a) in n[..4].iter().enumerate() {
        let t = sim.service::<Ticker>(a).expect("hosted");
        let period = Duration::from_millis(100 + 10 * i as u64);
        // The timer fired at every multiple of the period within the 3 s, exactly then.
        let expect: Vec<Instant> = (1..).map(|k| epoch + period * k).take_while(|&at| at <= epoch + Duration::from_secs(3)).collect();
        assert_eq!(t.fired, expect, "node {i} timer instants");
        // Every request and message got exactly one outcome.
        let outcomes = t.answered.len() + t.failed.len() + t.acked.len();
        assert_eq!(outcomes as u64, 2 * t.n, "node {i}: one outcome per output");
        for (token, resp) in &t.answered {
            let mut want = format!("tick {}", token / 2).into_bytes();
            want.reverse();
            assert_eq!(&resp[..], &want[..]);
        }
        if i == 0 {
            // Outputs to the peer without an address were refused at once, the rest
            // went through despite the loss.
            let unknown = t.failed.iter().filter(|(_, e)| *e == SendError::NoAddress).count() as u64;
            assert_eq!(unknown, 2 * ((t.n + 1) / 4), "{:?}", t.failed);
            assert_eq!(t.failed.len() as u64, unknown, "{:?}", t.failed);
        } else {
            assert!(t.failed.is_empty(), "node {i}: {:?}", t.failed);
        }
        assert!(t.sessions_up >= 3, "node {i} had sessions with the three others");
        assert_eq!(sim.node(a).service_outputs_pending(), 0);
        assert_eq!(sim.node(a).counters.duplicate_outcomes, 0);
    }
    // What was sent arrived: each ticker received requests and messages from the others.
    for (i, &a) in n[..4].iter().enumerate() {
        let t = sim.service::<Ticker>(a).expect("hosted");
        let requests = t.received.iter().filter(|r| r.2).count();
        let messages = t.received.len() - requests;
        assert_eq!(requests, messages, "node {i}: as many requests as one-way messages");
        assert!(requests > 20, "node {i} received {requests}");
        assert!(t.received.iter().all(|r| r.0 != sim.node(a).peer && r.0 != nowhere));
    }
    let answered: usize = n[..4].iter().map(|&a| sim.service::<Ticker>(a).expect("hosted").answered.len()).sum();
    let received: usize =
        n[..4].iter().map(|&a| sim.service::<Ticker>(a).expect("hosted").received.iter().filter(|r| r.2).count()).sum();
    assert_eq!(answered, received, "every request delivered once was answered once");
    assert!(sim.service::<Ticker>(n[4]).is_none());
}

#[test]
fn same_seed_same_run_with_services() {
    let state = |sim: &Sim, n: &[NodeId]| -> Vec<String> {
        n[..4]
            .iter()
            .map(|&a| {
                let t = sim.service::<Ticker>(a).expect("hosted");
                format!("{:?} {:?} {:?} {:?}", t.answered, t.failed, t.acked, t.received)
            })
            .collect()
    };
    let (a, na, _) = scenario(11, 0);
    let (b, nb, _) = scenario(11, 0);
    assert_eq!(a.trace_hash(), b.trace_hash());
    assert_eq!(a.trace_log(), b.trace_log());
    assert_eq!(state(&a, &na), state(&b, &nb));
    let (c, _, _) = scenario(12, 0);
    assert_ne!(a.trace_hash(), c.trace_hash(), "another seed, another run");

    // Windowed mode: the same run for any number of threads.
    let (w1, n1, _) = scenario(11, 1);
    for threads in [2, 4] {
        let (w, nw, _) = scenario(11, threads);
        assert_eq!(w1.trace_log(), w.trace_log(), "1 vs {threads} threads");
        assert_eq!(w1.trace_hash(), w.trace_hash());
        assert_eq!(state(&w1, &n1), state(&w, &nw), "1 vs {threads} threads");
    }
}
