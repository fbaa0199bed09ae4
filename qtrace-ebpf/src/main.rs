//! qtrace's eBPF programs. Three hook families see the same overflows at
//! different depths; userspace attaches exactly one family (a "tier"):
//! - `syn_stage` + `ack_stage` fentry/fexit programs (BTF trampolines),
//! - the same logic as kprobe/kretprobe programs,
//! - `tracepoints`: `skb:kfree_skb` with `TCP_LISTEN_OVERFLOW` (6.15+).
//!
//! `listen_calls` (syscall tracepoints) and `listener_close`
//! (`sock:inet_sock_set_state`) run beside whichever tier is attached: they
//! record the backlog applications ask for and each listener's final drop
//! counter. `accept_wait` (the same state tracepoint and `accept()`'s
//! syscall tracepoints) measures how long connections wait to be accepted.
//! `outcome` follows each connection that had a packet dropped to its end.
//!
//! Every program decides what happened, counts it exactly in the per-CPU
//! counters map and, if there is room, sends the detail through the ring
//! buffer. Nothing is formatted here.
#![no_std]
#![no_main]
// Inline assembly on the bpf target (nightly, which builds this crate
// anyway): see `args`.
#![feature(asm_experimental_arch)]

mod accept_wait;
mod ack_stage;
mod args;
mod emit;
mod kmem;
mod listen_calls;
mod listener_close;
mod maps;
mod outcome;
mod record;
mod syn_stage;
mod tracepoints;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel is GPL-only. The crate's licence (Cargo.toml: MIT
// OR GPL-2.0-only, LICENSE-MIT and LICENSE-GPL2) is what this declares.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
