//! `qtrace completions SHELL` and `qtrace manpage`: generated from the
//! same clap definitions the parser uses, so they never drift from it.
//! `cargo xtask install` puts them where shells and man look.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory as _;

use super::{Cli, EXAMPLES};

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "qtrace", &mut out);
    std::io::stdout().write_all(&out).context("writing the completions")
}

/// The command without `--help`'s examples, which the page sets as
/// preformatted sections instead.
fn command() -> clap::Command {
    Cli::command().after_help(None::<&str>)
}

/// qtrace(1): clap_mangen's sections, then EXAMPLES and ENVIRONMENT as
/// written in `--help` (no-fill, so the columns stay).
fn main_page(w: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command()).render(w)?;
    for block in EXAMPLES.split("\n\n") {
        let mut lines = block.lines();
        let title = lines.next().unwrap_or_default().trim_end_matches(':').to_uppercase();
        writeln!(w, ".SH {title}\n.nf")?;
        for line in lines {
            // roff: a leading dot or quote would be a request, backslashes escapes.
            writeln!(w, "\\&{}", line.trim_start().replace('\\', "\\e"))?;
        }
        writeln!(w, ".fi")?;
    }
    Ok(())
}

/// `qtrace manpage`: qtrace(1) on stdout, or with `dir`, one page per
/// subcommand too (qtrace-watch(1), ...), as the main page refers to them.
pub fn manpage(dir: Option<&Path>) -> Result<()> {
    match dir {
        None => {
            let mut out = Vec::new();
            main_page(&mut out).context("rendering the manual page")?;
            std::io::stdout().write_all(&out).context("writing the manual page")
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command(), dir).with_context(|| format!("writing manual pages to {}", dir.display()))?;
            let mut f = std::fs::File::create(dir.join("qtrace.1")).context("writing qtrace.1")?;
            main_page(&mut f).context("writing qtrace.1")
        }
    }
}
