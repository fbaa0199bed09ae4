//! Facts about the running system that decide what qtrace can do.

use std::path::Path;

use crate::kernel::limits::Limit;

/// The kernel release (`uname -r`), or `unknown`.
pub(crate) fn kernel_release() -> String {
    // SAFETY: uname(2) fills a zeroed struct we own; the release is a
    // NUL-terminated string inside it.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
        } else {
            "unknown".into()
        }
    }
}

/// Whether qtrace runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Capabilities naming other users' processes takes: CAP_SYS_PTRACE to
/// read their `/proc/PID/fd` links and `exe`, CAP_DAC_READ_SEARCH to list
/// their `fd` directories (`proc_fd_permission`, `proc_fd_link` in
/// fs/proc).
const OWNER_CAPS: [(u32, &str); 2] = [(19, "CAP_SYS_PTRACE"), (2, "CAP_DAC_READ_SEARCH")];

/// What qtrace cannot name of other users' listeners, from its effective
/// capabilities (`CapEff:` in `/proc/self/status`); `None` when it can.
pub(crate) fn owner_limit() -> Option<Limit> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    missing_owner_caps(&status).map(Limit::OwnersPartial)
}

fn missing_owner_caps(status: &str) -> Option<String> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let eff = u64::from_str_radix(hex, 16).ok()?;
    let missing: Vec<&str> = OWNER_CAPS.iter().filter(|(bit, _)| eff & (1 << bit) == 0).map(|(_, name)| *name).collect();
    (!missing.is_empty()).then(|| format!("without {}", missing.join(" and ")))
}

/// Whether the kernel publishes its BTF (every tier needs it).
pub(crate) fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Wall-clock time now, nanoseconds since the Unix epoch.
pub(crate) fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of
/// `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now, in nanoseconds.
pub(crate) fn boot_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_capabilities() {
        assert_eq!(missing_owner_caps("Name:\tq\nCapEff:\t000001ffffffffff\n"), None, "root's full set");
        assert_eq!(missing_owner_caps("CapEff:\t0000000000000000\n").as_deref(), Some("without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"));
        assert_eq!(missing_owner_caps("CapEff:\t0000000000080000\n").as_deref(), Some("without CAP_DAC_READ_SEARCH"));
        assert_eq!(missing_owner_caps("CapEff:\t0000000000000004\n").as_deref(), Some("without CAP_SYS_PTRACE"));
        assert_eq!(missing_owner_caps("no such line"), None);
    }
}
