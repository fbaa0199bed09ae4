//! Section 8, idle cost: the CPU `qtrace watch --plain` uses with no
//! traffic at all, on the host as it is and with many idle threads or many
//! empty network namespaces added. An idle tracer should cost the same
//! whatever else the host holds; this shows whether it does.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::load::{IdleThreads, Namespaces};
use super::stats::Spread;
use super::{tracer, Options, Section};

/// How long one setting is measured, once qtrace has settled.
const IDLE_TIME: Duration = Duration::from_secs(15);
/// From attached to measured: start-up work (BTF, the first listener
/// inventory) is not idle cost.
const SETTLE: Duration = Duration::from_secs(1);
const NETNS_PREFIX: &str = "qtrace-bench-idle";

#[derive(Clone, Copy)]
enum Load {
    Quiet,
    Threads(usize),
    Namespaces(usize),
}

const LOADS: [Load; 5] = [Load::Quiet, Load::Threads(5_000), Load::Threads(20_000), Load::Namespaces(200), Load::Namespaces(1_000)];

impl Load {
    fn name(self) -> String {
        match self {
            Load::Quiet => "the host as it is".to_owned(),
            Load::Threads(n) => format!("+{n} idle threads"),
            Load::Namespaces(n) => format!("+{n} network namespaces"),
        }
    }

    fn key(self) -> String {
        match self {
            Load::Quiet => "quiet".to_owned(),
            Load::Threads(n) => format!("threads_{n}"),
            Load::Namespaces(n) => format!("netns_{n}"),
        }
    }

    /// Runs `f` with this load in place; the load goes when `f` returns.
    fn with<T>(self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Load::Quiet => f(),
            Load::Threads(n) => {
                let _threads = IdleThreads::spawn(n)?;
                f()
            }
            Load::Namespaces(n) => {
                let _namespaces = Namespaces::add(NETNS_PREFIX, n)?;
                f()
            }
        }
    }
}

/// Tasks on the host (threads included): the total of `/proc/loadavg`'s
/// "running/total" field.
fn host_tasks() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(0)
}

/// qtrace's CPU over `IDLE_TIME` with nothing to trace, in % of one core;
/// and the host's task count meanwhile.
fn measure(opts: &Options) -> Result<(f64, u64)> {
    let q = tracer::qtrace_plain(&opts.qtrace, &[])?;
    std::thread::sleep(SETTLE);
    let (c0, t0) = (q.cpu_precise()?, Instant::now());
    std::thread::sleep(IDLE_TIME);
    let (cpu, wall) = (q.cpu_precise()? - c0, t0.elapsed());
    let tasks = host_tasks();
    q.stop()?;
    Ok((100.0 * cpu.as_secs_f64() / wall.as_secs_f64(), tasks))
}

pub(super) fn section(opts: &Options) -> Result<Section> {
    let mut pct = vec![vec![]; LOADS.len()];
    let mut ratio = vec![vec![]; LOADS.len()];
    let mut tasks = vec![vec![]; LOADS.len()];
    for _ in 0..opts.runs {
        let mut quiet = None;
        for (i, load) in LOADS.iter().enumerate() {
            let (p, t) = load.with(|| measure(opts))?;
            let base = *quiet.get_or_insert(p);
            pct[i].push(p);
            ratio[i].push(p / base);
            tasks[i].push(t as f64);
        }
    }
    let mut md = format!(
        "## 8. Idle cost\n\n`qtrace watch --plain` (every namespace, every port) with no traffic: its CPU (process CPU clock, user + system) over {} s from {} s after it is attached, \
in % of one core, {} runs. The quiet host is measured first in each run and each ratio is to it. Threads: that many sleeping threads in helper processes (5,000 each); \
namespaces: that many empty ones from `ip netns add` (removed afterwards). Other work on the machine goes on meanwhile.\n\n\
| host | tasks on the host | qtrace CPU (% of a core) | ratio to the quiet host |\n|---|---|---|---|\n",
        IDLE_TIME.as_secs(),
        SETTLE.as_secs(),
        opts.runs,
    );
    let mut json = json!({ "seconds": IDLE_TIME.as_secs(), "runs": opts.runs });
    for (i, load) in LOADS.iter().enumerate() {
        let (p, r, t) = (Spread::of(&pct[i]), Spread::of(&ratio[i]), Spread::of(&tasks[i]));
        let _ = writeln!(md, "| {} | {:.0} | {} | {} |", load.name(), t.median, p.show(2), r.show(2));
        json[load.key()] = json!({ "cpu_percent": p.json(), "ratio": r.json(), "host_tasks": t.json() });
    }
    Ok(Section { key: "idle_cost", json, md })
}
