//! Throwaway network namespaces for the benchmarks: created with `ip netns`,
//! entered per thread with `setns(2)`, deleted on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub(super) struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip").args(args).status().context("running ip")?;
    if !st.success() {
        bail!("ip {} failed ({st})", args.join(" "));
    }
    Ok(())
}

impl Netns {
    /// A fresh namespace with loopback up.
    pub(super) fn create(name: &str) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(std::process::Stdio::null()).status();
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.to_owned() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub(super) fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    pub(super) fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-q", "-w", &format!("{key}={value}")])
            .status()
            .context("running sysctl")?;
        if !st.success() {
            bail!("sysctl {key}={value} in {} failed", self.name);
        }
        Ok(())
    }

    /// Moves the calling thread into the namespace.
    pub(super) fn enter(&self) -> Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name)).with_context(|| format!("opening namespace {}", self.name))?;
        // SAFETY: a valid namespace fd; setns only changes this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({}): {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace.
    pub(super) fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| s.spawn(|| self.enter().and_then(|()| f())).join().expect("namespace thread panicked"))
    }

    /// The namespace's TcpExt counters (`/proc/net/netstat`), by name.
    pub(super) fn tcp_ext(&self) -> Result<BTreeMap<String, u64>> {
        self.counters("netstat", "TcpExt:")
    }

    /// The namespace's Tcp counters (`/proc/net/snmp`: `InSegs`,
    /// `PassiveOpens`...), by name.
    pub(super) fn tcp(&self) -> Result<BTreeMap<String, u64>> {
        self.counters("snmp", "Tcp:")
    }

    /// One group of a `/proc/net` counter file: a line of names and a line
    /// of values, both starting with `prefix`.
    fn counters(&self, file: &str, prefix: &str) -> Result<BTreeMap<String, u64>> {
        self.run(|| {
            // thread-self: /proc/self/net is the main thread's namespace.
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
            let [names, values] = lines[..] else { bail!("no {prefix} lines in /proc/net/{file}") };
            Ok(names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
