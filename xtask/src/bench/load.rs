//! Idle things a host can have many of, for section 8: sleeping threads
//! (in helper processes, this very binary's hidden `idle-threads`
//! subcommand) and empty network namespaces (`ip netns add`). Both go away
//! when their guard is dropped, also when a measurement fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// Stack of each idle thread: they never run, so the least the C library
/// allows (plus Rust's guard page) keeps 20,000 of them cheap.
const IDLE_STACK: usize = 64 * 1024;

/// `xtask idle-threads COUNT`: starts COUNT threads that sleep, says
/// `ready` on stdout, and exits (ending them all) when stdin closes.
pub(crate) fn idle_threads(count: usize) -> Result<()> {
    for i in 0..count {
        std::thread::Builder::new()
            .stack_size(IDLE_STACK)
            .spawn(|| loop {
                std::thread::park();
            })
            .with_context(|| format!("starting idle thread {i} of {count}"))?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    // EOF (or an error) on stdin: the bench is done with us.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(0);
}

/// Threads per helper process. Each thread of a Rust process takes four
/// memory mappings (stack, its guard page, the signal stack and its
/// guard), and `vm.max_map_count` (65,530 by default) stops one process
/// at about 16,000 threads: more go in more processes.
const THREADS_PER_HELPER: usize = 5_000;

/// Helper processes holding `count` sleeping threads in all.
pub(super) struct IdleThreads {
    children: Vec<Child>,
}

impl IdleThreads {
    pub(super) fn spawn(count: usize) -> Result<Self> {
        if let Some(why) = no_room_for_threads(count) {
            bail!("not starting {count} idle threads: {why}");
        }
        let exe = std::env::current_exe().context("finding xtask's own binary")?;
        let mut guard = Self { children: vec![] };
        for first in (0..count).step_by(THREADS_PER_HELPER) {
            let n = THREADS_PER_HELPER.min(count - first);
            let child = Command::new(&exe)
                .args(["idle-threads", &n.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting an idle-thread helper")?;
            guard.children.push(child);
            let out = guard.children.last_mut().and_then(|c| c.stdout.take()).expect("piped");
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).context("reading a helper's ready line")?;
            if line.trim() != "ready" {
                bail!("an idle-thread helper did not start its {n} threads");
            }
        }
        Ok(guard)
    }
}

impl Drop for IdleThreads {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Tasks on the host, threads included: the total of `/proc/loadavg`'s
/// "running/total" field. Other work on a shared machine changes what an
/// idle tracer has to look at, so the bench records it next to qtrace's
/// CPU.
pub(super) fn host_tasks() -> u64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()).unwrap_or(0)
}

/// Pids left for everyone else on a shared machine.
const PID_RESERVE: u64 = 4096;

fn sysctl_u64(path: &str) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Why `count` more threads should not be started now, if so: every
/// thread takes a pid, and other work on the machine needs some too.
pub(super) fn no_room_for_threads(count: usize) -> Option<String> {
    let limit = sysctl_u64("/proc/sys/kernel/pid_max").min(sysctl_u64("/proc/sys/kernel/threads-max"));
    let tasks = host_tasks();
    let room = limit.saturating_sub(tasks).saturating_sub(PID_RESERVE);
    (count as u64 > room)
        .then(|| format!("{tasks} tasks on the host and a limit of {limit} leave room for {room} more, keeping {PID_RESERVE}"))
}

/// Named network namespaces on the host (`/run/netns`).
pub(super) fn named_namespaces() -> u64 {
    std::fs::read_dir("/run/netns").map(|d| d.count() as u64).unwrap_or(0)
}

/// Runs `ip -force -batch -` with `lines` on stdin (one `ip` command a
/// line, one process for all of them; `-force` goes on past errors).
fn ip_batch(lines: &str) -> Result<()> {
    let mut child = Command::new("ip").args(["-force", "-batch", "-"]).stdin(Stdio::piped()).spawn().context("running ip -batch")?;
    child.stdin.take().expect("piped").write_all(lines.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        bail!("ip -batch failed ({st})");
    }
    Ok(())
}

/// `count` empty network namespaces named `PREFIX-N`.
pub(super) struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub(super) fn add(prefix: &str, count: usize) -> Result<Self> {
        Self::remove_leftovers(prefix);
        // The guard exists before the first one does: a failure half-way
        // still removes those made.
        let ns = Self { names: (0..count).map(|i| format!("{prefix}-{i}")).collect() };
        ip_batch(&ns.names.iter().map(|n| format!("netns add {n}\n")).collect::<String>())?;
        let made = ns.names.iter().filter(|n| std::path::Path::new("/run/netns").join(n).exists()).count();
        if made != count {
            bail!("only {made} of {count} network namespaces were made");
        }
        Ok(ns)
    }

    /// Namespaces a killed run left behind.
    fn remove_leftovers(prefix: &str) {
        let stale: String = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .map(|n| format!("netns del {n}\n"))
            .collect();
        if !stale.is_empty() {
            let _ = ip_batch(&stale);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let lines: String = self.names.iter().map(|n| format!("netns del {n}\n")).collect();
        if let Err(e) = ip_batch(&lines) {
            eprintln!("bench: removing the extra network namespaces: {e:#}");
        }
    }
}
