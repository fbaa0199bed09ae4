//! TCP listeners of one network namespace through `NETLINK_SOCK_DIAG`
//! (`inet_diag`, what `ss -ltm` uses): addresses, accept queue now/max and the
//! listener's own drop counter (`SK_MEMINFO_DROPS`, `sk_drops`), which every
//! `tcp_listendrop()` bumps together with the namespace's `ListenDrops`.
//!
//! Request building and reply parsing are pure functions over bytes so they
//! are unit-tested without a kernel; [`DiagSocket`] does the I/O.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use qtrace_common::TCP_LISTEN;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_SYN_RECV: u8 = 3;
const INET_DIAG_SKMEMINFO: u16 = 7;
const SK_MEMINFO_DROPS: usize = 8;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;

/// One listening socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub family: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// Accept queue length now (`sk_ack_backlog`; `ss` Recv-Q).
    pub accept_queue: u32,
    /// Accept queue bound (`sk_max_ack_backlog`; `ss` Send-Q).
    pub accept_queue_max: u32,
    /// The listener's drop counter; `None` if the kernel sent no meminfo.
    pub drops: Option<u32>,
    /// Socket cookie: unique for the socket's lifetime.
    pub cookie: u64,
    pub inode: u32,
}

#[cfg(test)]
impl Listener {
    /// A 127.0.0.1 listener with accept queue `q` (now, max) and `drops`,
    /// for the crate's tests.
    pub fn example(port: u16, q: (u32, u32), drops: u32) -> Self {
        Self {
            family: libc::AF_INET as u8,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            accept_queue: q.0,
            accept_queue_max: q.1,
            drops: Some(drops),
            cookie: 1,
            inode: 1,
        }
    }
}

/// `inet_diag_req_v2` for all TCP sockets of `family` in `state` (a
/// `TCP_*` value), asking for meminfo.
pub(crate) fn dump_request(family: u8, state: u8, seq: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + 56);
    let len = (NLMSG_HDRLEN + 56) as u32;
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed
    // inet_diag_sockid (48 bytes).
    req.push(family);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(1 << (INET_DIAG_SKMEMINFO - 1));
    req.push(0);
    req.extend_from_slice(&(1u32 << state).to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    req
}

/// What one reply datagram held.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub listeners: Vec<Listener>,
    /// Request sockets (`SYN_RECV`): their local address and port.
    pub requests: Vec<(IpAddr, u16)>,
    /// NLMSG_DONE seen: the dump is complete.
    pub done: bool,
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the netlink messages of one reply datagram. Malformed input gives
/// an error, never a panic.
pub(crate) fn parse_reply(buf: &[u8]) -> io::Result<Parsed> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag reply: {what}"));
    let mut out = Parsed::default();
    let mut at = 0usize;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = ne_u32(buf, at).ok_or_else(|| bad("short header"))? as usize;
        let ty = ne_u16(buf, at + 4).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(bad("message length out of bounds"));
        }
        let msg = &buf[at + NLMSG_HDRLEN..at + len];
        match ty {
            NLMSG_DONE => {
                out.done = true;
                return Ok(out);
            }
            NLMSG_ERROR => {
                let errno = ne_u32(msg, 0).map(|e| -(e as i32)).unwrap_or(libc::EIO);
                return Err(io::Error::from_raw_os_error(errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                let l = parse_diag_msg(msg).ok_or_else(|| bad("short inet_diag_msg"))?;
                match msg[1] {
                    TCP_LISTEN => out.listeners.push(l),
                    TCP_SYN_RECV => out.requests.push((l.addr, l.port)),
                    _ => {}
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(out)
}

fn parse_diag_msg(m: &[u8]) -> Option<Listener> {
    if m.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = m[0];
    // inet_diag_sockid at 4: sport (be16), dport, src[4] (be32 x4), dst[4], if, cookie[2].
    let port = u16::from_be_bytes([m[4], m[5]]);
    let src: [u8; 16] = m[8..24].try_into().ok()?;
    let addr = if family == libc::AF_INET6 as u8 {
        IpAddr::V6(Ipv6Addr::from(src))
    } else {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    };
    let cookie = u64::from(ne_u32(m, 44)?) | u64::from(ne_u32(m, 48)?) << 32;
    let accept_queue = ne_u32(m, 56)?;
    let accept_queue_max = ne_u32(m, 60)?;
    let inode = ne_u32(m, 68)?;
    let mut drops = None;
    let mut at = DIAG_MSG_LEN;
    while at + 4 <= m.len() {
        let rta_len = ne_u16(m, at)? as usize;
        let rta_type = ne_u16(m, at + 2)?;
        if rta_len < 4 || at + rta_len > m.len() {
            break;
        }
        if rta_type == INET_DIAG_SKMEMINFO {
            drops = ne_u32(m, at + 4 + 4 * SK_MEMINFO_DROPS);
        }
        at += (rta_len + 3) & !3;
    }
    Some(Listener { family, addr, port, accept_queue, accept_queue_max, drops, cookie, inode })
}

/// A sock_diag socket bound to the network namespace it was created in.
pub(crate) struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
}

impl DiagSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// Every TCP listener (IPv4 and IPv6) of the socket's namespace.
    pub(crate) fn listeners(&mut self) -> io::Result<Vec<Listener>> {
        Ok(self.dump(TCP_LISTEN)?.listeners)
    }

    /// Every request socket (the SYN queues' entries, `ss state syn-recv`):
    /// local address and port. Listed by inet_diag since Linux 4.4.
    pub(crate) fn requests(&mut self) -> io::Result<Vec<(IpAddr, u16)>> {
        Ok(self.dump(TCP_SYN_RECV)?.requests)
    }

    fn dump(&mut self, state: u8) -> io::Result<Parsed> {
        let mut all = Parsed::default();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            self.seq = self.seq.wrapping_add(1);
            let req = dump_request(family, state, self.seq);
            // SAFETY: req is a valid buffer of req.len() bytes; the kernel is
            // the default destination of an unbound netlink socket.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                // SAFETY: buf is writable for buf.len() bytes.
                let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
                let parsed = parse_reply(&buf[..n as usize])?;
                all.listeners.extend(parsed.listeners);
                all.requests.extend(parsed.requests);
                if parsed.done || n == 0 {
                    break;
                }
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag_msg(family: u8, port: u16, src: [u8; 16], rq: u32, wq: u32, drops: Option<u32>) -> Vec<u8> {
        let mut m = vec![0u8; DIAG_MSG_LEN];
        m[0] = family;
        m[1] = if drops == Some(u32::MAX) { TCP_SYN_RECV } else { TCP_LISTEN };
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[8..24].copy_from_slice(&src);
        m[44..48].copy_from_slice(&7u32.to_ne_bytes());
        m[48..52].copy_from_slice(&1u32.to_ne_bytes());
        m[56..60].copy_from_slice(&rq.to_ne_bytes());
        m[60..64].copy_from_slice(&wq.to_ne_bytes());
        m[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        if let Some(d) = drops {
            let mut meminfo = [0u32; 9];
            meminfo[SK_MEMINFO_DROPS] = d;
            m.extend_from_slice(&((4 + 36) as u16).to_ne_bytes());
            m.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
            for v in meminfo {
                m.extend_from_slice(&v.to_ne_bytes());
            }
        }
        m
    }

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&[0u8; 10]);
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn request_asks_for_listeners_with_meminfo() {
        let req = dump_request(libc::AF_INET as u8, TCP_LISTEN, 9);
        assert_eq!(req.len(), 72);
        assert_eq!(ne_u32(&req, 0), Some(72));
        assert_eq!(ne_u16(&req, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(ne_u32(&req, 8), Some(9));
        assert_eq!(&req[16..19], &[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 1 << 6]);
        assert_eq!(ne_u32(&req, 20), Some(1 << TCP_LISTEN));
    }

    #[test]
    fn parses_listeners_and_done() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(2, 8080, v4, 3, 2, Some(14)));
        let v6 = Ipv6Addr::LOCALHOST.octets();
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(10, 443, v6, 0, 4096, None)));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(2, 8080, v4, 0, 0, Some(u32::MAX))));
        buf.extend(nlmsg(NLMSG_DONE, &[0; 4]));
        let parsed = parse_reply(&buf).unwrap();
        assert!(parsed.done);
        assert_eq!(parsed.listeners.len(), 2);
        assert_eq!(parsed.requests, vec![("127.0.0.1".parse().unwrap(), 8080)]);
        assert_eq!(
            parsed.listeners[0],
            Listener {
                family: 2,
                addr: "127.0.0.1".parse().unwrap(),
                port: 8080,
                accept_queue: 3,
                accept_queue_max: 2,
                drops: Some(14),
                cookie: 7 | 1 << 32,
                inode: 4242,
            }
        );
        assert_eq!(parsed.listeners[1].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(parsed.listeners[1].drops, None);
    }

    #[test]
    fn errors_and_garbage_do_not_panic() {
        let err = parse_reply(&nlmsg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let good = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(2, 1, [0; 16], 0, 0, Some(1)));
        for cut in 0..good.len() {
            let _ = parse_reply(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(parse_reply(&lying).is_err());
        assert!(parse_reply(&nlmsg(SOCK_DIAG_BY_FAMILY, &[0; 10])).is_err());
    }
}
