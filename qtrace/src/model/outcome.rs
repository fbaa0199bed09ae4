//! Connection outcomes as users see them: what became of each connection
//! that had a handshake packet dropped (`"type": "outcome"`, docs/events.md).
//!
//! The kernel decides `recovered` and `reset` (`qtrace-ebpf/src/outcome.rs`);
//! a client that gives up leaves no trace at the server, so `abandoned` is
//! decided here from the retry schedule ([`gave_up`]), and what is still
//! open at exit is `pending`.

use std::net::{IpAddr, Ipv6Addr};

use qtrace_common::{outcome, ConnKey, DropTrack, OutcomeRecord, AF_INET};
use serde::Serialize;

use crate::model::accept_wait::AcceptWait;
use crate::model::event::{rfc3339, Kind};

/// What became of a connection. The names are the NDJSON `outcome` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// A later copy of its SYN or final ACK got through.
    Recovered,
    /// The kernel answered its final ACK with a RST (`tcp_abort_on_overflow=1`).
    Reset,
    /// Its client stopped retrying.
    Abandoned,
    /// Undecided when qtrace stopped.
    Pending,
}

impl Fate {
    pub const ALL: [Fate; 4] = [Fate::Recovered, Fate::Reset, Fate::Abandoned, Fate::Pending];

    fn from_id(id: u8) -> Option<Self> {
        match id {
            outcome::RECOVERED => Some(Fate::Recovered),
            outcome::RESET => Some(Fate::Reset),
            outcome::ABANDONED => Some(Fate::Abandoned),
            outcome::PENDING => Some(Fate::Pending),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fate::Recovered => "recovered",
            Fate::Reset => "reset",
            Fate::Abandoned => "abandoned",
            Fate::Pending => "pending",
        }
    }
}

/// One connection's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// When it was decided (RFC 3339, UTC).
    pub time: String,
    pub netns: u32,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
    pub outcome: Fate,
    /// Its dropped SYNs and dropped final ACKs (or data segments carrying it).
    pub syn_drops: u32,
    pub ack_drops: u32,
    /// The kinds of its drops (`kind` of the events).
    pub kinds: Vec<Kind>,
    /// From its first drop to the outcome, in milliseconds: for `recovered`,
    /// the delay the overflow added to its handshake; for `abandoned`, to
    /// its latest drop; for `pending`, to when qtrace stopped.
    pub delay_ms: f64,
}

/// A port's outcomes: how many connections had each, and the delay the
/// overflow added to those that recovered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Per [`Fate`], by its index in [`Fate::ALL`].
    pub counts: [u64; 4],
    /// Delays of the recovered, in the accept-wait histogram's buckets.
    pub delay: AcceptWait,
    /// Outcomes counted here but not written as records: over the port's
    /// `--max-event-rate` in one poll (a flood of clients that never come
    /// back, spoofed SYNs among them).
    pub suppressed: u64,
}

impl Outcomes {
    pub fn add(&mut self, o: &Outcome) {
        self.counts[o.outcome as usize] += 1;
        if o.outcome == Fate::Recovered {
            self.delay.record((o.delay_ms * 1e6) as u64);
        }
    }

    pub fn count(&self, f: Fate) -> u64 {
        self.counts[f as usize]
    }

    /// Keeps at most `rate` outcomes of each port (`None`: all); the rest
    /// are counted in their port's `suppressed` by `on_suppressed`.
    pub fn budget(outcomes: Vec<Outcome>, rate: Option<u32>, mut on_suppressed: impl FnMut(&Outcome)) -> Vec<Outcome> {
        let Some(rate) = rate else { return outcomes };
        let mut sent: std::collections::HashMap<(u32, u16), u32> = std::collections::HashMap::new();
        outcomes
            .into_iter()
            .filter(|o| {
                let n = sent.entry((o.netns, o.local_port)).or_default();
                *n += 1;
                if *n > rate {
                    on_suppressed(o);
                }
                *n <= rate
            })
            .collect()
    }

    /// Whether any connection had an outcome.
    pub fn any(&self) -> bool {
        self.counts.iter().any(|&n| n > 0)
    }

    /// As the summary record shows it: `{"recovered": n, ...}`.
    pub fn by_name(&self) -> std::collections::BTreeMap<&'static str, u64> {
        Fate::ALL.iter().map(|f| (f.name(), self.count(*f))).collect()
    }
}

/// Monotonic nanoseconds to milliseconds.
fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// The address as its family shows it: IPv4 from `::ffff:a.b.c.d`.
fn addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match (family, v6.to_ipv4_mapped()) {
        (AF_INET, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

fn kinds(mask: u8) -> Vec<Kind> {
    (0..8).filter(|b| mask & (1 << b) != 0).filter_map(Kind::from_id).collect()
}

impl Outcome {
    /// One connection, decided at `at_ns` (monotonic), from its key and
    /// history; `boot_offset_ns` turns monotonic time into wall-clock time.
    fn new(key: &ConnKey, t: &DropTrack, fate: Fate, at_ns: u64, boot_offset_ns: i128) -> Self {
        Self {
            time: rfc3339(i128::from(at_ns) + boot_offset_ns),
            netns: key.netns,
            family: if t.family == AF_INET { "ipv4" } else { "ipv6" },
            local_addr: addr(t.family, key.laddr).to_string(),
            local_port: key.lport,
            remote_addr: addr(t.family, key.raddr).to_string(),
            remote_port: key.rport,
            outcome: fate,
            syn_drops: u32::from(t.syn_drops),
            ack_drops: u32::from(t.ack_drops),
            kinds: kinds(t.kinds),
            delay_ms: ms(at_ns.saturating_sub(t.first_ns)),
        }
    }

    /// An outcome the kernel decided (a ring-buffer record); `None` for an
    /// unknown outcome id.
    pub fn from_record(r: &OutcomeRecord, boot_offset_ns: i128) -> Option<Self> {
        let fate = Fate::from_id(r.outcome).filter(|f| matches!(f, Fate::Recovered | Fate::Reset))?;
        let key = ConnKey { laddr: r.laddr, raddr: r.raddr, netns: r.netns, lport: r.lport, rport: r.rport };
        let t = DropTrack {
            first_ns: r.first_ns,
            syn_drops: r.syn_drops,
            ack_drops: r.ack_drops,
            kinds: r.kinds,
            family: r.family,
            ..DropTrack::default()
        };
        Some(Self::new(&key, &t, fate, r.ts_ns, boot_offset_ns))
    }

    /// A connection still undecided in the kernel's map: given up (decided
    /// at its latest drop), or pending at exit (decided now).
    pub fn from_track(key: &ConnKey, t: &DropTrack, fate: Fate, now_ns: u64, boot_offset_ns: i128) -> Self {
        let at = if fate == Fate::Abandoned { t.last_ns } else { now_ns };
        Self::new(key, t, fate, at, boot_offset_ns)
    }
}

const SECOND: u64 = 1_000_000_000;

/// Whether a connection's client has given up by `now_ns`: no drop since
/// its latest at `t_k` for twice the time since its first at `t_0` plus a
/// second (`t_k + 2 max(t_k - t_0, 1 s) + 1 s`). Clients retry with
/// timeouts that double or stay (SYNs at 0, 1, 3, 7 ... s before Linux
/// 6.5; 0, 1, 2, 3, 4, 5, 7, 11 ... s since ccce324dabfe's linear
/// timeouts), so the next copy is due within the time since the first;
/// a dropped final ACK comes again from two schedules at once, the
/// client's data retransmissions (0.2, 0.6, 1.4, 3 ... s) and its answers
/// to the server's SYN-ACK retransmissions (1, 3, 7 ... s), whose latest
/// gap says nothing, but each is due within the time since the first
/// drop too. The second is slack for 3 s initial timeouts. Past 135 s from
/// the first drop (Linux clients give up at 127 or 131 s, servers keep a
/// request 63 s), always.
pub fn gave_up(t: &DropTrack, now_ns: u64) -> bool {
    let span = t.last_ns.saturating_sub(t.first_ns).max(SECOND);
    now_ns > t.last_ns.saturating_add(span.saturating_mul(2)).saturating_add(SECOND) || now_ns.saturating_sub(t.first_ns) > 135 * SECOND
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An outcome to vary.
    pub(crate) fn example() -> Outcome {
        Outcome {
            time: rfc3339(0),
            netns: 4026531840,
            family: "ipv4",
            local_addr: "10.0.0.1".into(),
            local_port: 8080,
            remote_addr: "10.0.0.2".into(),
            remote_port: 40000,
            outcome: Fate::Recovered,
            syn_drops: 1,
            ack_drops: 0,
            kinds: vec![Kind::AcceptQueueFull],
            delay_ms: 1000.0,
        }
    }

    fn track(drops: &[u64]) -> DropTrack {
        let s = |i: usize| drops[i] * SECOND / 10;
        let n = drops.len();
        DropTrack {
            first_ns: s(0),
            last_ns: s(n - 1),
            prev_ns: if n > 1 { s(n - 2) } else { 0 },
            syn_drops: n as u16,
            ..DropTrack::default()
        }
    }

    /// Times in tenths of a second.
    #[test]
    fn a_client_has_given_up_when_its_next_retry_is_overdue() {
        // One drop at 0: the retry is due at 1 s, given up after 3 s.
        assert!(!gave_up(&track(&[0]), 30 * SECOND / 10));
        assert!(gave_up(&track(&[0]), 31 * SECOND / 10));
        // Drops at 0, 1, 3 s: given up after 3 + 6 + 1 = 10 s.
        assert!(!gave_up(&track(&[0, 10, 30]), 100 * SECOND / 10));
        assert!(gave_up(&track(&[0, 10, 30]), 101 * SECOND / 10));
        // Close drops (data retransmitted at 200 ms) still wait 3 s.
        assert!(!gave_up(&track(&[0, 2]), 30 * SECOND / 10));
        // Two schedules mixed (data at 0.2, 0.6, 1.4, 3.0 s, SYN-ACK
        // answers at 1, 3 s): the next, data at 6.2 s, is not overdue.
        assert!(!gave_up(&track(&[2, 6, 10, 14, 30, 30]), 62 * SECOND / 10));
        // Past 135 s from the first drop, whatever the gaps.
        assert!(gave_up(&track(&[0, 630, 1270]), 1351 * SECOND / 10));
    }

    #[test]
    fn each_port_writes_at_most_its_budget_and_counts_the_rest() {
        let on = |port: u16| Outcome { local_port: port, ..example() };
        let all = vec![on(80), on(80), on(80), on(443)];
        let mut over = Vec::new();
        let kept = Outcomes::budget(all.clone(), Some(2), |o| over.push(o.local_port));
        assert_eq!(kept.iter().map(|o| o.local_port).collect::<Vec<_>>(), [80, 80, 443]);
        assert_eq!(over, [80]);
        assert_eq!(Outcomes::budget(all, None, |_| panic!("unlimited")).len(), 4);
    }

    #[test]
    fn outcome_records_decode_with_their_addresses() {
        let mut laddr = [0u8; 16];
        laddr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        let r = OutcomeRecord {
            ts_ns: 3 * SECOND + 250_000_000,
            netns: 7,
            syn_drops: 2,
            first_ns: SECOND,
            lport: 8080,
            rport: 40000,
            kind: qtrace_common::kind::OUTCOME,
            outcome: outcome::RECOVERED,
            family: AF_INET,
            kinds: 1 << qtrace_common::kind::ACCEPT_QUEUE_FULL,
            laddr,
            raddr: laddr,
            ..OutcomeRecord::default()
        };
        let o = Outcome::from_record(&r, 0).unwrap();
        assert_eq!((o.local_addr.as_str(), o.remote_addr.as_str(), o.family), ("127.0.0.1", "127.0.0.1", "ipv4"));
        assert_eq!((o.outcome, o.syn_drops, o.ack_drops, o.delay_ms), (Fate::Recovered, 2, 0, 2250.0));
        assert_eq!(o.kinds, vec![Kind::AcceptQueueFull]);
        assert!(Outcome::from_record(&OutcomeRecord { outcome: outcome::PENDING, ..r }, 0).is_none(), "decided in userspace only");
    }
}
