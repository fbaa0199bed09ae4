//! What each BPF program of a process costs the kernel: `run_cnt` and
//! `run_time_ns` from the fdinfo of its program descriptors. The kernel
//! counts them only while `kernel.bpf_stats_enabled` is 1 (the
//! `bpf_stats_enabled_key` static key around `bpf_prog_run()`), so
//! [`StatsOn`] turns that on and puts the old value back.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` for as long as it lives; the previous
/// value comes back on drop, also when a measurement fails half-way.
pub(super) struct StatsOn {
    old: String,
}

impl StatsOn {
    pub(super) fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?.trim().to_owned();
        std::fs::write(SYSCTL, "1").with_context(|| format!("writing 1 to {SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.old) {
            eprintln!("bench: could not restore {SYSCTL} to {}: {e}", self.old);
        }
    }
}

/// One program's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Prog {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Parses one fdinfo: `Some((prog_id, counters))` for a program
/// descriptor. Link descriptors name a `prog_id` too but have no
/// `run_cnt`, so they are left out.
fn parse_fdinfo(text: &str) -> Option<(u32, Prog)> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let id = u32::try_from(field("prog_id")?).ok()?;
    Some((id, Prog { run_cnt: field("run_cnt")?, run_time_ns: field("run_time_ns")? }))
}

/// Every BPF program `pid` holds a descriptor of, by program id (a
/// program held twice is counted once).
pub(super) fn programs(pid: i32) -> Result<BTreeMap<u32, Prog>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut progs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        // Descriptors come and go while qtrace runs: skip what vanished.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        if let Some((id, p)) = parse_fdinfo(&text) {
            progs.insert(id, p);
        }
    }
    Ok(progs)
}

/// The counters' growth from `before` to `after`, per program id.
pub(super) fn delta(before: &BTreeMap<u32, Prog>, after: &BTreeMap<u32, Prog>) -> BTreeMap<u32, Prog> {
    after
        .iter()
        .map(|(id, a)| {
            let b = before.get(id).copied().unwrap_or_default();
            (*id, Prog { run_cnt: a.run_cnt - b.run_cnt, run_time_ns: a.run_time_ns - b.run_time_ns })
        })
        .collect()
}

/// A program's full name. The kernel keeps only 15 characters
/// (`BPF_OBJ_NAME_LEN`); bpftool prints the whole function name from the
/// program's BTF (`func_info`), so `inet_sock_set_state` stays whole.
/// Falls back to the id when bpftool cannot say.
pub(super) fn name(id: u32) -> String {
    let shown = Command::new("bpftool").args(["prog", "show", "id", &id.to_string(), "--json"]).output();
    shown
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("prog {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_descriptors_only() {
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t5418\nrun_time_ns:\t1200\nrun_cnt:\t10\n";
        assert_eq!(parse_fdinfo(prog), Some((5418, Prog { run_cnt: 10, run_time_ns: 1200 })));
        let link = "pos:\t0\nlink_type:\tperf\nlink_id:\t7\nprog_tag:\tab\nprog_id:\t5418\n";
        assert_eq!(parse_fdinfo(link), None);
        assert_eq!(parse_fdinfo("pos:\t0\n"), None);
    }
}
