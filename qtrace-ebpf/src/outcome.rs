//! Connection outcomes: what became of each connection that had a
//! handshake packet dropped on a watched port.
//!
//! Every drop a program sees with its packet (`emit`: the SYN stage on the
//! fentry and kprobe tiers, the ACK stage wherever it is seen one by one)
//! adds to the connection's entry in `DROPPED`, keyed by namespace and
//! 4-tuple from the packet's headers, and stamps its port in
//! `RECENT_DROP`. Two outcomes are decided here, in the kernel, so no event
//! budget can hide them:
//! - recovered: `sock:inet_sock_set_state` SYN_RECV -> ESTABLISHED of a
//!   passive child (`tcp_child_process()`, or `tcp_rcv_state_process()` for
//!   a Fast Open child), whose record has the full 4-tuple on every kernel
//!   (the LISTEN -> SYN_RECV record has it only from a3a128f611a9, 6.15).
//!   One success path for every tier and route (request, syncookie).
//! - reset: the drop itself was a final ACK answered with a RST
//!   (`tcp_abort_on_overflow=1`).
//!
//! A client that gives up leaves no trace at the server (after SYN-stage
//! drops it never had a SYN-ACK to reset), so userspace decides
//! `abandoned` from the retry schedule, and `pending` at exit.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys and values passed by reference: copies would not fit the 512-byte stack beside the drop path's event"
)]

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext as _,
};
use qtrace_common::{
    kind, outcome, stat, Config, ConnKey, DropTrack, OutcomeRecord, AF_INET, DROPPED_MAX, OFFSET_NONE, OUTCOME_HORIZON_NS,
};

use crate::accept_wait::ARMED;
use crate::emit::bump;
use crate::kmem::{read, Identity, Packet};
use crate::maps::EVENTS;
use crate::record;

#[map]
static DROPPED: HashMap<ConnKey, DropTrack> = HashMap::with_max_entries(DROPPED_MAX, 0);

#[map]
static RECENT_DROP: Array<u64> = Array::with_max_entries(65_536, 0);

/// Whether a drop of `kind` loses one packet of one connection, whose
/// client then retries: what an outcome is tracked for (not a syncookie
/// sent, not a discard that is no listen drop).
#[inline(always)]
pub(crate) fn tracked(k: u8) -> bool {
    matches!(
        k,
        kind::ACCEPT_QUEUE_FULL
            | kind::SYN_QUEUE_FULL
            | kind::SYN_DROP_OTHER
            | kind::ACK_OVERFLOW
            | kind::ACK_OVERFLOW_RESET
            | kind::COOKIE_ACK_OVERFLOW
    )
}

/// A connection's key and history being worked on: per CPU, off the
/// stack (512 bytes, already mostly taken by the drop path's event).
/// `busy` while in use: a program here may be interrupted by a softirq
/// whose program comes here too (a listener's or child's packets handled
/// from the socket's backlog in process context, with softirqs enabled;
/// fentry programs do not exclude each other as tracepoint and kprobe
/// programs do), and the inner one then leaves the slot alone.
#[repr(C)]
#[derive(Clone, Copy)]
struct Scratch {
    key: ConnKey,
    track: DropTrack,
    busy: u64,
}

/// This CPU's scratch, taken; `None` (counted) if it is in use.
#[inline(always)]
fn take_scratch() -> Option<&'static mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; see `Scratch` for who else may use it.
    let s = unsafe { &mut *s };
    if s.busy != 0 {
        bump(stat::OUTCOME_LOST);
        return None;
    }
    s.busy = 1;
    Some(s)
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Writes `::ffff:a.b.c.d` to `out` for an IPv4 address in the first four
/// bytes of `a`, `a` itself otherwise.
#[inline(always)]
fn mapped(family: u8, a: &[u8; 16], out: &mut [u8; 16]) {
    if family != AF_INET {
        *out = *a;
        return;
    }
    *out = [0; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a[..4]);
}

/// A packet of a connection on watched listener `id` was dropped (`k`, at
/// `now`; `p` its headers).
#[inline(always)]
pub(crate) fn dropped(cfg: &Config, id: &Identity, k: u8, p: &Packet, now: u64) {
    // Without the establishment record's 4-tuple, or before the state
    // recorder is attached (userspace arms slot 1 then), no connection is
    // seen recover: none is followed.
    if p.family == 0 || !recoveries_seen(cfg) || !matches!(ARMED.get(1), Some(a) if *a != 0) {
        return;
    }
    if let Some(last) = RECENT_DROP.get_ptr_mut(u32::from(id.port)) {
        // SAFETY: an array slot; a racing CPU writes a time as recent.
        unsafe { *last = now };
    }
    let Some(s) = take_scratch() else { return };
    follow_drop(s, id, k, p, now);
    s.busy = 0;
}

#[inline(always)]
fn follow_drop(s: &mut Scratch, id: &Identity, k: u8, p: &Packet, now: u64) {
    mapped(p.family, &p.laddr, &mut s.key.laddr);
    mapped(p.family, &p.raddr, &mut s.key.raddr);
    (s.key.netns, s.key.lport, s.key.rport) = (id.netns, id.port, p.rport);
    let reset = k == kind::ACK_OVERFLOW_RESET;
    if let Some(t) = DROPPED.get_ptr_mut(&s.key) {
        // SAFETY: a value of the map, updated in place (an update through
        // the map would allocate an element and free the old one); the
        // same connection's packets are seconds apart, so no other CPU
        // updates it meanwhile. (Were it removed meanwhile, by the sweep
        // or its establishment on another CPU, the preallocated element
        // could already hold another connection: a narrow race, which
        // BPF_F_NO_PREALLOC would close at the cost of an allocation per
        // new connection.)
        let t = unsafe { &mut *t };
        add_drop(t, k, now);
        if reset {
            s.track = *t;
            if DROPPED.remove(&s.key).is_ok() {
                decided(s, outcome::RESET, now);
            }
        }
        return;
    }
    s.track = DropTrack { first_ns: now, last_ns: 0, family: p.family, ..DropTrack::default() };
    add_drop(&mut s.track, k, now);
    if reset {
        decided(s, outcome::RESET, now);
        return;
    }
    // Full (more connections undecided at once than it holds): this one
    // is not followed, and counted.
    if DROPPED.insert(&s.key, &s.track, 0).is_err() {
        bump(stat::OUTCOME_LOST);
    }
}

/// One more drop of `k` at `now` in a connection's history.
#[inline(always)]
fn add_drop(t: &mut DropTrack, k: u8, now: u64) {
    (t.prev_ns, t.last_ns) = (t.last_ns, now);
    if matches!(k, kind::ACCEPT_QUEUE_FULL | kind::SYN_QUEUE_FULL | kind::SYN_DROP_OTHER) {
        t.syn_drops = t.syn_drops.saturating_add(1);
    } else {
        t.ack_drops = t.ack_drops.saturating_add(1);
    }
    t.kinds |= 1 << (k & 7);
}

/// Whether this kernel's state record has the 4-tuple (every kernel qtrace
/// supports: userspace found the fields).
#[inline(always)]
fn recoveries_seen(cfg: &Config) -> bool {
    cfg.tp_state_dport != OFFSET_NONE && cfg.tp_state_saddr_v6 != OFFSET_NONE && cfg.tp_state_daddr_v6 != OFFSET_NONE
}

/// `sock:inet_sock_set_state` SYN_RECV -> ESTABLISHED of child `sk` on
/// local port `sport`: if its connection had drops, it recovered.
#[inline(always)]
pub(crate) fn established(cfg: &Config, ctx: &TracePointContext, sk: u64, sport: u16) {
    if !recoveries_seen(cfg) {
        return;
    }
    // A port that never dropped: no clock read either.
    let last = match RECENT_DROP.get(u32::from(sport)) {
        Some(last) if *last != 0 => *last,
        _ => return,
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(last) > OUTCOME_HORIZON_NS {
        return;
    }
    let Some(s) = take_scratch() else { return };
    recovered(s, cfg, ctx, sk, sport, now);
    s.busy = 0;
}

#[inline(always)]
fn recovered(s: &mut Scratch, cfg: &Config, ctx: &TracePointContext, sk: u64, sport: u16, now: u64) {
    let base = ctx.as_ptr() as u64;
    let net: u64 = read(sk, cfg.sk_net);
    s.key.laddr = read(base, cfg.tp_state_saddr_v6);
    s.key.raddr = read(base, cfg.tp_state_daddr_v6);
    (s.key.netns, s.key.lport, s.key.rport) = (read(net, cfg.net_inum), sport, record::u16_at(ctx, cfg.tp_state_dport));
    // SAFETY: copied out at once.
    let Some(t) = (unsafe { DROPPED.get(&s.key) }).copied() else { return };
    s.track = t;
    if DROPPED.remove(&s.key).is_ok() {
        decided(s, outcome::RECOVERED, now);
    }
}

/// Sends the outcome of the connection in `s`, or counts it lost.
#[inline(always)]
fn decided(s: &Scratch, outcome: u8, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<OutcomeRecord>(0) else {
        bump(stat::OUTCOME_LOST);
        return;
    };
    let r = entry.as_mut_ptr();
    let (k, t) = (&s.key, &s.track);
    // SAFETY: the reserved record, written field by field (a whole record
    // built on the stack would not fit beside the drop path's).
    unsafe {
        (*r).ts_ns = now;
        (*r).netns = k.netns;
        (*r).syn_drops = t.syn_drops;
        (*r).ack_drops = t.ack_drops;
        (*r).first_ns = t.first_ns;
        (*r).lport = k.lport;
        (*r).rport = k.rport;
        (*r).kind = kind::OUTCOME;
        (*r).outcome = outcome;
        (*r).family = t.family;
        (*r).kinds = t.kinds;
        (*r).laddr = k.laddr;
        (*r).raddr = k.raddr;
    }
    entry.submit(0);
}
