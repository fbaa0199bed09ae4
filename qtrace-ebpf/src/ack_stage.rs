//! ACK stage: the final ACK of a handshake creates the child socket in
//! `tcp_v4_syn_recv_sock()` / `tcp_v6_syn_recv_sock()` (every kernel from
//! 5.10 on):
//!
//! ```c
//! struct sock *tcp_v4_syn_recv_sock(const struct sock *sk, struct sk_buff *skb,
//!                                   struct request_sock *req,
//!                                   struct dst_entry *dst,
//!                                   struct request_sock *req_unhash,
//!                                   bool *own_req);
//! ```
//!
//! 858d2a4f67ff ("tcp: fix potential race in tcp_v6_syn_recv_sock()",
//! February 2026, upstream in the 7.0 cycle and backported to stable series)
//! adds a seventh parameter, `opt_child_init` (a function pointer), so one
//! stable series has both prototypes (seen: Debian's 6.12.117 and 6.18.44
//! have it, 6.12.107 does not): the programs read each value at the position
//! BTF gives its name (`args`).
//!
//! It returns NULL when the accept queue is full (`ListenOverflows`), but
//! also on memory or route failures: only NULL *with* the accept queue full
//! is an overflow. `req_unhash` tells the route: `tcp_check_req()` passes the
//! request from the SYN queue, `tcp_get_cookie_sock()` (a syncookie ACK)
//! passes NULL. On the request route the kernel then sends a RST when
//! `tcp_abort_on_overflow` is set (tcp_check_req's `embryonic_reset`); the
//! cookie route never does.
//!
//! `tcp_v6_syn_recv_sock()` handles a v4-mapped peer by calling
//! `tcp_v4_syn_recv_sock()`, whose own hook reports it; the v6 hook skips
//! IPv4 packets so nothing is counted twice.

use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::{
    macros::{fexit, kprobe, kretprobe},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use qtrace_common::{hook, kind, ArgSlots, Config};

use crate::args::{btf_slot, reg_arg};
use crate::emit::{emit, watched};
use crate::kmem::{identity, is_ipv4_skb, queues, sysctl};
use crate::maps::{config, AckEntry, ACK_V4_ENTRY, ACK_V6_ENTRY};

#[inline(always)]
fn on_return(cfg: &Config, call: AckEntry, child: u64, v6: bool, hook: u8) {
    let AckEntry { sk, skb, req_unhash } = call;
    if child != 0 {
        return;
    }
    if v6 && is_ipv4_skb(cfg, skb) {
        return;
    }
    let id = identity(cfg, sk);
    if !id.valid() || !watched(cfg, &id) {
        return;
    }
    let q = queues(cfg, sk);
    if !q.accept_queue_full() {
        return;
    }
    let k = if req_unhash == 0 {
        kind::COOKIE_ACK_OVERFLOW
    } else if sysctl(cfg, id.net, cfg.net_abort_on_overflow) != 0 {
        kind::ACK_OVERFLOW_RESET
    } else {
        kind::ACK_OVERFLOW
    };
    emit(cfg, k, hook, &id, sk, skb, &q);
}

/// The arguments at the positions the kernel's BTF gives them.
#[inline(always)]
fn fexit_args(ctx: &FExitContext, at: ArgSlots) -> AckEntry {
    AckEntry { sk: btf_slot(ctx, at.sk), skb: btf_slot(ctx, at.skb), req_unhash: btf_slot(ctx, at.req_unhash) }
}

// fexit finds the return value after the arguments, in the slot numbered
// like the function's parameter count (`at.ret`, from BTF): 6, or 7 on
// kernels with 858d2a4f67ff's `opt_child_init`. `bpf_get_func_ret` would
// need 5.17; the trampoline's slot works from 5.5.
#[fexit(function = "tcp_v4_syn_recv_sock")]
pub(crate) fn fexit_tcp_v4_syn_recv_sock(ctx: FExitContext) -> u32 {
    if let Some(cfg) = config() {
        let at = cfg.syn_recv_v4;
        on_return(cfg, fexit_args(&ctx, at), btf_slot(&ctx, at.ret), false, hook::FEXIT_TCP_V4_SYN_RECV_SOCK);
    }
    0
}

#[fexit(function = "tcp_v6_syn_recv_sock")]
pub(crate) fn fexit_tcp_v6_syn_recv_sock(ctx: FExitContext) -> u32 {
    if let Some(cfg) = config() {
        let at = cfg.syn_recv_v6;
        on_return(cfg, fexit_args(&ctx, at), btf_slot(&ctx, at.ret), true, hook::FEXIT_TCP_V6_SYN_RECV_SOCK);
    }
    0
}

#[inline(always)]
fn save(slot: &PerCpuArray<AckEntry>, ctx: &ProbeContext, at: ArgSlots) {
    let (Some(sk), Some(skb), Some(req_unhash)) = (reg_arg(ctx, at.sk), reg_arg(ctx, at.skb), reg_arg(ctx, at.req_unhash)) else {
        return;
    };
    if let Some(p) = slot.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *p = AckEntry { sk, skb, req_unhash } };
    }
}

#[inline(always)]
fn restore(slot: &PerCpuArray<AckEntry>, ctx: &RetProbeContext, v6: bool, hook: u8) {
    let Some(p) = slot.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU slot.
    let e = unsafe { *p };
    // SAFETY: the same slot; emptied so a later exit without an entry
    // finds nothing.
    unsafe { (*p).sk = 0 };
    if let (true, Some(cfg)) = (e.sk != 0, config()) {
        on_return(cfg, e, ctx.ret::<u64>(), v6, hook);
    }
}

#[kprobe]
pub(crate) fn kprobe_tcp_v4_syn_recv_sock(ctx: ProbeContext) -> u32 {
    if let Some(cfg) = config() {
        save(&ACK_V4_ENTRY, &ctx, cfg.syn_recv_v4);
    }
    0
}

#[kretprobe]
pub(crate) fn kretprobe_tcp_v4_syn_recv_sock(ctx: RetProbeContext) -> u32 {
    restore(&ACK_V4_ENTRY, &ctx, false, hook::KRETPROBE_TCP_V4_SYN_RECV_SOCK);
    0
}

#[kprobe]
pub(crate) fn kprobe_tcp_v6_syn_recv_sock(ctx: ProbeContext) -> u32 {
    if let Some(cfg) = config() {
        save(&ACK_V6_ENTRY, &ctx, cfg.syn_recv_v6);
    }
    0
}

#[kretprobe]
pub(crate) fn kretprobe_tcp_v6_syn_recv_sock(ctx: RetProbeContext) -> u32 {
    restore(&ACK_V6_ENTRY, &ctx, true, hook::KRETPROBE_TCP_V6_SYN_RECV_SOCK);
    0
}
