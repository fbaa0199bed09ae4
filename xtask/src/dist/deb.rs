//! The `.deb`s, made by Debian's own packager, `dpkg-deb`, from a staged
//! tree and a control file. qtrace is one static file with documentation:
//! nothing to configure, no dependencies, no maintainer scripts (the unit is
//! installed, not enabled), so a control file and `dpkg-deb --build` are
//! the whole of it, and any Debian machine already has them.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::archive::{write_tree, File};
use super::payload::Payload;
use super::{Release, Target};
use crate::process::status;

/// The maintainer field dpkg requires. qtrace has no mailing list: the
/// reserved `.invalid` domain says so rather than inventing an address.
pub(crate) const MAINTAINER: &str = "qtrace developers <qtrace@invalid>";
pub(crate) const SUMMARY: &str = "Trace TCP listen-queue overflows per port, live, with eBPF";
pub(crate) const DESCRIPTION: &str = "\
qtrace shows every TCP connection that a listening socket's full accept
queue or SYN queue dropped or reset, as it happens, with the listener's
backlog state, per port and across every network namespace on the host,
where the kernel itself only bumps namespace-wide counters. It also lists
listeners with their queues (qtrace listeners), diagnoses clamped backlogs
and overflows (qtrace doctor), and serves Prometheus metrics.";

pub(crate) fn package(payload: &Payload, binary: &[u8], target: &Target, rel: &Release, work: &Path, out: &Path) -> Result<()> {
    let root = work.join(format!("deb-{}", target.deb));
    let mut files = payload.system(binary, "lib/systemd/system", "usr/share/zsh/vendor-completions")?;
    files.push(File::new("usr/share/doc/qtrace/copyright", copyright(payload)));
    files.push(payload.readme.under("usr/share/doc/qtrace"));
    // Policy: documentation over 4 kB is compressed; copyright never is.
    let notices = payload.licences.iter().find(|l| l.path == super::notices::NAME).context("no third-party notices")?;
    files.push(File::new(format!("usr/share/doc/qtrace/{}.gz", super::notices::NAME), super::archive::gzip(&notices.data)?));
    write_tree(&root, &files)?;
    let installed_kib: usize = files.iter().map(|f| f.data.len().div_ceil(1024)).sum();
    let control = format!(
        "Package: qtrace\nVersion: {}\nArchitecture: {}\nMaintainer: {MAINTAINER}\nInstalled-Size: {installed_kib}\n\
         Section: net\nPriority: optional\nDescription: {SUMMARY}\n{}\n",
        rel.version,
        target.deb,
        DESCRIPTION.lines().map(|l| format!(" {l}")).collect::<Vec<_>>().join("\n")
    );
    write_tree(&root, &[File::new("DEBIAN/control", control)])?;
    // SOURCE_DATE_EPOCH: dpkg-deb dates the archive and clamps every file's
    // time to it, so the package is the same bytes from the same files.
    status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(out)
            .env("SOURCE_DATE_EPOCH", rel.epoch.to_string()),
    )
    .context("dpkg-deb (package dpkg) builds the .deb")
}

/// debian/copyright in the machine-readable format: qtrace is MIT or
/// Apache-2.0, its embedded eBPF programs MIT or GPL-2 (the licence they
/// declare to the kernel). Apache-2.0 and GPL-2 are in every Debian
/// system's common-licenses, so policy has them named, not copied.
fn copyright(payload: &Payload) -> String {
    let mit = payload
        .licences
        .iter()
        .find(|l| l.path == "LICENSE-MIT")
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .unwrap_or_default();
    let mit: Vec<String> = mit.lines().map(|l| if l.trim().is_empty() { " .".to_owned() } else { format!(" {l}") }).collect();
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: qtrace\n\n\
         Files: *\nCopyright: The qtrace developers\nLicense: MIT or Apache-2.0\n\
         Comment: /usr/bin/qtrace also contains third-party Rust crates; each, with its\n licence and its authors' licence and notice files, is listed in\n /usr/share/doc/qtrace/THIRD-PARTY-LICENSES.gz.\n\n\
         Files: qtrace-ebpf/*\nCopyright: The qtrace developers\nLicense: MIT or GPL-2\n\
         Comment: the eBPF programs embedded in /usr/bin/qtrace; they declare \"Dual MIT/GPL\" to the kernel.\n\n\
         License: MIT\n{}\n\n\
         License: Apache-2.0\n On Debian systems, the full text of the Apache License, Version 2.0, is in\n /usr/share/common-licenses/Apache-2.0.\n\n\
         License: GPL-2\n On Debian systems, the full text of the GNU General Public License, version 2,\n is in /usr/share/common-licenses/GPL-2.\n",
        mit.join("\n")
    )
}
