//! The machine's CPU time from the `cpu` line of `/proc/stat`: all CPUs
//! together, in clock ticks (`USER_HZ`). On this kernel
//! `CONFIG_IRQ_TIME_ACCOUNTING` is off, so the irq and softirq columns are
//! sampled by the scheduler tick (`account_system_index_time()` charges a
//! tick that lands in a softirq to `CPUTIME_SOFTIRQ`): exact over seconds,
//! not over single packets.

use std::ops::Sub;
use std::time::Duration;

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuTimes {
    /// Every column but idle and iowait: user, nice, system, irq, softirq,
    /// steal (guest time is already inside user and nice).
    pub busy: Duration,
    /// The softirq column, the 7th of the line: NET_RX and the other
    /// softirqs together (on a quiet machine NET_RX is nearly all of it).
    pub softirq: Duration,
}

impl Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, before: CpuTimes) -> CpuTimes {
        CpuTimes { busy: self.busy.saturating_sub(before.busy), softirq: self.softirq.saturating_sub(before.softirq) }
    }
}

fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(n * 1_000_000_000 / hz)
}

/// Parses the `cpu` line (user nice system idle iowait irq softirq steal ...).
fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let (user, nice, system, irq, softirq, steal) = (*v.first()?, *v.get(1)?, *v.get(2)?, *v.get(5)?, *v.get(6)?, *v.get(7)?);
    Some(CpuTimes { busy: ticks(user + nice + system + irq + softirq + steal), softirq: ticks(softirq) })
}

pub(super) fn read() -> Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse(&stat).context("no cpu line in /proc/stat")
}

/// This process's own CPU time so far (`getrusage(RUSAGE_SELF)`, user
/// plus system, the softirqs it ran inline included).
pub(super) fn own() -> Duration {
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_leaves_out_idle_and_iowait() {
        let hz = ticks(1);
        let t = parse("cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n").expect("parses");
        assert_eq!(t.busy, hz * (10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(t.softirq, hz * 3);
        assert!(parse("intr 1 2 3\n").is_none());
    }
}
