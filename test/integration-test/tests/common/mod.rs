//! Shared pieces of the root integration suite: a fresh network namespace
//! per test (deleted by its guard), sockets created inside it, the
//! namespace's own kernel counters, and a running `qtrace watch`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

/// Fails (never skips) when not root: CI runs as root, and a skipped root
/// test would hide a broken tracer.
pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the integration suite loads eBPF programs and creates network namespaces: run it as root");
}

/// Runs a program directly (no shell: a minimal guest's shell may prefer
/// its own applets over the real tools).
fn cmd(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that exists for the test's lifetime.
pub(crate) struct NetNs {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    /// Creates `qtrace-test-<pid>-<n>` with loopback up and the given
    /// per-namespace sysctls (`net.ipv4.tcp_syncookies=0`, ...).
    pub(crate) fn new(sysctls: &[&str]) -> Self {
        require_root();
        let name = format!("qtrace-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        cmd(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        cmd(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        for s in sysctls {
            let (key, value) = s.split_once('=').expect("name=value");
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            // /proc/sys/net is the writing thread's namespace's.
            ns.run(|| std::fs::write(&path, value)).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        ns
    }

    /// Runs `f` on a thread inside the namespace; sockets it creates stay
    /// in the namespace wherever they are used afterwards.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&format!("/run/netns/{}", self.name), f)
    }

    /// The namespace's inode number, as qtrace labels it.
    pub(crate) fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.name)).expect("namespace file").ino()
    }

    pub(crate) fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        cmd(&all)
    }

    /// The namespace's listen-queue counters from TcpExt (`nstat`).
    pub(crate) fn counters(&self) -> Counters {
        self.run(|| counters_of("/proc/thread-self"))
    }

    /// The listener's drop counter as `ss -ltm` shows it (`d<N>`).
    pub(crate) fn ss_drops(&self, port: u16) -> u64 {
        ss_drops_in(&self.exec(&["ss", "-ltmnH", &format!("sport = :{port}")]))
    }

    /// Holds back the clients' bare ACKs to `port` (they stay requests in
    /// the listener's SYN queue) or, with `all`, every packet to `port`.
    pub(crate) fn block(&self, port: u16, all: bool) {
        let what = if all { String::new() } else { "tcp flags & (syn|ack|fin|rst|psh) == ack".into() };
        self.exec(&[
            "nft",
            &format!("add table inet qtrace_test; add chain inet qtrace_test out {{ type filter hook output priority 0; }}; add rule inet qtrace_test out tcp dport {port} {what} drop"),
        ]);
    }

    pub(crate) fn unblock(&self) {
        self.exec(&["nft", "delete", "table", "inet", "qtrace_test"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs `f` on a thread inside the network namespace of the namespace
/// file `path` (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub(crate) fn run_in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(path).unwrap_or_else(|e| panic!("namespace file {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we hold; affects this thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Fails unless `promtool check metrics` (Debian's prometheus package,
/// which `cargo xtask test` installs) passes `text`, the classic format.
pub(crate) fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    lint.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("metrics piped");
    let out = lint.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics: {said}\n{text}");
}

/// The drop counters (`d<N>`) in `ss -ltm` output.
fn ss_drops_in(out: &str) -> u64 {
    out.split(|c: char| c == ',' || c == ')' || c.is_whitespace())
        .filter_map(|f| f.strip_prefix('d'))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a network namespace of its own (`unshare(CLONE_NEWNET)`,
/// loopback up): no process and no `/run/netns` entry shows it, only the
/// thread's `/proc/PID/task/TID/ns/net`. It runs what it is given, and the
/// namespace goes when the thread ends (when this is dropped).
pub(crate) struct ThreadNs {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadNs {
    pub(crate) fn new() -> Self {
        require_root();
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(2) with a flag that only affects this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
            // A child process starts in its parent thread's namespace.
            cmd(&["ip", "link", "set", "lo", "up"]);
            for job in rx {
                job();
            }
        });
        Self { jobs: Some(jobs), thread: Some(thread) }
    }

    /// Runs `f` on the thread, inside its namespace.
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.as_ref().expect("thread running").send(job).expect("namespace thread alive");
        rx.recv().expect("namespace thread ran the job")
    }

    /// The namespace's inode number, as qtrace labels it.
    pub(crate) fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        self.run(|| std::fs::metadata("/proc/thread-self/ns/net").expect("namespace link").ino())
    }

    /// The namespace's listen-queue counters from TcpExt (`nstat`).
    pub(crate) fn counters(&self) -> Counters {
        self.run(|| counters_of("/proc/thread-self"))
    }

    /// The listener's drop counter as `ss -ltm` shows it (`d<N>`).
    pub(crate) fn ss_drops(&self, port: u16) -> u64 {
        self.run(move || ss_drops_in(&cmd(&["ss", "-ltmnH", &format!("sport = :{port}")])))
    }
}

impl Drop for ThreadNs {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The listen-queue counters of a process's namespace, from
/// `/proc/<pid or thread-self>/net` (`nstat`'s sources).
pub(crate) fn counters_of(proc_dir: &str) -> Counters {
    let netstat = std::fs::read_to_string(format!("{proc_dir}/net/netstat")).expect("netstat");
    let snmp = std::fs::read_to_string(format!("{proc_dir}/net/snmp")).expect("snmp");
    let text = netstat + &snmp;
    let lines: Vec<&str> = text.lines().collect();
    let mut map = HashMap::new();
    for pair in lines.chunks(2) {
        let (Some(keys), Some(values)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        if keys.starts_with("TcpExt:") || keys.starts_with("Tcp:") {
            for (k, v) in keys.split_whitespace().zip(values.split_whitespace()).skip(1) {
                if LISTEN_COUNTERS.contains(&k) {
                    map.insert(k.to_owned(), v.parse().unwrap_or(0));
                }
            }
        }
    }
    Counters(map)
}

const LISTEN_COUNTERS: &[&str] =
    &["ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "EmbryonicRsts", "TCPSynRetrans", "OutRsts"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counters(pub HashMap<String, u64>);

impl Counters {
    pub(crate) fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or_else(|| panic!("no counter {k}"))
    }
    pub(crate) fn delta(&self, before: &Counters, k: &str) -> u64 {
        self.get(k) - before.get(k)
    }
}

pub(crate) fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Three clients whose final ACK arrives when the accept queue is full:
/// `listen(4)` with four unaccepted connections (not yet full: full is more
/// than the bound), then four requests wait in the SYN queue while an
/// nftables rule holds their final ACKs back (four fit whether the kernel
/// calls the SYN queue full at `qlen >= 4`, as 5.10 does, or `qlen > 4`);
/// then data segments carry the ACKs: one completes, three overflow.
pub(crate) struct AckScenario {
    pub srv: Socket,
    pub held: Vec<Socket>,
    pub clients: Vec<Socket>,
}

pub(crate) fn ack_scenario(ns: &NetNs, a: SocketAddr) -> AckScenario {
    let srv = ns.run(|| listener(a, 4));
    let held: Vec<Socket> = ns.run(|| (0..4).map(|_| connect(a)).collect());
    ns.block(a.port(), false);
    let clients: Vec<Socket> = ns.run(|| (0..4).map(|_| connect_nonblocking(a)).collect());
    // Each client got its SYN-ACK and sent the (held) final ACK.
    clients.iter().for_each(wait_connected);
    ns.unblock();
    for c in &clients {
        c.send(b"x").expect("the client believes it is connected");
    }
    AckScenario { srv, held, clients }
}

pub(crate) fn listener(addr: SocketAddr, backlog: i32) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    s.bind(&addr.into()).expect("bind");
    s.listen(backlog).expect("listen");
    s
}

/// Whether the peer reset `s`: a read fails with ECONNRESET.
pub(crate) fn was_reset(s: &Socket) -> bool {
    let mut s = s;
    matches!(std::io::Read::read(&mut s, &mut [0u8; 1]), Err(e) if e.raw_os_error() == Some(libc::ECONNRESET))
}

/// The local port of a client socket.
pub(crate) fn local_port(s: &Socket) -> u16 {
    s.local_addr().unwrap().as_socket().unwrap().port()
}

/// The socket's retransmissions so far, as the kernel counts them for it
/// (`TCP_INFO`'s `tcpi_total_retrans`: SYNs included, `tcp_retransmit_skb()`).
pub(crate) fn total_retrans(s: &Socket) -> u32 {
    use std::os::fd::AsRawFd as _;
    // SAFETY: all-zero is a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// Starts a connect without waiting for it.
pub(crate) fn connect_nonblocking(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_nonblocking(true).expect("nonblocking");
    let _ = s.connect(&addr.into());
    s
}

/// Waits until a nonblocking connect completed from the client's side.
pub(crate) fn wait_connected(s: &Socket) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.peer_addr().is_err() {
        assert!(Instant::now() < deadline, "client never saw the SYN-ACK");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn connect(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect");
    s
}

/// Waits until `f` returns the same value twice `gap` apart.
pub(crate) fn settle<T: PartialEq + Clone>(gap: Duration, mut f: impl FnMut() -> T) -> T {
    let mut prev = f();
    loop {
        std::thread::sleep(gap);
        let now = f();
        if now == prev {
            return now;
        }
        prev = now;
    }
}

/// A running `qtrace watch` or `qtrace doctor`, started with `--json`.
pub(crate) struct Qtrace {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Its stdout lines read so far (the start record's among them).
    stdout_lines: Vec<String>,
    /// Its stderr lines read so far, for failure messages.
    pub stderr_lines: Vec<String>,
    /// Its `start` record: what it attached and what it cannot see.
    pub start: Value,
    /// The hook tier it attached (the start record's `tier`; empty when
    /// doctor has no capture).
    pub tier: String,
}

pub(crate) struct Finished {
    pub tier: String,
    /// The `start` record (also first in `records` unless `--output` took them).
    pub start: Value,
    pub status: std::process::ExitStatus,
    pub records: Vec<Value>,
    pub stdout: String,
    pub stderr: Vec<String>,
}

/// The record a line holds if it is qtrace's `start` record.
fn start_record(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line).ok().filter(|v| v["type"] == "start")
}

/// A start record's limit with this `id`, if it applies.
fn limit_in<'a>(start: &'a Value, id: &str) -> Option<&'a Value> {
    start["limits"].as_array()?.iter().find(|l| l["id"] == id)
}

/// Sends each line `from` gives (invalid UTF-8 replaced, so one bad byte
/// never stops the reading and stalls the writer) until it ends.
fn forward_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut buf = Vec::new();
        while from.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf);
            if tx.send(line.strip_suffix('\n').unwrap_or(&line).to_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    rx
}

/// Moves what `rx` has into `into` until its sender is gone (the stream
/// ended) or `deadline` passes.
fn drain(rx: &mpsc::Receiver<String>, into: &mut Vec<String>, deadline: Instant) {
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        into.push(line);
    }
}

/// The file `--output FILE` (or `-o FILE`, `--output=FILE`) names, if any.
fn output_file(args: &[&str]) -> Option<std::path::PathBuf> {
    args.iter().enumerate().find_map(|(i, a)| match *a {
        "--output" | "-o" => Some(args.get(i + 1).expect("--output names a file").into()),
        _ => a.strip_prefix("--output=").map(Into::into),
    })
}

impl Qtrace {
    /// Starts `qtrace watch ARGS` from the host namespace and waits for its
    /// start record. `QTRACE_TEST_HOOKS` forces a hook tier.
    pub(crate) fn watch(args: &[&str]) -> Self {
        Self::start("watch", args)
    }

    /// Starts `qtrace watch --hooks HOOKS ARGS`, whatever `QTRACE_TEST_HOOKS` says.
    pub(crate) fn watch_with_hooks(hooks: &str, args: &[&str]) -> Self {
        Self::start_with("watch", hooks, args)
    }

    /// Starts `qtrace doctor ARGS` and waits for its start record (printed
    /// as it begins sampling).
    pub(crate) fn doctor(args: &[&str]) -> Self {
        Self::start("doctor", args)
    }

    fn start(sub: &str, args: &[&str]) -> Self {
        let hooks = std::env::var("QTRACE_TEST_HOOKS").unwrap_or_else(|_| "auto".into());
        Self::start_with(sub, &hooks, args)
    }

    /// Spawns qtrace and waits (30 s at most) for its start record: on
    /// stdout, or in the `--output` file when one is given.
    fn start_with(sub: &str, hooks: &str, args: &[&str]) -> Self {
        require_root();
        assert!(
            args.contains(&"--json"),
            "qtrace {sub} {args:?}: pass --json; the suite learns when qtrace is ready, and what it attached, from its NDJSON start record"
        );
        let mut cmd = Command::new(bin());
        cmd.arg(sub).args(["--hooks", hooks]).args(args);
        Self::spawn(cmd, output_file(args))
    }

    /// Starts qtrace some other way (inside a chroot, in a container) with
    /// `--json` records on its stdout, and waits for its start record.
    pub(crate) fn command(cmd: Command) -> Self {
        require_root();
        Self::spawn(cmd, None)
    }

    fn spawn(mut cmd: Command, output: Option<std::path::PathBuf>) -> Self {
        // qtrace appends to the file: a start record already there is an
        // earlier run's.
        let earlier = output.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len() as usize);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("qtrace starts");
        let stdout = forward_lines(child.stdout.take().expect("stdout"));
        let stderr = forward_lines(child.stderr.take().expect("stderr"));
        let mut q =
            Self { child, stdout, stderr, stdout_lines: Vec::new(), stderr_lines: Vec::new(), start: Value::Null, tier: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let start = loop {
            while let Ok(line) = q.stderr.try_recv() {
                q.stderr_lines.push(line);
            }
            let found = match &output {
                None => match q.stdout.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) => {
                        let start = start_record(&line);
                        q.stdout_lines.push(line);
                        start
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => q.not_ready("its stdout closed"),
                },
                Some(path) => {
                    // Whether it had exited before the file was read: then
                    // the file holds everything it will ever write.
                    let exited = matches!(q.child.try_wait(), Ok(Some(_)));
                    let text = std::fs::read(path).unwrap_or_default();
                    let start = String::from_utf8_lossy(text.get(earlier..).unwrap_or_default()).lines().find_map(start_record);
                    if start.is_none() {
                        if exited {
                            q.not_ready(&format!("it exited with no start record in {}", path.display()));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    start
                }
            };
            if let Some(start) = found {
                break start;
            }
            if Instant::now() > deadline {
                q.not_ready("no start record within 30 s");
            }
        };
        q.tier = start["tier"].as_str().unwrap_or_default().to_owned();
        q.start = start;
        q
    }

    /// Stops it and fails the test with what it said.
    fn not_ready(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drain(&self.stderr, &mut self.stderr_lines, Instant::now() + Duration::from_secs(2));
        panic!("qtrace did not become ready ({what}): stderr {:?}, stdout {:?}", self.stderr_lines, self.stdout_lines);
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A limit of its start record by `id`, if it applies.
    pub(crate) fn limit(&self, id: &str) -> Option<&Value> {
        limit_in(&self.start, id)
    }

    /// Stops it with `signal` and collects its NDJSON output.
    pub(crate) fn stop(self, signal: i32) -> Finished {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait()
    }

    /// Waits for it to end by itself and collects its NDJSON output.
    pub(crate) fn wait(mut self) -> Finished {
        let status = self.child.wait().expect("qtrace exits");
        // It has exited: both streams end as soon as their readers reach
        // the end of the pipe.
        let deadline = Instant::now() + Duration::from_secs(10);
        drain(&self.stdout, &mut self.stdout_lines, deadline);
        drain(&self.stderr, &mut self.stderr_lines, deadline);
        let stdout: String = self.stdout_lines.iter().map(|l| format!("{l}\n")).collect();
        let records = self
            .stdout_lines
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l}: {e}")))
            .collect();
        let (tier, start, stderr) = (std::mem::take(&mut self.tier), self.start.take(), std::mem::take(&mut self.stderr_lines));
        Finished { tier, start, status, records, stdout, stderr }
    }
}

/// A test that fails while qtrace runs does not leave it attached: its
/// reader threads keep the pipes open, so it would not notice on its own.
impl Drop for Qtrace {
    fn drop(&mut self) {
        // After `wait()` both are no-ops: std remembers the exit status.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records that part of a test cannot run on this kernel and why, in the
/// file `QTRACE_TEST_REPORT` names (the VM matrix shows it as unsupported,
/// never as passed) and on stderr.
pub(crate) fn unsupported(test: &str, what: &str, why: &str) {
    let line = format!("{test}: {what}: {why}\n");
    eprint!("unsupported: {line}");
    if let Ok(path) = std::env::var("QTRACE_TEST_REPORT") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("report file");
        f.write_all(line.as_bytes()).expect("report written");
    }
}

/// Records what a test found about this kernel (for example the tier
/// `--hooks auto` picked), in the file `QTRACE_TEST_NOTES` names: the VM
/// matrix shows it beside the verdicts.
pub(crate) fn note(test: &str, what: &str) {
    eprintln!("note: {test}: {what}");
    if let Ok(path) = std::env::var("QTRACE_TEST_NOTES") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("notes file");
        writeln!(f, "{test}: {what}").expect("note written");
    }
}

impl Finished {
    /// A limit of its start record by `id` (`ack_detail_missing`,
    /// `counted_upper_bound`, ...), if it applies.
    pub(crate) fn limit(&self, id: &str) -> Option<&Value> {
        limit_in(&self.start, id)
    }

    /// Why this kernel and tier cannot report ACK-stage overflows one by
    /// one (the `ack_detail_missing` limit's reason), if it cannot.
    pub(crate) fn ack_detail_missing(&self) -> Option<String> {
        let l = self.limit("ack_detail_missing")?;
        Some(l["reason"].as_str().or(l["text"].as_str()).unwrap_or_default().to_owned())
    }

    /// Whether this tier's counted drops are only an upper bound (the
    /// `counted_upper_bound` limit: tracepoint tier before Linux 6.11).
    pub(crate) fn counted_is_upper_bound(&self) -> bool {
        self.limit("counted_upper_bound").is_some()
    }

    /// Whether this tier sees SYN-stage packets one by one.
    pub(crate) fn sees_syn_stage(&self) -> bool {
        self.tier == "fentry" || self.tier == "kprobe"
    }
    pub(crate) fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records.iter().filter(move |r| r["type"] == ty)
    }
    /// The `outcome` records of `port`, by remote port.
    /// One per connection: a second for the same client is an error.
    pub(crate) fn outcomes(&self, port: u16) -> std::collections::BTreeMap<u16, &Value> {
        let all: Vec<&Value> = self.of_type("outcome").filter(|o| o["local_port"] == port).collect();
        let by_client: std::collections::BTreeMap<u16, &Value> =
            all.iter().map(|o| (o["remote_port"].as_u64().unwrap() as u16, *o)).collect();
        assert_eq!(by_client.len(), all.len(), "one outcome per connection: {all:#?}");
        by_client
    }
    pub(crate) fn events(&self, port: u16, kind: &str) -> Vec<&Value> {
        self.of_type("event").filter(|e| e["local_port"] == port && e["kind"] == kind).collect()
    }
    /// Drops reported for `port`: one per drop event, plus counted drops,
    /// plus the drop events over the port's budget (not sent, tallied in
    /// the summary's `suppressed`).
    pub(crate) fn drops(&self, port: u16) -> u64 {
        let events = self.of_type("event").filter(|e| e["local_port"] == port && e["action"] != "cookie").count() as u64;
        let counted: u64 = self.of_type("counted").filter(|c| c["local_port"] == port).map(|c| c["count"].as_u64().unwrap()).sum();
        events + counted + self.suppressed(port, |kind| kind != "syncookie_sent")
    }
    /// Events of `port` over its budget, of the kinds `which` selects.
    pub(crate) fn suppressed(&self, port: u16, which: impl Fn(&str) -> bool) -> u64 {
        let Some(by_kind) = self.summary(port).and_then(|s| s["suppressed"].as_object()) else {
            return 0;
        };
        by_kind.iter().filter(|(k, _)| which(k)).map(|(_, n)| n.as_u64().unwrap()).sum()
    }
    pub(crate) fn summary(&self, port: u16) -> Option<&Value> {
        self.of_type("summary").find(|s| s["local_port"] == port)
    }
}

/// The qtrace binary under test, which `QTRACE_BIN` names (`cargo xtask
/// test` sets it to the release build; the VM matrix to the guest's copy).
pub(crate) fn bin() -> String {
    std::env::var("QTRACE_BIN").expect("QTRACE_BIN names the qtrace binary under test: run the suites with `cargo xtask test`")
}

/// Process-wide unique ports so tests never see each other's listeners.
pub(crate) fn port() -> u16 {
    static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
    20_000 + (std::process::id() % 2000) as u16 * 10 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) as u16
}

/// A minimal HTTP/1.0 GET (no client library: the suite runs in minimal
/// guests too). Returns the status, the headers and the body.
pub(crate) fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n").expect("request sent");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Percent-encodes a query-string value.
pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// One sample's value from Prometheus-format text: the line that starts
/// with `series` (name and labels exactly as qtrace writes them).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

impl Qtrace {
    /// The address of its metrics endpoint (the start record's
    /// `metrics_addr`, its port resolved).
    pub(crate) fn metrics_addr(&self) -> String {
        let addr = self.start["metrics_addr"].as_str();
        addr.unwrap_or_else(|| panic!("no metrics_addr in the start record {}", self.start)).to_owned()
    }
}

/// The capabilities a DaemonSet manifest adds, as written
/// (`capabilities.add`).
pub(crate) fn daemonset_capabilities(yaml: &str) -> Vec<String> {
    let section = yaml.split("add:").nth(1).expect("capabilities.add").split("seccompProfile").next().unwrap();
    section
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("- "))
        .map(|c| c.trim().to_owned())
        .collect()
}

/// A listener with `SO_REUSEPORT`, one of a group sharing `addr`.
pub(crate) fn reuseport_listener(addr: SocketAddr, backlog: i32) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_reuse_port(true).expect("reuseport");
    s.bind(&addr.into()).expect("bind");
    s.listen(backlog).expect("listen");
    s
}

/// `n` clients connecting to `addr` 20 ms apart, from inside `ns`, with
/// `busy` (nonblocking) accepting whatever reached it in between: the
/// connections it accepted, and the clients.
pub(crate) fn burst_accepting(ns: &NetNs, addr: SocketAddr, busy: &Socket, n: usize) -> (Vec<Socket>, Vec<Socket>) {
    busy.set_nonblocking(true).expect("nonblocking");
    let (mut served, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..n {
        clients.push(ns.run(|| connect_nonblocking(addr)));
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((s, _)) = busy.accept() {
            served.push(s);
        }
    }
    (served, clients)
}

/// One listener as `ss -ltnme` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SsListener {
    pub inode: u64,
    /// `sk:`, in decimal.
    pub cookie: u64,
    pub recv_q: u64,
    /// `skmem`'s `d`: the listener's drop counter.
    pub drops: u64,
}

impl NetNs {
    /// The listeners on `port`, as `ss -ltnme` shows them.
    pub(crate) fn ss_listeners(&self, port: u16) -> Vec<SsListener> {
        // Each socket's skmem comes on a continuation line of its own.
        let text = self.exec(&["ss", "-ltnmeH", &format!("sport = :{port}")]).replace("\n\t", " ");
        text.lines().map(ss_listener).collect()
    }
}

fn ss_listener(line: &str) -> SsListener {
    let word = |prefix: &str| line.split_whitespace().find_map(|w| w.strip_prefix(prefix).map(str::to_owned));
    SsListener {
        inode: word("ino:").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("ino: in {line}")),
        cookie: word("sk:").and_then(|h| u64::from_str_radix(&h, 16).ok()).unwrap_or_else(|| panic!("sk: in {line}")),
        recv_q: line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("Recv-Q in {line}")),
        drops: line
            .split(",d")
            .nth(1)
            .and_then(|d| d.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or_else(|| panic!("skmem d<N> in {line}")),
    }
}
