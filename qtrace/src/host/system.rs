//! Facts about the running system that decide what qtrace can do.

use std::path::Path;

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

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now, in nanoseconds.
pub(crate) fn boot_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}
