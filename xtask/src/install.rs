//! `cargo xtask install`: the binary, its manual pages and its bash, zsh
//! and fish completions under a prefix.

use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{status, target_dir};

/// The binary, `qtrace manpage --dir` and `qtrace completions SHELL`,
/// where man and the shells look under `prefix`.
pub(crate) fn install(prefix: &std::path::Path) -> Result<()> {
    let bin = target_dir().join("release/qtrace");
    let dest = prefix.join("bin/qtrace");
    let shells = [
        ("bash", "share/bash-completion/completions/qtrace"),
        ("zsh", "share/zsh/site-functions/_qtrace"),
        ("fish", "share/fish/vendor_completions.d/qtrace.fish"),
    ];
    for dir in ["bin", "share/man/man1"].iter().copied().chain(shells.iter().map(|(_, p)| p.rsplit_once('/').map_or("", |(d, _)| d))) {
        std::fs::create_dir_all(prefix.join(dir)).with_context(|| format!("creating {}", prefix.join(dir).display()))?;
    }
    // Copy to a temporary name, then rename: a running qtrace keeps its inode.
    let tmp = dest.with_extension("new");
    std::fs::copy(&bin, &tmp).with_context(|| format!("copying {} to {}", bin.display(), tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    let man = prefix.join("share/man/man1");
    status(Command::new(&dest).arg("manpage").arg("--dir").arg(&man))?;
    for (shell, path) in shells {
        let out = Command::new(&dest).args(["completions", shell]).output().with_context(|| format!("qtrace completions {shell}"))?;
        anyhow::ensure!(out.status.success(), "qtrace completions {shell} failed");
        std::fs::write(prefix.join(path), out.stdout).with_context(|| format!("writing {}", prefix.join(path).display()))?;
    }
    eprintln!("xtask: installed {}, manual pages in {}, completions for bash, zsh and fish", dest.display(), man.display());
    Ok(())
}
