//! The architectures the kernel matrix boots: this machine's (x86_64, its
//! own tools in the guest) and arm64 under `qemu-system-aarch64`, whose
//! guests get Debian's arm64 builds of the same tools, unpacked from the
//! archive into a root filesystem kept in the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// One architecture's part of the matrix.
pub(crate) struct Arch {
    /// Debian's name for it, in kernel package names.
    pub(crate) deb: &'static str,
    /// The static qtrace it runs (`cargo xtask dist` builds both).
    pub(crate) triple: &'static str,
    /// Debian's multiarch directory for its libraries.
    pub(crate) multiarch: &'static str,
    pub(crate) qemu: &'static str,
    pub(crate) qemu_args: &'static [&'static str],
    pub(crate) console: &'static str,
    /// (series, package-name pattern with `ARCH` for `deb`): the newest of
    /// each is booted.
    pub(crate) series: &'static [(&'static str, &'static str)],
    /// Older packages booted beside the newest: (package, what differs).
    pub(crate) pinned: &'static [(&'static str, &'static str)],
    /// The tiers its guests run.
    pub(crate) tiers: &'static [&'static str],
}

pub(crate) const X86_64: Arch = Arch {
    deb: "amd64",
    triple: "x86_64-unknown-linux-musl",
    multiarch: "x86_64-linux-gnu",
    qemu: "qemu-system-x86_64",
    // Nested KVM does not work on this kind of machine: software
    // emulation. Without cx16: QEMU 7.2's emulated cmpxchg16b corrupted
    // RFLAGS in 6.12's SLUB fast path (double faults in __kmalloc); the
    // kernel falls back to its locked path when the CPU lacks it.
    qemu_args: &["-accel", "tcg", "-cpu", "max,cx16=off"],
    console: "ttyS0",
    series: &[
        ("5.10", r"^linux-image-5\.10\.0-[0-9]+-cloud-ARCH-unsigned$"),
        ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-ARCH-unsigned$"),
        ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb13-cloud-ARCH-unsigned$"),
    ],
    pinned: &[
        ("linux-image-6.12.107+deb13-cloud-amd64-unsigned", "tcp_v4/v6_syn_recv_sock take six parameters"),
        ("linux-image-6.12.117+deb13-cloud-amd64-unsigned", "tcp_v4/v6_syn_recv_sock take seven (opt_child_init)"),
    ],
    tiers: &["fentry", "kprobe", "tracepoint"],
};

/// arm64 guests run the overflow suite (the test crate builds it for
/// aarch64) on the two tiers that see each connection; the tracepoint tier
/// is the same code on every architecture, proven on x86_64.
pub(crate) const ARM64: Arch = Arch {
    deb: "arm64",
    triple: "aarch64-unknown-linux-musl",
    multiarch: "aarch64-linux-gnu",
    qemu: "qemu-system-aarch64",
    // pauth-impdef: QEMU's architected pointer-authentication algorithm is
    // slow to emulate; the implementation-defined one is not.
    qemu_args: &["-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"],
    console: "ttyAMA0",
    series: &[
        ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-ARCH-unsigned$"),
        ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb13-cloud-ARCH-unsigned$"),
    ],
    pinned: &[],
    tiers: &["fentry", "kprobe"],
};

/// What the guests run: the tests' tools and busybox, for `--install`.
const TOOL_PACKAGES: &[&str] = &["busybox-static", "iproute2", "nftables", "bpftool"];

impl Arch {
    /// This machine's architecture: its own root filesystem has the tools.
    pub(crate) fn is_native(&self) -> bool {
        self.triple.starts_with(std::env::consts::ARCH)
    }

    /// `6.12.117+deb13` from `linux-image-6.12.117+deb13-cloud-amd64-unsigned`.
    pub(crate) fn version_of(&self, pkg: &str) -> String {
        pkg.trim_start_matches("linux-image-").trim_end_matches(&format!("-cloud-{}-unsigned", self.deb)).to_owned()
    }

    /// The root filesystem the guest's tools and their libraries come from:
    /// `/` for this machine's architecture, else Debian's packages for it
    /// (apt options `opts`, for this architecture), unpacked into the cache
    /// and made again when the archive's versions change.
    pub(crate) fn tool_root(&self, dir: &Path, opts: &[String]) -> Result<PathBuf> {
        if self.is_native() {
            return Ok(PathBuf::from("/"));
        }
        let root = dir.join(format!("tools-{}", self.deb));
        let stamp = root.join(".qtrace-packages");
        let files = package_files(opts)?;
        if fs::read_to_string(&stamp).is_ok_and(|s| s == files.join("\n")) {
            return Ok(root);
        }
        eprintln!("vm-test: unpacking Debian's {} tools into {}", self.deb, root.display());
        let _ = fs::remove_dir_all(&root);
        let debs = dir.join(format!("downloads-{}", self.deb));
        fs::create_dir_all(&debs)?;
        for file in &files {
            let deb = debs.join(file);
            if !deb.exists() {
                let pkg = file.split('_').next().unwrap_or(file);
                super::run(Command::new("apt-get").args(opts).args(["download", "-qq", pkg]).current_dir(&debs))?;
            }
            anyhow::ensure!(deb.exists(), "apt-get download did not write {}", deb.display());
            super::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
        fs::write(&stamp, files.join("\n"))?;
        Ok(root)
    }

    /// A tool's file under `root`.
    pub(crate) fn tool(&self, root: &Path, name: &str) -> Result<PathBuf> {
        if self.is_native() {
            let out = super::run(Command::new("sh").arg("-c").arg(format!("command -v {name}")))?;
            return Ok(PathBuf::from(out.trim()));
        }
        ["usr/sbin", "usr/bin", "sbin", "bin"]
            .iter()
            .map(|d| root.join(d).join(name))
            .find(|p| p.exists())
            .with_context(|| format!("no {name} for {} under {}", self.deb, root.display()))
    }
}

/// The files (`libc6_2.41-12+deb13u5_arm64.deb`) of the tool packages and
/// everything they depend on, as the archive has them now.
fn package_files(opts: &[String]) -> Result<Vec<String>> {
    let out = super::run(Command::new("apt-get").args(opts).args(["download", "--print-uris"]).args(closure(opts)?))?;
    // 'URI' FILE SIZE HASH
    let mut files: Vec<String> = out.lines().filter_map(|l| l.split_whitespace().nth(1)).map(str::to_owned).collect();
    files.sort();
    Ok(files)
}

/// The tool packages and everything they depend on.
fn closure(opts: &[String]) -> Result<Vec<String>> {
    let out = super::run(
        Command::new("apt-cache")
            .args(opts)
            .args(["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"])
            .args(["--no-replaces", "--no-enhances", "--no-pre-depends"])
            .args(TOOL_PACKAGES),
    )?;
    // Package names start a line; indented lines are their dependencies
    // and `<name>` a virtual package that a real one provides.
    let mut names: Vec<String> =
        out.lines().filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty()).map(str::to_owned).collect();
    names.sort();
    names.dedup();
    Ok(names)
}
