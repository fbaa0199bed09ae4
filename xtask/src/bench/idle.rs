//! Section 8, idle cost: the CPU `qtrace watch --plain` uses with no
//! traffic at all, on the host as it is and with many idle threads or many
//! empty network namespaces added. An idle tracer should cost the same
//! whatever else the host holds; this shows whether it does.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::load::{self, IdleThreads, Namespaces};
use super::stats::Spread;
use super::{tracer, Options, Section};

/// How long one setting is measured, once qtrace has settled: long enough
/// to take in one of its slow rescans of every process and namespace
/// (every 30 s, the first some 30 s after its first poll), so the figure
/// is what idling costs over time, not between rescans.
const IDLE_TIME: Duration = Duration::from_secs(32);
/// From attached to measured: start-up work (BTF, the first listener
/// inventory, and the first poll's walk of every thread for namespaces
/// made while it attached) is not idle cost.
const SETTLE: Duration = Duration::from_secs(3);
const NETNS_PREFIX: &str = "qtrace-bench-idle";
/// Changes of the host between runs, in tasks and in named namespaces,
/// beyond which its "as it is" baseline is said not to be one baseline.
const UNQUIET_TASKS: f64 = 1_000.0;
const UNQUIET_NETNS: f64 = 50.0;

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

    /// Why this load cannot be put in place on the host now, if so.
    fn unavailable(self) -> Option<String> {
        match self {
            Load::Threads(n) => load::no_room_for_threads(n),
            Load::Quiet | Load::Namespaces(_) => None,
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

/// One measurement: qtrace's CPU over `IDLE_TIME` with nothing to trace,
/// in % of one core, and what the host held meanwhile.
struct Idle {
    cpu_pct: f64,
    tasks: u64,
    namespaces: u64,
}

fn measure(opts: &Options) -> Result<Idle> {
    let q = tracer::qtrace_plain(&opts.qtrace, &[])?;
    std::thread::sleep(SETTLE);
    let (c0, t0) = (q.cpu_precise()?, Instant::now());
    std::thread::sleep(IDLE_TIME);
    let (cpu, wall) = (q.cpu_precise()? - c0, t0.elapsed());
    let (tasks, namespaces) = (load::host_tasks(), load::named_namespaces());
    q.stop()?;
    Ok(Idle { cpu_pct: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(), tasks, namespaces })
}

pub(super) fn section(opts: &Options) -> Result<Section> {
    let mut runs: Vec<Vec<Idle>> = (0..LOADS.len()).map(|_| vec![]).collect();
    let mut skipped: Vec<Option<String>> = vec![None; LOADS.len()];
    for _ in 0..opts.runs {
        for (i, load) in LOADS.iter().enumerate() {
            // A shared machine may already hold many threads: a setting
            // that does not fit is skipped and said so, not forced.
            match load.unavailable() {
                Some(why) => skipped[i] = Some(why),
                None => runs[i].push(load.with(|| measure(opts))?),
            }
        }
    }
    Ok(render(opts, &runs, &skipped))
}

fn render(opts: &Options, runs: &[Vec<Idle>], skipped: &[Option<String>]) -> Section {
    let mut md = format!(
        "## 8. Idle cost\n\n`qtrace watch --plain` (every namespace, every port) with no traffic: its CPU (process CPU clock, user + system) over {} s from {} s after it is attached, \
in % of one core, {} runs, the settings in this order in each run. The ratio is of medians, to the host as it is. Threads: that many sleeping threads in helper processes (5,000 each); \
namespaces: that many empty ones from `ip netns add` (removed afterwards). Other work on the machine goes on meanwhile: the tasks and named namespaces on the host, \
counted at the end of each measurement, show how much.\n\n\
| host | tasks on the host | named network namespaces | qtrace CPU (% of a core) | ratio to the host as it is | runs |\n|---|---|---|---|---|---|\n",
        IDLE_TIME.as_secs(),
        SETTLE.as_secs(),
        opts.runs,
    );
    let spread = |i: usize, f: fn(&Idle) -> f64| Spread::of(&runs[i].iter().map(f).collect::<Vec<_>>());
    let quiet = spread(0, |m| m.cpu_pct).median;
    let mut json = json!({ "seconds": IDLE_TIME.as_secs(), "runs": opts.runs });
    for (i, load) in LOADS.iter().enumerate() {
        let why = skipped[i].as_deref().map(|w| format!(" (skipped: {w})")).unwrap_or_default();
        if runs[i].is_empty() {
            let _ = writeln!(md, "| {} | – | – | – | – | 0{why} |", load.name());
            json[load.key()] = json!({ "skipped": skipped[i] });
            continue;
        }
        let (p, t, n) = (spread(i, |m| m.cpu_pct), spread(i, |m| m.tasks as f64), spread(i, |m| m.namespaces as f64));
        let ratio = p.median / quiet;
        let _ = writeln!(md, "| {} | {} | {} | {} | {ratio:.2} | {}{why} |", load.name(), t.show(0), n.show(0), p.show(2), runs[i].len());
        let each: Vec<_> =
            runs[i].iter().map(|m| json!({ "cpu_percent": m.cpu_pct, "host_tasks": m.tasks, "named_netns": m.namespaces })).collect();
        json[load.key()] = json!({ "cpu_percent": p.json(), "ratio": ratio, "host_tasks": t.json(), "named_netns": n.json(), "skipped": skipped[i], "runs": each });
    }
    let (t, n) = (spread(0, |m| m.tasks as f64), spread(0, |m| m.namespaces as f64));
    if t.max - t.min > UNQUIET_TASKS || n.max - n.min > UNQUIET_NETNS {
        let _ = writeln!(
            md,
            "\n**The host was not quiet**: between runs it went from {:.0} to {:.0} tasks and from {:.0} to {:.0} named namespaces (other work); report.json has each run.",
            t.min, t.max, n.min, n.max
        );
    }
    Section { key: "idle_cost", json, md }
}
