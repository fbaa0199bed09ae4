//! `THIRD-PARTY-LICENSES`: every crate compiled into the static binary (the
//! `qtrace` package's normal dependencies on each shipped target) and into
//! its embedded eBPF programs (`qtrace-ebpf`'s), with the licence each
//! declares and the licence and notice files its authors ship. MIT, BSD and
//! Apache-2.0 ask for their notices to travel with binaries; this is where
//! they do. Each distinct text appears once, after the crates that ship it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::archive::File;
use super::TARGETS;
use crate::process::{cargo, output};

/// The packages whose normal dependencies are in what ships.
const ROOTS: [&str; 2] = ["qtrace", "qtrace-ebpf"];

/// A crate in the binary: name, version, declared licence, and its
/// licence files (file name, text).
struct Crate {
    name: String,
    version: String,
    license: String,
    texts: Vec<(String, String)>,
}

/// Whether a file in a crate's directory is one its authors ship as a
/// licence or notice.
fn is_licence_file(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["LICENSE", "LICENCE", "COPYING", "NOTICE", "UNLICENSE", "COPYRIGHT"].iter().any(|p| upper.starts_with(p))
}

fn licence_texts(manifest: &Path) -> Vec<(String, String)> {
    let Some(dir) = manifest.parent() else { return Vec::new() };
    let mut texts: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file() && is_licence_file(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).ok()?)))
        .collect();
    texts.sort();
    texts
}

/// The ids of the packages reachable from `ROOTS` through normal
/// dependencies, in one `cargo metadata` for `triple`.
fn shipped_ids(meta: &Value) -> Result<BTreeSet<String>> {
    let packages = meta["packages"].as_array().context("cargo metadata: packages")?;
    let nodes = meta["resolve"]["nodes"].as_array().context("cargo metadata: resolve")?;
    let mut todo: Vec<String> =
        packages.iter().filter(|p| ROOTS.iter().any(|r| p["name"] == *r)).filter_map(|p| p["id"].as_str().map(str::to_owned)).collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = nodes.iter().find(|n| n["id"] == id.as_str()) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                todo.push(pkg.to_owned());
            }
        }
    }
    Ok(seen)
}

/// The third-party crates in every shipped target's binary.
fn crates() -> Result<Vec<Crate>> {
    let mut out: BTreeMap<(String, String), Crate> = BTreeMap::new();
    for t in &TARGETS {
        let text = output(cargo().args(["metadata", "--format-version=1", "--filter-platform", t.triple]))
            .context("cargo metadata failed")?;
        let meta: Value = serde_json::from_str(&text).context("reading cargo metadata")?;
        let members: BTreeSet<&str> = meta["workspace_members"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let ids = shipped_ids(&meta)?;
        for p in meta["packages"].as_array().into_iter().flatten() {
            let id = p["id"].as_str().unwrap_or_default();
            if !ids.contains(id) || members.contains(id) {
                continue;
            }
            let (name, version) = (p["name"].as_str().unwrap_or_default().to_owned(), p["version"].as_str().unwrap_or_default().to_owned());
            out.entry((name.clone(), version.clone())).or_insert_with(|| Crate {
                name,
                version,
                license: p["license"].as_str().unwrap_or("(none declared)").to_owned(),
                texts: licence_texts(Path::new(p["manifest_path"].as_str().unwrap_or_default())),
            });
        }
    }
    Ok(out.into_values().collect())
}

/// The file's text: a list of the crates, then each distinct text once.
fn render(crates: &[Crate]) -> String {
    let mut s = String::from(
        "Third-party software in qtrace\n==============================\n\n\
         The qtrace binary and the eBPF programs it embeds are built from these\n\
         Rust crates besides qtrace's own. Each is listed with the licence it\n\
         declares; the licence and notice files its authors ship follow, each\n\
         distinct text once, after the crates that ship it.\n\n",
    );
    let mut by_text: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in crates {
        let files: Vec<&str> = c.texts.iter().map(|(f, _)| f.as_str()).collect();
        let shipped = if files.is_empty() { "no licence file in the crate".to_owned() } else { files.join(", ") };
        s.push_str(&format!("{} {}: {} ({shipped})\n", c.name, c.version, c.license));
        for (file, text) in &c.texts {
            by_text.entry(text.as_str()).or_default().push(format!("{} {} {file}", c.name, c.version));
        }
    }
    for (text, shipped_by) in by_text {
        s.push_str(&format!("\n{}\n{}\n\n{}\n", "-".repeat(72), shipped_by.join(", "), text.trim_end()));
    }
    s
}

/// `THIRD-PARTY-LICENSES`, for every artifact.
pub(crate) fn third_party() -> Result<File> {
    let crates = crates()?;
    anyhow::ensure!(crates.iter().any(|c| c.name == "aya"), "the third-party crates do not include aya: is the dependency walk right?");
    Ok(File::new(NAME, render(&crates)))
}

pub(crate) const NAME: &str = "THIRD-PARTY-LICENSES";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_files_are_recognised_by_their_names() {
        for yes in ["LICENSE", "LICENSE-MIT", "license-apache", "COPYING", "NOTICE", "UNLICENSE", "LICENCE.txt", "COPYRIGHT"] {
            assert!(is_licence_file(yes), "{yes}");
        }
        for no in ["README.md", "Cargo.toml", "src", "CHANGELOG.md"] {
            assert!(!is_licence_file(no), "{no}");
        }
    }

    #[test]
    fn each_text_appears_once_after_every_crate_that_ships_it() {
        let mit = ("LICENSE-MIT".to_owned(), "MIT text\n".to_owned());
        let crates = [
            Crate { name: "a".into(), version: "1.0.0".into(), license: "MIT".into(), texts: vec![mit.clone()] },
            Crate { name: "b".into(), version: "2.0.0".into(), license: "MIT OR Apache-2.0".into(), texts: vec![mit] },
            Crate { name: "c".into(), version: "0.1.0".into(), license: "MIT".into(), texts: vec![] },
        ];
        let text = render(&crates);
        assert_eq!(text.matches("MIT text").count(), 1, "{text}");
        assert!(text.contains("a 1.0.0 LICENSE-MIT, b 2.0.0 LICENSE-MIT\n\nMIT text"), "{text}");
        assert!(text.contains("c 0.1.0: MIT (no licence file in the crate)"), "{text}");
    }
}
