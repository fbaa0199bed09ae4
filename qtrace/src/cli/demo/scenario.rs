//! `qtrace demo`'s scenario: a deliberately slow server on port 8080 and
//! bursty clients, in a network namespace of its own, going through each
//! kind of overflow in turn. It runs in a child process that `qtrace demo`
//! starts in a fresh namespace; it dies with its parent, and the namespace
//! with it. It starts when told to on stdin (once qtrace is attached).
//! Each phase is announced on stdout as one line, with the
//! namespace's own counters as the kernel reports them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::host::ns_state::NetCounters;

pub const PORT: u16 = 8080;

/// One phase: what it shows, and the sysctls it needs.
pub struct Phase {
    pub name: &'static str,
    pub explain: &'static str,
    syncookies: u8,
    abort_on_overflow: u8,
    run: fn(Instant),
}

pub const PHASES: [Phase; 5] = [
    Phase {
        name: "accept queue full",
        explain: "the server accepts one connection a second with a backlog of 4; clients come 20 at a time. SYNs that find the queue full are dropped.",
        syncookies: 1,
        abort_on_overflow: 0,
        run: slow_server,
    },
    Phase {
        name: "final ACK dropped",
        explain: "the accept queue filled between a client's SYN and its final ACK: the ACK is dropped; the client thinks it is connected.",
        syncookies: 1,
        abort_on_overflow: 0,
        run: late_acks,
    },
    Phase {
        name: "SYN queue full, no syncookies",
        explain: "half-open handshakes fill the SYN queue and tcp_syncookies=0: new SYNs are dropped.",
        syncookies: 0,
        abort_on_overflow: 0,
        run: half_open,
    },
    Phase {
        name: "SYN queue full, syncookies on",
        explain: "the same with tcp_syncookies=1: SYNs get a syncookie instead of a drop (the tracepoint tier cannot see cookies sent).",
        syncookies: 1,
        abort_on_overflow: 0,
        run: half_open,
    },
    Phase {
        name: "reset on overflow",
        explain: "tcp_abort_on_overflow=1: a final ACK that finds the accept queue full gets a reset (Connection reset by peer).",
        syncookies: 1,
        abort_on_overflow: 1,
        run: late_acks,
    },
];

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

fn listener(backlog: i32, defer_accept: bool) -> Option<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.set_reuse_address(true).ok()?;
    if defer_accept {
        // TCP_DEFER_ACCEPT keeps a request in the SYN queue until data
        // arrives: the demo's way to hold handshakes half-open, and to
        // choose when their final ACK (carried by data) comes.
        let secs: libc::c_int = 30;
        // SAFETY: a valid socket and an int option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    s.bind(&addr().into()).ok()?;
    s.listen(backlog).ok()?;
    Some(s)
}

fn client(send: bool) -> Option<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.set_nonblocking(true).ok()?;
    let _ = s.connect(&addr().into());
    if send {
        wait_connected(&s);
        let _ = s.send(b"GET / HTTP/1.0\r\n\r\n");
    }
    Some(s)
}

fn wait_connected(s: &Socket) {
    let t = Instant::now();
    while s.peer_addr().is_err() && t.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sleep_until(end: Instant, d: Duration) -> bool {
    let left = end.saturating_duration_since(Instant::now());
    std::thread::sleep(d.min(left));
    Instant::now() < end
}

/// Accepts one connection a second; bursts of 20 clients every 3 s.
fn slow_server(end: Instant) {
    let Some(srv) = listener(4, false) else { return };
    let _ = srv.set_nonblocking(true);
    let mut clients = Vec::new();
    let mut next_burst = Instant::now();
    loop {
        if Instant::now() >= next_burst {
            clients.clear();
            clients.extend((0..20).filter_map(|_| client(false)));
            next_burst = Instant::now() + Duration::from_secs(3);
        }
        let _ = srv.accept();
        if !sleep_until(end, Duration::from_secs(1)) {
            return;
        }
    }
}

/// Final ACKs that arrive when the accept queue is full: three clients'
/// handshakes wait half-open (deferred accept), five more fill the accept
/// queue (backlog 4: full at 5), then the three send their data.
fn late_acks(end: Instant) {
    loop {
        let Some(_srv) = listener(4, true) else { return };
        let mut fill: Vec<Socket> = (0..4).filter_map(|_| client(true)).collect();
        let held: Vec<Socket> = (0..3).filter_map(|_| client(false)).collect();
        held.iter().for_each(wait_connected);
        fill.extend(client(true));
        std::thread::sleep(Duration::from_millis(100));
        for c in &held {
            let _ = c.send(b"GET / HTTP/1.0\r\n\r\n");
        }
        // Their data is resent a few times, overflowing each time.
        if !sleep_until(end, Duration::from_secs(4)) {
            return;
        }
    }
}

/// Half-open handshakes fill the SYN queue (deferred accept, no data).
fn half_open(end: Instant) {
    loop {
        let Some(_srv) = listener(4, true) else { return };
        let _clients: Vec<Socket> = (0..12).filter_map(|_| client(false)).collect();
        if !sleep_until(end, Duration::from_secs(4)) {
            return;
        }
    }
}

fn write_sysctl(name: &str, value: u8) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value.to_string());
}

/// Brings `lo` up in this (new) namespace: `SIOCSIFFLAGS` with `IFF_UP`.
fn loopback_up() -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: ifreq-sized buffer for the flags ioctls. The request type is
    // c_ulong in glibc and c_int in musl: `as _` serves both.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The namespace's listen-queue counters, for the phase line.
fn counters() -> Vec<(&'static str, u64)> {
    let c = NetCounters::read().unwrap_or_default();
    vec![
        ("ListenOverflows", c.listen_overflows),
        ("ListenDrops", c.listen_drops),
        ("TCPReqQFullDrop", c.req_qfull_drop),
        ("TCPReqQFullDoCookies", c.req_qfull_do_cookies),
    ]
}

/// The child's main: runs the phases round after round until killed.
pub fn scenario(phase_secs: u64) -> anyhow::Result<()> {
    // What the live view shows as the listener's owner.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"slow-server".as_ptr()) };
    loopback_up().map_err(|e| anyhow::anyhow!("bringing lo up in the demo's namespace: {e}"))?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    // No traffic before qtrace is attached: every drop the namespace's
    // counters show is then one qtrace saw too.
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go)? == 0 {
        return Ok(());
    }
    loop {
        for (i, p) in PHASES.iter().enumerate() {
            write_sysctl("tcp_syncookies", p.syncookies);
            write_sysctl("tcp_abort_on_overflow", p.abort_on_overflow);
            let before = counters();
            let end = Instant::now() + Duration::from_secs(phase_secs);
            let worker = std::thread::spawn(move || (p.run)(end));
            // Each second: the phase, and what the kernel counted so far.
            while Instant::now() < end {
                let delta: Vec<String> = counters()
                    .iter()
                    .zip(&before)
                    .filter(|((_, now), (_, was))| now > was)
                    .map(|((k, now), (_, was))| format!("{k} +{}", now - was))
                    .collect();
                let kernel = if delta.is_empty() { "nothing yet".into() } else { delta.join(", ") };
                // The view's lines, as one JSON array per update.
                let lines =
                    [format!("demo {}/{}: {}; kernel counters this phase: {kernel}", i + 1, PHASES.len(), p.name), p.explain.to_owned()];
                writeln!(out, "{}", serde_json::to_string(&lines)?)?;
                out.flush()?;
                std::thread::sleep(Duration::from_secs(1));
            }
            let _ = worker.join();
        }
    }
}
