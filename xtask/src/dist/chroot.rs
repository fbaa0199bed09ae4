//! Clean Debian root filesystems for the dist suite, made once with
//! `debootstrap` from the system's Debian mirror and kept in the cache
//! (`QTRACE_CACHE_DIR`, /var/cache/qtrace by default), one per suite and
//! package set. The suite copies one before each use, so every test starts
//! from the same clean system.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::status;

/// Debian 11: its glibc (2.31) is older than the one a build here links
/// against, which is what a static binary has to run on.
pub(crate) const SUITE: &str = "bullseye";
/// What the suite runs inside: `man` for the manual pages, systemd for
/// `systemd-analyze verify` of the packaged unit.
const INCLUDE: &str = "man-db,systemd";

fn cache_dir() -> PathBuf {
    std::env::var_os("QTRACE_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/qtrace")).join("chroot")
}

/// The cached root filesystem, made now if missing (about a minute).
pub(crate) fn debian_root() -> Result<PathBuf> {
    let dir = cache_dir();
    // The package set is part of the key: a changed list makes a new root.
    let root = dir.join(format!("{SUITE}-minbase-{}", INCLUDE.replace(',', "-")));
    if root.join("usr/bin/man").exists() && root.join("usr/bin/systemd-analyze").exists() {
        return Ok(root);
    }
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").context("reading the system's Debian sources")?;
    let mirror =
        sources.lines().find_map(|l| l.strip_prefix("URIs:")).map(|s| s.trim().to_owned()).context("no URIs: line in debian.sources")?;
    // Made beside its final place and renamed when complete, so an
    // interrupted debootstrap never passes for a root filesystem.
    let partial = dir.join(format!("{SUITE}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("xtask: making a Debian {SUITE} root filesystem in {} (once)", root.display());
    status(Command::new("debootstrap").args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE]).arg(&partial).arg(&mirror))
        .context("debootstrap (package debootstrap) makes the Debian root filesystem")?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).with_context(|| format!("moving {} to {}", partial.display(), root.display()))?;
    Ok(root)
}
