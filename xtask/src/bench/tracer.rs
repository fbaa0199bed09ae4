//! The tracers under test as child processes: started, waited for until they
//! say they are attached, sampled, stopped with SIGINT, and reaped with
//! their resource usage.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The bpftrace equivalent of `qtrace watch` on the tracepoint tier: the
/// same tracepoints, the same overflow reason, a per-port count.
pub const BPFTRACE_SCRIPT: &str = r#"
tracepoint:skb:kfree_skb /args->reason == SKB_DROP_REASON_TCP_LISTEN_OVERFLOW/ {
    $sk = (struct sock *)args->rx_sk;
    @drops[$sk->__sk_common.skc_num] = count();
}
tracepoint:syscalls:sys_enter_listen { @backlog[tid] = args->backlog; }
tracepoint:syscalls:sys_exit_listen /@backlog[tid]/ { delete(@backlog[tid]); }
BEGIN { printf("ready\n"); }
interval:s:1 { print(@drops); }
"#;

pub struct Running {
    child: Child,
    /// Exec to the ready line.
    pub ready: Duration,
    /// stdout, collected by a thread (qtrace's NDJSON), when asked for.
    stdout: Option<JoinHandle<(Vec<String>, u64)>>,
    reaped: bool,
}

impl Drop for Running {
    /// A bench that fails half-way leaves no tracer running.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a tracer used (peak RSS from `wait4(2)`) and printed.
pub struct Usage {
    pub peak_rss_kib: u64,
    /// stdout lines other than events.
    pub lines: Vec<String>,
    /// NDJSON event lines on stdout (counted, not kept).
    pub events: u64,
}

/// Starts `cmd` and waits for a line containing `ready` on stdout or stderr
/// (the other stream is drained; stdout is kept when `keep_stdout`).
fn start(mut cmd: Command, ready_on_stderr: bool, ready: &str, keep_stdout: bool) -> Result<Running> {
    let shown = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {shown}"))?;
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (tx, rx) = mpsc::channel();
    let (ready_stream, other): (Box<dyn Read + Send>, Box<dyn Read + Send>) =
        if ready_on_stderr { (Box::new(err), Box::new(out)) } else { (Box::new(out), Box::new(err)) };
    let want = ready.to_owned();
    let ready_reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut told = false;
        for line in BufReader::new(ready_stream).lines().map_while(Result::ok) {
            if !told && line.contains(&want) {
                let _ = tx.send(Instant::now());
                told = true;
            } else {
                kept.push(line);
            }
        }
        (kept, 0)
    });
    let other_reader = std::thread::spawn(move || {
        let (mut kept, mut events) = (Vec::new(), 0);
        for line in BufReader::new(other).lines().map_while(Result::ok) {
            if line.starts_with(r#"{"type":"event""#) {
                events += 1;
            } else if keep_stdout {
                kept.push(line);
            }
        }
        (kept, events)
    });
    let at = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(at) => at,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let said = ready_reader.join().unwrap_or_default().0;
            bail!("{shown} never said it was ready: {}", said.join(" / "));
        }
    };
    let stdout = if ready_on_stderr { Some(other_reader) } else { Some(ready_reader) };
    Ok(Running { child, ready: at - t0, stdout, reaped: false })
}

pub fn qtrace(bin: &Path, args: &[&str]) -> Result<Running> {
    let mut cmd = Command::new(bin);
    cmd.arg("watch").args(args);
    start(cmd, true, "qtrace: watching", true)
}

/// The minimal consumer (`qtrace/examples/ringbuf_count.rs`).
pub fn counter(bin: &Path) -> Result<Running> {
    start(Command::new(bin), true, "qtrace: watching", true)
}

pub fn bpftrace() -> Result<Running> {
    let mut cmd = Command::new("bpftrace");
    cmd.args(["-e", BPFTRACE_SCRIPT]);
    start(cmd, false, "ready", false)
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// CPU time so far (utime + stime from /proc/PID/stat).
    pub fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        // After the comm: state is field 3, utime 14 and stime 15.
        let ticks: u64 =
            fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
            .unwrap_or(0)
    }

    /// SIGINT, then reaps the process with its resource usage.
    pub fn stop(mut self) -> Result<Usage> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: our child; valid out-pointers.
        let rc = unsafe { libc::wait4(self.pid(), &mut status, 0, &mut ru) };
        if rc < 0 {
            bail!("waiting for the tracer: {}", std::io::Error::last_os_error());
        }
        self.reaped = true;
        let (lines, events) = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        Ok(Usage { peak_rss_kib: ru.ru_maxrss as u64, lines, events })
    }
}
