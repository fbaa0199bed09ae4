//! Builds the eBPF programs (qtrace-ebpf) for the bpf target with aya-build
//! and leaves the object at `$OUT_DIR/qtrace`, embedded by `probe.rs`; then
//! hands `qtrace --version` what it reports about this build: the git
//! commit, the build date, the target and the object's SHA-256.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;
use sha2::{Digest as _, Sha256};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("reading the workspace metadata")?;
    let ebpf = packages.into_iter().find(|p| p.name.as_str() == "qtrace-ebpf").ok_or_else(|| anyhow!("qtrace-ebpf package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), ..Default::default() }],
        Toolchain::default(),
    )?;
    build_info()
}

/// `cargo:rustc-env` values for `qtrace --version`.
fn build_info() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is set by cargo")?);
    let object = std::fs::read(out.join("qtrace")).context("reading the eBPF object")?;
    let digest: String = Sha256::digest(&object).iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=QTRACE_EBPF_SHA256={digest}");
    println!("cargo:rustc-env=QTRACE_TARGET={}", std::env::var("TARGET").context("TARGET is set by cargo")?);
    println!("cargo:rustc-env=QTRACE_GIT_COMMIT={}", git_commit());
    // Reproducible builds set SOURCE_DATE_EPOCH (`cargo xtask dist` uses the
    // commit's date), so two builds of one commit are the same bytes.
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<u64>().with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    println!("cargo:rustc-env=QTRACE_BUILD_DATE={}", utc_date(epoch));
    Ok(())
}

/// The commit being built: `QTRACE_GIT_COMMIT` when given (a source tarball
/// has no repository), else git's HEAD, else "unknown".
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=QTRACE_GIT_COMMIT");
    if let Ok(c) = std::env::var("QTRACE_GIT_COMMIT") {
        return c;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // HEAD's reflog grows at every commit, checkout and reset in this
    // worktree: the commit is read again then, and only then.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}

/// `YYYY-MM-DD` of a Unix time, UTC (the civil-from-days algorithm of
/// Howard Hinnant's date library).
fn utc_date(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
