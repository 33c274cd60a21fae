//! Kademlia at scale on the simulator (issue 5): `msgnet_kad::Kademlia` hosted as a
//! service on every node, every Kademlia message a msgnet request or response through
//! real endpoints (Noise IK handshakes, encrypted sessions, acknowledgements) over
//! simulated links with 20-80 ms one-way latency.
//!
//! Nodes join in doubling groups (up to 500 at once), each through 3 known nodes,
//! looking up its own id; then `--lookups` FIND_NODE lookups of random live nodes' ids
//! from random live nodes; then the same with `--gone` of the nodes silently down. A
//! lookup succeeds when its result (the k = 20 closest peers that answered) holds the
//! target, as in msgnet-kad's scale example.
//!
//! The simulator runs in windowed mode on all cores (`Sim::set_threads` with
//! `std::thread::available_parallelism()`); `--threads N` overrides it, `--threads 0` is
//! the sequential event loop. Any N ≥ 1 gives the same run (trace hash) for a seed.
//!
//! `cargo run --release -p msgnet-sim --example kad -- [--nodes 10000] [--lookups 1000]
//! [--gone 0.2] [--seed 1] [--batch 100] [--threads N]`

#[path = "../tests/kadnet/mod.rs"]
mod kadnet;

use std::time::Instant;

use kadnet::{mean_median, KadNet, LookupReport, NetParams};
use msgnet_sim::Sim;

/// mimalloc: the run makes millions of small, short-lived allocations (datagrams,
/// messages, handshake states) on two threads; glibc's malloc took ~11 % of its CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut params = NetParams { nodes: 10_000, threads, ..NetParams::default() };
    let (mut lookups, mut gone, mut batch) = (1000usize, 0.2f64, 100usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--nodes" => params.nodes = num(&flag, &value),
            "--lookups" => lookups = num(&flag, &value),
            "--gone" => gone = num(&flag, &value),
            "--seed" => params.seed = num(&flag, &value),
            "--batch" => batch = num(&flag, &value),
            "--threads" => params.threads = num(&flag, &value),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if params.nodes < 2 || !(0.0..0.9).contains(&gone) {
        usage("need at least 2 nodes and 0 <= gone < 0.9");
    }
    let mode = match params.threads {
        0 => "sequential".to_string(),
        n => format!("windowed, {n} thread(s)"),
    };
    let wall = Instant::now();
    let mut net = KadNet::new(params.clone());
    let created = wall.elapsed();
    let failed_joins = net.join_all();
    let join_wall = wall.elapsed() - created;
    let mut tables: Vec<usize> = (0..params.nodes).map(|i| net.table_len(i)).collect();
    tables.sort_unstable();
    println!(
        "{} nodes created in {created:.1?}, joined in {join_wall:.1?} wall / {:.1?} virtual ({failed_joins} joins unfinished); \
         routing table median {} min {}",
        params.nodes,
        net.sim.now(),
        tables[tables.len() / 2],
        tables[0],
    );
    println!("  join lookups sent {} requests ({:.1} per join)", net.join_requests, net.join_requests as f64 / (params.nodes - 1) as f64);
    print_work(&net.sim, "after joining");

    let t = Instant::now();
    let healthy = net.lookups(lookups, batch);
    report("healthy", &healthy, t);
    print_work(&net.sim, "after healthy lookups");

    let down = net.take_down(gone);
    let t = Instant::now();
    let gone_r = net.lookups(lookups, batch);
    report(&format!("{:.0}% gone ({down} nodes down)", gone * 100.0), &gone_r, t);
    print_work(&net.sim, "at the end");
    println!(
        "trace hash {:016x}; simulator {mode}, {} windows; total wall time {:.1?}",
        net.sim.trace_hash(),
        net.sim.windows(),
        wall.elapsed()
    );
    // Done: leave without tearing down 10,000 endpoints and their sessions one by one
    // (about a second at 10,000 nodes); the OS takes the memory back at once.
    std::process::exit(0);
}

fn num<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value.parse().unwrap_or_else(|_| usage(&format!("bad value for {flag}: {value}")))
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}\nusage: kad [--nodes N] [--lookups N] [--gone F] [--seed N] [--batch N] [--threads N]");
    std::process::exit(2)
}

fn report(what: &str, r: &LookupReport, since: Instant) {
    let (rm, r50) = mean_median(&r.rounds);
    let (mm, m50) = mean_median(&r.requests);
    println!(
        "{what}: {}/{} lookups found the target ({:.1}%), {} unfinished; rounds mean {rm:.2} median {r50}; \
         messages per lookup mean {mm:.1} median {m50}; {:.1?} virtual, {:.1?} wall",
        r.found,
        r.count,
        100.0 * r.success_rate(),
        r.unfinished,
        r.virtual_time,
        since.elapsed(),
    );
}

/// Where the work went: handshakes (sessions up), datagrams, events.
fn print_work(sim: &Sim, when: &str) {
    let (mut up, mut outputs, mut reqs) = (0u64, 0u64, 0u64);
    for n in sim.nodes() {
        up += n.counters.sessions_up;
        outputs += n.counters.service_outputs;
        reqs += n.counters.requests_received;
    }
    println!(
        "  {when}: {} handshakes (sessions up, both ends counted), {outputs} kad messages sent, {reqs} received, \
         {} datagrams delivered, {} events",
        up,
        sim.totals().delivered,
        sim.steps(),
    );
}
