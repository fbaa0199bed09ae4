//! Section 3: a paced storm of accept-queue overflows on one listener,
//! watched by qtrace with every event written (`--max-event-rate
//! unlimited`: what the NDJSON writer costs per event), the same without
//! owners (`--no-owner`: what naming the listener's owner on every event
//! costs), and with the default per-port budget (what a flood costs qtrace
//! as users run it), in turn within each round. All must report totals
//! equal to the kernel's.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::netns::Netns;
use super::stats::Spread;
use super::storm::{self, Storm};
use super::{counter, mib, tracer, Options, Section, STORM_NS, STORM_RATE};

const DURATION: Duration = Duration::from_secs(5);

/// How qtrace is told to send events.
#[derive(Clone, Copy, PartialEq)]
enum Budget {
    Unlimited,
    /// Unlimited, and no owner on the events.
    NoOwner,
    Default,
}

impl Budget {
    fn args(self) -> &'static [&'static str] {
        match self {
            Budget::Unlimited => &["--max-event-rate", "unlimited"],
            Budget::NoOwner => &["--max-event-rate", "unlimited", "--no-owner"],
            Budget::Default => &[],
        }
    }
    fn name(self) -> &'static str {
        match self {
            Budget::Unlimited => "unlimited",
            Budget::NoOwner => "unlimited, --no-owner",
            Budget::Default => "default (5000/s)",
        }
    }
}

/// qtrace's view of one storm, from its NDJSON, and the kernel's.
#[derive(Default)]
struct Run {
    overflows: u64,
    listen_drops: u64,
    drops: u64,
    events: u64,
    lost: u64,
    suppressed: u64,
    cpu: f64,
    rss_mib: f64,
    /// Bytes of the event lines qtrace wrote.
    bytes: u64,
}

impl Run {
    fn exact(&self) -> bool {
        self.drops == self.overflows && self.drops == self.listen_drops
    }
    fn row(&self, round: usize, budget: Budget) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            round + 1,
            budget.name(),
            self.overflows,
            self.listen_drops,
            self.drops,
            if self.exact() { "yes" } else { "**no**" },
            self.events,
            self.suppressed,
            self.lost,
            self.cpu
        )
    }
}

fn read_records(run: &mut Run, lines: &[String], port: u16) {
    for v in lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        match v["type"].as_str() {
            Some("summary") if v["local_port"] == port => run.drops = v["drops"].as_u64().unwrap_or(0),
            Some("losses") => {
                run.lost = v["ringbuf_full"].as_u64().unwrap_or(0);
                run.suppressed = v["suppressed"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
}

fn one_storm(opts: &Options, ns: &Netns, port: u16, budget: Budget) -> Result<Run> {
    let storm = Storm::prepare(ns, port, 64, 2)?;
    let p = port.to_string();
    let mut args = vec!["--json", "--netns", STORM_NS, "--port", &p];
    args.extend_from_slice(budget.args());
    let q = tracer::qtrace(&opts.qtrace, &args)?;
    let before = ns.tcp_ext()?;
    let cpu0 = q.cpu()?;
    storm.fire(Some(STORM_RATE), DURATION);
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = (q.cpu()? - cpu0).as_secs_f64();
    let rss_mib = mib(q.rss_kib());
    let after = ns.tcp_ext()?;
    let usage = q.stop()?;
    let mut run = Run {
        overflows: counter(&before, &after, "ListenOverflows"),
        listen_drops: counter(&before, &after, "ListenDrops"),
        events: usage.events,
        bytes: usage.event_bytes,
        cpu,
        rss_mib,
        ..Run::default()
    };
    read_records(&mut run, &usage.lines, port);
    Ok(run)
}

/// The three ways, in the order of round `round`: rotated, so drift
/// favours none.
fn order(round: usize) -> [Budget; 3] {
    let mut all = [Budget::Unlimited, Budget::NoOwner, Budget::Default];
    all.rotate_left(round % 3);
    all
}

/// Per-round figures, gathered over the runs.
#[derive(Default)]
struct Figures {
    rates: Vec<f64>,
    cpu_per_m: Vec<f64>,
    rss: Vec<f64>,
    budget_ratio: Vec<f64>,
    budget_cpu: Vec<f64>,
    /// CPU per event with owners against without, in the same round.
    owner_ratio: Vec<f64>,
    bytes_per_event: [Vec<f64>; 2],
    all_exact: bool,
    total_lost: u64,
}

impl Figures {
    /// Takes one round's three runs.
    fn round(&mut self, runs: &[(Budget, Run)]) {
        let of = |b: Budget| runs.iter().find(|(x, _)| *x == b).map(|(_, r)| r);
        let (Some(full), Some(bare), Some(budget)) = (of(Budget::Unlimited), of(Budget::NoOwner), of(Budget::Default)) else {
            return;
        };
        for (_, run) in runs {
            self.all_exact &= run.exact();
            self.total_lost += run.lost;
        }
        self.rates.push(full.overflows as f64 / DURATION.as_secs_f64());
        self.rss.push(full.rss_mib);
        if full.events > 0 && bare.events > 0 {
            self.cpu_per_m.push(full.cpu * 1e6 / full.events as f64);
            self.owner_ratio.push((full.cpu / full.events as f64) / (bare.cpu / bare.events as f64));
            self.bytes_per_event[0].push(full.bytes as f64 / full.events as f64);
            self.bytes_per_event[1].push(bare.bytes as f64 / bare.events as f64);
        }
        self.budget_cpu.push(budget.cpu * 100.0 / DURATION.as_secs_f64());
        self.budget_ratio.push((budget.cpu / budget.overflows.max(1) as f64) / (full.cpu / full.overflows.max(1) as f64));
    }
}

/// Runs the section; also returns qtrace's RSS after each unlimited storm.
pub(super) fn section(opts: &Options) -> Result<(Section, Spread)> {
    let ns = Netns::create(STORM_NS)?;
    storm::wire(&ns)?;
    let mut rows = String::new();
    let mut f = Figures { all_exact: true, ..Figures::default() };
    for round in 0..opts.runs {
        let mut runs = Vec::new();
        for (i, budget) in order(round).into_iter().enumerate() {
            let run = one_storm(opts, &ns, 8100 + (3 * round + i) as u16, budget)?;
            let _ = writeln!(rows, "{}", run.row(round, budget));
            runs.push((budget, run));
        }
        f.round(&runs);
    }
    Ok((report(&f, &rows), Spread::of(&f.rss)))
}

fn report(f: &Figures, rows: &str) -> Section {
    let (r, c, m, b, bc) =
        (Spread::of(&f.rates), Spread::of(&f.cpu_per_m), Spread::of(&f.rss), Spread::of(&f.budget_ratio), Spread::of(&f.budget_cpu));
    let (o, bytes, bare_bytes) = (Spread::of(&f.owner_ratio), Spread::of(&f.bytes_per_event[0]), Spread::of(&f.bytes_per_event[1]));
    let md = format!(
        "## 3. Drop storm\n\nA listener (backlog 64, never accepting) with a full accept queue; 63 waiting requests whose final ACK is sent again and again from 2 threads at {STORM_RATE} packets/s for {} s, each one an accept-queue overflow (`ListenOverflows` and `ListenDrops` +1). qtrace runs `watch --json --netns {STORM_NS} --port P`, in each round once with `--max-event-rate unlimited` (every event written, each naming the listener's owner: what the writer costs), once with that and `--no-owner` (no owner on the events: what naming it costs), and once with the default budget (5000 events a second for the port; the rest counted as suppressed), the order rotating.\n\n\
| run | events | ListenOverflows Δ | ListenDrops Δ | qtrace port total | equal | events delivered | suppressed | lost | qtrace CPU (s) |\n|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\
- drops per second achieved: {}\n- qtrace CPU time per million events, unlimited: {} s\n- the owner on every event: qtrace's CPU per event against `--no-owner` in the same round: {}; bytes per event line {} against {}\n- with the default budget, qtrace's CPU per overflow against unlimited's in the same round: {}; its CPU during the storm: {} % of a core\n- totals equal to the kernel's counters in every run: **{}**; events lost in all: **{}**\n",
        DURATION.as_secs(),
        r.show(0),
        c.show(2),
        o.show(3),
        bytes.show(0),
        bare_bytes.show(0),
        b.show(3),
        bc.show(1),
        if f.all_exact { "yes" } else { "no" },
        f.total_lost,
    );
    let json = json!({
        "rate_target": STORM_RATE, "seconds": DURATION.as_secs(),
        "drops_per_s": r.json(), "cpu_s_per_million_events": c.json(),
        "owner_cpu_ratio": o.json(), "bytes_per_event": bytes.json(), "bytes_per_event_no_owner": bare_bytes.json(),
        "budget_cpu_ratio": b.json(), "budget_cpu_percent": bc.json(),
        "exact": f.all_exact, "events_lost": f.total_lost, "rss_mib_after": m.json(),
    });
    Section { key: "drop_storm", json, md }
}
