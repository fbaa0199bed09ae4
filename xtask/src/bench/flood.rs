//! Section 7, SYN flood: raw SYNs from a /16 of spoofed sources, as fast
//! as the senders go, against a listener with a small backlog, with
//! syncookies on and off, watched by nothing and by qtrace. What it costs
//! the kernel per SYN (softirq time), what qtrace costs, and whether
//! qtrace's totals match the namespace's counters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::netns::Netns;
use super::synflood::{self, Flood};
use super::tracer::{self, Running, Usage};
use super::{counter, cpustat, load, Options, Section};

mod report;

const FLOOD_NS: &str = "qtrace-bench-flood";
const BACKLOG: u16 = 16;
/// Well above 4/3 of the backlog. Without cookies, `tcp_conn_request()`
/// also drops a SYN once less than a quarter of `tcp_max_syn_backlog` is
/// left (`pr_drop_req()`: `ListenDrops` only); with this much room the
/// queue-full test, `inet_csk_reqsk_queue_is_full()` at the backlog, is
/// the one that fires (`TCPReqQFullDrop` or `TCPReqQFullDoCookies`).
const MAX_SYN_BACKLOG: u32 = 128;
const FLOOD_TIME: Duration = Duration::from_secs(3);
/// A bound on one flood's SYNs, whatever the machine's speed.
const MAX_SYNS: u64 = 20_000_000;
const SENDERS: usize = 2;
/// The namespace's TcpExt counters a SYN flood moves.
const COUNTERS: [&str; 4] = ["ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "SyncookiesSent"];
/// `net.ipv4.tcp_syncookies` settings: 1 sends cookies once the SYN
/// queue is full, 0 drops the SYN instead.
const SYNCOOKIES: [u8; 2] = [1, 0];

/// Who watches a flood: nothing, or qtrace with these arguments after
/// `--json --netns NS --port P`. Further qtrace settings (an event budget,
/// for one) are further rows.
struct Watcher {
    name: &'static str,
    qtrace_args: Option<&'static [&'static str]>,
}

const WATCHERS: &[Watcher] = &[
    Watcher { name: "no tracer", qtrace_args: None },
    Watcher { name: "`qtrace watch --json`", qtrace_args: Some(&[]) },
    Watcher { name: "`qtrace watch --json --max-event-rate unlimited`", qtrace_args: Some(&["--max-event-rate", "unlimited"]) },
];

/// qtrace's account of one flood.
struct QtraceView {
    drops: u64,
    cookies: u64,
    events: u64,
    lost: u64,
    /// Events held back by an in-kernel budget, when qtrace reports one.
    suppressed: Option<u64>,
    cpu: Duration,
    /// The hook tier and the ids of the limits its start record declared.
    tier: String,
    limits: Vec<String>,
}

/// One flood's measurements.
struct Outcome {
    round: usize,
    syncookies: u8,
    watcher: usize,
    sent: u64,
    elapsed: Duration,
    /// The machine's softirq time over the flood.
    softirq: Duration,
    /// SYNs that reached TCP (`Tcp: InSegs`).
    in_segs: u64,
    kernel: BTreeMap<&'static str, u64>,
    qtrace: Option<QtraceView>,
    /// Tasks and named namespaces on the host at the flood's end: what an
    /// unfiltered part of qtrace's work may grow with.
    host_tasks: u64,
    host_netns: u64,
}

/// What qtrace printed about `port`: its summary and its losses.
fn view(usage: &Usage, port: u16, cpu: Duration) -> QtraceView {
    let mut v =
        QtraceView { drops: 0, cookies: 0, events: usage.events, lost: 0, suppressed: None, cpu, tier: String::new(), limits: vec![] };
    for r in usage.lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        match r["type"].as_str() {
            Some("start") => {
                v.tier = r["tier"].as_str().unwrap_or("?").to_owned();
                let ids = r["limits"].as_array().into_iter().flatten().filter_map(|l| l["id"].as_str());
                v.limits = ids.map(str::to_owned).collect();
            }
            Some("summary") if r["local_port"] == port => {
                v.drops += r["drops"].as_u64().unwrap_or(0);
                v.cookies += r["counts"]["syncookie_sent"].as_u64().unwrap_or(0);
            }
            Some("losses") => {
                v.lost = r["ringbuf_full"].as_u64().unwrap_or(0);
                v.suppressed = r["suppressed"].as_u64();
            }
            _ => {}
        }
    }
    v
}

fn start_watcher(opts: &Options, w: &Watcher, port: u16) -> Result<Option<Running>> {
    let Some(extra) = w.qtrace_args else { return Ok(None) };
    let p = port.to_string();
    let mut args = vec!["--json", "--netns", FLOOD_NS, "--port", &p];
    args.extend_from_slice(extra);
    Ok(Some(tracer::qtrace(&opts.qtrace, &args)?))
}

/// One flood on a fresh listener (a fresh, empty SYN queue).
fn one_flood(opts: &Options, ns: &Netns, port: u16, syncookies: u8, watcher: usize) -> Result<Outcome> {
    let flood = Flood::prepare(ns, port, BACKLOG, SENDERS)?;
    let q = start_watcher(opts, &WATCHERS[watcher], port)?;
    let (ext0, tcp0, cpu0) = (ns.tcp_ext()?, ns.tcp()?, cpustat::read()?);
    let qcpu0 = q.as_ref().map(Running::cpu_precise).transpose()?;
    let t0 = Instant::now();
    let sent = flood.fire(FLOOD_TIME, MAX_SYNS);
    let elapsed = t0.elapsed();
    let (ext1, tcp1, cpu1) = (ns.tcp_ext()?, ns.tcp()?, cpustat::read()?);
    let (host_tasks, host_netns) = (load::host_tasks(), load::named_namespaces());
    let qtrace = match (q, qcpu0) {
        (Some(q), Some(c0)) => {
            let cpu = q.cpu_precise()? - c0;
            // Stopped while the listener still exists: its final drop
            // counter is read from the live socket.
            Some(view(&q.stop()?, port, cpu))
        }
        _ => None,
    };
    drop(flood);
    Ok(Outcome {
        round: 0,
        syncookies,
        watcher,
        sent,
        elapsed,
        softirq: (cpu1 - cpu0).softirq,
        in_segs: counter(&tcp0, &tcp1, "InSegs"),
        kernel: COUNTERS.iter().map(|c| (*c, counter(&ext0, &ext1, c))).collect(),
        qtrace,
        host_tasks,
        host_netns,
    })
}

pub(super) fn section(opts: &Options) -> Result<Section> {
    let ns = Netns::create(FLOOD_NS)?;
    synflood::wire(&ns)?;
    ns.sysctl("net.ipv4.tcp_max_syn_backlog", &MAX_SYN_BACKLOG.to_string())?;
    let mut outcomes = Vec::new();
    let mut port = 8400;
    for round in 0..opts.runs {
        for syncookies in SYNCOOKIES {
            ns.sysctl("net.ipv4.tcp_syncookies", &syncookies.to_string())?;
            // Rotate who goes first so drift does not favour one.
            for i in 0..WATCHERS.len() {
                port += 1;
                let o = one_flood(opts, &ns, port, syncookies, (round + i) % WATCHERS.len())?;
                outcomes.push(Outcome { round, ..o });
            }
        }
    }
    Ok(report::render(opts, &outcomes))
}
