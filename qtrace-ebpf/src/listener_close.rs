//! `sock:inet_sock_set_state` (include/trace/events/sock.h, Linux 4.16+):
//! a watched listener's drop counter at the moment it closes, and the
//! namespaces where new listeners appear.
//!
//! Userspace reads each listener's `sk_drops` through `sock_diag` once per
//! poll; a listener that closes between two polls takes the drops of that
//! last stretch with it, and one born and closed between polls is never
//! read at all. `tcp_close()` calls `tcp_set_state(sk, TCP_CLOSE)` on a
//! listener, whose tracepoint fires before `inet_unhash()` takes the socket
//! out of the tables `sock_diag` walks: by the time a poll no longer finds
//! the listener, its final counter is in `CLOSED_LISTENERS`.
//!
//! Every TCP listener is born in `inet_csk_listen_start()`, which calls
//! `inet_sk_state_store(sk, TCP_LISTEN)`; since 563e0bb0dc74 ("net:
//! tracepoint: replace tcp_set_state tracepoint with inet_sock_set_state
//! tracepoint", 4.16) that helper fires this tracepoint before storing the
//! state. The call is there, unconditionally, in 5.10, 6.1 and 6.12 alike
//! (6.1 and later first refuse a ULP without `clone`, `inet_ulp_can_listen`,
//! and return before any state change). `LISTEN_STARTS` keeps the namespace
//! of each such start, so userspace dumps listeners only in namespaces that
//! have some or just got one. Runs beside whichever tier is attached.
//!
//! The same record marks the birth and the end of accept-queue children
//! (`accept_wait`).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use qtrace_common::{stat, ClosedListener, Config, ListenStart, CLOSED_LISTENERS_MAX, LISTEN_STARTS_MAX, OFFSET_NONE, TCP_LISTEN};

use crate::accept_wait;
use crate::emit::{bump, watched};
use crate::kmem::{identity, read};
use crate::maps::config;
use crate::outcome;
use crate::record;

#[map]
pub(crate) static CLOSED_LISTENERS: LruHashMap<u64, ClosedListener> = LruHashMap::with_max_entries(CLOSED_LISTENERS_MAX, 0);

#[map]
pub(crate) static LISTEN_STARTS: HashMap<u32, ListenStart> = HashMap::with_max_entries(LISTEN_STARTS_MAX, 0);

/// `TCP_CLOSE` and `TCP_SYN_RECV` in `enum tcp_state`, and `IPPROTO_TCP`;
/// the record's state fields are ints.
const TCP_CLOSE: i32 = 7;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_LAST_ACK: i32 = 9;
const IPPROTO_TCP: u16 = 6;

#[tracepoint]
pub(crate) fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.tp_state_skaddr == OFFSET_NONE || cfg.tp_state_oldstate == OFFSET_NONE || cfg.tp_state_newstate == OFFSET_NONE {
        return 0;
    }
    let old = record::u32_at(&ctx, cfg.tp_state_oldstate) as i32;
    let new = record::u32_at(&ctx, cfg.tp_state_newstate) as i32;
    let listen = i32::from(TCP_LISTEN);
    let leaving = matches!(new, TCP_CLOSE | TCP_FIN_WAIT1 | TCP_LAST_ACK);
    let born = old == listen && new == TCP_SYN_RECV;
    let established = old == TCP_SYN_RECV && new == TCP_ESTABLISHED;
    if new != listen && !leaving && !born && !established {
        return 0;
    }
    // MPTCP and SCTP listeners pass here too (`protocol`, absent before 4.20
    // on some builds: then only TCP sockets were traced). An MPTCP
    // listener's subflow is a TCP socket and passes here as one, which is
    // what sock_diag's TCP dump lists.
    if cfg.tp_state_protocol != OFFSET_NONE && record::u16_at(&ctx, cfg.tp_state_protocol) != IPPROTO_TCP {
        return 0;
    }
    let sk = record::u64_at(&ctx, cfg.tp_state_skaddr);
    match (old == listen, new) {
        (false, n) if n == listen => listen_started(cfg, sk),
        (true, TCP_CLOSE) => listener_closed(cfg, sk),
        (true, TCP_SYN_RECV) => accept_wait::child_made(cfg, sk, record::u16_at(&ctx, cfg.tp_state_sport)),
        (false, TCP_ESTABLISHED) => outcome::established(cfg, &ctx, sk, record::u16_at(&ctx, cfg.tp_state_sport)),
        (false, TCP_CLOSE | TCP_FIN_WAIT1 | TCP_LAST_ACK) => accept_wait::child_left(cfg, sk, record::u16_at(&ctx, cfg.tp_state_sport)),
        _ => {}
    }
    0
}

/// Records the namespace of a socket entering `TCP_LISTEN`, and who did it.
/// The port is not filtered: an unbound socket gets its port from
/// `get_port()` only after this tracepoint.
#[inline(always)]
fn listen_started(cfg: &Config, sk: u64) {
    let id = identity(cfg, sk);
    if id.netns == 0 || (cfg.filter_netns != 0 && cfg.filter_netns != id.netns) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let start = ListenStart { tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32 };
    // A namespace already there is updated; a new one finds room or is
    // counted, and userspace then walks every thread instead.
    if LISTEN_STARTS.insert(id.netns, start, 0).is_err() {
        bump(stat::LISTEN_STARTS_FULL);
    }
}

/// Keeps a watched listener's final drop counter.
#[inline(always)]
fn listener_closed(cfg: &Config, sk: u64) {
    let id = identity(cfg, sk);
    if !id.valid() || !watched(cfg, &id) {
        return;
    }
    accept_wait::listener_closing(&id);
    let closed =
        ClosedListener { cookie: read(sk, cfg.sk_cookie), netns: id.netns, drops: read(sk, cfg.sk_drops), port: id.port, _pad: [0; 6] };
    // A full map evicts the oldest entry: that listener's last stretch of
    // drops is then missing, as it would be without this program.
    let _ = CLOSED_LISTENERS.insert(sk, closed, 0);
}
