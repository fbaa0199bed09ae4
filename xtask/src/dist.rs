//! `cargo xtask dist`: static qtrace binaries for x86_64 and aarch64 (musl),
//! and from them, in `target/dist/`: a tarball per architecture, `.deb`
//! and `.rpm` packages, a multi-architecture OCI image archive, and
//! `SHA256SUMS`. Everything is dated `SOURCE_DATE_EPOCH` (the commit's date
//! unless set), so the same commit gives the same bytes.

mod archive;
pub(crate) mod chroot;
mod deb;
mod notices;
mod oci;
mod payload;
mod rpm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{cargo, output, status, target_dir};
use archive::File;
use payload::Payload;

/// A target qtrace is shipped for, named the way each format names it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) triple: &'static str,
    /// dpkg's architecture.
    pub(crate) deb: &'static str,
    /// rpm's architecture.
    pub(crate) rpm: &'static str,
    /// The OCI platform's architecture and variant.
    pub(crate) oci: (&'static str, Option<&'static str>),
    /// The C toolchain that links it from an x86_64 host (None: the host's).
    linker: Option<&'static str>,
}

pub(crate) const TARGETS: [Target; 2] = [
    Target { triple: "x86_64-unknown-linux-musl", deb: "amd64", rpm: "x86_64", oci: ("amd64", None), linker: None },
    Target {
        triple: "aarch64-unknown-linux-musl",
        deb: "arm64",
        rpm: "aarch64",
        oci: ("arm64", Some("v8")),
        linker: Some("aarch64-linux-gnu-gcc"),
    },
];

/// Where `dist` puts everything, by name: the static x86_64 binary for the
/// tests and the VM matrix, and each artifact.
#[derive(Clone, Debug)]
pub(crate) struct Artifacts {
    pub(crate) dir: PathBuf,
    /// (target, static binary) for each of [`TARGETS`].
    pub(crate) binaries: Vec<(Target, PathBuf)>,
    pub(crate) tarballs: Vec<PathBuf>,
    pub(crate) debs: Vec<PathBuf>,
    pub(crate) rpms: Vec<PathBuf>,
    pub(crate) oci: PathBuf,
    pub(crate) sums: PathBuf,
}

impl Artifacts {
    /// The paths of a `dist` of `version` into `dir` (they exist once
    /// `dist` ran).
    pub(crate) fn of(version: &str, dir: PathBuf) -> Self {
        Self {
            binaries: TARGETS.iter().map(|t| (*t, static_binary(t.triple))).collect(),
            tarballs: TARGETS.iter().map(|t| dir.join(format!("qtrace-{version}-{}.tar.gz", t.triple))).collect(),
            debs: TARGETS.iter().map(|t| dir.join(format!("qtrace_{version}_{}.deb", t.deb))).collect(),
            rpms: TARGETS.iter().map(|t| dir.join(format!("qtrace-{version}-1.{}.rpm", t.rpm))).collect(),
            oci: dir.join(format!("qtrace-{version}-oci.tar")),
            sums: dir.join("SHA256SUMS"),
            dir,
        }
    }

    /// The static binary for `triple`.
    pub(crate) fn binary(&self, triple: &str) -> Option<&Path> {
        self.binaries.iter().find(|(t, _)| t.triple == triple).map(|(_, p)| p.as_path())
    }

    /// The files `SHA256SUMS` lists.
    fn shipped(&self) -> impl Iterator<Item = &PathBuf> {
        self.tarballs.iter().chain(&self.debs).chain(&self.rpms).chain(std::iter::once(&self.oci))
    }
}

/// Where cargo leaves the release binary for `triple`.
pub(crate) fn static_binary(triple: &str) -> PathBuf {
    target_dir().join(triple).join("release/qtrace")
}

/// What every artifact is made from besides the binaries.
pub(crate) struct Release {
    pub(crate) version: String,
    pub(crate) commit: String,
    /// Seconds since the epoch every file and archive is dated.
    pub(crate) epoch: u64,
}

/// The repository's root (xtask lives in `xtask/`).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

fn release() -> Result<Release> {
    let meta = output(cargo().args(["metadata", "--no-deps", "--format-version=1"])).context("cargo metadata failed")?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("reading cargo metadata")?;
    let version = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "qtrace"))
        .and_then(|p| p["version"].as_str())
        .context("no qtrace package in the workspace")?
        .to_owned();
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(repo_root()).args(args)).map(|s| s.trim().to_owned());
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        Err(_) => {
            git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()).context("no SOURCE_DATE_EPOCH and no git commit date")?
        }
    };
    Ok(Release { version, commit, epoch })
}

/// The target named `triple`.
pub(crate) fn target(triple: &str) -> Result<&'static Target> {
    TARGETS.iter().find(|t| t.triple == triple).with_context(|| format!("qtrace is not built for {triple}"))
}

/// Tells cargo (and the C compilers of build scripts) how to link for
/// `target` from this machine.
pub(crate) fn cross_env(cmd: &mut Command, target: &Target) {
    if let Some(linker) = target.linker {
        let var = target.triple.replace('-', "_");
        cmd.env(format!("CARGO_TARGET_{}_LINKER", var.to_uppercase()), linker).env(format!("CC_{var}"), linker);
    }
}

/// Builds the static binary for `target`, dated `epoch`.
fn build(target: &Target, rel: &Release) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--package", "qtrace", "--target", target.triple])
        .env("SOURCE_DATE_EPOCH", rel.epoch.to_string())
        .env("QTRACE_GIT_COMMIT", &rel.commit);
    cross_env(&mut cmd, target);
    status(&mut cmd)?;
    Ok(static_binary(target.triple))
}

/// Builds only the static binaries (what the tests and the VM matrix run,
/// without packaging them).
pub(crate) fn binaries() -> Result<Vec<(Target, PathBuf)>> {
    let rel = release()?;
    TARGETS.iter().map(|t| Ok((*t, build(t, &rel)?))).collect()
}

/// Builds and writes every artifact into `out` (`target/dist` unless given).
pub(crate) fn dist(out: Option<PathBuf>) -> Result<Artifacts> {
    let rel = release()?;
    let art = Artifacts::of(&rel.version, out.unwrap_or_else(|| target_dir().join("dist")));
    for t in &TARGETS {
        build(t, &rel)?;
    }
    let work = art.dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Manual pages and completions do not depend on the architecture: the
    // binary that runs here writes them.
    let host =
        art.binary(&format!("{}-unknown-linux-musl", std::env::consts::ARCH)).context("no static build for this machine's architecture")?;
    let common = Payload::generate(host, &work)?;
    for (i, (t, bin)) in art.binaries.iter().enumerate() {
        let binary = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
        let prefix = format!("qtrace-{}-{}", rel.version, t.triple);
        let files: Vec<File> = common.tarball(binary.clone()).iter().map(|f| f.under(&prefix)).collect();
        write(&art.tarballs[i], &archive::gzip(&archive::tar(&files, rel.epoch)?)?)?;
        deb::package(&common, &binary, t, &rel, &work, &art.debs[i])?;
        rpm::package(&common, &binary, t, &rel, &work, &art.rpms[i])?;
    }
    let images: Vec<(Target, Vec<u8>)> = art
        .binaries
        .iter()
        .map(|(t, p)| Ok((*t, std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)))
        .collect::<Result<_>>()?;
    write(&art.oci, &oci::archive(&common, &images, &rel)?)?;
    let mut sums = String::new();
    for path in art.shipped() {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().context("an artifact has a name")?.to_string_lossy();
        sums.push_str(&format!("{}  {name}\n", archive::sha256(&data)));
    }
    write(&art.sums, sums.as_bytes())?;
    let _ = std::fs::remove_dir_all(&work);
    for path in art.shipped().chain(std::iter::once(&art.sums)) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        eprintln!("xtask: dist: {} ({:.1} MiB)", path.display(), size as f64 / 1048576.0);
    }
    Ok(art)
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}
