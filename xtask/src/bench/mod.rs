//! `cargo xtask bench`: qtrace's costs measured side by side with a
//! bpftrace script on the same tracepoints and with no tracer at all, in
//! one run, written to `target/bench/report.md` and `report.json`.
//!
//! Every figure is repeated and given as min / median / max; ratios are
//! of medians measured in the same run, because absolute times on a
//! shared machine drift between runs.

mod accept;
mod bpf_stats;
mod cpustat;
mod drop_storm;
mod flood;
mod guest;
mod idle;
mod kernel_time;
mod load;
mod netns;
mod packet;
mod stats;
mod storm;
mod synflood;
mod tracer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use netns::Netns;
use stats::Spread;
use storm::Storm;
use tracer::Running;

pub(crate) use guest::{bench_guest, vm_bench};
pub(crate) use load::idle_threads;

pub(crate) struct Options {
    pub qtrace: PathBuf,
    pub counter: PathBuf,
    pub out: PathBuf,
    /// Repetitions of each measurement.
    pub runs: usize,
    /// Sections to run (by number, 1-8); empty: all.
    pub only: Vec<u8>,
}

/// One section of the report: its JSON and its Markdown.
struct Section {
    key: &'static str,
    json: Value,
    md: String,
}

/// `cargo xtask bench`: builds qtrace and the count-only consumer, then
/// measures.
pub(crate) fn bench(runs: usize, only: Vec<u8>) -> Result<()> {
    crate::process::build()?;
    crate::process::status(crate::process::cargo().args(["build", "--release", "--package", "qtrace", "--example", "ringbuf_count"]))?;
    let release = crate::process::target_dir().join("release");
    run(&Options {
        qtrace: release.join("qtrace"),
        counter: release.join("examples/ringbuf_count"),
        out: crate::process::target_dir().join("bench"),
        runs: runs.max(1),
        only,
    })
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    let want = |n: u8| opts.only.is_empty() || opts.only.contains(&n);
    // Only sections 1 and 2 compare with bpftrace.
    if want(1) || want(2) {
        which("bpftrace")?;
    }
    std::fs::create_dir_all(&opts.out)?;
    let mut sections = Vec::new();
    if want(1) {
        sections.push(timed("start-up", || startup(opts))?);
    }
    if want(2) {
        sections.push(timed("accept path", || accept_path(opts))?);
    }
    let mut rss_after_storm = None;
    if want(3) || want(5) {
        let (section, rss) = timed("drop storm", || drop_storm::section(opts))?;
        rss_after_storm = Some(rss);
        if want(3) {
            sections.push(section);
        }
    }
    if want(4) {
        sections.push(timed("consumer ceiling", || ceiling(opts))?);
    }
    if want(5) {
        sections.push(timed("memory", || memory(opts, rss_after_storm.expect("the storm ran")))?);
    }
    if want(6) {
        sections.push(timed("kernel time per program", || kernel_time::section(opts))?);
    }
    if want(7) {
        sections.push(timed("SYN flood", || flood::section(opts))?);
    }
    if want(8) {
        sections.push(timed("idle cost", || idle::section(opts))?);
    }

    let machine = machine();
    let mut report = json!({ "machine": machine });
    let mut md = format!(
        "# qtrace benchmark report\n\nKernel {}, {} CPUs, qtrace {}, bpftrace {}. Each figure: median (min–max) over the runs.\n",
        machine["kernel"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["qtrace"].as_str().unwrap_or("?"),
        machine["bpftrace"].as_str().unwrap_or("?"),
    );
    for s in sections {
        report[s.key] = s.json;
        md.push('\n');
        md.push_str(&s.md);
    }
    std::fs::write(opts.out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(opts.out.join("report.md"), &md)?;
    print!("{md}");
    eprintln!("bench: wrote {}", opts.out.join("report.md").display());
    Ok(())
}

/// Runs one section, saying on stderr what runs and how long it took.
fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("bench: {what}");
    let t = std::time::Instant::now();
    let out = f()?;
    eprintln!("bench: {what} took {:.0} s", t.elapsed().as_secs_f64());
    Ok(out)
}

fn which(tool: &str) -> Result<()> {
    let ok = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !ok {
        bail!("{tool} is not installed");
    }
    Ok(())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    json!({
        "kernel": first_line("uname", &["-r"]),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "qtrace": env!("CARGO_PKG_VERSION"),
        "bpftrace": first_line("bpftrace", &["--version"]),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// 1. Exec to attached, and peak RSS, of `qtrace watch --json` and the bpftrace script.
fn startup(opts: &Options) -> Result<Section> {
    let (mut q_ms, mut q_rss, mut b_ms, mut b_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..opts.runs {
        let q = tracer::qtrace(&opts.qtrace, &["--json"])?;
        q_ms.push(q.ready.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(300));
        q_rss.push(mib(q.stop()?.peak_rss_kib));
        let b = tracer::bpftrace()?;
        b_ms.push(b.ready.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(300));
        b_rss.push(mib(b.stop()?.peak_rss_kib));
    }
    let (qm, qr, bm, br) = (Spread::of(&q_ms), Spread::of(&q_rss), Spread::of(&b_ms), Spread::of(&b_rss));
    let (t_ratio, r_ratio) = (qm.median / bm.median, qr.median / br.median);
    let md = format!(
        "## 1. Start-up\n\nWall time from exec to attached (qtrace's `start` record, the first NDJSON line on stdout, printed once its programs are attached; the script's `BEGIN` output for bpftrace), and peak RSS (`wait4` `ru_maxrss`), {} runs each, alternating.\n\n\
| | ready (ms) | peak RSS (MiB) |\n|---|---|---|\n| `qtrace watch --json` | {} | {} |\n| bpftrace script | {} | {} |\n| **ratio qtrace / bpftrace** | **{:.3}** | **{:.3}** |\n",
        opts.runs,
        qm.show(1),
        qr.show(1),
        bm.show(1),
        br.show(1),
        t_ratio,
        r_ratio
    );
    let json = json!({
        "qtrace": { "ready_ms": qm.json(), "peak_rss_mib": qr.json() },
        "bpftrace": { "ready_ms": bm.json(), "peak_rss_mib": br.json() },
        "ready_ratio": t_ratio, "rss_ratio": r_ratio,
    });
    Ok(Section { key: "startup", json, md })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Attached {
    Nothing,
    Qtrace,
    Bpftrace,
}

impl Attached {
    fn start(self, opts: &Options) -> Result<Option<Running>> {
        Ok(match self {
            Attached::Nothing => None,
            Attached::Qtrace => Some(tracer::qtrace(&opts.qtrace, &["--json"])?),
            Attached::Bpftrace => Some(tracer::bpftrace()?),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Attached::Nothing => "no tracer",
            Attached::Qtrace => "`qtrace watch --json`",
            Attached::Bpftrace => "bpftrace script",
        }
    }
}

/// The accept path's namespace: room for a fast loop's connections and
/// the TIME_WAIT sockets they leave.
fn accept_netns() -> Result<Netns> {
    let ns = Netns::create("qtrace-bench-accept")?;
    ns.sysctl("net.core.somaxconn", "4096")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    Ok(ns)
}

/// 2. Connections per second through an accept loop with and without tracers.
fn accept_path(opts: &Options) -> Result<Section> {
    let ns = accept_netns()?;
    let duration = Duration::from_secs(2);
    accept::run(&ns, 2, Duration::from_millis(500))?; // warm-up
    let order = [Attached::Nothing, Attached::Qtrace, Attached::Bpftrace];
    let mut rates: BTreeMap<Attached, Vec<f64>> = BTreeMap::new();
    // Per round, each tracer's rate over the untraced rate of the same
    // round: drift between rounds cancels out of these.
    let mut paired: BTreeMap<Attached, Vec<f64>> = BTreeMap::new();
    for round in 0..opts.runs {
        let mut this_round = BTreeMap::new();
        // Rotate who goes first so drift does not favour one.
        for i in 0..order.len() {
            let who = order[(round + i) % order.len()];
            let running = who.start(opts)?;
            let rate = accept::run(&ns, 2, duration)?;
            if let Some(r) = running {
                r.stop()?;
            }
            rates.entry(who).or_default().push(rate);
            this_round.insert(who, rate);
        }
        for (who, rate) in &this_round {
            paired.entry(*who).or_default().push(rate / this_round[&Attached::Nothing]);
        }
    }
    let mut md = format!(
        "## 2. Cost on the accept path\n\nA server that accepts, writes 3 bytes and closes; 2 client threads opening one connection per request; loopback in a fresh namespace; {} rounds of {} s per setting, the order rotating each round. The ratio is taken within each round (traced / untraced), then summarised.\n\n| attached | connections/s | ratio to none |\n|---|---|---|\n",
        opts.runs,
        duration.as_secs()
    );
    let mut json = json!({});
    for (who, v) in &rates {
        let (s, ratio) = (Spread::of(v), Spread::of(&paired[who]));
        let _ = writeln!(md, "| {} | {} | {} |", who.name(), s.show(0), ratio.show(3));
        json[match who {
            Attached::Nothing => "none",
            Attached::Qtrace => "qtrace",
            Attached::Bpftrace => "bpftrace",
        }] = json!({ "connections_per_s": s.json(), "ratio": ratio.json() });
    }
    Ok(Section { key: "accept_path", json, md })
}

const STORM_NS: &str = "qtrace-bench-storm";
const STORM_RATE: f64 = 100_000.0;

fn counter(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// Runs one storm of `rate` (None: as fast as the senders go) against a
/// consumer started by `start`; returns (events the kernel made per second,
/// events lost).
fn ceiling_run(ns: &Netns, port: u16, rate: Option<f64>, start: impl FnOnce() -> Result<Running>) -> Result<(f64, u64, u64)> {
    let storm = Storm::prepare(ns, port, 64, 2)?;
    let consumer = start()?;
    let before = ns.tcp_ext()?;
    let duration = Duration::from_secs(3);
    storm.fire(rate, duration);
    std::thread::sleep(Duration::from_millis(1500));
    let after = ns.tcp_ext()?;
    let usage = consumer.stop()?;
    let made = counter(&before, &after, "ListenOverflows");
    let lost = usage
        .lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v["type"] == "losses"))
        .and_then(|v| v["ringbuf_full"].as_u64())
        .context("the consumer printed no losses record")?;
    Ok((made as f64 / duration.as_secs_f64(), made, lost))
}

/// 4. The event rate each consumer keeps up with, stepping the storm's rate.
fn ceiling(opts: &Options) -> Result<Section> {
    let ns = Netns::create(STORM_NS)?;
    storm::wire(&ns)?;
    let steps = [Some(100_000.0), Some(200_000.0), Some(400_000.0), None];
    let mut md = String::from(
        "## 4. Consumer ceiling\n\nThe storm of section 3 at rising rates (the last as fast as 2 sending threads go), 3 s each, against qtrace's consumer \
(`watch --json --max-event-rate unlimited --netns --port`: decode, aggregate and print NDJSON) and a minimal consumer that only counts ring-buffer records (`qtrace/examples/ringbuf_count.rs`: the same programs attached the same way).\n\n\
| target rate | consumer | events made/s | events lost |\n|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    let mut port = 8200;
    let mut best = BTreeMap::new();
    for rate in steps {
        for (name, bin) in [("qtrace", &opts.qtrace), ("minimal", &opts.counter)] {
            port += 1;
            let p = port.to_string();
            let (made_rate, _made, lost) = ceiling_run(&ns, port, rate, || {
                if name == "qtrace" {
                    tracer::qtrace(bin, &["--json", "--max-event-rate", "unlimited", "--netns", STORM_NS, "--port", &p])
                } else {
                    tracer::counter(bin)
                }
            })?;
            let shown = rate.map(|r| format!("{r:.0}/s")).unwrap_or_else(|| "max".into());
            let _ = writeln!(md, "| {shown} | {name} | {made_rate:.0} | {lost} |");
            json.push(json!({ "target": rate, "consumer": name, "made_per_s": made_rate, "lost": lost }));
            if lost == 0 {
                let b = best.entry(name).or_insert(0.0f64);
                *b = b.max(made_rate);
            }
        }
    }
    for (name, rate) in &best {
        let _ = writeln!(md, "\nHighest rate with no loss, {name}: {rate:.0} events/s");
    }
    Ok(Section { key: "consumer_ceiling", json: json!({ "steps": json, "lossless_max": best }), md })
}

/// 5. qtrace's memory after the storm and after an hour of listener churn.
fn memory(opts: &Options, after_storm: Spread) -> Result<Section> {
    let ns = Netns::create(STORM_NS)?;
    storm::wire(&ns)?;
    const LISTENERS: u16 = 3600;
    let q = tracer::qtrace(&opts.qtrace, &["--json", "--netns", STORM_NS])?;
    std::thread::sleep(Duration::from_secs(1));
    let start = mib(q.rss_kib());
    let mut samples = vec![];
    for i in 0..LISTENERS {
        let storm = Storm::prepare(&ns, 30000 + i, 2, 1)?;
        storm.fire_n(3);
        drop(storm);
        if i % 600 == 599 {
            samples.push(mib(q.rss_kib()));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let end = mib(q.rss_kib());
    q.stop()?;
    let md = format!(
        "## 5. Memory\n\n- RSS of `qtrace watch --json` at the end of each storm (section 3): {} MiB\n\
- Listener churn, an hour's worth at one new listener a second: {LISTENERS} listeners opened on distinct ports, each overflowed 3 times, then closed, while `qtrace watch --json --netns` runs. RSS at the start {start:.1} MiB, every 600 listeners {}, at the end {end:.1} MiB.\n",
        after_storm.show(1),
        samples.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", "),
    );
    let json = json!({ "rss_mib_after_storm": after_storm.json(), "churn": { "listeners": LISTENERS, "rss_mib_start": start, "rss_mib_samples": samples, "rss_mib_end": end } });
    Ok(Section { key: "memory", json, md })
}
