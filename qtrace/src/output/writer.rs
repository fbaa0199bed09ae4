//! Where `watch` writes: stdout, or `--output FILE` (reopened on SIGHUP so
//! logrotate can move it away). Notices when a pipe's reader went away
//! (`| head -1`) and stops writing instead of failing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::UsageError;

pub(crate) struct Out {
    w: io::BufWriter<Box<dyn Write>>,
    path: Option<PathBuf>,
    closed: bool,
}

fn open_output(path: &Path) -> io::Result<Box<dyn Write>> {
    Ok(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
}

impl Out {
    /// Opens `path` (before attaching: a bad `--output` is a usage error,
    /// not a late surprise), or takes stdout.
    pub(crate) fn new(path: Option<PathBuf>) -> Result<Self> {
        let w: Box<dyn Write> = match &path {
            Some(p) => open_output(p).map_err(|e| UsageError(format!("cannot write --output {}: {e}", p.display())))?,
            None => Box::new(io::stdout()),
        };
        Ok(Self { w: io::BufWriter::new(w), path, closed: false })
    }

    pub(crate) fn write_str(&mut self, s: &str) {
        if !self.closed && self.w.write_all(s.as_bytes()).is_err() {
            self.closed = true;
        }
    }

    pub(crate) fn flush(&mut self) {
        if !self.closed && self.w.flush().is_err() {
            self.closed = true;
        }
    }

    /// SIGHUP: start a new file at `--output`'s path.
    pub(crate) fn reopen(&mut self) -> Result<()> {
        self.flush();
        if let Some(p) = &self.path {
            let w = open_output(p).with_context(|| format!("reopening --output {}", p.display()))?;
            self.w = io::BufWriter::new(w);
            self.closed = false;
        }
        Ok(())
    }

    /// Whether writing is over: a write failed, or stdout is a pipe whose
    /// reader is gone (checked without writing: `watch --json | head -1`
    /// must end even when nothing drops).
    pub(crate) fn is_closed(&self) -> bool {
        if self.closed {
            return true;
        }
        if self.path.is_some() {
            return false;
        }
        let mut pfd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 1 && pfd.revents & libc::POLLERR != 0
    }
}
