//! Tracepoint tier: `skb:kfree_skb` (include/trace/events/skb.h).
//!
//! Since Linux 6.15, the final ACK of a request whose listener's accept queue
//! is full is freed with `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`: a11a791ca81e
//! ("tcp: add four drop reasons to tcp_check_req()") sets it at
//! `tcp_check_req()`'s `listen_overflow` label, before the
//! `tcp_abort_on_overflow` test, so both the silent and the reset case carry
//! it. Since 6.11 the record has `rx_sk`, the listener: c53795d48ee8 ("net:
//! add rx_sk to trace_kfree_skb"). The reason's value and the record layout
//! come from the tracepoint's format file at load time.
//!
//! Two more drops with the listener as `rx_sk` matter (Linux 6.11+):
//! - `cookie_v4_check` / `cookie_v6_check` free a syncookie ACK with
//!   `NO_SOCKET` when `tcp_get_cookie_sock()` made no child: with the accept
//!   queue full, a syncookie-ACK overflow;
//! - `tcp_v4_rcv` / `tcp_v6_rcv` free other request-route packets through
//!   `discard_and_relse`, which bumps the listener's drop counter without
//!   being a listen drop (`TCP_DEFER_ACCEPT`'s bare ACKs, for example):
//!   counted so userspace can take them out of that counter.
//!
//! Functions are told apart by `location`, matched against text ranges from
//! kallsyms. SYN-stage drops never pass here (`consume_skb`): userspace
//! derives them from the listener's drop counter.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use qtrace_common::{hook, kind, range, stat, Config, OFFSET_NONE, TCP_LISTEN};

use crate::emit::{bump, count, emit, watched};
use crate::kmem::{identity, queues, read, sysctl};
use crate::maps::config;
use crate::record;

/// Whether `addr` lies in the kernel function `range::*` names.
#[inline(always)]
fn in_range(cfg: &Config, which: usize, addr: u64) -> bool {
    let (start, end) = (cfg.ranges[2 * which], cfg.ranges[2 * which + 1]);
    start != 0 && addr >= start && addr < end
}

#[inline(always)]
fn on_kfree_skb(ctx: &TracePointContext) {
    let Some(cfg) = config() else { return };
    if cfg.tp_kfree_skb_rx_sk == OFFSET_NONE {
        return;
    }
    // Record fields at offsets from this kernel's format file.
    let sk = record::u64_at(ctx, cfg.tp_kfree_skb_rx_sk);
    if sk == 0 {
        return;
    }
    let reason = record::u32_at(ctx, cfg.tp_kfree_skb_reason);
    if reason == cfg.reason_listen_overflow {
        // tcp_check_req: a request's final ACK, accept queue full.
        let id = identity(cfg, sk);
        if !id.valid() {
            bump(stat::READ_FAILED);
            return;
        }
        if !watched(cfg, &id) {
            return;
        }
        let q = queues(cfg, sk);
        let k = if sysctl(cfg, id.net, cfg.net_abort_on_overflow) != 0 { kind::ACK_OVERFLOW_RESET } else { kind::ACK_OVERFLOW };
        emit(cfg, k, hook::TP_KFREE_SKB, &id, sk, record::u64_at(ctx, cfg.tp_kfree_skb_skbaddr), &q);
        return;
    }
    // Everything else only matters when the socket is a listener.
    if read::<u8>(sk, cfg.sk_state) != TCP_LISTEN {
        return;
    }
    let id = identity(cfg, sk);
    if !id.valid() || !watched(cfg, &id) {
        return;
    }
    let location = record::u64_at(ctx, cfg.tp_kfree_skb_location);
    if reason == cfg.reason_no_socket
        && (in_range(cfg, range::COOKIE_V4_CHECK, location) || in_range(cfg, range::COOKIE_V6_CHECK, location))
    {
        // cookie_v4_check / cookie_v6_check: tcp_get_cookie_sock() found no
        // child; with the accept queue full that is a syncookie ACK overflow.
        let q = queues(cfg, sk);
        if q.accept_queue_full() {
            emit(cfg, kind::COOKIE_ACK_OVERFLOW, hook::TP_KFREE_SKB, &id, sk, record::u64_at(ctx, cfg.tp_kfree_skb_skbaddr), &q);
        }
    } else if in_range(cfg, range::TCP_V4_RCV, location) || in_range(cfg, range::TCP_V6_RCV, location) {
        // tcp_v4_rcv / tcp_v6_rcv discarding for a listener goes through
        // discard_and_relse, which adds to the listener's drop counter.
        count(kind::LISTENER_DISCARD, &id);
    }
}

#[tracepoint]
pub(crate) fn kfree_skb(ctx: TracePointContext) -> u32 {
    on_kfree_skb(&ctx);
    0
}
