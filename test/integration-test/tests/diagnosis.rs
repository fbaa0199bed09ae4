//! Root integration suite for `qtrace listeners` and `qtrace doctor`: each
//! test builds one cause of refused connections in a fresh network
//! namespace and checks that qtrace names it, with evidence equal to the
//! namespace's own counters and to what `ss` reports.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{
    ack_scenario, addr, bin, burst_accepting, connect, connect_nonblocking, listener, port, reuseport_listener, settle, unsupported,
    Counters, NetNs, Qtrace,
};
use serde_json::Value;
use socket2::Socket;

const SETTLE: Duration = Duration::from_millis(400);

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm").unwrap().trim_end().to_owned()
}

/// `qtrace listeners ARGS --json`, parsed.
fn listeners_json(args: &[&str]) -> Vec<Value> {
    let out = Command::new(bin()).arg("listeners").args(args).arg("--json").output().expect("qtrace runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// `ss`'s local address column as qtrace prints addresses.
fn ss_addr(local: &str) -> (String, u16) {
    let (a, p) = local.rsplit_once(':').expect("addr:port");
    let a = a.trim_start_matches('[').trim_end_matches(']');
    let a = if a == "*" { "::" } else { a };
    (a.to_owned(), p.parse().expect("port"))
}

/// Same listeners, same Recv-Q and Send-Q as `ss -ltn`; the SYN queue as
/// `ss state syn-recv` counts it; the test process as owner; the clamp by
/// `somaxconn` flagged where the bound equals it.
#[test]
fn listeners_match_ss() {
    let ns = NetNs::new(&["net.core.somaxconn=64"]);
    let (p1, p2, p3, p4) = (port(), port(), port(), port());
    let l1 = ns.run(|| listener(addr("127.0.0.1", p1), 5));
    let waiting: Vec<Socket> = ns.run(|| (0..3).map(|_| connect(addr("127.0.0.1", p1))).collect());
    let l2 = ns.run(|| listener(addr("::1", p2), 100));
    let l3 = ns.run(|| listener(addr("0.0.0.0", p3), 4096));
    let l4 = ns.run(|| listener(addr("::", p4), 10));
    // Two requests stay in p4's SYN queue: their final ACKs are held back.
    ns.block(p4, false);
    let pending: Vec<Socket> = ns.run(|| (0..2).map(|_| connect_nonblocking(addr("::1", p4))).collect());
    let syn_recv = settle(SETTLE, || ns.exec(&["ss", "-tnH", "state", "syn-recv", &format!("sport = :{p4}")]).lines().count());
    assert_eq!(syn_recv, 2, "two requests wait in the SYN queue");

    let ss: BTreeSet<(String, u16, u64, u64)> = ns
        .exec(&["ss", "-ltnH"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, p) = ss_addr(f[3]);
            (a, p, f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    let records = listeners_json(&["--netns", &ns.name]);
    let ours: BTreeSet<(String, u16, u64, u64)> = records
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "listener");
            (
                r["local_addr"].as_str().unwrap().to_owned(),
                r["local_port"].as_u64().unwrap() as u16,
                r["accept_queue"].as_u64().unwrap(),
                r["accept_queue_max"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ours, ss, "qtrace listeners vs ss -ltn");
    assert_eq!(ss.len(), 4);
    let by_port = |p: u16| records.iter().find(|r| r["local_port"] == p).unwrap();
    assert_eq!(by_port(p1)["accept_queue"], 3);
    assert_eq!(by_port(p3)["accept_queue_max"], 64, "listen(4096) under somaxconn 64");
    assert_eq!(by_port(p3)["backlog_clamped"], "likely");
    assert_eq!(by_port(p3)["somaxconn"], 64);
    assert_eq!(by_port(p1)["backlog_clamped"], "no");
    assert_eq!(by_port(p4)["syn_queue"], syn_recv as u64);
    assert_eq!(by_port(p1)["syn_queue"], 0);
    for r in &records {
        assert_eq!(r["drops"], ns.ss_drops(r["local_port"].as_u64().unwrap() as u16));
        let procs = r["processes"].as_array().unwrap();
        assert!(procs.iter().any(|o| o["pid"] == std::process::id() && o["comm"] == own_comm()), "owner of {r}");
    }
    // The table form lists the same ports.
    let out = Command::new(bin()).args(["listeners", "--netns", &ns.name, "--port", &p3.to_string()]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(table.lines().count(), 2, "header and one row:\n{table}");
    assert!(table.contains("0/64") && table.contains("probably clamped"), "{table}");
    drop((l1, l2, l3, l4, waiting, pending));
}

/// A finding by id (and port, when given).
fn finding<'a>(done: &'a common::Finished, id: &str, port: Option<u16>) -> &'a Value {
    done.of_type("finding")
        .find(|f| f["id"] == id && port.is_none_or(|p| f["local_port"] == p))
        .unwrap_or_else(|| panic!("no {id} finding for {port:?} in {:#?}", done.records))
}

/// The sentence saying requested backlogs are not recorded (the start
/// record's `listen_calls_missing` limit), if they are not.
fn listen_calls_missing(done: &common::Finished) -> Option<String> {
    done.limit("listen_calls_missing").map(|l| l["text"].as_str().unwrap_or_else(|| panic!("a limit's text: {l}")).to_owned())
}

/// `listen(4096)` under `somaxconn=64` while doctor runs: the clamp is
/// proven, with the sysctl that fixes it. A listener made before doctor
/// started is flagged as likely clamped.
#[test]
fn doctor_proves_a_clamped_backlog() {
    let ns = NetNs::new(&["net.core.somaxconn=64"]);
    let (early, late) = (port(), port());
    let _e = ns.run(|| listener(addr("127.0.0.1", early), 1000));
    let q = Qtrace::doctor(&["--netns", &ns.name, "--duration", "2", "--json"]);
    let _l = ns.run(|| listener(addr("127.0.0.1", late), 4096));
    let done = q.wait();
    assert!(done.status.success(), "{:?}", done.stderr);

    let likely = finding(&done, "backlog_clamped", Some(early));
    assert_eq!(likely["severity"], "info");
    assert_eq!(likely["evidence"]["proof"], "bound equals somaxconn");
    assert_eq!(likely["evidence"]["accept_queue_max"], 64);
    if let Some(why) = listen_calls_missing(&done) {
        unsupported("doctor_proves_a_clamped_backlog", "requested backlogs", &why);
        return;
    }
    let proven = finding(&done, "backlog_clamped", Some(late));
    assert_eq!(proven["severity"], "warning");
    assert_eq!(proven["evidence"]["requested_backlog"], 4096);
    assert_eq!(proven["evidence"]["accept_queue_max"], 64);
    assert_eq!(proven["evidence"]["somaxconn"], 64);
    assert_eq!(proven["evidence"]["proof"], "listen() call seen");
    assert_eq!(proven["processes"][0]["pid"], std::process::id());
    let remedy: Vec<&str> = proven["remedy"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(remedy[0], format!("ip netns exec {} sysctl -w net.core.somaxconn=4096", ns.name));
    let settings = done.of_type("settings").next().unwrap();
    assert_eq!(settings["somaxconn"], 64);
}

/// What one `doctor` window saw, with the namespace's counters around it.
struct Window<T> {
    before: Counters,
    after: Counters,
    done: common::Finished,
    /// What the scenario made (sockets). Bind it to a name when
    /// destructuring: `..` would close the sockets before the test reads
    /// the listener's counter.
    _kept: T,
}

/// Runs `doctor` on the namespace for `duration` seconds while `scenario`
/// runs; then every packet to `port` is held back, so the window holds all
/// the traffic the counters before and after it saw.
fn doctor_window<T>(ns: &NetNs, port: u16, duration: &str, scenario: impl FnOnce() -> T) -> Window<T> {
    let before = ns.counters();
    let q = Qtrace::doctor(&["--netns", &ns.name, "--duration", duration, "--json"]);
    let kept = scenario();
    ns.block(port, true);
    let done = q.wait();
    let after = ns.counters();
    assert!(done.status.success(), "{:?}", done.stderr);
    Window { before, after, done, _kept: kept }
}

/// A never-accepting listener under a connect burst: an accept-queue
/// overflow naming its port and process, with the namespace's counters.
#[test]
fn doctor_names_an_accept_queue_overflow() {
    let ns = NetNs::new(&[]);
    let p = port();
    let Window { before, after, done, _kept: _sockets } = doctor_window(&ns, p, "4", || {
        let a = addr("127.0.0.1", p);
        let srv = ns.run(|| listener(a, 2));
        // The queue is filled first (three children on a backlog of 2), so
        // every SYN of the burst is dropped at the SYN stage and no request
        // exists whose SYN-ACK the server would go on retransmitting.
        let queued: Vec<Socket> = ns.run(|| (0..3).map(|_| connect(a)).collect());
        settle(Duration::from_millis(100), || ns.ss_listeners(p).first().map(|l| l.recv_q));
        assert_eq!(ns.ss_listeners(p).first().map(|l| l.recv_q), Some(3), "the accept queue is full before the burst");
        let clients: Vec<Socket> = ns.run(|| (0..27).map(|_| connect_nonblocking(a)).collect());
        std::thread::sleep(Duration::from_millis(1500));
        // The clients go on retransmitting their SYNs, and
        // `tcp_retransmit_skb()` counts TCPSynRetrans before the block meets
        // the packet: closed now (a SYN_SENT socket closes without a
        // packet), they retransmit nothing more, inside the window or out.
        ns.block(p, true);
        drop(clients);
        (srv, queued)
    });

    let f = finding(&done, "accept_queue_overflow", Some(p));
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["processes"][0]["pid"], std::process::id());
    assert_eq!(f["processes"][0]["comm"], own_comm());
    let overflows = after.delta(&before, "ListenOverflows");
    assert!(overflows >= 27, "the burst overflowed (ListenOverflows +{overflows})");
    assert_eq!(f["evidence"]["ListenOverflows"], overflows);
    assert_eq!(f["evidence"]["ListenDrops"], after.delta(&before, "ListenDrops"));
    assert_eq!(f["evidence"]["listener_drops"], ns.ss_drops(p), "listener drops vs ss -ltm d<N>");
    assert_eq!(f["evidence"]["accept_queue_max"], 2);
    let abort = finding(&done, "abort_on_overflow", None);
    assert_eq!(abort["evidence"]["tcp_abort_on_overflow"], 0);
    assert_eq!(abort["evidence"]["TCPSynRetrans"], after.delta(&before, "TCPSynRetrans"));
}

/// SYN queue overflow with `tcp_syncookies=0`: reported as such, with the
/// sysctl that turns cookies on.
#[test]
fn doctor_explains_a_syn_queue_overflow_without_syncookies() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0"]);
    let p = port();
    let Window { before, after, done, _kept: _sockets } = doctor_window(&ns, p, "3", || {
        let srv = ns.run(|| listener(addr("127.0.0.1", p), 4));
        // Final ACKs held back: the requests stay in the SYN queue.
        ns.block(p, false);
        let clients: Vec<Socket> = ns.run(|| (0..8).map(|_| connect_nonblocking(addr("127.0.0.1", p))).collect());
        std::thread::sleep(Duration::from_millis(1500));
        (srv, clients)
    });

    let dropped = after.delta(&before, "TCPReqQFullDrop");
    assert!(dropped >= 4, "the SYN queue overflowed (TCPReqQFullDrop +{dropped})");
    let f = finding(&done, "syn_queue_overflow", Some(p));
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["evidence"]["TCPReqQFullDrop"], dropped);
    assert_eq!(f["evidence"]["tcp_syncookies"], 0);
    assert_eq!(f["remedy"][0], format!("ip netns exec {} sysctl -w net.ipv4.tcp_syncookies=1", ns.name));
    assert!(done.of_type("finding").all(|f| f["id"] != "accept_queue_overflow"), "the accept queue never filled");
}

/// `tcp_abort_on_overflow=1`: the resets clients saw are explained, and
/// counted as the kernel counted them.
#[test]
fn doctor_explains_abort_on_overflow() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=1"]);
    let p = port();
    let Window { before, after, done, _kept: s } = doctor_window(&ns, p, "3", || {
        let s = ack_scenario(&ns, addr("127.0.0.1", p));
        std::thread::sleep(Duration::from_millis(500));
        s
    });

    assert_eq!(after.delta(&before, "ListenOverflows"), 3, "three final ACKs overflowed");
    finding(&done, "accept_queue_overflow", Some(p));
    let f = finding(&done, "abort_on_overflow", None);
    assert_eq!(f["evidence"]["tcp_abort_on_overflow"], 1);
    assert_eq!(f["evidence"]["OutRsts"], after.delta(&before, "OutRsts"));
    assert!(f["summary"].as_str().unwrap().contains("Connection reset by peer"), "{f}");
    // The clients that failed: as many as saw ECONNRESET.
    let reset = s.clients.iter().filter(|c| common::was_reset(c)).count();
    assert_eq!(reset, 3, "three clients were reset");
    if let Some(why) = done.ack_detail_missing() {
        unsupported("doctor_explains_abort_on_overflow", "clients_failed (outcomes of ACK-stage overflows)", &why);
        return;
    }
    let failed = finding(&done, "clients_failed", Some(p));
    assert_eq!((&failed["severity"], &failed["evidence"]["clients_reset"]), (&"critical".into(), &reset.into()), "{failed}");
    assert_eq!(failed["evidence"]["clients_abandoned"], 0, "{failed}");
}

/// `watch` carries its context: the namespace's settings as the kernel
/// has them, and each `listen()` with the backlog asked for and the bound
/// the kernel set.
#[test]
fn watch_shows_settings_and_requested_backlogs() {
    let ns = NetNs::new(&["net.core.somaxconn=64", "net.ipv4.tcp_abort_on_overflow=1"]);
    let p = port();
    let q = Qtrace::watch(&["--netns", &ns.name, "--json", "--interval", "0.2"]);
    let _l = ns.run(|| listener(addr("::1", p), 4096));
    std::thread::sleep(Duration::from_millis(1000));
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);

    let sysctl = |name: &str| -> u64 { ns.run(|| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap()).trim().parse().unwrap() };
    let settings = done.of_type("settings").next().expect("a settings record");
    assert_eq!(settings["somaxconn"], sysctl("net/core/somaxconn"));
    assert_eq!(settings["tcp_abort_on_overflow"], sysctl("net/ipv4/tcp_abort_on_overflow"));
    assert_eq!(settings["tcp_syncookies"], sysctl("net/ipv4/tcp_syncookies"));
    assert_eq!(settings["tcp_max_syn_backlog"], sysctl("net/ipv4/tcp_max_syn_backlog"));
    if let Some(why) = listen_calls_missing(&done) {
        unsupported("watch_shows_settings_and_requested_backlogs", "requested backlogs", &why);
        return;
    }
    let listen = done.of_type("listen").find(|r| r["local_port"] == p).unwrap_or_else(|| panic!("no listen record: {:#?}", done.records));
    assert_eq!(listen["requested_backlog"], 4096);
    assert_eq!(listen["accept_queue_max"], 64);
    assert_eq!(listen["clamped"], true);
    assert_eq!(listen["local_addr"], "::1");
    assert_eq!(listen["pid"], std::process::id());
}

/// Whether this run traced accepts (the `accept_wait_missing` limit says
/// why not); records "unsupported" if not.
fn accepts_traced(done: &common::Finished, test: &str) -> bool {
    match done.limit("accept_wait_missing") {
        Some(l) => {
            unsupported(test, "accept-queue waits", l["reason"].as_str().unwrap_or_default());
            false
        }
        None => true,
    }
}

/// A server that accepts one connection every 150 ms with eight queued:
/// nothing drops, but doctor warns, with the waits the server measured.
#[test]
fn doctor_warns_of_slow_accepts_before_any_drop() {
    let ns = NetNs::new(&[]);
    let p = port();
    let Window { before, after, done, _kept: (waits, _sockets) } = doctor_window(&ns, p, "3", || {
        let srv = ns.run(|| listener(addr("127.0.0.1", p), 16));
        let clients: Vec<(Socket, std::time::Instant)> =
            ns.run(|| (0..8).map(|_| (connect(addr("127.0.0.1", p)), std::time::Instant::now())).collect());
        let mut waits = Vec::new();
        let mut served = Vec::new();
        for (_, connected) in &clients {
            std::thread::sleep(Duration::from_millis(150));
            served.push(srv.accept().expect("accept").0);
            waits.push(connected.elapsed().as_secs_f64() * 1e3);
        }
        (waits, (srv, clients, served))
    });
    if !accepts_traced(&done, "doctor_warns_of_slow_accepts_before_any_drop") {
        return;
    }
    assert_eq!(after.delta(&before, "ListenOverflows"), 0, "nothing overflowed");
    let f = finding(&done, "accept_wait_high", Some(p));
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["evidence"]["accepted"], waits.len() as u64);
    let longest = waits.iter().copied().fold(0.0, f64::max);
    let reported = f["evidence"]["accept_wait_max_ms"].as_f64().unwrap();
    // The same tolerance as the accept_wait suite: both clocks read within
    // tens of milliseconds of the same events.
    assert!((reported - longest).abs() <= 0.01 * longest + 40.0, "qtrace {reported} ms, server {longest:.1} ms");
    assert!(done.of_type("finding").all(|f| f["id"] != "accept_queue_overflow"));
}

/// Two SO_REUSEPORT listeners, one never accepting: doctor names the
/// stalled one, with its own drop counter and its sibling's accepts.
#[test]
fn doctor_names_a_stalled_reuseport_listener() {
    let ns = NetNs::new(&[]);
    let p = port();
    let a = addr("127.0.0.1", p);
    let Window { done, _kept: (served, stalled_ino, _sockets), .. } = doctor_window(&ns, p, "3", || {
        let (busy, stalled) = ns.run(|| (reuseport_listener(a, 4), reuseport_listener(a, 4)));
        let (served, clients) = burst_accepting(&ns, a, &busy, 30);
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&stalled))).map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino()
        });
        (served.len() as u64, ino.expect("socket inode"), (busy, stalled, clients, served))
    });
    if !accepts_traced(&done, "doctor_names_a_stalled_reuseport_listener") {
        return;
    }
    let f = finding(&done, "accept_imbalance", Some(p));
    assert_eq!(f["severity"], "warning");
    let ss = ns.ss_listeners(p);
    let stalled = ss.iter().find(|l| l.inode == stalled_ino).unwrap_or_else(|| panic!("stalled listener in {ss:?}"));
    assert!(stalled.drops > 0, "the stalled listener dropped: {stalled:?}");
    assert_eq!(f["evidence"]["listener_drops"], stalled.drops);
    assert_eq!(f["evidence"]["accepts"], 0);
    assert_eq!(f["evidence"]["siblings"][0]["accepts"], served);
}
