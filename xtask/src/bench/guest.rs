//! `cargo xtask vm-bench`: sections 6 (kernel time per program) and 7 (SYN
//! flood) inside Debian's kernels under QEMU, once per hook tier, so the
//! fentry and kprobe tiers, which this host refuses, are measured too.
//! Software emulation makes every absolute time meaningless: the report
//! compares tiers within one guest and traced against untraced within one
//! tier, nothing else.
//!
//! The guest runs this same xtask binary (`bench-guest`), which prints its
//! report as one `QTRACE-BENCH` line on the console for the host to read.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{run, tracer, Options};

/// Sections that make sense in a guest: no bpftrace, no idle host.
const SECTIONS: &str = "6,7";

/// In the guest: runs `only` with qtrace on tier `hooks` and prints the
/// report's JSON on one line.
pub(crate) fn bench_guest(hooks: &str, only: Vec<u8>, runs: usize, out: PathBuf) -> Result<()> {
    tracer::use_hooks(hooks);
    let qtrace = PathBuf::from("/usr/bin/qtrace");
    run(&Options { counter: qtrace.clone(), qtrace, out: out.clone(), runs: runs.max(1), only })?;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    println!("QTRACE-BENCH tier={hooks} {}", serde_json::to_string(&report)?);
    Ok(())
}

/// On the host: boots the guests, collects each tier's report and writes
/// `target/bench/vm-report.md` and `vm-report.json`.
pub(crate) fn vm_bench(runs: usize) -> Result<()> {
    crate::process::build()?;
    let qtrace = crate::process::target_dir().join("release/qtrace");
    let guests = crate::vm::vm_bench(&qtrace, SECTIONS, runs.max(1))?;
    let mut md = format!(
        "# qtrace in QEMU guests, per hook tier\n\nSections 6 and 7 of `cargo xtask bench` inside each kernel (TCG software emulation, {} run(s) per tier). \
Absolute times are emulated: compare tiers within a kernel, and traced against untraced.\n",
        runs.max(1)
    );
    let mut json = json!({});
    for g in &guests {
        let reports: Vec<(String, Value)> = g.console.lines().filter_map(parse_line).collect();
        let _ = write!(md, "\n## {}\n\n", g.version);
        md.push_str(&table(&reports));
        json[&g.version] = reports.into_iter().collect::<serde_json::Map<_, _>>().into();
    }
    let out = crate::process::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("vm-report.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    std::fs::write(out.join("vm-report.md"), &md).context("writing vm-report.md")?;
    print!("{md}");
    Ok(())
}

/// `QTRACE-BENCH tier=T {json}` -> (T, json).
fn parse_line(line: &str) -> Option<(String, Value)> {
    let rest = line.strip_prefix("QTRACE-BENCH tier=")?;
    let (tier, report) = rest.split_once(' ')?;
    Some((tier.to_owned(), serde_json::from_str(report).ok()?))
}

fn median(v: &Value) -> String {
    v["median"].as_f64().map_or("–".into(), |m| format!("{m:.0}"))
}

fn ratio(v: &Value) -> String {
    v["median"].as_f64().map_or("–".into(), |m| format!("{m:.3}"))
}

/// One row per tier: the programs' kernel time per overflow and per
/// connection, and the SYN flood's softirq time per SYN traced against
/// untraced, cookies off and on.
fn table(reports: &[(String, Value)]) -> String {
    let mut md = String::from(
        "| tier | storm: kernel ns per overflow (default budget / unlimited) | accept: kernel ns per connection | flood, cookies off: softirq per SYN, traced / untraced | flood, cookies on: same |\n|---|---|---|---|---|\n",
    );
    for (tier, r) in reports {
        let storm = &r["kernel_time"]["storm"];
        let flood = |cookies: u64| {
            r["syn_flood"]["costs"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["syncookies"] == cookies && c["watcher"] == "`qtrace watch --json`"))
                .map_or("–".into(), |c| ratio(&c["ratio"]))
        };
        let _ = writeln!(
            md,
            "| {tier} | {} / {} | {} | {} | {} |",
            median(&storm["kernel_ns_per_overflow"]),
            median(&storm["kernel_ns_per_overflow_unlimited"]),
            median(&r["kernel_time"]["accept"]["qtrace_kernel_ns_per_connection"]),
            flood(0),
            flood(1),
        );
    }
    md
}
