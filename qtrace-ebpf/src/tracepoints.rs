//! Tracepoint tier: `skb:kfree_skb` (include/trace/events/skb.h).
//!
//! Since Linux 6.15, the final ACK of a request whose listener's accept queue
//! is full is freed with `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` (set in
//! `tcp_check_req()` before the `tcp_abort_on_overflow` test, so both the
//! silent and the reset case carry it), and since 6.11 the record has
//! `rx_sk`, the listener. The reason's value and the record layout come from
//! the tracepoint's format file at load time. A syncookie ACK's overflow
//! (`cookie_v4_check`) and SYN-stage drops do not pass here: userspace
//! counts those from the listener's drop counter.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext as _};
use qtrace_common::{hook, kind, stat, OFFSET_NONE};

use crate::emit::{bump, emit, watched};
use crate::listener::{backlog, config, identity, read, sysctl};

#[inline(always)]
fn on_kfree_skb(ctx: &TracePointContext) {
    let Some(cfg) = config() else { return };
    if cfg.reason_listen_overflow == OFFSET_NONE {
        return;
    }
    // Record fields at offsets from this kernel's format file.
    let rec = ctx.as_ptr() as u64;
    if read::<u32>(rec, cfg.tp_kfree_skb_reason) != cfg.reason_listen_overflow {
        return;
    }
    let sk: u64 = read(rec, cfg.tp_kfree_skb_rx_sk);
    let skb: u64 = read(rec, cfg.tp_kfree_skb_skbaddr);
    let id = identity(cfg, sk);
    if !id.valid() {
        bump(stat::READ_FAILED);
        return;
    }
    if !watched(cfg, &id) {
        return;
    }
    let q = backlog(cfg, sk);
    let k = if sysctl(cfg, id.net, cfg.net_abort_on_overflow) != 0 { kind::ACK_OVERFLOW_RESET } else { kind::ACK_OVERFLOW };
    emit(cfg, k, hook::TP_KFREE_SKB, &id, sk, skb, &q);
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    on_kfree_skb(&ctx);
    0
}
