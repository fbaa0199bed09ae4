//! A listen-overflow storm that fires the tracer as fast as the kernel can
//! process packets, with no client stack in the way.
//!
//! In a namespace, a listener with backlog B on 10.99.0.1 gets handshakes
//! from 10.99.0.2, a peer that exists only as a static neighbour entry on a
//! veth (its SYN-ACKs leave and vanish, so nothing answers with a reset):
//! B completed handshakes plus one fill the accept queue, and before the
//! last one lands, B-1 more SYNs leave request sockets waiting. Each of
//! those requests' final ACK, sent again and again, then overflows the
//! accept queue in `tcp_v4_syn_recv_sock()` (LINUX_MIB_LISTENOVERFLOWS and
//! LINUX_MIB_LISTENDROPS, one each) and is dropped by `tcp_check_req()` with
//! `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` on 6.15+. A request lives for the
//! SYN-ACK retries (about a minute), longer than a storm.

use std::collections::HashMap;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::netns::Netns;
use super::packet::{self, ACK, SYN};

pub(super) const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(super) const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub(super) const VETH: &str = "qb0";
/// First client port of the hand-made handshakes.
const CLIENT_BASE: u16 = 20000;

/// Sets up the veth and the phantom peer in `ns` (once per namespace).
pub(super) fn wire(ns: &Netns) -> Result<()> {
    ns.ip(&["link", "add", VETH, "type", "veth", "peer", "name", "qb1"])?;
    ns.ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", VETH])?;
    ns.ip(&["link", "set", VETH, "up"])?;
    ns.ip(&["link", "set", "qb1", "up"])?;
    ns.ip(&["neigh", "add", &PEER.to_string(), "lladdr", "02:00:00:00:00:02", "dev", VETH, "nud", "permanent"])
}

fn check(rc: libc::c_int, what: &str) -> Result<libc::c_int> {
    if rc < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    }
}

pub(super) fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) }, "socket")?;
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn send(fd: &OwnedFd, pkt: &[u8]) -> bool {
    let to = sockaddr(LOCAL, 0);
    // SAFETY: valid buffer and address for the call's duration.
    let rc = unsafe {
        libc::sendto(fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len(), 0, (&raw const to).cast(), size_of::<libc::sockaddr_in>() as u32)
    };
    rc == pkt.len() as isize
}

/// A listener with an overflowing accept queue and the ACKs that hit it.
pub(super) struct Storm {
    _listener: OwnedFd,
    acks: Vec<Vec<u8>>,
    /// Raw sockets made in the namespace, one per sending thread.
    senders: Vec<OwnedFd>,
}

/// Listens on `port` with `backlog` (never accepting) in the calling thread's namespace.
pub(super) fn listener(port: u16, backlog: i32) -> Result<OwnedFd> {
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let on: libc::c_int = 1;
    let addr = sockaddr(LOCAL, port);
    // SAFETY: valid pointers for the calls' duration.
    unsafe {
        check(
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const on).cast(), size_of::<libc::c_int>() as u32),
            "SO_REUSEADDR",
        )?;
        check(libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32), "bind")?;
        check(libc::listen(fd.as_raw_fd(), backlog), "listen")?;
    }
    Ok(fd)
}

/// A packet socket on the veth: sees the SYN-ACKs on their way out (only
/// `ETH_P_ALL` taps see outgoing packets, in `dev_queue_xmit_nit()`).
fn tap() -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, libc::c_int::from(proto))?;
    let name = std::ffi::CString::new(VETH).expect("no NUL");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {VETH}");
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
    // SAFETY: valid pointers for the calls' duration.
    unsafe {
        check(libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), size_of::<libc::sockaddr_ll>() as u32), "bind packet socket")?;
        check(
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            ),
            "SO_RCVTIMEO",
        )?;
    }
    Ok(fd)
}

/// Sends a SYN from each client port and returns each one's SYN-ACK sequence number.
fn handshake_start(raw: &OwnedFd, tap: &OwnedFd, port: u16, clients: &[u16]) -> Result<HashMap<u16, u32>> {
    for &c in clients {
        if !send(raw, &packet::segment((PEER, c), (LOCAL, port), u32::from(c) << 8, 0, SYN)) {
            bail!("sending a SYN: {}", std::io::Error::last_os_error());
        }
    }
    let mut isn = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while isn.len() < clients.len() && Instant::now() < deadline {
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        // SOCK_DGRAM: the link header is gone; ARP and the like fail to parse.
        if let Some(s) = packet::parse(&buf[..n as usize]) {
            if s.sport == port && s.flags & (SYN | ACK) == SYN | ACK && clients.contains(&s.dport) {
                isn.insert(s.dport, s.seq);
            }
        }
    }
    if isn.len() < clients.len() {
        bail!("only {} of {} SYNs were answered on port {port}", isn.len(), clients.len());
    }
    Ok(isn)
}

fn final_ack(port: u16, client: u16, isn: u32) -> Vec<u8> {
    packet::segment((PEER, client), (LOCAL, port), (u32::from(client) << 8).wrapping_add(1), isn.wrapping_add(1), ACK)
}

impl Storm {
    /// Builds the overflowing listener on `port` in `ns` (already wired).
    pub(super) fn prepare(ns: &Netns, port: u16, backlog: u16, senders: usize) -> Result<Self> {
        ns.run(|| {
            let l = listener(port, i32::from(backlog))?;
            let raw = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            let tap = tap()?;
            let b = backlog;
            // B+1 handshakes to fill the accept queue; B of them complete now.
            let fill: Vec<u16> = (0..=b).map(|i| CLIENT_BASE + i).collect();
            let fill_isn = handshake_start(&raw, &tap, port, &fill)?;
            for &c in &fill[..usize::from(b)] {
                send(&raw, &final_ack(port, c, fill_isn[&c]));
            }
            // With room still in the accept queue, the storm's requests.
            let storm: Vec<u16> = (0..b.max(2) - 1).map(|i| CLIENT_BASE + b + 1 + i).collect();
            let storm_isn = handshake_start(&raw, &tap, port, &storm)?;
            // The last fill: the accept queue is now full.
            let last = fill[usize::from(b)];
            send(&raw, &final_ack(port, last, fill_isn[&last]));
            let acks = storm.iter().map(|c| final_ack(port, *c, storm_isn[c])).collect();
            let senders = (0..senders).map(|_| socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)).collect::<Result<_>>()?;
            Ok(Self { _listener: l, acks, senders })
        })
        .with_context(|| format!("preparing the storm on port {port}"))
    }

    /// Sends `n` of the ACKs from the first sender.
    pub(super) fn fire_n(&self, n: usize) -> u64 {
        (0..n).filter(|i| send(&self.senders[0], &self.acks[i % self.acks.len()])).count() as u64
    }

    /// Sends the ACKs round-robin from every sender for `duration`, at
    /// `rate` packets per second in all (or as fast as possible).
    /// Returns the packets sent.
    pub(super) fn fire(&self, rate: Option<f64>, duration: Duration) -> u64 {
        let per_thread = rate.map(|r| r / self.senders.len() as f64);
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .senders
                .iter()
                .enumerate()
                .map(|(t, fd)| {
                    s.spawn(move || {
                        let start = Instant::now();
                        let mut sent = 0u64;
                        let mut i = t;
                        while start.elapsed() < duration {
                            for _ in 0..32 {
                                if send(fd, &self.acks[i % self.acks.len()]) {
                                    sent += 1;
                                }
                                i += 1;
                            }
                            if let Some(r) = per_thread {
                                let due = Duration::from_secs_f64(sent as f64 / r);
                                if let Some(ahead) = due.checked_sub(start.elapsed()) {
                                    std::thread::sleep(ahead);
                                }
                            }
                        }
                        sent
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("sender panicked")).sum()
        })
    }
}
