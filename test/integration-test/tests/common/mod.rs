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
pub fn require_root() {
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
pub struct NetNs {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    /// Creates `qtrace-test-<pid>-<n>` with loopback up and the given
    /// per-namespace sysctls (`net.ipv4.tcp_syncookies=0`, ...).
    pub fn new(sysctls: &[&str]) -> Self {
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
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("namespace file");
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

    /// The namespace's inode number, as qtrace labels it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.name)).expect("namespace file").ino()
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        cmd(&all)
    }

    /// The namespace's listen-queue counters from TcpExt (`nstat`).
    pub fn counters(&self) -> Counters {
        self.run(|| counters_of("/proc/thread-self"))
    }

    /// The listener's drop counter as `ss -ltm` shows it (`d<N>`).
    pub fn ss_drops(&self, port: u16) -> u64 {
        let out = self.exec(&["ss", "-ltmnH", &format!("sport = :{port}")]);
        out.split(|c: char| c == ',' || c == ')' || c.is_whitespace())
            .filter_map(|f| f.strip_prefix('d'))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    }

    /// Holds back the clients' bare ACKs to `port` (they stay requests in
    /// the listener's SYN queue) or, with `all`, every packet to `port`.
    pub fn block(&self, port: u16, all: bool) {
        let what = if all { String::new() } else { "tcp flags & (syn|ack|fin|rst|psh) == ack".into() };
        self.exec(&[
            "nft",
            &format!("add table inet qtrace_test; add chain inet qtrace_test out {{ type filter hook output priority 0; }}; add rule inet qtrace_test out tcp dport {port} {what} drop"),
        ]);
    }

    pub fn unblock(&self) {
        self.exec(&["nft", "delete", "table", "inet", "qtrace_test"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The listen-queue counters of a process's namespace, from
/// `/proc/<pid or thread-self>/net` (`nstat`'s sources).
pub fn counters_of(proc_dir: &str) -> Counters {
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
pub struct Counters(pub HashMap<String, u64>);

impl Counters {
    pub fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or_else(|| panic!("no counter {k}"))
    }
    pub fn delta(&self, before: &Counters, k: &str) -> u64 {
        self.get(k) - before.get(k)
    }
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Three clients whose final ACK arrives when the accept queue is full:
/// `listen(4)` with four unaccepted connections (not yet full: full is more
/// than the bound), then four requests wait in the SYN queue while an
/// nftables rule holds their final ACKs back (four fit whether the kernel
/// calls the SYN queue full at `qlen >= 4`, as 5.10 does, or `qlen > 4`);
/// then data segments carry the ACKs: one completes, three overflow.
pub struct AckScenario {
    pub srv: Socket,
    pub held: Vec<Socket>,
    pub clients: Vec<Socket>,
}

pub fn ack_scenario(ns: &NetNs, a: SocketAddr) -> AckScenario {
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

pub fn listener(addr: SocketAddr, backlog: i32) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    s.bind(&addr.into()).expect("bind");
    s.listen(backlog).expect("listen");
    s
}

/// Starts a connect without waiting for it.
pub fn connect_nonblocking(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_nonblocking(true).expect("nonblocking");
    let _ = s.connect(&addr.into());
    s
}

/// Waits until a nonblocking connect completed from the client's side.
pub fn wait_connected(s: &Socket) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.peer_addr().is_err() {
        assert!(Instant::now() < deadline, "client never saw the SYN-ACK");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn connect(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect");
    s
}

/// Waits until `f` returns the same value twice `gap` apart.
pub fn settle<T: PartialEq + Clone>(gap: Duration, mut f: impl FnMut() -> T) -> T {
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

/// A running `qtrace watch`.
pub struct Qtrace {
    child: Child,
    stderr: mpsc::Receiver<String>,
    pub stderr_lines: Vec<String>,
    /// The hook tier it attached (from its ready line).
    pub tier: String,
}

pub struct Finished {
    pub tier: String,
    pub status: std::process::ExitStatus,
    pub records: Vec<Value>,
    pub stdout: String,
    pub stderr: Vec<String>,
}

impl Qtrace {
    /// Starts `qtrace watch ARGS` from the host namespace and waits for its
    /// ready line. `QTRACE_TEST_HOOKS` forces a hook tier.
    pub fn watch(args: &[&str]) -> Self {
        Self::start("watch", args, "qtrace: watching")
    }

    /// Starts `qtrace watch --hooks HOOKS ARGS`, whatever `QTRACE_TEST_HOOKS` says.
    pub fn watch_with_hooks(hooks: &str, args: &[&str]) -> Self {
        Self::start_with("watch", hooks, args, "qtrace: watching")
    }

    /// Starts `qtrace doctor ARGS` and waits until it samples.
    pub fn doctor(args: &[&str]) -> Self {
        Self::start("doctor", args, "qtrace: doctor: sampling")
    }

    fn start(sub: &str, args: &[&str], ready_prefix: &str) -> Self {
        let hooks = std::env::var("QTRACE_TEST_HOOKS").unwrap_or_else(|_| "auto".into());
        Self::start_with(sub, &hooks, args, ready_prefix)
    }

    fn start_with(sub: &str, hooks: &str, args: &[&str], ready_prefix: &str) -> Self {
        require_root();
        let mut child = Command::new(bin())
            .arg(sub)
            .args(["--hooks", hooks])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qtrace starts");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut q = Self { child, stderr: rx, stderr_lines: Vec::new(), tier: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match q.stderr.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with(ready_prefix);
                    if ready {
                        let tier = line.split(" with the ").nth(1).and_then(|t| t.split_whitespace().next());
                        q.tier = tier.unwrap_or_default().to_owned();
                    }
                    q.stderr_lines.push(line);
                    if ready {
                        return q;
                    }
                }
                Err(_) => panic!("qtrace did not become ready: {:?}", q.stderr_lines),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops it with `signal` and collects its NDJSON output.
    pub fn stop(self, signal: i32) -> Finished {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait()
    }

    /// Waits for it to end by itself and collects its NDJSON output.
    pub fn wait(mut self) -> Finished {
        let out = self.child.wait_with_output().expect("qtrace exits");
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_lines.push(line);
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let records = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l}: {e}")))
            .collect();
        Finished { tier: self.tier, status: out.status, records, stdout, stderr: self.stderr_lines }
    }
}

/// Records that part of a test cannot run on this kernel and why, in the
/// file `QTRACE_TEST_REPORT` names (the VM matrix shows it as unsupported,
/// never as passed) and on stderr.
pub fn unsupported(test: &str, what: &str, why: &str) {
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
pub fn note(test: &str, what: &str) {
    eprintln!("note: {test}: {what}");
    if let Ok(path) = std::env::var("QTRACE_TEST_NOTES") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("notes file");
        writeln!(f, "{test}: {what}").expect("note written");
    }
}

impl Finished {
    /// Why this kernel and tier cannot report ACK-stage overflows one by
    /// one (qtrace says so at start), if it cannot.
    pub fn ack_detail_missing(&self) -> Option<String> {
        self.stderr
            .iter()
            .find_map(|l| l.strip_suffix(": ACK-stage overflows are counted from the listeners too"))
            .map(|why| why.trim_start_matches("qtrace: ").to_owned())
    }

    /// Whether this tier's counted drops are only an upper bound (qtrace
    /// says so at start: tracepoint tier before Linux 6.11).
    pub fn counted_is_upper_bound(&self) -> bool {
        self.stderr.iter().any(|l| l.contains("counted drops are an upper bound"))
    }

    /// Whether this tier sees SYN-stage packets one by one.
    pub fn sees_syn_stage(&self) -> bool {
        self.tier == "fentry" || self.tier == "kprobe"
    }
    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records.iter().filter(move |r| r["type"] == ty)
    }
    pub fn events(&self, port: u16, kind: &str) -> Vec<&Value> {
        self.of_type("event").filter(|e| e["local_port"] == port && e["kind"] == kind).collect()
    }
    /// Drops reported for `port`: one per drop event plus counted drops.
    pub fn drops(&self, port: u16) -> u64 {
        let events = self.of_type("event").filter(|e| e["local_port"] == port && e["action"] != "cookie").count() as u64;
        let counted: u64 = self.of_type("counted").filter(|c| c["local_port"] == port).map(|c| c["count"].as_u64().unwrap()).sum();
        events + counted
    }
    pub fn summary(&self, port: u16) -> Option<&Value> {
        self.of_type("summary").find(|s| s["local_port"] == port)
    }
}

/// The qtrace binary under test, which `QTRACE_BIN` names (`cargo xtask
/// test` sets it to the release build; the VM matrix to the guest's copy).
pub fn bin() -> String {
    std::env::var("QTRACE_BIN").expect("QTRACE_BIN names the qtrace binary under test: run the suites with `cargo xtask test`")
}

/// Process-wide unique ports so tests never see each other's listeners.
pub fn port() -> u16 {
    static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
    20_000 + (std::process::id() % 2000) as u16 * 10 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) as u16
}

/// A minimal HTTP/1.0 GET (no client library: the suite runs in minimal
/// guests too). Returns the status, the headers and the body.
pub fn http_get(addr: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
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
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// One sample's value from Prometheus-format text: the line that starts
/// with `series` (name and labels exactly as qtrace writes them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

impl Qtrace {
    /// The address of its metrics endpoint, from its start-up line.
    pub fn metrics_addr(&self) -> String {
        let line = self.stderr_lines.iter().find_map(|l| l.strip_prefix("qtrace: serving Prometheus metrics on http://"));
        let line = line.unwrap_or_else(|| panic!("no metrics line in {:?}", self.stderr_lines));
        line.trim_end_matches("/metrics").to_owned()
    }
}
