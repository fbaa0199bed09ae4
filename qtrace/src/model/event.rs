//! Events as users see them: stable kind names, decoded addresses, wall-clock
//! time, and their NDJSON form (documented in docs/events.md).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use qtrace_common::{hook, kind, Event, AF_INET, AF_INET6};
use serde::Serialize;

/// What happened to a handshake packet. The names are the NDJSON `kind`
/// values and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    AcceptQueueFull,
    SynQueueFull,
    SyncookieSent,
    AckOverflow,
    AckOverflowReset,
    CookieAckOverflow,
    SynDropOther,
    /// Drops known only from the listener's drop counter.
    ListenerDropCounted,
    /// Not an overflow: request-route packets the kernel discarded, which
    /// move the listener's drop counter without being listen drops.
    ListenerDiscard,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::AcceptQueueFull,
        Kind::SynQueueFull,
        Kind::SyncookieSent,
        Kind::AckOverflow,
        Kind::AckOverflowReset,
        Kind::CookieAckOverflow,
        Kind::SynDropOther,
        Kind::ListenerDropCounted,
        Kind::ListenerDiscard,
    ];

    /// Everything about a kind, one row each: adding a kind is one enum
    /// variant, one row here, a constant in `qtrace_common::kind` (for
    /// kinds the programs emit) and a line in docs/events.md.
    fn info(self) -> KindInfo {
        let row = |id, name, column, stage, action| KindInfo { id, name, column, stage, action };
        match self {
            Kind::AcceptQueueFull => row(Some(kind::ACCEPT_QUEUE_FULL), "accept_queue_full", "SYN:ACCQ", "syn", "drop"),
            Kind::SynQueueFull => row(Some(kind::SYN_QUEUE_FULL), "syn_queue_full", "SYN:SYNQ", "syn", "drop"),
            Kind::SyncookieSent => row(Some(kind::SYNCOOKIE_SENT), "syncookie_sent", "COOKIES", "syn", "cookie"),
            Kind::AckOverflow => row(Some(kind::ACK_OVERFLOW), "ack_overflow", "ACK:DROP", "ack", "drop"),
            Kind::AckOverflowReset => row(Some(kind::ACK_OVERFLOW_RESET), "ack_overflow_reset", "ACK:RST", "ack", "reset"),
            Kind::CookieAckOverflow => row(Some(kind::COOKIE_ACK_OVERFLOW), "cookie_ack_overflow", "COOKIE-ACK", "ack", "drop"),
            Kind::SynDropOther => row(Some(kind::SYN_DROP_OTHER), "syn_drop_other", "SYN:OTHER", "syn", "drop"),
            // Derived from the listeners' drop counters: no program emits it.
            Kind::ListenerDropCounted => row(None, "listener_drop_counted", "COUNTED", "unknown", "drop"),
            Kind::ListenerDiscard => row(Some(kind::LISTENER_DISCARD), "listener_discard", "DISCARDS", "unknown", "discard"),
        }
    }

    /// The kind a program's record or counter key names.
    pub fn from_id(id: u8) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.info().id == Some(id))
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The NDJSON `kind` value.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Short column title for the table.
    pub fn column(self) -> &'static str {
        self.info().column
    }

    /// Handshake stage: `syn`, `ack`, or `unknown` for counted drops.
    pub fn stage(self) -> &'static str {
        self.info().stage
    }

    /// What the kernel did with the packet: `drop`, `reset`, `cookie` or
    /// `discard`.
    pub fn action(self) -> &'static str {
        self.info().action
    }

    /// Whether the packet was lost to the client (every kind but cookies);
    /// these add up to the namespace's `ListenDrops`.
    pub fn is_drop(self) -> bool {
        self.action() == "drop" || self.action() == "reset"
    }

    /// How many times one such packet moves the listener's drop counter.
    /// A request's final ACK that overflows is counted by `tcp_listendrop()`
    /// (which bumps the listener's `sk_drops` since 9caad864151e, "tcp:
    /// increment sk_drops for listeners", 4.7)
    /// in `tcp_v4_syn_recv_sock` and again by `sk_drops_add()` when
    /// `tcp_v4_rcv` discards it (`discard_and_relse`); the SYN stage and the
    /// syncookie route only by `tcp_listendrop()`; other request-route
    /// discards only by `sk_drops_add()`.
    pub fn listener_drop_weight(self) -> u64 {
        match self {
            Kind::AckOverflow | Kind::AckOverflowReset => 2,
            Kind::SyncookieSent => 0,
            _ => 1,
        }
    }
}

/// One kind's row: its program id (none for kinds derived in userspace),
/// names and classification.
struct KindInfo {
    id: Option<u8>,
    name: &'static str,
    column: &'static str,
    stage: &'static str,
    action: &'static str,
}

/// Which program saw an event, as named in the NDJSON `hook` field.
pub fn hook_name(id: u8) -> &'static str {
    match id {
        hook::FEXIT_TCP_CONN_REQUEST => "fexit:tcp_conn_request",
        hook::FEXIT_TCP_V4_SYN_RECV_SOCK => "fexit:tcp_v4_syn_recv_sock",
        hook::FEXIT_TCP_V6_SYN_RECV_SOCK => "fexit:tcp_v6_syn_recv_sock",
        hook::KRETPROBE_TCP_CONN_REQUEST => "kretprobe:tcp_conn_request",
        hook::KRETPROBE_TCP_V4_SYN_RECV_SOCK => "kretprobe:tcp_v4_syn_recv_sock",
        hook::KRETPROBE_TCP_V6_SYN_RECV_SOCK => "kretprobe:tcp_v6_syn_recv_sock",
        hook::TP_KFREE_SKB => "tracepoint:skb:kfree_skb",
        _ => "unknown",
    }
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: i128,
    pub kind: Kind,
    pub hook: &'static str,
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub accept_queue: u32,
    pub accept_queue_max: u32,
    pub syn_queue: u32,
}

fn addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(bytes);
        // A v4 peer of a dual-stack listener is reported as IPv4.
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
}

impl Decoded {
    /// Decodes a ring-buffer record; `boot_offset_ns` converts the kernel's
    /// CLOCK_MONOTONIC stamp to wall-clock time.
    pub fn decode(record: &[u8], boot_offset_ns: i128) -> Result<Self, DecodeError> {
        let ev = Event::from_bytes(record).ok_or(DecodeError::Short(record.len()))?;
        Self::from_event(&ev, boot_offset_ns)
    }

    pub fn from_event(ev: &Event, boot_offset_ns: i128) -> Result<Self, DecodeError> {
        let kind = Kind::from_id(ev.kind).ok_or(DecodeError::UnknownKind(ev.kind))?;
        if ev.family != AF_INET && ev.family != AF_INET6 {
            return Err(DecodeError::UnknownFamily(ev.family));
        }
        Ok(Self {
            time_ns: i128::from(ev.ts_ns) + boot_offset_ns,
            kind,
            hook: hook_name(ev.hook),
            netns: ev.netns,
            local: SocketAddr::new(addr(ev.family, ev.laddr), ev.lport),
            remote: SocketAddr::new(addr(ev.family, ev.raddr), ev.rport),
            accept_queue: ev.ack_backlog,
            accept_queue_max: ev.max_ack_backlog,
            syn_queue: ev.syn_qlen,
        })
    }
}

/// A deterministic xorshift generator for tests: a failure reproduces.
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[cfg(test)]
impl Decoded {
    /// An event for tests: `kind` from `remote` to `local` in `netns`, at
    /// time 1 ns, queues 3/2 and 0.
    pub(crate) fn example(kind: Kind, netns: u32, local: &str, remote: &str) -> Self {
        Self {
            time_ns: 1,
            kind,
            hook: "test",
            netns,
            local: local.parse().expect("an address"),
            remote: remote.parse().expect("an address"),
            accept_queue: 3,
            accept_queue_max: 2,
            syn_queue: 0,
        }
    }
}

/// RFC 3339 UTC time with nanoseconds, e.g. `2026-11-21T06:01:02.000000003Z`.
pub fn rfc3339(ns: i128) -> String {
    let mut out = String::with_capacity(30);
    let _ = write_rfc3339(&mut out, ns);
    out
}

/// [`rfc3339`] written into `out`, without allocating.
pub(crate) fn write_rfc3339(out: &mut impl std::fmt::Write, ns: i128) -> std::fmt::Result {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    write!(out, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z", tod / 3600, tod % 3600 / 60, tod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, family: u8) -> Event {
        let mut ev = Event {
            ts_ns: 5_000_000_123,
            netns: 4026532000,
            ack_backlog: 3,
            max_ack_backlog: 2,
            syn_qlen: 1,
            lport: 8080,
            rport: 40000,
            kind,
            hook: hook::TP_KFREE_SKB,
            family,
            ..Event::default()
        };
        ev.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.raddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        ev
    }

    #[test]
    fn decodes_and_renders_json() {
        let ev = raw(kind::ACK_OVERFLOW, AF_INET);
        // SAFETY: Event is plain repr(C) data.
        let bytes = unsafe { std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), size_of::<Event>()) };
        let d = Decoded::decode(bytes, 1_700_000_000_000_000_000).unwrap();
        assert_eq!(d.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(d.remote, "127.0.0.2:40000".parse().unwrap());
        let json = crate::model::record::Record::Event((&d).into()).line();
        assert_eq!(
            json.trim_end(),
            r#"{"type":"event","time":"2023-11-14T22:13:25.000000123Z","kind":"ack_overflow","stage":"ack","action":"drop","netns":4026532000,"family":"ipv4","local_addr":"127.0.0.1","local_port":8080,"remote_addr":"127.0.0.2","remote_port":40000,"accept_queue":3,"accept_queue_max":2,"syn_queue":1,"hook":"tracepoint:skb:kfree_skb"}"#
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let mut ev = raw(kind::ACCEPT_QUEUE_FULL, AF_INET6);
        ev.laddr = Ipv6Addr::LOCALHOST.octets();
        ev.raddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        let d = Decoded::from_event(&ev, 0).unwrap();
        assert_eq!(d.local.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(d.remote.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        assert_eq!(Decoded::decode(&[1, 2, 3], 0), Err(DecodeError::Short(3)));
        assert_eq!(Decoded::from_event(&raw(0, AF_INET), 0), Err(DecodeError::UnknownKind(0)));
        assert_eq!(Decoded::from_event(&raw(1, 7), 0), Err(DecodeError::UnknownFamily(7)));
        // Every byte pattern of every length decodes or errors.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Decoded::decode(&bytes, i128::MAX / 4);
        }
    }

    #[test]
    fn names_are_unique_and_ids_round_trip() {
        for id in 1..=kind::MAX {
            let k = Kind::from_id(id).unwrap();
            assert_eq!(Kind::ALL[k.index()], k);
        }
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name(), "serde and name() agree");
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_219_200_500_000_000), "2026-11-21T00:00:00.500000000Z");
    }

    /// Whatever the ring buffer hands over (truncated, garbage, a valid
    /// record with random bytes flipped), decoding answers Ok or Err and
    /// never panics. Deterministic xorshift, so a failure reproduces.
    #[test]
    fn decoding_garbage_never_panics() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let valid = Event { kind: qtrace_common::kind::ACK_OVERFLOW, family: AF_INET, lport: 8080, ..Event::default() };
        // SAFETY: Event is plain old data with an explicit layout.
        let bytes: Vec<u8> = unsafe { std::slice::from_raw_parts((&raw const valid).cast::<u8>(), std::mem::size_of::<Event>()) }.to_vec();
        assert!(Decoded::decode(&bytes, 0).is_ok());
        let (mut ok, mut err) = (0, 0);
        for i in 0..200_000u32 {
            let mut rec = if i % 2 == 0 { bytes.clone() } else { (0..next() % 160).map(|_| next() as u8).collect() };
            for _ in 0..next() % 4 {
                if !rec.is_empty() {
                    let at = (next() as usize) % rec.len();
                    rec[at] = next() as u8;
                }
            }
            rec.truncate((next() % 96) as usize);
            let offset = (next() as i128) - (1i128 << 63);
            match Decoded::decode(&rec, offset) {
                Ok(d) => {
                    ok += 1;
                    let _ = crate::model::record::Record::Event((&d).into()).line();
                }
                Err(_) => err += 1,
            }
        }
        assert!(ok > 0 && err > 0, "both outcomes exercised: {ok} ok, {err} errors");
    }
}
