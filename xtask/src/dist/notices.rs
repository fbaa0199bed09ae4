//! `THIRD-PARTY-LICENSES`: every crate compiled into the static binary (the
//! `qtrace` package's normal dependencies on each shipped target, as
//! cargo's feature-resolved tree has them, proc-macros left out) and into
//! its embedded eBPF programs (`qtrace-ebpf`'s), with the licence each
//! declares and the licence and notice files its authors ship, then Rust's
//! standard library and musl. MIT, BSD and Apache-2.0 ask for their notices
//! to travel with binaries; this is where they do. Each distinct text
//! appears once, after the crates that ship it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use super::archive::File;
use super::TARGETS;
use crate::process::{cargo, output};

/// The packages whose normal dependencies are in what ships.
const ROOTS: [&str; 2] = ["qtrace", "qtrace-ebpf"];
/// qtrace's own crates, under qtrace's licences.
const OURS: [&str; 3] = ["qtrace", "qtrace-common", "qtrace-ebpf"];

/// A crate in the binary: name, version, declared licence, and its
/// licence files (file name, text).
struct Crate {
    name: String,
    version: String,
    license: String,
    texts: Vec<(String, String)>,
    /// The repository whose crate's licence files `texts` are, when the
    /// crate ships none.
    borrowed: Option<String>,
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

/// (name, version) of every crate in what ships for `triple`: cargo's
/// feature-resolved tree of normal dependencies without proc-macros
/// (which run in the compiler and are not linked in).
fn shipped(triple: &str) -> Result<BTreeSet<(String, String)>> {
    let mut cmd = cargo();
    cmd.args(["tree", "--edges", "normal,no-proc-macro", "--prefix", "none", "--format", "{p}", "--target", triple]);
    for root in ROOTS {
        cmd.args(["--package", root]);
    }
    let tree = output(&mut cmd).context("cargo tree failed")?;
    Ok(tree
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.trim_start_matches('v').to_owned()))
        })
        .filter(|(name, _)| !OURS.contains(&name.as_str()))
        .collect())
}

/// The third-party crates in every shipped target's binary.
fn crates() -> Result<Vec<Crate>> {
    let text = output(cargo().args(["metadata", "--format-version=1"])).context("cargo metadata failed")?;
    let meta: Value = serde_json::from_str(&text).context("reading cargo metadata")?;
    let packages = meta["packages"].as_array().context("cargo metadata: packages")?;
    let mut names = BTreeSet::new();
    for t in &TARGETS {
        names.extend(shipped(t.triple)?);
    }
    let mut out = Vec::new();
    let mut by_repo: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (name, version) in names {
        let p = packages
            .iter()
            .find(|p| p["name"] == name.as_str() && p["version"] == version.as_str())
            .with_context(|| format!("cargo tree names {name} {version}, cargo metadata does not"))?;
        let texts = licence_texts(Path::new(p["manifest_path"].as_str().unwrap_or_default()));
        let repo = p["repository"].as_str().unwrap_or_default().trim_end_matches('/').to_owned();
        if !texts.is_empty() && !repo.is_empty() {
            by_repo.entry(repo.clone()).or_insert_with(|| texts.clone());
        }
        let license = p["license"].as_str().unwrap_or("(none declared)").to_owned();
        out.push((Crate { name, version, license, texts, borrowed: None }, repo));
    }
    // Crates published without their licence files (aya-ebpf's) get those
    // of a crate from the same repository.
    Ok(out
        .into_iter()
        .map(|(mut c, repo)| {
            if let (true, Some(texts)) = (c.texts.is_empty(), by_repo.get(&repo)) {
                c.texts = texts.clone();
                c.borrowed = Some(repo);
            }
            c
        })
        .collect())
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
        let shipped = match (&c.borrowed, files.is_empty()) {
            (_, true) => "no licence file in the crate".to_owned(),
            (Some(repo), false) => format!("none in the crate; those of its repository, {repo}: {}", files.join(", ")),
            (None, false) => files.join(", "),
        };
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

/// What every Rust program for a musl target links besides crates: Rust's
/// standard library (MIT OR Apache-2.0; the toolchain's own licence texts)
/// and musl's C library (MIT; the copyright file Debian's musl package
/// ships: Rust's musl targets bundle the same upstream). LLVM's
/// compiler-rt and libunwind come under the LLVM exception, which asks
/// nothing of binaries.
fn runtime() -> Result<String> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"])).context("rustc --print sysroot failed")?;
    let licenses = Path::new(sysroot.trim()).join("share/doc/rust/licenses");
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let musl = Path::new("/usr/share/doc/musl/copyright");
    Ok(format!(
        "\n{rule}\nThe Rust standard library (std, core, alloc and the crates they use):\n\
         MIT OR Apache-2.0, Copyright (c) The Rust Project Contributors.\n\n{}\n\n{}\n\
         \n{rule}\nmusl libc, linked statically: MIT (from {}, package musl).\n\n{}\n",
        read(&licenses.join("MIT.txt"))?.trim_end(),
        read(&licenses.join("Apache-2.0.txt"))?.trim_end(),
        musl.display(),
        read(musl).context("the musl package (a dependency of musl-tools) ships musl's copyright")?.trim_end(),
        rule = "=".repeat(72),
    ))
}

/// `THIRD-PARTY-LICENSES`, for every artifact.
pub(crate) fn third_party() -> Result<File> {
    let crates = crates()?;
    anyhow::ensure!(crates.iter().any(|c| c.name == "aya"), "the third-party crates do not include aya: is the dependency walk right?");
    Ok(File::new(NAME, render(&crates) + &runtime()?))
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
            Crate { name: "a".into(), version: "1.0.0".into(), license: "MIT".into(), texts: vec![mit.clone()], borrowed: None },
            Crate { name: "b".into(), version: "2.0.0".into(), license: "MIT OR Apache-2.0".into(), texts: vec![mit], borrowed: None },
            Crate { name: "c".into(), version: "0.1.0".into(), license: "MIT".into(), texts: vec![], borrowed: None },
        ];
        let text = render(&crates);
        assert_eq!(text.matches("MIT text").count(), 1, "{text}");
        assert!(text.contains("a 1.0.0 LICENSE-MIT, b 2.0.0 LICENSE-MIT\n\nMIT text"), "{text}");
        assert!(text.contains("c 0.1.0: MIT (no licence file in the crate)"), "{text}");
    }
}
