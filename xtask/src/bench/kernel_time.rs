//! Section 6, kernel time per program: what each of qtrace's BPF programs
//! costs the kernel per call (`run_time_ns / run_cnt` with
//! `kernel.bpf_stats_enabled=1`), during section 3's drop storm and on
//! section 2's accept path; on the accept path also the kernel time all of
//! them add per connection, as a share of what one untraced connection
//! costs the machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::bpf_stats::{self, Prog, StatsOn};
use super::netns::Netns;
use super::stats::Spread;
use super::storm::{self, Storm};
use super::tracer::{self, Running};
use super::{accept, counter, cpustat, Options, Section, STORM_NS, STORM_RATE};

const STORM_TIME: Duration = Duration::from_secs(3);
const ACCEPT_TIME: Duration = Duration::from_secs(3);
const ACCEPT_CLIENTS: usize = 2;

/// Calls and time per program over one measurement, by program name.
type PerProg = BTreeMap<String, Prog>;

/// Runs `work` while qtrace runs; returns its result and what qtrace's
/// programs did meanwhile. Traffic on loopback and veths is handled in the
/// sender's own softirq, so it has all been counted when `work` returns.
fn traced<T>(q: &Running, work: impl FnOnce() -> Result<T>) -> Result<(T, PerProg)> {
    let before = bpf_stats::programs(q.pid())?;
    let out = work()?;
    let after = bpf_stats::programs(q.pid())?;
    let named = bpf_stats::delta(&before, &after).into_iter().map(|(id, p)| (bpf_stats::name(id), p)).collect();
    Ok((out, named))
}

fn total_ns(progs: &PerProg) -> f64 {
    progs.values().map(|p| p.run_time_ns as f64).sum()
}

/// Per program, over the rounds: calls (divided by `per`, when given) and
/// nanoseconds per call.
#[derive(Default)]
struct Table {
    calls: BTreeMap<String, Vec<f64>>,
    ns_per_call: BTreeMap<String, Vec<f64>>,
}

impl Table {
    fn add(&mut self, progs: &PerProg, per: f64) {
        for (name, p) in progs {
            self.calls.entry(name.clone()).or_default().push(p.run_cnt as f64 / per);
            let ns = self.ns_per_call.entry(name.clone()).or_default();
            if p.run_cnt > 0 {
                ns.push(p.run_time_ns as f64 / p.run_cnt as f64);
            }
        }
    }

    /// (calls, ns per call) of `name`, shown; "–" where there is nothing.
    fn show(&self, name: &str, digits: usize) -> (String, String) {
        let s = |v: Option<&Vec<f64>>, d| v.filter(|v| !v.is_empty()).map_or("–".to_owned(), |v| Spread::of(v).show(d));
        (s(self.calls.get(name), digits), s(self.ns_per_call.get(name), 0))
    }

    fn json(&self) -> Value {
        let s = |v: &Vec<f64>| if v.is_empty() { Value::Null } else { Spread::of(v).json() };
        self.calls.iter().map(|(n, c)| (n.clone(), json!({ "calls": s(c), "ns_per_call": s(&self.ns_per_call[n]) }))).collect()
    }
}

/// One storm (section 3's, `STORM_TIME` long) watched by qtrace with
/// `extra` arguments; returns the programs' work and the overflows the
/// kernel counted.
fn storm_round(opts: &Options, ns: &Netns, port: u16, extra: &[&str]) -> Result<(PerProg, u64)> {
    let storm = Storm::prepare(ns, port, 64, 2)?;
    let p = port.to_string();
    let mut args = vec!["--json", "--netns", STORM_NS, "--port", &p];
    args.extend_from_slice(extra);
    let q = tracer::qtrace(&opts.qtrace, &args)?;
    let before = ns.tcp_ext()?;
    let ((), progs) = traced(&q, || {
        storm.fire(Some(STORM_RATE), STORM_TIME);
        Ok(())
    })?;
    let after = ns.tcp_ext()?;
    q.stop()?;
    Ok((progs, counter(&before, &after, "ListenOverflows")))
}

/// One accept-path round: untraced, then traced (or the other way round
/// on odd rounds, so drift favours neither).
struct AcceptRound {
    /// Machine busy time (`/proc/stat`) per untraced connection, ns.
    busy_ns: f64,
    /// The bench process's own CPU per untraced connection, ns.
    own_ns: f64,
    /// Connections in the traced run, and what the programs did.
    traced_conns: f64,
    progs: PerProg,
}

fn accept_untraced(ns: &Netns) -> Result<(f64, f64)> {
    let (cpu0, own0) = (cpustat::read()?, cpustat::own());
    let conns = accept::run(ns, ACCEPT_CLIENTS, ACCEPT_TIME)? * ACCEPT_TIME.as_secs_f64();
    let (busy, own) = ((cpustat::read()? - cpu0).busy, cpustat::own() - own0);
    Ok((busy.as_nanos() as f64 / conns, own.as_nanos() as f64 / conns))
}

fn accept_traced(opts: &Options, ns: &Netns) -> Result<(f64, PerProg)> {
    // No filter, as in section 2: the programs run for every socket.
    let q = tracer::qtrace(&opts.qtrace, &["--json"])?;
    let (rate, progs) = traced(&q, || accept::run(ns, ACCEPT_CLIENTS, ACCEPT_TIME))?;
    q.stop()?;
    Ok((rate * ACCEPT_TIME.as_secs_f64(), progs))
}

fn accept_round(opts: &Options, ns: &Netns, round: usize) -> Result<AcceptRound> {
    let (untraced, traced) = if round.is_multiple_of(2) {
        let u = accept_untraced(ns)?;
        (u, accept_traced(opts, ns)?)
    } else {
        let t = accept_traced(opts, ns)?;
        (accept_untraced(ns)?, t)
    };
    Ok(AcceptRound { busy_ns: untraced.0, own_ns: untraced.1, traced_conns: traced.0, progs: traced.1 })
}

/// What the accept rounds add up to.
#[derive(Default)]
struct AcceptSums {
    table: Table,
    busy_us: Vec<f64>,
    own_us: Vec<f64>,
    added_ns: Vec<f64>,
    share_pct: Vec<f64>,
    own_share_pct: Vec<f64>,
}

impl AcceptSums {
    fn add(&mut self, r: &AcceptRound) {
        self.table.add(&r.progs, r.traced_conns);
        let added = total_ns(&r.progs) / r.traced_conns;
        self.busy_us.push(r.busy_ns / 1e3);
        self.own_us.push(r.own_ns / 1e3);
        self.added_ns.push(added);
        self.share_pct.push(100.0 * added / r.busy_ns);
        self.own_share_pct.push(100.0 * added / r.own_ns);
    }
}

pub(super) fn section(opts: &Options) -> Result<Section> {
    let _stats = StatsOn::enable()?;
    let (mut storm_table, mut per_overflow) = (Table::default(), [vec![], vec![]]);
    {
        let ns = Netns::create(STORM_NS)?;
        storm::wire(&ns)?;
        for round in 0..opts.runs {
            // The table: the default budget, as qtrace runs unless told;
            // beside it the total with every event sent.
            let (progs, overflows) = storm_round(opts, &ns, 8300 + 2 * round as u16, &[])?;
            storm_table.add(&progs, 1.0);
            per_overflow[0].push(total_ns(&progs) / overflows.max(1) as f64);
            let (progs, overflows) = storm_round(opts, &ns, 8301 + 2 * round as u16, &["--max-event-rate", "unlimited"])?;
            per_overflow[1].push(total_ns(&progs) / overflows.max(1) as f64);
        }
    }
    let ns = super::accept_netns()?;
    accept::run(&ns, ACCEPT_CLIENTS, Duration::from_millis(500))?; // warm-up
    let mut sums = AcceptSums::default();
    for round in 0..opts.runs {
        sums.add(&accept_round(opts, &ns, round)?);
    }
    Ok(render(opts, &storm_table, &per_overflow, &sums))
}

fn render(opts: &Options, storm: &Table, per_overflow: &[Vec<f64>; 2], accept: &AcceptSums) -> Section {
    let mut md = format!(
        "## 6. Kernel time per program\n\n`run_time_ns / run_cnt` of each program qtrace holds (its fdinfo under `/proc/PID/fdinfo`, names from `bpftool prog show`), \
counted with `kernel.bpf_stats_enabled=1` (restored afterwards), {} runs. Storm: section 3's storm at {STORM_RATE} packets/s for {} s, qtrace watching its port with the default event budget (5000 a second). \
Accept path: section 2's loop ({ACCEPT_CLIENTS} clients, {} s), qtrace watching everything. The programs run on every matching tracepoint hit on the machine, other work's included.\n\n\
| program | storm: calls per run | storm: ns per call | accept: calls per connection | accept: ns per call |\n|---|---|---|---|---|\n",
        opts.runs,
        STORM_TIME.as_secs(),
        ACCEPT_TIME.as_secs(),
    );
    let names: std::collections::BTreeSet<&String> = storm.calls.keys().chain(accept.table.calls.keys()).collect();
    for name in names {
        let ((sc, sn), (ac, an)) = (storm.show(name, 0), accept.table.show(name, 2));
        let _ = writeln!(md, "| `{name}` | {sc} | {sn} | {ac} | {an} |");
    }
    let (po, unlimited, busy, own, added, share, own_share) = (
        Spread::of(&per_overflow[0]),
        Spread::of(&per_overflow[1]),
        Spread::of(&accept.busy_us),
        Spread::of(&accept.own_us),
        Spread::of(&accept.added_ns),
        Spread::of(&accept.share_pct),
        Spread::of(&accept.own_share_pct),
    );
    let _ = write!(
        md,
        "\n- storm: kernel time of all programs per overflow: {} ns with the default budget, {} ns with `--max-event-rate unlimited` (every event reserved, written and submitted to the ring buffer)\n\
- accept path, CPU per untraced connection: {} µs (the machine's busy time, every `/proc/stat` column but idle and iowait, over the untraced run, divided by its connections; the bench's own CPU alone, client and server with the softirqs they ran: {} µs)\n\
- accept path, kernel time qtrace's programs add per connection (their `run_time_ns` growth over the traced run, divided by its connections): {} ns, **{} %** of an untraced connection ({} % of the bench's own CPU per connection)\n",
        po.show(0),
        unlimited.show(0),
        busy.show(1),
        own.show(1),
        added.show(0),
        share.show(2),
        own_share.show(2),
    );
    let json = json!({
        "runs": opts.runs,
        "storm": { "rate": STORM_RATE, "seconds": STORM_TIME.as_secs(), "programs": storm.json(), "kernel_ns_per_overflow": po.json(), "kernel_ns_per_overflow_unlimited": unlimited.json() },
        "accept": {
            "seconds": ACCEPT_TIME.as_secs(), "programs_per_connection": accept.table.json(),
            "untraced_busy_us_per_connection": busy.json(), "untraced_own_us_per_connection": own.json(),
            "qtrace_kernel_ns_per_connection": added.json(), "share_percent": share.json(), "share_of_own_percent": own_share.json(),
        },
    });
    Section { key: "kernel_time", json, md }
}
