//! Running commands and cargo, and where cargo puts its output.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `cmd`, an error unless it succeeds.
pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, `None` unless it succeeds.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo that runs xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo xtask build`: the release qtrace (its build script builds the
/// eBPF programs).
pub(crate) fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--package", "qtrace"]))
}

/// Where cargo puts builds: `CARGO_TARGET_DIR` (`.ci/run` sets it), else
/// the workspace's `target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// `cargo xtask run -- ARGS`: the release qtrace with ARGS, its exit status
/// passed on.
pub(crate) fn run_qtrace(args: Vec<OsString>) -> Result<()> {
    let bin = target_dir().join("release/qtrace");
    let st = Command::new(&bin).args(&args).status().with_context(|| format!("starting {}", bin.display()))?;
    std::process::exit(st.code().unwrap_or(1));
}
