//! Hand-built IPv4/TCP segments for the drop storm: a raw socket sends them
//! and a packet socket reads the listener's SYN-ACKs.

use std::net::Ipv4Addr;

pub(super) const SYN: u8 = 0x02;
pub(super) const ACK: u8 = 0x10;

/// One's-complement sum folded to 16 bits.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 40-byte IPv4 + TCP segment without options or payload. The kernel
/// fills the IP id and checksum (`IPPROTO_RAW`); the TCP checksum is ours.
pub(super) fn segment(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = libc::IPPROTO_TCP as u8;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.0.octets());
    pseudo[4..8].copy_from_slice(&dst.0.octets());
    pseudo[9] = libc::IPPROTO_TCP as u8;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let sum = checksum(&[&pseudo, &p[20..]]);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

/// A received TCP segment's ports, sequence number and flags.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
}

/// Parses an IPv4 packet (as a `SOCK_DGRAM` packet socket delivers it).
pub(super) fn parse(ip: &[u8]) -> Option<Seen> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != libc::IPPROTO_TCP as u8 {
        return None;
    }
    let t = ip.get(ihl..ihl + 20)?;
    Some(Seen {
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_round_trips_and_checksums_to_zero() {
        let a = (Ipv4Addr::new(10, 99, 0, 2), 40000);
        let b = (Ipv4Addr::new(10, 99, 0, 1), 8080);
        let p = segment(a, b, 7, 9, SYN | ACK);
        assert_eq!(parse(&p), Some(Seen { sport: 40000, dport: 8080, seq: 7, flags: SYN | ACK }));
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&p[12..16]);
        pseudo[4..8].copy_from_slice(&p[16..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0, "a correct checksum sums to zero");
        assert_eq!(parse(&p[..30]), None);
    }
}
