//! The shared libraries a guest needs for a dynamically linked tool, found
//! the way the dynamic loader would, but in a root filesystem of the
//! guest's architecture (`/` for this machine's, an unpacked set of Debian
//! packages for another). A static binary needs none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `readelf` reads any architecture's ELF headers; in the C locale, whose
/// wording the parsers below read (binutils translates it).
fn readelf(flag: &str, bin: &Path) -> Result<String> {
    let out = Command::new("readelf").arg(flag).arg("-W").arg(bin).env("LC_ALL", "C").output().context("starting readelf (binutils)")?;
    if !out.status.success() {
        bail!("readelf {flag} {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The program interpreter a binary asks for (`/lib64/ld-linux-x86-64.so.2`),
/// none for a static one.
fn interpreter(bin: &Path) -> Result<Option<String>> {
    let headers = readelf("-l", bin)?;
    let path = headers.lines().find_map(|l| {
        let rest = l.split("[Requesting program interpreter: ").nth(1)?;
        Some(rest.trim_end_matches(']').to_owned())
    });
    // The segment's name is not translated: a path we failed to read must
    // not pass for a static binary.
    if path.is_none() && headers.lines().any(|l| l.trim_start().starts_with("INTERP ")) {
        bail!("{} has an interpreter readelf's output did not name", bin.display());
    }
    Ok(path)
}

/// The libraries a binary names (`DT_NEEDED`).
fn needed(bin: &Path) -> Result<Vec<String>> {
    let dynamic = readelf("-d", bin)?;
    dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(|l| {
            let name = l.split("Shared library: [").nth(1).map(|s| s.trim_end_matches(']').to_owned());
            name.with_context(|| format!("{}: an unreadable DT_NEEDED line: {l}", bin.display()))
        })
        .collect()
}

/// Where a library of `multiarch` is looked for, under `root`.
fn find(root: &Path, multiarch: &str, name: &str) -> Option<PathBuf> {
    ["usr/lib", "lib"]
        .iter()
        .flat_map(|base| [format!("{base}/{multiarch}/{name}"), format!("{base}/{name}")])
        .map(|rel| root.join(rel))
        .find(|p| p.exists())
}

/// (file under `root`, path in the guest) for everything `bin` loads: its
/// interpreter at the path it asks for, and each library (and theirs) at
/// the path it has under `root`, which the loader searches by default.
pub(crate) fn closure(root: &Path, multiarch: &str, bin: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    let Some(interp) = interpreter(bin)? else { return Ok(out) };
    let name = Path::new(&interp).file_name().context("interpreter path")?.to_string_lossy().into_owned();
    let file =
        find(root, multiarch, &name).with_context(|| format!("{} asks for {interp}, not found under {}", bin.display(), root.display()))?;
    out.push((file, PathBuf::from(interp.trim_start_matches('/'))));
    let mut seen = BTreeSet::new();
    let mut todo = needed(bin)?;
    while let Some(lib) = todo.pop() {
        if !seen.insert(lib.clone()) {
            continue;
        }
        let file =
            find(root, multiarch, &lib).with_context(|| format!("{} needs {lib}, not found under {}", bin.display(), root.display()))?;
        todo.extend(needed(&file)?);
        let inside = file.strip_prefix(root).context("a library under the root")?.to_path_buf();
        out.push((file, inside));
    }
    Ok(out)
}
