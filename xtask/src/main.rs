//! Project automation: `cargo xtask setup | build | run | test | install |
//! bench | vm-test | fuzz | dist`, one module per subcommand. Every command sets up what
//! it needs first (`setup`). The eBPF object itself is built by
//! `qtrace/build.rs`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod dist;
mod fuzz;
mod install;
mod process;
mod setup;
mod test;
mod vm;

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
        /// Only these sections (1 start-up, 2 accept path, 3 storm, 4 consumer ceiling, 5 memory,
        /// 6 kernel time per program, 7 SYN flood, 8 idle cost).
        #[arg(long, value_delimiter = ',')]
        only: Vec<u8>,
    },
    /// Boot Debian's kernels under QEMU and run the bench's kernel-time and
    /// SYN-flood sections in each, once per hook tier: writes
    /// target/bench/vm-report.md (QTRACE_VM_KERNELS picks kernels).
    VmBench {
        /// Repetitions of each measurement in each guest.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Inside a `vm-bench` guest: the bench's sections on one tier.
    #[command(hide = true)]
    BenchGuest {
        #[arg(long)]
        hooks: String,
        #[arg(long, value_delimiter = ',')]
        only: Vec<u8>,
        #[arg(long, default_value_t = 1)]
        runs: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// For `bench`: start COUNT sleeping threads, say `ready`, and exit
    /// when stdin closes.
    #[command(hide = true)]
    IdleThreads { count: usize },
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and attach every
    /// hook tier in each.
    VmTest,
    /// Set up, then build static binaries for x86_64 and aarch64 and from
    /// them, in target/dist: tarballs, .deb and .rpm packages, an OCI image
    /// archive and SHA256SUMS.
    Dist {
        /// Write the artifacts here instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Set up, then run every fuzz target (cargo-fuzz, libFuzzer) for a
    /// bounded time from the seeds in fuzz/corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = test::FUZZ_SECONDS)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(&[]),
        Cmd::Build => setup::setup(&[]).and_then(|()| process::build()),
        Cmd::Run { args } => setup::setup(&[]).and_then(|()| process::build()).and_then(|()| process::run_qtrace(args)),
        Cmd::Install { prefix } => setup::setup(&[]).and_then(|()| process::build()).and_then(|()| install::install(&prefix)),
        Cmd::Test => {
            setup::setup(&[setup::VM_PACKAGES, setup::DEPLOY_TEST_PACKAGES, setup::OWNER_TEST_PACKAGES, setup::DIST_PACKAGES].concat())
                .and_then(|()| setup::python_tools())
                .and_then(|()| setup::dist_targets())
                .and_then(|()| setup::fuzz_tools())
                .and_then(|()| test::test())
        }
        Cmd::Bench { runs, only } => setup::setup(setup::BENCH_PACKAGES).and_then(|()| bench::bench(runs, only)),
        Cmd::VmBench { runs } => setup::setup(setup::VM_PACKAGES).and_then(|()| bench::vm_bench(runs)),
        Cmd::BenchGuest { hooks, only, runs, out } => bench::bench_guest(&hooks, only, runs, out),
        Cmd::Fuzz { seconds } => setup::setup(&[]).and_then(|()| setup::fuzz_tools()).and_then(|()| fuzz::fuzz(seconds)),
        Cmd::IdleThreads { count } => bench::idle_threads(count),
        Cmd::Dist { out } => {
            setup::setup(setup::DIST_PACKAGES).and_then(|()| setup::dist_targets()).and_then(|()| dist::dist(out).map(drop))
        }
        Cmd::VmTest => setup::setup(&[setup::VM_PACKAGES, setup::DIST_PACKAGES].concat())
            .and_then(|()| setup::dist_targets())
            .and_then(|()| dist::binaries())
            .and_then(|b| test::vm_test(&b)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
