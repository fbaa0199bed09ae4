//! A SYN flood from spoofed sources, for section 7.
//!
//! In a namespace wired like the storm's (`storm::wire`: a veth and a
//! phantom peer), SYNs from every address of 10.98.0.0/16 go from raw
//! sockets to a listener on 10.99.0.1 over loopback. A route sends the
//! listener's SYN-ACKs for that /16 to the phantom peer, so they leave on
//! the veth and vanish (the other end drops them as `PACKET_OTHERHOST`):
//! nothing answers and nothing leaves the namespace. Each SYN is handled in
//! `tcp_conn_request()` in the sender's own softirq (loopback's
//! `netif_rx()` runs the backlog when the sender re-enables bottom
//! halves), so when `fire` returns, every SYN has been handled.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::netns::Netns;
use super::packet::{self, SYN};
use super::storm::{self, LOCAL, PEER, VETH};

/// The spoofed sources: 10.98.0.1 to 10.98.255.254.
const SOURCES: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 0);
const HOSTS: u32 = (1 << 16) - 2;

/// Wires `ns` as the storm does, plus the route that sends SYN-ACKs for
/// the spoofed sources to the phantom peer.
pub(super) fn wire(ns: &Netns) -> Result<()> {
    storm::wire(ns)?;
    ns.ip(&["route", "add", &format!("{SOURCES}/16"), "via", &PEER.to_string(), "dev", VETH])
}

/// SYN number `i`: source address and port both move, so no SYN finds a
/// request socket an earlier one left (that would be a retransmitted SYN,
/// not a new request) until 65,534 × 60,000 SYNs have gone.
fn syn(i: u64, port: u16) -> Vec<u8> {
    let host = 1 + (i % u64::from(HOSTS)) as u32;
    let sport = 1024 + ((i / u64::from(HOSTS)) % 60_000) as u16;
    let src = Ipv4Addr::from(u32::from(SOURCES) + host);
    packet::segment((src, sport), (LOCAL, port), i as u32, 0, SYN)
}

/// A listener and the raw sockets that flood it.
pub(super) struct Flood {
    port: u16,
    _listener: OwnedFd,
    /// Made in the namespace, one per sending thread.
    senders: Vec<OwnedFd>,
}

impl Flood {
    /// A listener on `port` with `backlog` (never accepting) in `ns`
    /// (already wired), and `senders` raw sockets.
    pub(super) fn prepare(ns: &Netns, port: u16, backlog: u16, senders: usize) -> Result<Self> {
        ns.run(|| {
            let l = storm::listener(port, i32::from(backlog))?;
            let senders = (0..senders).map(|_| storm::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)).collect::<Result<_>>()?;
            Ok(Self { port, _listener: l, senders })
        })
        .with_context(|| format!("preparing the SYN flood on port {port}"))
    }

    /// Sends SYNs as fast as every sender goes, until `duration` has passed
    /// or `max` SYNs have gone; returns the SYNs sent.
    pub(super) fn fire(&self, duration: Duration, max: u64) -> u64 {
        let threads = self.senders.len() as u64;
        let per_thread = max / threads;
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .senders
                .iter()
                .enumerate()
                .map(|(t, fd)| {
                    s.spawn(move || {
                        let start = Instant::now();
                        let (mut sent, mut i) = (0u64, t as u64);
                        while sent < per_thread && start.elapsed() < duration {
                            for _ in 0..64 {
                                sent += u64::from(storm::send(fd, &syn(i, self.port)));
                                i += threads;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_inside_the_prefix_and_never_repeat_early() {
        let parse = |i| packet::parse(&syn(i, 80)).expect("parses");
        let addr = |i: u64| Ipv4Addr::from(<[u8; 4]>::try_from(&syn(i, 80)[12..16]).expect("4 bytes"));
        assert_eq!(addr(0), Ipv4Addr::new(10, 98, 0, 1));
        assert_eq!(addr(u64::from(HOSTS) - 1), Ipv4Addr::new(10, 98, 255, 254));
        assert_eq!(addr(u64::from(HOSTS)), Ipv4Addr::new(10, 98, 0, 1));
        assert_ne!(parse(0).sport, parse(u64::from(HOSTS)).sport, "the second round of sources uses other ports");
        assert_eq!(parse(5).flags, SYN);
        assert_eq!(parse(5).dport, 80);
    }
}
