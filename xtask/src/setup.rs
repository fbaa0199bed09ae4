//! `cargo xtask setup`: installs what building and testing qtrace needs on
//! a Debian machine (Debian packages, nightly's rust-src, bpf-linker built
//! against LLVM 22, PyPI tools), skipping whatever is already there, so
//! every other command can call it first.

use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{output, status};

/// bpf-linker version known to link aya 0.14 programs with Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian packages qtrace's tests use at run time.
const TEST_PACKAGES: &[&str] = &["iproute2", "nftables", "bpftool", "jq", "tmux", "man-db"];
/// Debian packages the owner suite runs real workloads with: nginx,
/// podman and containerd (with runc), and busybox-static for the
/// containers' root filesystem.
pub(crate) const OWNER_TEST_PACKAGES: &[&str] = &["nginx", "podman", "containerd", "runc", "busybox-static"];
/// Debian packages the benchmarks compare against.
pub(crate) const BENCH_PACKAGES: &[&str] = &["bpftrace"];
/// Debian packages the VM matrix needs.
pub(crate) const VM_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-arm", "busybox-static", "cpio", "binutils"];
/// Debian packages the metrics and deployment tests run against: a real
/// Prometheus server and promtool, and systemd-analyze.
pub(crate) const DEPLOY_TEST_PACKAGES: &[&str] = &["prometheus", "systemd"];
/// Debian packages `dist` and its tests need: musl's tools and an aarch64
/// linker for the static builds, rpm's packager (dpkg-deb comes with
/// dpkg), debootstrap for a clean Debian to install into, podman with runc
/// to run the image, `file` to tell static binaries.
pub(crate) const DIST_PACKAGES: &[&str] =
    &["musl-tools", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "rpm", "debootstrap", "podman", "runc", "skopeo", "file"];
/// The static builds' targets (rustup's standard library for each).
pub(crate) const DIST_TARGETS: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
/// Kubernetes' own schemas, offline, from PyPI: the DaemonSet is checked
/// against them.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Debian packages needed only to build bpf-linker against LLVM 22.
const LINKER_BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", pkg])).is_some_and(|s| s.starts_with("ii"))
}

fn linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

pub(crate) fn setup(extra: &[&'static str]) -> Result<()> {
    let linker = linker_ok();
    let mut missing: Vec<&str> = TEST_PACKAGES.iter().chain(extra).copied().filter(|p| !installed(p)).collect();
    if !linker {
        missing.extend(LINKER_BUILD_PACKAGES.iter().copied().filter(|p| !installed(p)));
    }
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        status(Command::new("apt-get").args(["update", "-qq"]))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    // The bpf target has no prebuilt core: aya-build uses nightly's
    // -Z build-std=core, which needs the rust-src component.
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is needed")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: installing the nightly toolchain");
        status(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src"]))?;
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"])).unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to nightly");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }

    if !linker {
        // Without LLVM_PREFIX bpf-linker finds the system's older
        // llvm-config and fails to link.
        eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)");
        status(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                    "--force",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }
    Ok(())
}

/// cargo-fuzz, which builds the fuzz targets with libFuzzer and
/// AddressSanitizer (on nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz unless the pinned version is there.
pub(crate) fn fuzz_tools() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
}

/// Adds the static builds' targets to the default toolchain unless there.
pub(crate) fn dist_targets() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).context("rustup is needed")?;
    let missing: Vec<&str> = DIST_TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: adding Rust targets {}", missing.join(" "));
    status(Command::new("rustup").args(["target", "add"]).args(&missing))
}

/// Installs the PyPI tools the tests use, unless the pinned version is there.
pub(crate) fn python_tools() -> Result<()> {
    let want = KUBERNETES_VALIDATE.split_once("==").map_or("", |(_, v)| v);
    if output(Command::new("python3").args(["-m", "kubernetes_validate", "--version"])).is_some_and(|v| v.contains(want)) {
        return Ok(());
    }
    eprintln!("xtask: installing {KUBERNETES_VALIDATE} from PyPI");
    status(Command::new("python3").args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE]))
}
