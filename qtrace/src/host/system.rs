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
