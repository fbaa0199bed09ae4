//! `sock:inet_sock_set_state` (include/trace/events/sock.h, Linux 4.16+):
//! a watched listener's drop counter at the moment it closes.
//!
//! Userspace reads each listener's `sk_drops` through `sock_diag` once per
//! poll; a listener that closes between two polls takes the drops of that
//! last stretch with it, and one born and closed between polls is never
//! read at all. `tcp_close()` calls `tcp_set_state(sk, TCP_CLOSE)` on a
//! listener, whose tracepoint fires before `inet_unhash()` takes the socket
//! out of the tables `sock_diag` walks: by the time a poll no longer finds
//! the listener, its final counter is in `CLOSED_LISTENERS`. Runs beside
//! whichever tier is attached.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
    EbpfContext as _,
};
use qtrace_common::{ClosedListener, CLOSED_LISTENERS_MAX, OFFSET_NONE, TCP_LISTEN};

use crate::emit::watched;
use crate::kmem::{identity, read};
use crate::maps::config;

#[map]
pub(crate) static CLOSED_LISTENERS: LruHashMap<u64, ClosedListener> = LruHashMap::with_max_entries(CLOSED_LISTENERS_MAX, 0);

/// `TCP_CLOSE` in `enum tcp_state`, and `IPPROTO_TCP`; the record's state
/// fields are ints.
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

#[tracepoint]
pub(crate) fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.tp_state_skaddr == OFFSET_NONE || cfg.tp_state_oldstate == OFFSET_NONE || cfg.tp_state_newstate == OFFSET_NONE {
        return 0;
    }
    let rec = ctx.as_ptr() as u64;
    if read::<i32>(rec, cfg.tp_state_oldstate) != i32::from(TCP_LISTEN) || read::<i32>(rec, cfg.tp_state_newstate) != TCP_CLOSE {
        return 0;
    }
    // MPTCP and SCTP listeners pass here too (`protocol`, absent before 4.20
    // on some builds: then only TCP sockets were traced).
    if cfg.tp_state_protocol != OFFSET_NONE && read::<u16>(rec, cfg.tp_state_protocol) != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = read(rec, cfg.tp_state_skaddr);
    let id = identity(cfg, sk);
    if !id.valid() || !watched(cfg, &id) {
        return 0;
    }
    let closed =
        ClosedListener { cookie: read(sk, cfg.sk_cookie), netns: id.netns, drops: read(sk, cfg.sk_drops), port: id.port, _pad: [0; 6] };
    // A full map evicts the oldest entry: that listener's last stretch of
    // drops is then missing, as it would be without this program.
    let _ = CLOSED_LISTENERS.insert(sk, closed, 0);
    0
}
