//! Congestion control in the simulator: two flows sharing one bottleneck converge to fair
//! shares (Jain's index ≥ 0.9), and a flow over a lossy bottleneck completes.

use std::time::Duration;

use msgnet_core::{EndpointConfig, SendOptions};
use msgnet_sim::{LinkParams, Loss, NodeId, Sim};

const MSG: usize = 1000;
const WINDOW: u64 = 128;
const BPS: u64 = 5_000_000;

fn config() -> EndpointConfig {
    EndpointConfig { send_timeout: Duration::from_secs(120), ..EndpointConfig::default() }
}

struct Net {
    sim: Sim,
    senders: Vec<NodeId>,
    issued: Vec<u64>,
}

impl Net {
    fn new(seed: u64, senders: usize, loss: Loss) -> Self {
        let mut sim = Sim::new(seed);
        let c = sim.add_ed25519_node(config());
        let ids: Vec<NodeId> = (0..senders).map(|_| sim.add_ed25519_node(config())).collect();
        sim.set_default_link(LinkParams::with_latency(Duration::from_millis(10)));
        let bottleneck = LinkParams {
            bandwidth_bps: Some(BPS),
            queue_bytes: 32 * 1024,
            jitter: Duration::from_millis(1),
            loss,
            ..LinkParams::with_latency(Duration::from_millis(10))
        };
        sim.set_link(ids[0], c, bottleneck);
        for s in &ids[1..] {
            sim.share_link(*s, c, ids[0], c);
        }
        sim.register(c, "/bulk");
        for s in &ids {
            sim.introduce(*s, c);
        }
        let n = ids.len();
        Self { sim, senders: ids, issued: vec![0; n] }
    }

    fn receiver(&self) -> NodeId {
        NodeId(0)
    }

    fn acked(&self, i: usize) -> u64 {
        self.sim.node(self.senders[i]).counters.sends_ok
    }

    fn failed(&self, i: usize) -> u64 {
        self.sim.node(self.senders[i]).counters.sends_failed
    }

    /// Keeps `WINDOW` messages outstanding for the active senders, for `d`.
    fn run(&mut self, d: Duration, active: &[usize]) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            for &i in active {
                while self.issued[i] - self.acked(i) - self.failed(i) < WINDOW {
                    let (from, to) = (self.senders[i], self.receiver());
                    if self.sim.send(from, to, "/bulk", vec![i as u8; MSG], SendOptions::default()).is_err() {
                        break;
                    }
                    self.issued[i] += 1;
                }
            }
            self.sim.run_for(Duration::from_millis(5));
        }
    }
}

fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    sum * sum / (x.len() as f64 * sq)
}

#[test]
fn two_flows_share_a_bottleneck_fairly() {
    for seed in [1u64, 2] {
        let mut net = Net::new(seed, 2, Loss::None);
        // The first flow starts alone, the second joins two seconds later.
        net.run(Duration::from_secs(2), &[0]);
        net.run(Duration::from_secs(6), &[0, 1]);
        let before = [net.acked(0), net.acked(1)];
        net.run(Duration::from_secs(8), &[0, 1]);
        let got: Vec<f64> = (0..2).map(|i| (net.acked(i) - before[i]) as f64 * MSG as f64 * 8.0 / 8.0).collect();
        let j = jain(&got);
        let total: f64 = got.iter().sum();
        println!("seed {seed}: flows {:.2} / {:.2} Mbit/s, total {:.2} of {}, Jain {j:.3}", got[0] / 1e6, got[1] / 1e6, total / 1e6, BPS / 1_000_000);
        assert!(j >= 0.9, "seed {seed}: Jain's index {j:.3} ({got:?})");
        assert!(total > 0.6 * BPS as f64, "seed {seed}: the bottleneck is used ({total})");
        assert_eq!(net.failed(0) + net.failed(1), 0);
    }
}

#[test]
fn a_flow_over_a_lossy_bottleneck_completes() {
    let mut net = Net::new(7, 1, Loss::Random(0.05));
    net.run(Duration::from_secs(5), &[0]);
    // Stop issuing and let everything outstanding finish.
    let issued = net.issued[0];
    let ok = net.sim.run_until(Duration::from_secs(120), |s| {
        let n = s.node(NodeId(1));
        n.counters.sends_ok + n.counters.sends_failed >= issued
    });
    assert!(ok);
    assert_eq!(net.failed(0), 0);
    assert_eq!(net.acked(0), issued);
    assert_eq!(net.sim.node(net.receiver()).counters.messages_delivered, issued);
    assert!(issued > 500, "it made progress: {issued} messages");
}
