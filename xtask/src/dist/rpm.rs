//! The `.rpm`s, made by RPM's own `rpmbuild` (Debian's `rpm` package) from
//! a staged tree and a spec that only copies it: the binary is already
//! built and static, so the spec turns off what assumes a native build
//! (stripping and build-id links with the host's tools, debug packages).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::archive::{write_tree, File};
use super::deb::{DESCRIPTION, SUMMARY};
use super::payload::Payload;
use super::{Release, Target};
use crate::process::status;

/// qtrace's own licence and its embedded eBPF programs' (SPDX).
pub(crate) const LICENSE: &str = "(MIT OR Apache-2.0) AND (MIT OR GPL-2.0-only)";

pub(crate) fn package(payload: &Payload, binary: &[u8], target: &Target, rel: &Release, work: &Path, out: &Path) -> Result<()> {
    let dir = work.join(format!("rpm-{}", target.rpm));
    let stage = dir.join("stage");
    let mut files = payload.system(binary, "usr/lib/systemd/system", "usr/share/zsh/site-functions")?;
    files.extend(payload.licences.iter().map(|l| l.under("usr/share/licenses/qtrace")));
    files.push(payload.readme.under("usr/share/doc/qtrace"));
    write_tree(&stage, &files)?;
    let spec = spec(&files, rel, &stage);
    write_tree(&dir, &[File::new("qtrace.spec", spec)])?;
    let define = |k: &str, v: &str| ["--define".to_owned(), format!("{k} {v}")];
    let rpms = dir.join("out");
    let defines = [
        define("_topdir", &dir.display().to_string()),
        define("_rpmdir", &rpms.display().to_string()),
        define("_build_name_fmt", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm"),
        // Reproducible: times from SOURCE_DATE_EPOCH, no host name.
        define("use_source_date_epoch_as_buildtime", "1"),
        define("clamp_mtime_to_source_date_epoch", "1"),
        define("_buildhost", "reproducible"),
    ];
    status(
        Command::new("rpmbuild")
            .args(["-bb", "--quiet", "--target", &format!("{}-linux", target.rpm)])
            .args(defines.iter().flatten())
            .arg(dir.join("qtrace.spec"))
            .env("SOURCE_DATE_EPOCH", rel.epoch.to_string()),
    )
    .context("rpmbuild (package rpm) builds the .rpm")?;
    let built = rpms.join(out.file_name().context("an rpm has a name")?);
    std::fs::rename(&built, out).with_context(|| format!("moving {} to {}", built.display(), out.display()))
}

fn spec(files: &[File], rel: &Release, stage: &Path) -> String {
    let mut list = String::new();
    for f in files {
        let attr = if f.path.starts_with("usr/share/licenses/") {
            "%license "
        } else if f.path.starts_with("usr/share/doc/") {
            "%doc "
        } else {
            ""
        };
        list.push_str(&format!("{attr}/{}\n", f.path));
    }
    format!(
        "Name: qtrace\nVersion: {}\nRelease: 1\nSummary: {SUMMARY}\nLicense: {LICENSE}\n\n\
         %global debug_package %{{nil}}\n%global __os_install_post %{{nil}}\n%global _build_id_links none\n\n\
         %description\n{DESCRIPTION}\n\n\
         %install\nmkdir -p %{{buildroot}}\ncp -a {}/. %{{buildroot}}/\n\n\
         %files\n%defattr(-,root,root,-)\n%dir /usr/share/doc/qtrace\n%dir /usr/share/licenses/qtrace\n{list}",
        rel.version,
        stage.display()
    )
}
