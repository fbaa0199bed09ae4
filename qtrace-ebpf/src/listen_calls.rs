//! `syscalls:sys_enter_listen` / `syscalls:sys_exit_listen`: the backlog an
//! application asked for, so userspace can prove that `net.core.somaxconn`
//! clamped it (`__sys_listen()` stores `min(backlog, somaxconn)` in
//! `sk_max_ack_backlog`; the requested value is kept nowhere).
//!
//! Syscall tracepoints need `CONFIG_FTRACE_SYSCALLS` (Debian: yes) and take
//! BPF programs since Linux 4.7. The record layout comes from the format
//! files at load time. Entry parks the arguments per thread; a successful
//! exit moves them to `LISTEN_CALLS`, keyed by (tgid, fd), where userspace
//! resolves the descriptor to its socket inode through `/proc`. `listen`
//! issued through io_uring (`IORING_OP_LISTEN`, 6.11+) does not pass here.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use qtrace_common::{ListenCall, ListenKey, LISTEN_CALLS_MAX, OFFSET_NONE};

use crate::maps::config;
use crate::record;

#[map]
pub(crate) static LISTEN_CALLS: LruHashMap<ListenKey, ListenCall> = LruHashMap::with_max_entries(LISTEN_CALLS_MAX, 0);

/// Calls in flight, per thread (`pid_tgid`).
#[map]
static LISTEN_PENDING: HashMap<u64, ListenCall> = HashMap::with_max_entries(1024, 0);

/// `long __sys_listen(int fd, int backlog)` entry.
#[tracepoint]
pub(crate) fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.tp_listen_fd == OFFSET_NONE || cfg.tp_listen_backlog == OFFSET_NONE {
        return 0;
    }
    // Syscall arguments are `unsigned long` slots; both are C ints.
    let fd = record::u64_at(&ctx, cfg.tp_listen_fd);
    let backlog = record::u64_at(&ctx, cfg.tp_listen_backlog);
    let id = bpf_get_current_pid_tgid();
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let call = ListenCall { ts_ns, backlog: backlog as u32 as i32, fd: fd as u32 };
    // A full map only loses this call's requested backlog.
    let _ = LISTEN_PENDING.insert(id, call, 0);
    0
}

/// `listen(2)` exit: keeps the call if it succeeded.
#[tracepoint]
pub(crate) fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { LISTEN_PENDING.get(id) }).copied() else {
        return 0;
    };
    let _ = LISTEN_PENDING.remove(id);
    let ret = record::u64_at(&ctx, cfg.tp_listen_ret) as i64;
    if ret == 0 {
        let key = ListenKey { tgid: (id >> 32) as u32, fd: call.fd };
        let _ = LISTEN_CALLS.insert(key, call, 0);
    }
    0
}
