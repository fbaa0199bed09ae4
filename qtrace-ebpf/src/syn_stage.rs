//! SYN stage: `tcp_conn_request()` (net/ipv4/tcp_input.c, every kernel from
//! 5.10 on), called for a SYN reaching a listener:
//!
//! ```c
//! int tcp_conn_request(struct request_sock_ops *rsk_ops,
//!                      const struct tcp_request_sock_ops *af_ops,
//!                      struct sock *sk, struct sk_buff *skb);
//! ```
//!
//! Its drops leave no tracepoint and no drop reason (the SYN is
//! `consume_skb`'d after `tcp_listendrop()`), and it returns 0 either way. So
//! the entry records the listener's drop counter and queue state, and the
//! exit compares: if `sk_drops` moved, the SYN was dropped, and the state at
//! entry says why. `sk_drops` is shared by every CPU, though: a drop on
//! another CPU while this one accepts a SYN moves it too. `tcp_listendrop()`
//! also counts `ListenDrops` in the namespace's per-CPU statistics, on the
//! CPU that drops, and softirq handling does not nest on a CPU, so this
//! CPU's copy moving during the call is this SYN's own drop; both must
//! move (only `sk_drops` where kallsyms hides `__per_cpu_offset`). The
//! reason, tested in the kernel's own order:
//! 1. SYN queue full (`inet_csk_reqsk_queue_is_full`) with syncookies off:
//!    dropped (`TCPReqQFullDrop`);
//! 2. accept queue full (`sk_acceptq_is_full`): dropped (`ListenOverflows`);
//! 3. syncookies off and the SYN queue in the last quarter of
//!    `tcp_max_syn_backlog`: dropped;
//! 4. anything else (memory, route, LSM): dropped for another reason.
//!
//! If nothing was dropped, the SYN queue was at its bound and no request was
//! added (its length did not grow), a syncookie was sent. The queue length
//! is compared rather than the bound alone because kernels disagree on
//! "full": `inet_csk_reqsk_queue_is_full()` is `qlen >= max` until
//! 3479c7549fb1 ("tcp/dccp: allow a connection when sk_max_ack_backlog is
//! zero", Linux 6.13, in the 5.4, 5.15, 6.1, 6.6 and 6.12 stable series from
//! early 2025) and `qlen > max` since.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, generated::bpf_probe_read_kernel},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use qtrace_common::{hook, kind, stat, Config, OFFSET_NONE};

use crate::args::{btf_slot, reg_arg};
use crate::emit::{bump, emit, watched};
use crate::kmem::{identity, queues, read, sysctl, QueueState};
use crate::maps::{config, SynEntry, SYN_ENTRY};

#[inline(always)]
fn on_entry(cfg: &Config, sk: u64, skb: u64) {
    let Some(slot) = SYN_ENTRY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot; cleared first so an unwatched call leaves no entry.
    // SAFETY: the same slot; emptied so a later exit without an entry
    // finds nothing.
    unsafe { (*slot).sk = 0 };
    let id = identity(cfg, sk);
    if !id.valid() || !watched(cfg, &id) {
        return;
    }
    let q = queues(cfg, sk);
    let drops: u32 = read(sk, cfg.sk_drops);
    let cpu_drops = cpu_listen_drops(cfg, id.net);
    let e =
        SynEntry { sk, skb, drops, ack_backlog: q.ack_backlog, max_ack_backlog: q.max_ack_backlog, syn_qlen: q.syn_qlen, cpu_drops };
    // SAFETY: as above.
    unsafe { *slot = e };
}

#[inline(always)]
fn on_exit(cfg: &Config, sk: u64, hook: u8) {
    let Some(slot) = SYN_ENTRY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot.
    let e = unsafe { *slot };
    // SAFETY: the same slot; emptied so a later exit without an entry
    // finds nothing.
    unsafe { (*slot).sk = 0 };
    if e.sk != sk {
        if e.sk != 0 {
            bump(stat::ENTRY_MISSING);
        }
        return;
    }
    let id = identity(cfg, sk);
    let q = QueueState { ack_backlog: e.ack_backlog, max_ack_backlog: e.max_ack_backlog, syn_qlen: e.syn_qlen };
    let syncookies = sysctl(cfg, id.net, cfg.net_syncookies);
    let dropped = read::<u32>(sk, cfg.sk_drops) != e.drops && this_cpu_dropped(e.cpu_drops, cpu_listen_drops(cfg, id.net));
    let k = if dropped {
        if q.syn_queue_full() && syncookies == 0 {
            kind::SYN_QUEUE_FULL
        } else if q.accept_queue_full() {
            kind::ACCEPT_QUEUE_FULL
        } else if syncookies == 0 && syn_backlog_last_quarter(cfg, id.net, q.syn_qlen) {
            kind::SYN_QUEUE_FULL
        } else {
            kind::SYN_DROP_OTHER
        }
    } else if q.syn_queue_full() && syncookies != 0 && read::<u32>(sk, cfg.icsk_qlen) <= e.syn_qlen {
        kind::SYNCOOKIE_SENT
    } else {
        return;
    };
    emit(cfg, k, hook, &id, sk, e.skb, &q);
}

/// Marks a per-CPU `ListenDrops` that could not be read.
const UNKNOWN: u64 = u64::MAX;

/// This CPU's copy of `net`'s `ListenDrops` (`this_cpu_ptr()` by hand:
/// the per-CPU pointer plus `__per_cpu_offset[cpu]`); [`UNKNOWN`] where
/// qtrace could not place it.
#[inline(always)]
fn cpu_listen_drops(cfg: &Config, net: u64) -> u64 {
    if cfg.per_cpu_offset == 0 || cfg.mib_listen_drops == OFFSET_NONE {
        return UNKNOWN;
    }
    // SAFETY: helper without preconditions.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    let stats: u64 = read(net, cfg.net_mib_net_statistics);
    let offset: u64 = read(cfg.per_cpu_offset + 8 * cpu, 0);
    if stats == 0 || offset == 0 {
        return UNKNOWN;
    }
    // Not `read`: a fault there reads as 0 at entry and exit alike, which
    // would hide every drop.
    let mut value: u64 = 0;
    let at = stats.wrapping_add(offset).wrapping_add(u64::from(cfg.mib_listen_drops));
    // SAFETY: bpf_probe_read_kernel copes with any source address and
    // writes exactly 8 bytes into `value`.
    let rc = unsafe { bpf_probe_read_kernel((&mut value as *mut u64).cast(), 8, at as *const core::ffi::c_void) };
    if rc != 0 {
        return UNKNOWN;
    }
    value
}

/// Whether this CPU dropped between the two readings; where either is
/// unknown, `sk_drops` alone decides (as before the per-CPU check).
#[inline(always)]
fn this_cpu_dropped(entry: u64, exit: u64) -> bool {
    entry == UNKNOWN || exit == UNKNOWN || entry != exit
}

/// `max_syn_backlog - qlen < max_syn_backlog >> 2` (tcp_conn_request).
#[inline(always)]
fn syn_backlog_last_quarter(cfg: &Config, net: u64, qlen: u32) -> bool {
    let max = read::<i32>(net, cfg.net_max_syn_backlog);
    max - (qlen as i32) < (max >> 2)
}

/// fentry/fexit tier (BTF trampolines; x86_64 from 5.5). `sk` and `skb` are
/// read at the positions the kernel's BTF gives them (`cfg.conn_request`).
#[fentry(function = "tcp_conn_request")]
pub(crate) fn fentry_tcp_conn_request(ctx: FEntryContext) -> u32 {
    if let Some(cfg) = config() {
        let at = cfg.conn_request;
        on_entry(cfg, btf_slot(&ctx, at.sk), btf_slot(&ctx, at.skb));
    }
    0
}

#[fexit(function = "tcp_conn_request")]
pub(crate) fn fexit_tcp_conn_request(ctx: FExitContext) -> u32 {
    if let Some(cfg) = config() {
        on_exit(cfg, btf_slot(&ctx, cfg.conn_request.sk), hook::FEXIT_TCP_CONN_REQUEST);
    }
    0
}

/// kprobe tier: the same, for kernels without trampolines.
#[kprobe]
pub(crate) fn kprobe_tcp_conn_request(ctx: ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let at = cfg.conn_request;
    if let (Some(sk), Some(skb)) = (reg_arg(&ctx, at.sk), reg_arg(&ctx, at.skb)) {
        on_entry(cfg, sk, skb);
    }
    0
}

#[kretprobe]
pub(crate) fn kretprobe_tcp_conn_request(_ctx: RetProbeContext) -> u32 {
    // The return registers no longer hold the arguments: the entry's sk is
    // the one to compare against.
    if let (Some(slot), Some(cfg)) = (SYN_ENTRY.get_ptr(0), config()) {
        // SAFETY: per-CPU slot.
        let sk = unsafe { (*slot).sk };
        if sk != 0 {
            on_exit(cfg, sk, hook::KRETPROBE_TCP_CONN_REQUEST);
        }
    }
    0
}
