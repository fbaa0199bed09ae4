//! `cargo xtask test`: clippy (host crates and the eBPF programs), the
//! release artifacts (`dist`), the unit tests, the root integration suites
//! on this kernel (`dist` among them, on the artifacts), then the kernel
//! matrix (`vm`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{cargo, status, target_dir};
use crate::vm::X86_64;
use crate::{dist, vm};

/// Seconds each fuzz target runs in `cargo xtask test`.
pub(crate) const FUZZ_SECONDS: u64 = 20;

/// The root integration suites the kernel matrix runs.
const VM_SUITES: &[&str] = &["overflow", "diagnosis", "accept_wait"];

/// The suites foreign-architecture guests run (static musl test binaries).
const CROSS_SUITES: &[&str] = &["overflow", "accept_wait"];

/// Builds the root integration `suites` (for `target`, else this machine)
/// and returns (name, executable) pairs.
fn test_binaries(suites: &[&str], target: Option<&dist::Target>) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--no-run", "--message-format=json", "--package", "integration-test"]);
    for suite in suites {
        cmd.args(["--test", suite]);
    }
    if let Some(t) = target {
        cmd.args(["--target", t.triple]);
        dist::cross_env(&mut cmd, t);
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().context("building the integration tests")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let built: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    suites
        .iter()
        .map(|suite| {
            built
                .iter()
                .find(|v| v["target"]["name"] == *suite && v["executable"].is_string())
                .and_then(|v| v["executable"].as_str().map(|e| ((*suite).to_owned(), PathBuf::from(e))))
                .with_context(|| format!("no executable for the {suite} tests"))
        })
        .collect()
}

/// The kernel matrix, on every architecture, with the static binaries
/// `binaries` (from `dist`).
pub(crate) fn vm_test(binaries: &[(dist::Target, PathBuf)]) -> Result<()> {
    let mut sets = Vec::new();
    for arch in [&vm::X86_64, &vm::ARM64] {
        if !vm::arch_selected(arch)? {
            continue;
        }
        let qtrace = binaries.iter().find(|(t, _)| t.triple == arch.triple).map(|(_, p)| p.clone());
        let qtrace = qtrace.with_context(|| format!("no static qtrace for {}", arch.triple))?;
        let tests =
            if arch.is_native() { test_binaries(VM_SUITES, None)? } else { test_binaries(CROSS_SUITES, Some(dist::target(arch.triple)?))? };
        sets.push(vm::GuestSet { arch, qtrace, tests });
    }
    vm::vm_test(&sets)
}

/// What the dist suite (`tests/dist.rs`) is given: each artifact's path
/// and the cached Debian root filesystem to install into.
fn dist_env(art: &dist::Artifacts, debian: &std::path::Path) -> Vec<(String, PathBuf)> {
    let mut env = vec![("QTRACE_DIST_DIR".to_owned(), art.dir.clone()), ("QTRACE_DIST_DEBIAN_ROOT".to_owned(), debian.to_path_buf())];
    for (i, (t, bin)) in art.binaries.iter().enumerate() {
        let arch = t.triple.split('-').next().unwrap_or_default().to_uppercase();
        env.push((format!("QTRACE_DIST_BIN_{arch}"), bin.clone()));
        env.push((format!("QTRACE_DIST_TARBALL_{arch}"), art.tarballs[i].clone()));
        env.push((format!("QTRACE_DIST_DEB_{arch}"), art.debs[i].clone()));
        env.push((format!("QTRACE_DIST_RPM_{arch}"), art.rpms[i].clone()));
    }
    env.push(("QTRACE_DIST_OCI".to_owned(), art.oci.clone()));
    env.push(("QTRACE_DIST_SUMS".to_owned(), art.sums.clone()));
    env
}

pub(crate) fn test() -> Result<()> {
    status(cargo().args(["clippy", "--workspace", "--exclude", "qtrace-ebpf", "--all-targets", "--", "-D", "warnings"]))?;
    // The programs only build for the bpf target (core from source).
    status(Command::new("rustup").args(["run", "nightly", "cargo", "clippy", "--package", "qtrace-ebpf", "--release"]).args([
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The dist suite checks the release artifacts and installs them into a
    // clean Debian; every suite and every guest kernel runs the static
    // binary the artifacts hold, as users do.
    let art = dist::dist(None)?;
    let host = art.binary(X86_64.triple).context("no static x86_64 build")?.to_path_buf();
    let debian = dist::chroot::debian_root()?;
    // Root tests share the kernel's programs and counters: one at a time.
    // The programs' crate has no host build (no_std, no_main);
    // `--workspace` takes in test/integration-test, the root suites, which
    // plain `cargo test` leaves out.
    status(
        cargo()
            .args(["test", "--workspace", "--exclude", "qtrace-ebpf", "--exclude", "qtrace-fuzz", "--", "--test-threads=1"])
            .env("QTRACE_BIN", &host)
            .envs(dist_env(&art, &debian)),
    )?;
    crate::fuzz::fuzz(FUZZ_SECONDS)?;
    // The soak test's memory figures: a report, not an assertion.
    if let Ok(report) = std::fs::read_to_string(target_dir().join("tmp/soak-report.txt")) {
        eprint!("xtask: {report}");
    }
    vm_test(&art.binaries)
}
