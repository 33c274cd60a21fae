//! `msgnet bench`: msgnet against raw UDP on loopback, in one run.
//!
//! (a) warm request/response round trip, 64-byte payloads: median and p99, ratio
//!     msgnet/raw (target ≤ 1.3);
//! (b) one-way 64-byte message rate counted at the receiver, msgnet `Unreliable` and
//!     `Reliable` (many in flight) against a blocking `send_to` loop (target ≥ 0.8);
//! (c) UDP payload bytes per 64-byte message beyond the 64 bytes, from the hosts'
//!     `EndpointStats` (`tx_bytes` delta / messages) over the ping-pong of (a): every
//!     request and every response travels alone in its packet (the datagrams per message
//!     are printed to show it) and acknowledgements ride along; raw UDP is 0 by
//!     definition (target ≤ 24). The same figure for an `Unreliable` ping-pong is
//!     printed for information: nothing acknowledges an unreliable-only channel, so its
//!     messages keep carrying the INIT with the protocol name.
//!
//! `--quick` shrinks every run so that the whole thing takes a few seconds (tests).
//!
//! `--bulk [--mib N]` runs the bulk-transfer benchmark instead ([`crate::bench::bulk`]):
//! N MiB (default 256, 16 with `--quick`) as 1 MiB reliable messages, beside
//! rust-libp2p 0.57 over one QUIC stream and one TCP+noise+yamux stream.
//!
//! `--streams` runs the libp2p stream benchmark instead ([`crate::bench::streams`]):
//! 64-byte request/response round trip and rates over msgnet's long-lived
//! `/msgnet/1.0.0` stream beside rust-libp2p `request-response`, over TCP and QUIC, with
//! the two peers on their own single-threaded runtimes, as tasks of one multi-thread
//! runtime, and with the client swarm on that runtime's main thread.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use msgnet::{Bytes, Delivery, EndpointConfig};

use crate::bench::pair::{Pair, WireCost, WINDOW};
use crate::bench::{median_p99, raw, Rate, PAYLOAD};

/// Arguments of `msgnet bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small runs (a few seconds in all), for tests and smoke checks.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Bulk transfer instead: N MiB as 1 MiB reliable messages, beside rust-libp2p
    /// over QUIC and over TCP+noise+yamux.
    #[arg(long)]
    bulk: bool,
    /// MiB moved by `--bulk` (default 256; 16 with `--quick`).
    #[arg(long, value_name = "N", requires = "bulk", value_parser = clap::value_parser!(u64).range(1..))]
    mib: Option<u64>,
    /// msgnet's long-lived libp2p stream (msgnet-libp2p) beside rust-libp2p
    /// request-response, over one TCP+noise+yamux and one QUIC connection.
    #[arg(long, conflicts_with = "bulk")]
    streams: bool,
}

/// Run sizes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    warmup: usize,
    round_trips: usize,
    msgnet_messages: u64,
    raw_messages: u64,
    ping_pongs: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup: 50,
                round_trips: 300,
                msgnet_messages: 3_000,
                raw_messages: 20_000,
                ping_pongs: 100,
            }
        } else {
            Self {
                warmup: 2_000,
                round_trips: 20_000,
                msgnet_messages: 200_000,
                raw_messages: 1_000_000,
                ping_pongs: 2_000,
            }
        }
    }
}

/// Everything measured.
#[derive(Debug, Default)]
struct Report {
    rtt_msgnet: (Duration, Duration),
    rtt_raw: (Duration, Duration),
    rate_unreliable: Rate,
    rate_reliable: Rate,
    rate_raw: Rate,
    wire_pingpong: WireCost,
    wire_request: WireCost,
    rate_single: Rate,
    wire_single: WireCost,
    wire_single_acks: WireCost,
    wire_shallow: WireCost,
}

/// Run the benchmark and print the results.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.bulk {
        return run_bulk(&args).await;
    }
    if args.streams {
        return run_streams(&args).await;
    }
    let sizes = Sizes::new(args.quick);
    let machine = Machine::probe();
    let mut r = Report::default();
    let mut pair = Pair::new().await?;

    // (a) round trips, msgnet then raw, each warmed up first.
    pair.round_trips(sizes.warmup)
        .await
        .context("msgnet warm-up")?;
    let (s0, c0) = pair.stats().await;
    let mut samples = pair
        .round_trips(sizes.round_trips)
        .await
        .context("msgnet round trips")?;
    let (s1, c1) = pair.stats().await;
    r.rtt_msgnet = median_p99(&mut samples);
    r.wire_request = WireCost::between((&s0, &c0), (&s1, &c1), 2 * sizes.round_trips as u64);

    let server = raw::EchoServer::spawn().await?;
    let mut client = raw::EchoClient::connect(server.addr()).await?;
    raw::round_trips(&mut client, sizes.warmup).await?;
    let mut samples = raw::round_trips(&mut client, sizes.round_trips).await?;
    r.rtt_raw = median_p99(&mut samples);
    drop((client, server));

    // (b) one-way rates.
    r.rate_unreliable = pair
        .one_way(sizes.msgnet_messages, Delivery::Unreliable)
        .await;
    r.rate_reliable = pair
        .one_way(sizes.msgnet_messages, Delivery::Reliable)
        .await;
    let raw_n = sizes.raw_messages;
    r.rate_raw = tokio::task::spawn_blocking(move || raw::one_way(raw_n))
        .await
        .context("raw sender")??;

    // (c) bytes on the wire.
    r.wire_pingpong = pair.wire_cost(sizes.ping_pongs).await?;
    // Let the last pong arrive before closing (not counted either way).
    let _ = pair.round_trip(Bytes::from_static(b"bye")).await;
    pair.close().await;

    // (b') and (c): one message per datagram (coalescing off), reliable.
    let single = EndpointConfig { coalesce: false, ..EndpointConfig::default() };
    let mut pair = Pair::with_config(single).await?;
    let (_, shallow, _) = pair.one_way_wire(sizes.ping_pongs * 5, 32).await?;
    r.wire_shallow = shallow;
    let (rate, wire, acks) = pair.one_way_wire(sizes.msgnet_messages / 2, WINDOW).await?;
    r.rate_single = rate;
    r.wire_single = wire;
    r.wire_single_acks = acks;
    pair.close().await;

    let text = if args.json {
        json(&r, &sizes, &machine, args.quick)
    } else {
        table(&r, &sizes, &machine, args.quick)
    };
    crate::output::println_flush(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `msgnet bench --bulk`.
async fn run_bulk(args: &Args) -> anyhow::Result<ExitCode> {
    let mib = args.mib.unwrap_or(if args.quick { 16 } else { 256 });
    let machine = Machine::probe();
    let r = crate::bench::bulk::run(mib).await?;
    let (cores, cpu, date) = (machine.cores, machine.cpu.as_str(), machine.date.as_str());
    let text = if args.json {
        crate::bench::bulk::json(&r, cores, cpu, date, args.quick)
    } else {
        crate::bench::bulk::table(&r, cores, cpu, date, args.quick)
    };
    crate::output::println_flush(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// `msgnet bench --streams`.
async fn run_streams(args: &Args) -> anyhow::Result<ExitCode> {
    let machine = Machine::probe();
    let r = crate::bench::streams::run(args.quick).await?;
    let (cores, cpu, date) = (machine.cores, machine.cpu.as_str(), machine.date.as_str());
    let text = if args.json {
        crate::bench::streams::json(&r, cores, cpu, date, args.quick)
    } else {
        crate::bench::streams::table(&r, cores, cpu, date, args.quick)
    };
    crate::output::println_flush(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// Where the benchmark ran.
struct Machine {
    cores: usize,
    cpu: String,
    date: String,
}

impl Machine {
    fn probe() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown date".into());
        Self { cores, cpu, date }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn table(r: &Report, s: &Sizes, m: &Machine, quick: bool) -> String {
    let mut t = String::new();
    let mode = if quick {
        " --quick (small runs, figures indicative only)"
    } else {
        ""
    };
    let _ = writeln!(t, "msgnet bench{mode}");
    let _ = writeln!(t, "machine: {} cores (nproc), {}", m.cores, m.cpu);
    let _ = writeln!(t, "date:    {}", m.date);
    let _ = writeln!(t, "loopback 127.0.0.1, {PAYLOAD}-byte payloads\n");
    let _ = writeln!(
        t,
        "{:<44} {:>12} {:>12} {:>7} {:>8}  ",
        "", "msgnet", "raw UDP", "ratio", "target"
    );

    let rtt_ratio = ratio(us(r.rtt_msgnet.0), us(r.rtt_raw.0));
    let _ = writeln!(
        t,
        "{:<44} {:>9.1} µs {:>9.1} µs {:>7.2} {:>8}  {}",
        format!("(a) round trip, median ({} warm)", s.round_trips),
        us(r.rtt_msgnet.0),
        us(r.rtt_raw.0),
        rtt_ratio,
        "≤ 1.30",
        verdict(rtt_ratio <= 1.3)
    );
    let _ = writeln!(
        t,
        "{:<44} {:>9.1} µs {:>9.1} µs {:>7.2}",
        "    round trip, p99",
        us(r.rtt_msgnet.1),
        us(r.rtt_raw.1),
        ratio(us(r.rtt_msgnet.1), us(r.rtt_raw.1))
    );
    for (name, rate) in [
        ("unreliable", &r.rate_unreliable),
        ("reliable", &r.rate_reliable),
    ] {
        let q = ratio(rate.per_sec(), r.rate_raw.per_sec());
        let _ = writeln!(
            t,
            "{:<44} {:>7.0} k/s {:>7.0} k/s {:>7.2} {:>8}  {}",
            format!("(b) one-way rate at receiver, {name}"),
            rate.per_sec() / 1e3,
            r.rate_raw.per_sec() / 1e3,
            q,
            "≥ 0.80",
            verdict(q >= 0.8)
        );
    }
    let q = ratio(r.rate_single.per_sec(), r.rate_raw.per_sec());
    let _ = writeln!(
        t,
        "{:<44} {:>7.0} k/s {:>7.0} k/s {:>7.2} {:>8}  {}",
        "(b) same, reliable, one message per datagram",
        r.rate_single.per_sec() / 1e3,
        r.rate_raw.per_sec() / 1e3,
        q,
        "≥ 0.80",
        verdict(q >= 0.8)
    );
    let oh = r.wire_shallow.overhead(PAYLOAD);
    let _ = writeln!(
        t,
        "{:<44} {:>10.1} B {:>10} B {:>7} {:>8}  {}",
        "(c) wire bytes per message, ≤ 32 in flight",
        oh,
        0,
        "",
        "≤ 24",
        verdict(oh <= 24.0)
    );
    let _ = writeln!(
        t,
        "{:<44} {:>10.1} B {:>10} B",
        format!("    same, {WINDOW} in flight"),
        r.wire_single.overhead(PAYLOAD),
        0
    );
    let _ = writeln!(
        t,
        "{:<44} {:>10.1} B {:>10} B",
        "    plus acknowledgements, per message",
        r.wire_single_acks.bytes as f64 / r.wire_single_acks.messages.max(1) as f64,
        0
    );
    let _ = writeln!(
        t,
        "{:<44} {:>10.1} B {:>10} B",
        "    request/response, both directions",
        r.wire_request.overhead(PAYLOAD),
        0
    );
    let _ = writeln!(
        t,
        "{:<44} {:>10.1} B {:>10} B",
        "    unreliable ping-pong, both directions",
        r.wire_pingpong.overhead(PAYLOAD),
        0
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "rates: msgnet unreliable {}/{} received ({:.1}% lost), reliable {}/{}, raw {}/{} ({:.1}% lost)",
        r.rate_unreliable.received,
        r.rate_unreliable.sent,
        100.0 * r.rate_unreliable.loss(),
        r.rate_reliable.received,
        r.rate_reliable.sent,
        r.rate_raw.received,
        r.rate_raw.sent,
        100.0 * r.rate_raw.loss()
    );
    let _ = writeln!(
        t,
        "wire:  request/response {} messages in {} datagrams ({:.2}/msg); unreliable ping-pong {} messages in {} datagrams ({:.2}/msg)",
        r.wire_request.messages,
        r.wire_request.datagrams,
        r.wire_request.datagrams_per_message(),
        r.wire_pingpong.messages,
        r.wire_pingpong.datagrams,
        r.wire_pingpong.datagrams_per_message()
    );
    let _ = writeln!(t, "(wire bytes are UDP payload bytes; IP and UDP headers, 28 bytes over IPv4, come on top for both)");
    t
}

fn json(r: &Report, s: &Sizes, m: &Machine, quick: bool) -> String {
    let rate = |x: &Rate| {
        format!(
            "{{\"sent\":{},\"received\":{},\"elapsed_s\":{:.6},\"per_sec\":{:.1}}}",
            x.sent,
            x.received,
            x.elapsed.as_secs_f64(),
            x.per_sec()
        )
    };
    let cpu = m.cpu.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        concat!(
            "{{\"quick\":{},\"cores\":{},\"cpu\":\"{}\",\"date\":\"{}\",\"payload\":{},",
            "\"round_trip\":{{\"samples\":{},\"msgnet_median_us\":{:.3},\"msgnet_p99_us\":{:.3},",
            "\"raw_median_us\":{:.3},\"raw_p99_us\":{:.3},\"ratio_median\":{:.4}}},",
            "\"one_way\":{{\"msgnet_unreliable\":{},\"msgnet_reliable\":{},\"raw\":{},",
            "\"ratio_unreliable\":{:.4},\"ratio_reliable\":{:.4}}},",
            "\"wire\":{{\"overhead_bytes\":{:.2},\"datagrams_per_message\":{:.3},",
            "\"unreliable_overhead_bytes\":{:.2},\"raw_overhead_bytes\":0}}}}"
        ),
        quick,
        m.cores,
        cpu,
        m.date,
        PAYLOAD,
        s.round_trips,
        us(r.rtt_msgnet.0),
        us(r.rtt_msgnet.1),
        us(r.rtt_raw.0),
        us(r.rtt_raw.1),
        ratio(us(r.rtt_msgnet.0), us(r.rtt_raw.0)),
        rate(&r.rate_unreliable),
        rate(&r.rate_reliable),
        rate(&r.rate_raw),
        ratio(r.rate_unreliable.per_sec(), r.rate_raw.per_sec()),
        ratio(r.rate_reliable.per_sec(), r.rate_raw.per_sec()),
        r.wire_shallow.overhead(PAYLOAD),
        r.wire_shallow.datagrams_per_message(),
        r.wire_pingpong.overhead(PAYLOAD),
    )
}
