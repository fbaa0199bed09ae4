//! Section 3: a paced storm of accept-queue overflows on one listener,
//! watched by qtrace with every event written (`--max-event-rate
//! unlimited`: what the NDJSON writer costs per event) and with the default
//! per-port budget (what a flood costs qtrace as users run it), in turn
//! within each round. Both must report totals equal to the kernel's.

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
    Default,
}

impl Budget {
    fn args(self) -> &'static [&'static str] {
        match self {
            Budget::Unlimited => &["--max-event-rate", "unlimited"],
            Budget::Default => &[],
        }
    }
    fn name(self) -> &'static str {
        match self {
            Budget::Unlimited => "unlimited",
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
        cpu,
        rss_mib,
        ..Run::default()
    };
    read_records(&mut run, &usage.lines, port);
    Ok(run)
}

/// Runs the section; also returns qtrace's RSS after each unlimited storm.
pub(super) fn section(opts: &Options) -> Result<(Section, Spread)> {
    let ns = Netns::create(STORM_NS)?;
    storm::wire(&ns)?;
    let mut rows = String::new();
    let (mut rates, mut cpu_per_m, mut rss, mut budget_ratio, mut budget_cpu) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut all_exact, mut total_lost) = (true, 0);
    for round in 0..opts.runs {
        // Alternate which goes first, so drift favours neither.
        let order = if round % 2 == 0 { [Budget::Unlimited, Budget::Default] } else { [Budget::Default, Budget::Unlimited] };
        let mut cpu_per_overflow = [0.0; 2];
        for (i, budget) in order.into_iter().enumerate() {
            let run = one_storm(opts, &ns, 8100 + (2 * round + i) as u16, budget)?;
            all_exact &= run.exact();
            total_lost += run.lost;
            if budget == Budget::Unlimited {
                rates.push(run.overflows as f64 / DURATION.as_secs_f64());
                rss.push(run.rss_mib);
                if run.events > 0 {
                    cpu_per_m.push(run.cpu * 1e6 / run.events as f64);
                }
            } else {
                budget_cpu.push(run.cpu * 100.0 / DURATION.as_secs_f64());
            }
            cpu_per_overflow[usize::from(budget == Budget::Default)] = run.cpu / run.overflows.max(1) as f64;
            let _ = writeln!(rows, "{}", run.row(round, budget));
        }
        budget_ratio.push(cpu_per_overflow[1] / cpu_per_overflow[0]);
    }
    let (r, c, m, b, bc) = (Spread::of(&rates), Spread::of(&cpu_per_m), Spread::of(&rss), Spread::of(&budget_ratio), Spread::of(&budget_cpu));
    let md = format!(
        "## 3. Drop storm\n\nA listener (backlog 64, never accepting) with a full accept queue; 63 waiting requests whose final ACK is sent again and again from 2 threads at {STORM_RATE} packets/s for {} s, each one an accept-queue overflow (`ListenOverflows` and `ListenDrops` +1). qtrace runs `watch --json --netns {STORM_NS} --port P`, in each round once with `--max-event-rate unlimited` (every event written: what the writer costs) and once with the default budget (5000 events a second for the port; the rest counted as suppressed), the order alternating.\n\n\
| run | events | ListenOverflows Δ | ListenDrops Δ | qtrace port total | equal | events delivered | suppressed | lost | qtrace CPU (s) |\n|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\
- drops per second achieved: {}\n- qtrace CPU time per million events, unlimited: {} s\n- with the default budget, qtrace's CPU per overflow against unlimited's in the same round: {}; its CPU during the storm: {} % of a core\n- totals equal to the kernel's counters in every run: **{}**; events lost in all: **{}**\n",
        DURATION.as_secs(),
        r.show(0),
        c.show(2),
        b.show(3),
        bc.show(1),
        if all_exact { "yes" } else { "no" },
        total_lost,
    );
    let json = json!({
        "rate_target": STORM_RATE, "seconds": DURATION.as_secs(),
        "drops_per_s": r.json(), "cpu_s_per_million_events": c.json(),
        "budget_cpu_ratio": b.json(), "budget_cpu_percent": bc.json(),
        "exact": all_exact, "events_lost": total_lost, "rss_mib_after": m.json(),
    });
    Ok((Section { key: "drop_storm", json, md }, m))
}
