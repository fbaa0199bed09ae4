//! The tracers under test as child processes: started, waited for until they
//! say they are attached (qtrace: its NDJSON start record), sampled, stopped
//! with SIGINT, and reaped with their resource usage.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The bpftrace equivalent of `qtrace watch` on the tracepoint tier: the
/// same tracepoints, the same overflow reason, a per-port count.
pub(super) const BPFTRACE_SCRIPT: &str = r#"
tracepoint:skb:kfree_skb /args->reason == SKB_DROP_REASON_TCP_LISTEN_OVERFLOW/ {
    $sk = (struct sock *)args->rx_sk;
    @drops[$sk->__sk_common.skc_num] = count();
}
tracepoint:syscalls:sys_enter_listen { @backlog[tid] = args->backlog; }
tracepoint:syscalls:sys_exit_listen /@backlog[tid]/ { delete(@backlog[tid]); }
BEGIN { printf("ready\n"); }
interval:s:1 { print(@drops); }
"#;

pub(super) struct Running {
    child: Child,
    /// Exec to attached: qtrace's start record, the other tracers' ready line.
    pub ready: Duration,
    /// stdout, collected by a thread (qtrace's NDJSON), when asked for.
    stdout: Option<JoinHandle<(Vec<String>, u64, u64)>>,
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
pub(super) struct Usage {
    pub peak_rss_kib: u64,
    /// stdout lines other than events.
    pub lines: Vec<String>,
    /// NDJSON event lines on stdout (counted, not kept).
    pub events: u64,
    /// Their bytes, newlines included.
    pub event_bytes: u64,
}

/// The stdout line by which a tracer says it is attached.
#[derive(Clone, Copy)]
struct Ready(fn(&str) -> bool);

impl Ready {
    fn accepts(self, line: &str) -> bool {
        (self.0)(line)
    }
}

/// qtrace's `start` record, its first NDJSON record, printed as soon as
/// its programs are attached.
fn is_start_record(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["type"] == "start")
}

/// Reads `stream` to its end in a thread, sending the moment of the first
/// line `ready` accepts (when given); returns the lines other than NDJSON
/// events (kept when `keep`) and the number of events.
fn reader(
    stream: impl Read + Send + 'static,
    ready: Option<(Ready, mpsc::Sender<Instant>)>,
    keep: bool,
) -> JoinHandle<(Vec<String>, u64, u64)> {
    std::thread::spawn(move || {
        let mut ready = ready;
        let (mut kept, mut events, mut bytes) = (Vec::new(), 0, 0);
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if ready.as_ref().is_some_and(|(r, _)| r.accepts(&line)) {
                if let Some((_, tx)) = ready.take() {
                    let _ = tx.send(Instant::now());
                }
            }
            if line.starts_with(r#"{"type":"event""#) {
                events += 1;
                bytes += line.len() as u64 + 1;
            } else if keep {
                kept.push(line);
            }
        }
        (kept, events, bytes)
    })
}

/// The stream a tracer says it is attached on.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Starts `cmd` and waits for its `ready` line on `on` (both streams are
/// drained; stdout is kept when `keep_stdout`).
fn start(mut cmd: Command, ready: Ready, on: Stream, keep_stdout: bool) -> Result<Running> {
    let shown = format!("{cmd:?}");
    let t0 = Instant::now();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {shown}"))?;
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    // The only sender goes with the reader of the ready stream: when that
    // stream ends unready, waiting ends at once.
    let (tx, rx) = mpsc::channel();
    let (out_ready, err_ready) = match on {
        Stream::Stdout => (Some((ready, tx)), None),
        Stream::Stderr => (None, Some((ready, tx))),
    };
    let stdout = reader(out, out_ready, keep_stdout);
    let stderr = reader(err, err_ready, true);
    let at = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(at) => at,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let said = stderr.join().unwrap_or_default().0;
            bail!("{shown} never said it was ready: {}", said.join(" / "));
        }
    };
    Ok(Running { child, ready: at - t0, stdout: Some(stdout), reaped: false })
}

/// `qtrace watch ARGS`, ready at its start record; ARGS must hold `--json`
/// (the start record is NDJSON).
/// The hook tier every qtrace the bench starts is asked for (`--hooks`);
/// unset: qtrace's own choice.
static HOOKS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every later qtrace run on `tier` (the guest bench, per tier).
pub(super) fn use_hooks(tier: &str) {
    let _ = HOOKS.set(tier.to_owned());
}

fn watch(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("watch");
    if let Some(tier) = HOOKS.get() {
        cmd.args(["--hooks", tier]);
    }
    cmd
}

pub(super) fn qtrace(bin: &Path, args: &[&str]) -> Result<Running> {
    if !args.contains(&"--json") {
        bail!("qtrace watch {args:?}: the bench waits for the NDJSON start record: pass --json");
    }
    let mut cmd = watch(bin);
    cmd.args(args);
    start(cmd, Ready(is_start_record), Stream::Stdout, true)
}

/// `qtrace watch --plain ARGS`, ready at its `watching` line on stderr
/// (printed once its programs are attached); its tables are not kept.
pub(super) fn qtrace_plain(bin: &Path, args: &[&str]) -> Result<Running> {
    let mut cmd = watch(bin);
    cmd.arg("--plain").args(args);
    start(cmd, Ready(|l| l.starts_with("qtrace: watching")), Stream::Stderr, false)
}

/// The minimal consumer (`qtrace/examples/ringbuf_count.rs`): ready at its
/// start record, like qtrace.
pub(super) fn counter(bin: &Path) -> Result<Running> {
    start(Command::new(bin), Ready(is_start_record), Stream::Stdout, true)
}

pub(super) fn bpftrace() -> Result<Running> {
    let mut cmd = Command::new("bpftrace");
    cmd.args(["-e", BPFTRACE_SCRIPT]);
    start(cmd, Ready(|l| l.contains("ready")), Stream::Stdout, false)
}

impl Running {
    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// CPU time so far (utime + stime from /proc/PID/stat).
    pub(super) fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        // After the comm: state is field 3, utime 14 and stime 15.
        let ticks: u64 =
            fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// CPU time so far to the nanosecond: the process's CPU-time clock
    /// (`clock_getcpuclockid(3)`, the scheduler's sum over all its
    /// threads, exited ones included). `cpu()` is in clock ticks, too
    /// coarse for an idle process.
    pub(super) fn cpu_precise(&self) -> Result<Duration> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: valid out-pointer.
        let rc = unsafe { libc::clock_getcpuclockid(self.pid(), &mut clock) };
        if rc != 0 {
            bail!("clock_getcpuclockid({}): {}", self.pid(), std::io::Error::from_raw_os_error(rc));
        }
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a clock id from the kernel and a valid out-pointer.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            bail!("reading the CPU clock of {}: {}", self.pid(), std::io::Error::last_os_error());
        }
        Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// Resident memory now, in KiB.
    pub(super) fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
            .unwrap_or(0)
    }

    /// SIGINT, then reaps the process with its resource usage.
    pub(super) fn stop(mut self) -> Result<Usage> {
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
        let (lines, events, event_bytes) = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        Ok(Usage { peak_rss_kib: ru.ru_maxrss as u64, lines, events, event_bytes })
    }
}
