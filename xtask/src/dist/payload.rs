//! What ships beside the binary, read once: manual pages and completions
//! (written by qtrace itself), README, licences and `deploy/`, and where
//! each goes in a tarball or in an installed system.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::archive::{gzip, File};
use super::repo_root;

/// The licence files, in the repository's root and in every artifact.
pub(crate) const LICENCES: [&str; 3] = ["LICENSE-APACHE", "LICENSE-GPL2", "LICENSE-MIT"];
/// (shell, completion file in a tarball's `completions/`).
const SHELLS: [(&str, &str); 3] = [("bash", "qtrace.bash"), ("fish", "qtrace.fish"), ("zsh", "_qtrace")];
/// Where the systemd unit expects the binary, and where packages put it.
const UNIT_BINARY: &str = "/usr/local/bin/qtrace";
pub(crate) const PACKAGED_BINARY: &str = "/usr/bin/qtrace";

pub(crate) struct Payload {
    /// `qtrace.1`, `qtrace-watch.1`, ...
    pub(crate) manpages: Vec<File>,
    /// (shell, script)
    completions: Vec<(&'static str, Vec<u8>)>,
    pub(crate) readme: File,
    pub(crate) licences: Vec<File>,
    /// `deploy/...`, as in the repository.
    deploy: Vec<File>,
}

impl Payload {
    /// Runs `binary` (one that runs here) for its manual pages and
    /// completions; reads the rest from the repository.
    pub(crate) fn generate(binary: &Path, work: &Path) -> Result<Self> {
        let man = work.join("man");
        std::fs::create_dir_all(&man)?;
        crate::process::status(Command::new(binary).arg("manpage").arg("--dir").arg(&man))?;
        let manpages = read_dir_files(&man, "")?;
        ensure!(manpages.iter().any(|f| f.path == "qtrace.1"), "qtrace manpage wrote no qtrace.1");
        let mut completions = Vec::new();
        for (shell, _) in SHELLS {
            let out = Command::new(binary).args(["completions", shell]).output().with_context(|| format!("qtrace completions {shell}"))?;
            ensure!(out.status.success() && !out.stdout.is_empty(), "qtrace completions {shell} failed");
            completions.push((shell, out.stdout));
        }
        let root = repo_root();
        let read = |name: &str| std::fs::read(root.join(name)).with_context(|| format!("reading {name}"));
        Ok(Self {
            manpages,
            completions,
            readme: File::new("README.md", read("README.md")?),
            licences: LICENCES
                .iter()
                .map(|l| Ok(File::new(*l, read(l)?)))
                .chain(std::iter::once(super::notices::third_party()))
                .collect::<Result<_>>()?,
            deploy: read_dir_files(&root.join("deploy"), "deploy/")?,
        })
    }

    /// A tarball's files, relative to its top directory.
    pub(crate) fn tarball(&self, binary: Vec<u8>) -> Vec<File> {
        let mut files = vec![File::executable("qtrace", binary), self.readme.clone()];
        files.extend(self.licences.iter().cloned());
        files.extend(self.deploy.iter().cloned());
        files.extend(self.manpages.iter().map(|f| f.under("man/man1")));
        files.extend(self.completions.iter().map(|(shell, s)| File::new(format!("completions/{}", tarball_name(shell)), s.clone())));
        files
    }

    /// An installed system's files (relative to `/`) that Debian and RPM
    /// packages share: the binary in /usr/bin, gzipped manual pages, bash
    /// and fish completions, and the unit under `unit_dir` calling
    /// /usr/bin/qtrace. The zsh completion's place differs (`zsh_dir`).
    pub(crate) fn system(&self, binary: &[u8], unit_dir: &str, zsh_dir: &str) -> Result<Vec<File>> {
        let mut files = vec![File::executable(PACKAGED_BINARY.trim_start_matches('/'), binary)];
        for page in &self.manpages {
            files.push(File::new(format!("usr/share/man/man1/{}.gz", page.path), gzip(&page.data)?));
        }
        for (shell, script) in &self.completions {
            let path = match *shell {
                "bash" => "usr/share/bash-completion/completions/qtrace".to_owned(),
                "fish" => "usr/share/fish/vendor_completions.d/qtrace.fish".to_owned(),
                _ => format!("{zsh_dir}/_qtrace"),
            };
            files.push(File::new(path, script.clone()));
        }
        files.push(File::new(format!("{unit_dir}/qtrace.service"), self.unit()?));
        Ok(files)
    }

    /// deploy/qtrace.service with ExecStart at the packaged binary.
    fn unit(&self) -> Result<String> {
        let unit = self.deploy.iter().find(|f| f.path == "deploy/qtrace.service").context("no deploy/qtrace.service")?;
        let text = String::from_utf8(unit.data.clone()).context("the unit is UTF-8")?;
        ensure!(text.contains(&format!("ExecStart={UNIT_BINARY} ")), "deploy/qtrace.service does not start {UNIT_BINARY}");
        Ok(text.replace(&format!("ExecStart={UNIT_BINARY} "), &format!("ExecStart={PACKAGED_BINARY} ")))
    }
}

fn tarball_name(shell: &str) -> &'static str {
    SHELLS.iter().find(|(s, _)| *s == shell).map_or("qtrace", |(_, n)| n)
}

/// Every file under `dir`, recursively, as `prefix` + its relative path.
fn read_dir_files(dir: &Path, prefix: &str) -> Result<Vec<File>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            files.extend(read_dir_files(&entry.path(), &format!("{prefix}{name}/"))?);
        } else {
            files.push(File::new(format!("{prefix}{name}"), std::fs::read(entry.path())?));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
impl Payload {
    /// A payload made of short stand-ins, for tests of the archives.
    pub(crate) fn fixture() -> Self {
        Self {
            manpages: vec![File::new("qtrace.1", ".TH qtrace 1")],
            completions: SHELLS.iter().map(|(s, _)| (*s, format!("# {s}").into_bytes())).collect(),
            readme: File::new("README.md", "# qtrace"),
            licences: LICENCES.iter().map(|l| File::new(*l, format!("{l} text"))).collect(),
            deploy: vec![File::new("deploy/qtrace.service", format!("[Service]\nExecStart={UNIT_BINARY} watch\n"))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_start_the_packaged_binary() {
        let files = Payload::fixture().system(b"bin", "lib/systemd/system", "usr/share/zsh/vendor-completions").unwrap();
        let unit = files.iter().find(|f| f.path == "lib/systemd/system/qtrace.service").unwrap();
        assert_eq!(String::from_utf8_lossy(&unit.data), "[Service]\nExecStart=/usr/bin/qtrace watch\n");
        assert!(files.iter().any(|f| f.path == "usr/bin/qtrace" && f.mode == 0o755));
        assert!(files.iter().any(|f| f.path == "usr/share/man/man1/qtrace.1.gz"));
    }
}
