//! Root integration suite: accept-queue waits. Real clients connect to a
//! real listener in a fresh network namespace; the test's own clock is the
//! oracle: each client's connect completion and the server's accept return
//! give every connection's wait, and what the clients and the server saw
//! (EOF, ECONNRESET) says which connections were served for nobody.
//! qtrace's per-port summary must agree, and nothing may have been dropped
//! (the namespace's `ListenOverflows` and `ListenDrops`).
//!
//! Tolerance: qtrace's wait runs from the child socket's birth to the
//! `accept()` exit; the test's from `connect()` returning to `accept()`
//! returning. On loopback the two ends are microseconds apart, plus
//! scheduling delay, which is why [`SLACK`] is tens of milliseconds (wider
//! than the host needs, for guests under QEMU's TCG). Percentiles are read
//! at histogram bucket middles (buckets at most 25% wide: within 12.5%);
//! the maximum is exact.

mod common;

use std::io::Read as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{addr, burst_accepting, connect, listener, port, reuseport_listener, NetNs, Qtrace};
use serde_json::Value;
use socket2::Socket;

const SLACK_MS: f64 = 40.0;
const GAP: Duration = Duration::from_millis(100);

/// The `rank`-th smallest of `waits` for quantile `q`, as qtrace ranks:
/// `ceil(q * n)`.
fn quantile(waits: &[f64], q: f64) -> f64 {
    let mut sorted = waits.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Asserts qtrace's value `got` (ms) is within `share` of `want` plus the
/// slack.
fn near(what: &str, got: &Value, want: f64, share: f64) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((got - want).abs() <= share * want + SLACK_MS, "{what}: qtrace {got} ms, measured {want:.3} ms");
}

/// Connects `n` clients (each connect completed before the next starts)
/// and returns them with the instant each connect returned.
fn clients(ns: &NetNs, a: std::net::SocketAddr, n: usize) -> Vec<(Socket, Instant)> {
    ns.run(|| (0..n).map(|_| (connect(a), Instant::now())).collect())
}

/// A healthy server that accepts slowly: one connection every 100 ms, all
/// queued at once. Waits rise to about n × 100 ms with nothing dropped,
/// the warning before an overflow.
fn slow_server(ip: &str) {
    const N: usize = 8;
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json"]);
    let before = ns.counters();
    let a = addr(ip, p);
    let srv = ns.run(|| listener(a, 16));
    let conns = clients(&ns, a, N);
    let mut waits = Vec::new();
    let mut accepted = Vec::new();
    for (_, connected) in &conns {
        std::thread::sleep(GAP);
        let (s, _) = srv.accept().expect("accept");
        waits.push(connected.elapsed().as_secs_f64() * 1e3);
        accepted.push(s);
    }
    let after = ns.counters();
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "exit status {:?}, stderr {:?}", done.status, done.stderr);
    assert_eq!(after.delta(&before, "ListenOverflows"), 0, "the queue never overflowed");
    assert_eq!(after.delta(&before, "ListenDrops"), 0);
    let s = done.summary(p).unwrap_or_else(|| panic!("a summary for port {p}: {:?}", done.records));
    let w = &s["accept_wait_ms"];
    assert_eq!(w["count"], N as u64, "one wait per accepted connection: {s}");
    near("max", &w["max"], quantile(&waits, 1.0), 0.01);
    near("p50", &w["p50"], quantile(&waits, 0.5), 0.125);
    near("p99", &w["p99"], quantile(&waits, 0.99), 0.125);
    assert_eq!(s["drops"], 0);
    assert_eq!(s["accepted_client_gone"], 0);
    assert_eq!(s["reset_listener_closed"], 0);
}

#[test]
fn slow_server_v4() {
    slow_server("127.0.0.1");
}

#[test]
fn slow_server_v6() {
    slow_server("::1");
}

/// What the server read first from an accepted connection: `Ok(0)` is the
/// client's FIN, `Err(ECONNRESET)` its RST.
fn first_read(s: Socket) -> std::io::Result<usize> {
    // A client that stays sends nothing: a second is enough to tell.
    read_within(s, Duration::from_secs(1))
}

/// The first read from `s`, waiting at most `wait`.
fn read_within(s: Socket, wait: Duration) -> std::io::Result<usize> {
    let mut s = TcpStream::from(s);
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.read(&mut [0u8; 16])
}

/// Six clients queue; two close (FIN) and two reset (linger 0) before the
/// server accepts. The server accepts all six and reads: EOF or
/// ECONNRESET marks a connection whose client had left.
fn clients_leave_while_queued(ip: &str) {
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json"]);
    let a = addr(ip, p);
    let srv = ns.run(|| listener(a, 16));
    let mut conns = clients(&ns, a, 6);
    for (c, _) in conns.drain(..2) {
        drop(c);
    }
    for (c, _) in conns.drain(..2) {
        c.set_linger(Some(Duration::ZERO)).expect("linger 0");
        drop(c);
    }
    std::thread::sleep(GAP);
    let mut gone = 0;
    for _ in 0..6 {
        let (s, _) = srv.accept().expect("accept");
        match first_read(s) {
            Ok(0) => gone += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => gone += 1,
            Ok(n) => panic!("a client sent {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let done = q.stop(libc::SIGINT);
    drop(conns);
    assert!(done.status.success(), "exit status {:?}, stderr {:?}", done.status, done.stderr);
    assert_eq!(gone, 4, "the server saw four clients gone");
    let s = done.summary(p).expect("a summary for the port");
    assert_eq!(s["accept_wait_ms"]["count"], 6, "{s}");
    assert_eq!(s["accepted_client_gone"], gone, "{s}");
    assert_eq!(s["reset_listener_closed"], 0);
}

#[test]
fn clients_leave_while_queued_v4() {
    clients_leave_while_queued("127.0.0.1");
}

#[test]
fn clients_leave_while_queued_v6() {
    clients_leave_while_queued("::1");
}

/// Entries in qtrace's map of queued connections now (`bpftool`).
fn queued_entries() -> usize {
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "name", "QUEUED"]).output().expect("bpftool runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    v.as_array().map_or(0, Vec::len)
}

/// Five clients queue; the server accepts one; one client resets its
/// queued connection; the server closes its listener. The kernel resets
/// and frees the four connections still queued (`inet_csk_listen_stop()`,
/// the reset one too, which `accept()` would still have returned), as `ss`
/// counted them; the three clients still there read ECONNRESET; and no
/// entry of qtrace's stays behind.
#[test]
fn listener_close_resets_queued_connections() {
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json"]);
    let a = addr("127.0.0.1", p);
    let srv = ns.run(|| listener(a, 16));
    // qtrace reads listeners once a second: arrivals and accepts are
    // those of listeners it has seen.
    std::thread::sleep(Duration::from_millis(1500));
    let mut conns = clients(&ns, a, 5);
    let (first, _) = srv.accept().expect("accept");
    let (gone, _) = conns.pop().expect("five clients");
    gone.set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(gone);
    std::thread::sleep(GAP);
    let queued: u64 =
        ns.exec(&["ss", "-ltnH", &format!("sport = :{p}")]).split_whitespace().nth(1).and_then(|q| q.parse().ok()).expect("Recv-Q");
    drop(srv);
    // Accepts are in arrival order: the first client is served.
    let reset = conns
        .into_iter()
        .skip(1)
        // Every one of them is reset: the wait only bounds how late a slow
        // guest's softirq may deliver the reset.
        .map(|(c, _)| read_within(c, Duration::from_secs(5)))
        .filter(|r| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset))
        .count();
    std::thread::sleep(GAP);
    let left = queued_entries();
    let done = q.stop(libc::SIGINT);
    drop(first);
    assert!(done.status.success(), "exit status {:?}, stderr {:?}", done.status, done.stderr);
    assert_eq!((queued, reset), (4, 3), "four queued at the close, three clients there to be reset");
    assert_eq!(left, 0, "queued connections left in qtrace's map");
    let s = done.summary(p).expect("a summary for the port");
    assert_eq!(s["accept_wait_ms"]["count"], 1, "{s}");
    assert_eq!(s["reset_listener_closed"], queued, "{s}");
    assert_eq!(s["accepted_client_gone"], 0);
    assert_eq!(s["arrivals"], 5, "{s}");
}

/// Two `SO_REUSEPORT` listeners share a port; the server accepts from one
/// and the other stalls. Each listener's accepts must be what the server
/// accepted from it, its arrivals those plus what `ss` shows still queued,
/// and its drops its own drop counter.
#[test]
fn reuseport_split_shows_the_stalled_listener() {
    let ns = NetNs::new(&[]);
    let p = port();
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json"]);
    let before = ns.counters();
    let a = addr("127.0.0.1", p);
    let (busy, stalled) = ns.run(|| (reuseport_listener(a, 4), reuseport_listener(a, 4)));
    let (mut served, clients) = burst_accepting(&ns, a, &busy, 30);
    std::thread::sleep(Duration::from_millis(300));
    while let Ok((s, _)) = busy.accept() {
        served.push(s);
    }
    // No more SYN retransmissions: the drop counters stop.
    drop(clients);
    std::thread::sleep(Duration::from_millis(300));
    let ss = ns.ss_listeners(p);
    let after = ns.counters();
    let done = q.stop(libc::SIGINT);
    drop((busy, stalled));
    assert!(done.status.success(), "exit status {:?}, stderr {:?}", done.status, done.stderr);
    let s = done.summary(p).expect("a summary for the port");
    let listeners = s["listeners"].as_array().unwrap_or_else(|| panic!("per-listener split: {s}"));
    assert_eq!(listeners.len(), 2, "{s}");
    assert_eq!(ss.len(), 2, "{ss:?}");
    for ss in ss {
        let l = listeners.iter().find(|l| l["cookie"] == ss.cookie).unwrap_or_else(|| panic!("listener {} in {s}", ss.cookie));
        let accepted = if ss.recv_q == 0 { served.len() as u64 } else { 0 };
        assert_eq!(l["accepts"], accepted, "{l}");
        assert_eq!(l["arrivals"], accepted + ss.recv_q, "{l}");
        assert_eq!(l["drops"], ss.drops, "{l}");
    }
    assert!(listeners.iter().any(|l| l["accepts"] == 0 && l["drops"].as_u64() > Some(0)), "the stalled listener overflowed: {s}");
    assert_eq!(s["accepts"], served.len() as u64);
    assert_eq!(s["drops"], after.delta(&before, "ListenDrops"));
}

/// `pid_tgid` of each thread qtrace keeps the latest `accept()` of
/// (`bpftool`; keys are little-endian `u64`s).
fn accepting_threads() -> Vec<u64> {
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "name", "ACCEPTING"]).output().expect("bpftool runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let byte = |b: &Value| u8::from_str_radix(b.as_str().and_then(|s| s.strip_prefix("0x")).expect("a hex byte"), 16).expect("a hex byte");
    let key = |e: &Value| e["key"].as_array().expect("a key").iter().rev().fold(0u64, |k, b| k << 8 | u64::from(byte(b)));
    v.as_array().map_or_else(Vec::new, |entries| entries.iter().map(key).collect())
}

/// A worker thread is already blocked in `accept()` when qtrace starts;
/// three clients connect and it accepts all three. Its first accept began
/// before qtrace attached, so its listener is not on record: that accept
/// is missing from the listener's accepts and counted lost, and the next
/// two are the listener's. Every connection's wait is measured. Once the
/// worker has exited, qtrace keeps nothing of it.
#[test]
fn a_worker_blocked_before_the_start() {
    let ns = NetNs::new(&[]);
    let p = port();
    let a = addr("127.0.0.1", p);
    let srv = ns.run(|| listener(a, 16));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        tx.send(unsafe { libc::gettid() }).expect("the test waits");
        (0..3).map(|_| srv.accept().expect("accept").0).collect::<Vec<_>>()
    });
    let tid = u64::try_from(rx.recv().expect("the worker's id")).expect("a thread id");
    let worker_key = u64::from(std::process::id()) << 32 | tid;
    // Blocked in accept() (its only blocking call) before qtrace attaches.
    let sleeping = || {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("the worker's stat");
        stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) == Some("S")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sleeping() {
        assert!(Instant::now() < deadline, "the worker never blocked in accept()");
        std::thread::sleep(Duration::from_millis(10));
    }
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json"]);
    // Accepts are counted for listeners qtrace has seen (it reads them
    // once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let conns = clients(&ns, a, 3);
    let accepted = worker.join().expect("the worker accepted");
    std::thread::sleep(GAP);
    let kept = accepting_threads();
    let done = q.stop(libc::SIGINT);
    drop((conns, accepted));
    assert!(done.status.success(), "exit status {:?}, stderr {:?}", done.status, done.stderr);
    assert!(!kept.contains(&worker_key), "the exited worker's entry stays: {kept:x?}");
    let losses = done.of_type("losses").last().expect("a losses record");
    assert_eq!(losses["listener_accepts_lost"], 1, "{losses}");
    let s = done.summary(p).expect("a summary for the port");
    assert_eq!(s["accept_wait_ms"]["count"], 3, "{s}");
    assert_eq!(s["accepts"], 2, "{s}");
    assert_eq!(s["listeners"][0]["accepts"], 2, "{s}");
}
