//! `cargo xtask fuzz`: every fuzz target in `fuzz/` under libFuzzer with
//! AddressSanitizer (cargo-fuzz, nightly) for a bounded time each, from
//! the seeds in `fuzz/corpus/TARGET`. What the fuzzer finds goes to a
//! scratch corpus, so a run leaves the tree as it was; a crash fails the
//! run and names the input to add to the corpus (the corpus also runs under
//! `cargo test`, qtrace/tests/fuzz_corpus.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{status, target_dir};

/// The targets, as named in fuzz/Cargo.toml.
const TARGETS: &[&str] = &["btf", "sock_diag", "tracepoint_format", "netstat", "kallsyms", "ring_record", "proc_identity"];

fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"]);
    // Its own directory: instrumented builds share nothing with the rest.
    cmd.env("CARGO_TARGET_DIR", target_dir().join("fuzz"));
    cmd
}

/// Runs every target for `seconds`; prints how many inputs each tried.
pub(crate) fn fuzz(seconds: u64) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    status(cargo_fuzz().current_dir(&root).args(["build", "--release"]))?;
    let scratch = target_dir().join("tmp/fuzz");
    let mut report = Vec::new();
    for target in TARGETS {
        let (found, crashes) = (scratch.join(target).join("corpus"), scratch.join(target).join("crashes"));
        for dir in [&found, &crashes] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let seeds = root.join("fuzz/corpus").join(target);
        let out = cargo_fuzz()
            .current_dir(&root)
            .args(["run", "--release", target])
            .args([&found, &seeds])
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", crashes.display()))
            .output()
            .with_context(|| format!("running the {target} fuzz target"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("fuzz target {target} failed: {}\n{}", crashed_input(&crashes).unwrap_or_default().display(), tail.join("\n"));
        }
        report.push(format!("{target}: {}", runs(&log)));
    }
    eprintln!("xtask: fuzzing, {seconds} s per target: {}", report.join("; "));
    Ok(())
}

/// libFuzzer's closing `Done N runs in S second(s)`.
fn runs(log: &str) -> String {
    log.lines().rev().find_map(|l| l.strip_prefix("Done ")).map_or_else(|| "no summary".to_owned(), str::to_owned)
}

/// The input a crash left in `dir`.
fn crashed_input(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.path()).next()
}
