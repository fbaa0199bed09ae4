//! Project automation: `cargo xtask setup | build | run | test`.
//!
//! `setup` installs what building and testing qtrace needs on a Debian
//! machine, and skips whatever is already there, so every other command can
//! call it first. The eBPF object itself is built by `qtrace/build.rs`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod vm;

/// bpf-linker version known to link aya 0.14 programs with Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian packages qtrace's tests use at run time.
const TEST_PACKAGES: &[&str] = &["iproute2", "nftables", "bpftool", "jq", "tmux", "man-db"];
/// Debian packages the benchmarks compare against.
const BENCH_PACKAGES: &[&str] = &["bpftrace"];
/// Debian packages the VM matrix needs.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];
/// Debian packages the metrics and deployment tests run against: a real
/// Prometheus server and promtool, and systemd-analyze.
const DEPLOY_TEST_PACKAGES: &[&str] = &["prometheus", "systemd"];
/// Kubernetes' own schemas, offline, from PyPI: the DaemonSet is checked
/// against them.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Debian packages needed only to build bpf-linker against LLVM 22.
const LINKER_BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];

#[derive(Parser)]
#[command(name = "xtask", about = "qtrace's build and test automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, rust-src for nightly, bpf-linker.
    Setup,
    /// Set up, then build qtrace in release mode.
    Build,
    /// Set up, build, and run qtrace with the given arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, then run clippy, the unit tests, the root integration suite
    /// and the VM matrix.
    Test,
    /// Set up, build, and install qtrace, its manual pages and its shell
    /// completions under PREFIX (root for the default).
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Set up, build, and measure qtrace against bpftrace and no tracer:
    /// writes target/bench/report.md and report.json (root, a few minutes).
    Bench {
        /// Repetitions of each measurement.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Only these sections (1 start-up, 2 accept path, 3 storm, 4 consumer ceiling, 5 memory).
        #[arg(long, value_delimiter = ',')]
        only: Vec<u8>,
    },
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and attach every
    /// hook tier in each.
    VmTest,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup(&[]),
        Cmd::Build => setup(&[]).and_then(|()| build()),
        Cmd::Run { args } => setup(&[]).and_then(|()| build()).and_then(|()| run(args)),
        Cmd::Install { prefix } => setup(&[]).and_then(|()| build()).and_then(|()| install(&prefix)),
        Cmd::Test => setup(&[VM_PACKAGES, DEPLOY_TEST_PACKAGES].concat()).and_then(|()| python_tools()).and_then(|()| test()),
        Cmd::Bench { runs, only } => setup(BENCH_PACKAGES).and_then(|()| bench(runs, only)),
        Cmd::VmTest => setup(VM_PACKAGES).and_then(|()| build()).and_then(|()| vm_test()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", pkg])).is_some_and(|s| s.starts_with("ii"))
}

fn linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn setup(extra: &[&'static str]) -> Result<()> {
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

/// Installs the PyPI tools the tests use, unless the pinned version is there.
fn python_tools() -> Result<()> {
    let want = KUBERNETES_VALIDATE.split_once("==").map_or("", |(_, v)| v);
    if output(Command::new("python3").args(["-m", "kubernetes_validate", "--version"])).is_some_and(|v| v.contains(want)) {
        return Ok(());
    }
    eprintln!("xtask: installing {KUBERNETES_VALIDATE} from PyPI");
    status(Command::new("python3").args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE]))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--package", "qtrace"]))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The root integration suites the kernel matrix runs.
const VM_SUITES: &[&str] = &["overflow", "diagnosis"];

/// Builds the root integration suites and returns (name, executable) pairs.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--no-run", "--message-format=json", "--package", "qtrace"]);
    for suite in VM_SUITES {
        cmd.args(["--test", suite]);
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().context("building the integration tests")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let built: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    VM_SUITES
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

fn vm_test() -> Result<()> {
    vm::vm_test(&target_dir().join("release/qtrace"), &test_binaries()?)
}

fn bench(runs: usize, only: Vec<u8>) -> Result<()> {
    build()?;
    status(cargo().args(["build", "--release", "--package", "qtrace", "--example", "ringbuf_count"]))?;
    let release = target_dir().join("release");
    bench::run(&bench::Options {
        qtrace: release.join("qtrace"),
        counter: release.join("examples/ringbuf_count"),
        out: target_dir().join("bench"),
        runs: runs.max(1),
        only,
    })
}

/// The binary, `qtrace manpage --dir` and `qtrace completions SHELL`,
/// where man and the shells look under `prefix`.
fn install(prefix: &std::path::Path) -> Result<()> {
    let bin = target_dir().join("release/qtrace");
    let dest = prefix.join("bin/qtrace");
    let shells = [
        ("bash", "share/bash-completion/completions/qtrace"),
        ("zsh", "share/zsh/site-functions/_qtrace"),
        ("fish", "share/fish/vendor_completions.d/qtrace.fish"),
    ];
    for dir in ["bin", "share/man/man1"].iter().copied().chain(shells.iter().map(|(_, p)| p.rsplit_once('/').map_or("", |(d, _)| d))) {
        std::fs::create_dir_all(prefix.join(dir)).with_context(|| format!("creating {}", prefix.join(dir).display()))?;
    }
    // Copy to a temporary name, then rename: a running qtrace keeps its inode.
    let tmp = dest.with_extension("new");
    std::fs::copy(&bin, &tmp).with_context(|| format!("copying {} to {}", bin.display(), tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    let man = prefix.join("share/man/man1");
    status(Command::new(&dest).arg("manpage").arg("--dir").arg(&man))?;
    for (shell, path) in shells {
        let out = Command::new(&dest).args(["completions", shell]).output().with_context(|| format!("qtrace completions {shell}"))?;
        anyhow::ensure!(out.status.success(), "qtrace completions {shell} failed");
        std::fs::write(prefix.join(path), out.stdout).with_context(|| format!("writing {}", prefix.join(path).display()))?;
    }
    eprintln!("xtask: installed {}, manual pages in {}, completions for bash, zsh and fish", dest.display(), man.display());
    Ok(())
}

fn run(args: Vec<OsString>) -> Result<()> {
    let bin = target_dir().join("release/qtrace");
    let st = Command::new(&bin).args(&args).status().with_context(|| format!("starting {}", bin.display()))?;
    std::process::exit(st.code().unwrap_or(1));
}

fn test() -> Result<()> {
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
    // Root tests share the kernel's programs and counters: one at a time.
    // One release binary serves the host suite and every guest kernel.
    build()?;
    // The programs' crate has no host build (no_std, no_main).
    status(
        cargo()
            .args(["test", "--workspace", "--exclude", "qtrace-ebpf", "--", "--test-threads=1"])
            .env("QTRACE_BIN", target_dir().join("release/qtrace")),
    )?;
    // The soak test's memory figures: a report, not an assertion.
    if let Ok(report) = std::fs::read_to_string(target_dir().join("tmp/soak-report.txt")) {
        eprint!("xtask: {report}");
    }
    vm_test()
}
