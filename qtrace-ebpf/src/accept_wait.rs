//! Accept-queue wait: how long each connection on a watched port waited
//! between entering the accept queue and `accept()` returning it, as
//! per-port histograms kept in the kernel (`ACCEPT_WAIT`, see
//! [`qtrace_common::wait`]). Runs beside whichever tier is attached, from
//! tracepoints every supported kernel has:
//!
//! - `sock:inet_sock_set_state` LISTEN -> SYN_RECV: `inet_csk_clone_lock()`
//!   makes the child of a completed handshake (request, syncookie and Fast
//!   Open routes alike) with the listener's state and sets it to
//!   `TCP_SYN_RECV` (`inet_sk_set_state()`, traced since 563e0bb0dc74, 4.16),
//!   microseconds before `inet_csk_reqsk_queue_add()` queues it in the same
//!   softirq. The child has the listener's port and namespace. Its address
//!   keys `QUEUED`.
//! - `syscalls:sys_exit_accept4` / `sys_exit_accept`: the returned
//!   descriptor is followed through the task's file table to its socket
//!   (`task->files->fdt->fd[ret]->private_data->sk`, offsets from BTF); a
//!   `QUEUED` hit is one accepted connection. The `sys_enter_*` records
//!   give the listener's descriptor, walked the same way: every accept from
//!   a watched listener is counted per listener socket (`LISTENER_ACCEPTS`),
//!   whether or not the connection's wait was measured (it may have been
//!   queued before qtrace started).
//! - `tcp:tcp_destroy_sock` (4.15+, from `inet_csk_destroy_sock()`): every
//!   child ends there, whatever became of it, so its entry goes with it.
//!   On the thread that is closing its listener (`__tcp_close()` sets the
//!   listener to CLOSE, then `inet_csk_listen_stop()` resets each queued
//!   child and destroys it through `inet_child_forget()`), a connection
//!   reset for nobody. A client's reset of a queued child does not destroy
//!   it (it is not orphaned; `accept()` still returns it).
//! - `inet_sock_set_state` of a queued child to FIN_WAIT1, LAST_ACK or
//!   CLOSE with the child already grafted onto a socket (`sk_socket` set,
//!   before `close()` orphans it): accepted through a path not traced here
//!   (io_uring, `kernel_accept()`, 32-bit compat calls, MPTCP's subflows).
//!
//! The wait is measured from the child's birth, which is the handshake's
//! completion except for Fast Open, whose child is born at the SYN (and
//! may be accepted still in SYN_RECV).

use aya_ebpf::bindings::{BPF_EXIST, BPF_NOEXIST};
use aya_ebpf::maps::Array;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::TracePointContext,
};
use qtrace_common::{
    stat, wait, Config, ListenerAccepts, ListenerSocket, Queued, WaitKey, ACCEPTING_MAX, ACCEPT_WAIT_MAX, LISTENER_ACCEPTS_MAX,
    OFFSET_NONE, QUEUED_MAX,
};

use crate::emit::{bump, watched};
use crate::kmem::{identity, read, Identity};
use crate::maps::config;
use crate::record;

#[map]
pub(crate) static QUEUED: HashMap<u64, Queued> = HashMap::with_max_entries(QUEUED_MAX, 0);

#[map]
pub(crate) static ACCEPT_WAIT: PerCpuHashMap<WaitKey, u64> = PerCpuHashMap::with_max_entries(ACCEPT_WAIT_MAX, 0);

/// Keyed by the listener's `struct socket` and inode: a listener made at a freed
/// one's address (the slab reuses it at once) is another entry.
#[map]
pub(crate) static LISTENER_ACCEPTS: PerCpuHashMap<ListenerSocket, ListenerAccepts> =
    PerCpuHashMap::with_max_entries(LISTENER_ACCEPTS_MAX, 0);

/// How many `QUEUED` entries each local port has (all namespaces
/// together): a socket closing or destroyed on a port with none (every
/// client socket of the machine, and every connection already accepted on
/// a served port) costs an array read, not a lookup in a large hash map.
/// Kept with atomic adds, and only for inserts and deletes that
/// succeeded, so it does not fall below the number of entries. (One race
/// could: another thread closing the descriptor `accept()` returned while
/// its exit runs, and the freed address coming back as a child of another
/// port before the exit deletes it; that port's count then stays one
/// high, the first's one low.)
#[map]
static QUEUED_PORTS: Array<u64> = Array::with_max_entries(65_536, 0);

/// Adds `n` (wrapping: `u64::MAX` takes one away) to `port`'s count.
#[inline(always)]
fn queued_count_add(port: u16, n: u64) {
    if let Some(p) = QUEUED_PORTS.get_ptr_mut(u32::from(port)) {
        // SAFETY: an array slot that lives as long as the map. The add is
        // atomic against the other CPUs' (BPF_XADD, on every kernel; the
        // BPF target has no atomic read-modify-write in `core`).
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) += {n}", p = in(reg) p, n = in(reg) n, options(nostack, preserves_flags));
        }
    }
}

/// Removes `sk`'s entry, which held `q`; false if another CPU did first.
#[inline(always)]
fn unqueue(sk: u64, q: &Queued) -> bool {
    let removed = QUEUED.remove(sk).is_ok();
    if removed {
        queued_count_add(q.port, u64::MAX);
    }
    removed
}

/// Whether local port `sport` (a record's `sport`, from `inet_sport`: by
/// the time a closing socket's state changes to CLOSE, `inet_put_port()`
/// has zeroed `skc_num`) has queued children recorded.
#[inline(always)]
fn maybe_queued(sport: u16) -> bool {
    matches!(QUEUED_PORTS.get(u32::from(sport)), Some(p) if *p != 0)
}

/// Slot 0 non-zero once userspace attached every accept recorder: before
/// that (or if one could not attach), nothing would take the entries out
/// again. Slot 1 the same for the state recorder, which decides outcomes
/// (`outcome`).
#[map]
pub(crate) static ARMED: Array<u32> = Array::with_max_entries(2, 0);

/// The listener descriptor of each thread's `accept()` (`pid_tgid` ->
/// descriptor, [`CALL_DONE`] once the call returned). An entry stays
/// between a thread's calls, overwritten in place by the next (a lookup,
/// where an insert and a delete per call cost some 250 ns), and goes when
/// the thread exits (`sched:sched_process_exit`). A plain hash, not an LRU:
/// an LRU evicts in batches from its oldest entries, which are the threads
/// that have waited longest in `accept()`. Full (more threads than this
/// that ever accepted, alive at once), a new thread's accepts are counted
/// lost.
#[map]
static ACCEPTING: HashMap<u64, u64> = HashMap::with_max_entries(ACCEPTING_MAX, 0);

/// What an entry of [`ACCEPTING`] holds once its call returned: an exit
/// without an entry of its own (a call that began before qtrace attached,
/// or one seccomp emulated, whose enter never fires) must not take the
/// previous call's listener.
const CALL_DONE: u64 = u64::MAX;

/// Threads closing a listener (`pid_tgid` -> [(netns << 16) | port, when]):
/// the queued children reset on that thread within [`CLOSING_NS`] are its.
#[map]
static CLOSING: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

/// How long after a listener's close its queued children count as reset by
/// it: `inet_csk_listen_stop()` resets them in one loop, right away.
const CLOSING_NS: u64 = 1_000_000_000;

/// `-EEXIST`, as a map insert with `BPF_NOEXIST` fails on a key present.
const EEXIST: i32 = -17;

/// `enum tcp_state` values.
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_CLOSE: u8 = 7;

/// A child socket was made for a completed handshake on the listener's
/// port `sport` (the record's: the clone has the listener's): it is
/// queued from now.
#[inline(always)]
pub(crate) fn child_made(cfg: &Config, child: u64, sport: u16) {
    if !matches!(ARMED.get(0), Some(a) if *a != 0) {
        return;
    }
    let net: u64 = read(child, cfg.sk_net);
    let id = Identity { net, netns: read(net, cfg.net_inum), port: sport };
    if !id.valid() || !watched(cfg, &id) {
        // An entry left at this address by a socket whose end was missed
        // must not pass for this one.
        // SAFETY: copied out at once.
        if let Some(stale) = unsafe { QUEUED.get(child) }.copied() {
            unqueue(child, &stale);
        }
        return;
    }
    // SAFETY: helper without preconditions.
    let queued_ns = unsafe { bpf_ktime_get_ns() };
    let q = Queued { queued_ns, netns: id.netns, port: id.port, _pad: [0; 2] };
    match QUEUED.insert(child, q, u64::from(BPF_NOEXIST)) {
        Ok(()) => queued_count_add(id.port, 1),
        // An entry left at this address by a child whose end was missed:
        // replaced, and counted under its own port still (a count too
        // high costs lookups, never entries).
        Err(EEXIST) => {
            let _ = QUEUED.insert(child, q, u64::from(BPF_EXIST));
            queued_count_add(id.port, 1);
        }
        Err(_) => bump(stat::QUEUED_FULL),
    }
}

/// The current thread is closing listener `id`.
#[inline(always)]
pub(crate) fn listener_closing(id: &Identity) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = CLOSING.insert(bpf_get_current_pid_tgid(), [(u64::from(id.netns) << 16) | u64::from(id.port), now], 0);
}

/// A socket left for FIN_WAIT1, LAST_ACK or CLOSE (not from LISTEN): a
/// queued child already grafted onto a socket was accepted by a path not
/// traced here.
#[inline(always)]
pub(crate) fn child_left(cfg: &Config, child: u64, sport: u16) {
    if !maybe_queued(sport) || read::<u64>(child, cfg.sk_socket) == 0 {
        return;
    }
    // SAFETY: copied out at once.
    let Some(q) = unsafe { QUEUED.get(child) }.copied() else {
        return;
    };
    if unqueue(child, &q) {
        bump(stat::ACCEPT_UNSEEN);
    }
}

/// `tcp:tcp_destroy_sock`: a socket is freed; a queued child's entry goes,
/// and on its listener's closing thread it counts as reset for nobody.
#[tracepoint]
pub(crate) fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if !maybe_queued(record::u16_at(&ctx, cfg.tp_destroy_sport)) {
        return 0;
    }
    let sk = record::u64_at(&ctx, cfg.tp_destroy_skaddr);
    if sk == 0 {
        return 0;
    }
    // SAFETY: the value is copied out at once.
    let Some(q) = (unsafe { QUEUED.get(sk) }).copied() else {
        return 0;
    };
    if !unqueue(sk, &q) {
        return 0;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let port = (u64::from(q.netns) << 16) | u64::from(q.port);
    // SAFETY: as above.
    let closing = unsafe { CLOSING.get(bpf_get_current_pid_tgid()) }.copied();
    if closing.is_some_and(|c| c[0] == port && now.saturating_sub(c[1]) < CLOSING_NS) {
        add(q.netns, q.port, wait::LISTENER_CLOSED, 1);
    }
    0
}

/// Adds `n` to a port's slot.
#[inline(always)]
fn add(netns: u32, port: u16, slot: u8, n: u64) {
    if let Some(v) = wait_slot(WaitKey { netns, port, slot, _pad: 0 }) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *v += n };
    }
}

/// This CPU's value of `key`, made (zero) if missing. `BPF_NOEXIST`: two
/// CPUs making the same key at once would otherwise each replace the
/// other's element, losing its counts; the loser finds the winner's.
#[inline(always)]
fn wait_slot(key: WaitKey) -> Option<*mut u64> {
    if let Some(v) = ACCEPT_WAIT.get_ptr_mut(key) {
        return Some(v);
    }
    let _ = ACCEPT_WAIT.insert(key, 0, u64::from(BPF_NOEXIST));
    let v = ACCEPT_WAIT.get_ptr_mut(key);
    if v.is_none() {
        bump(stat::ACCEPT_WAIT_MAP_FULL);
    }
    v
}

/// Raises a port's per-CPU maximum to `ns`.
#[inline(always)]
fn raise_max(netns: u32, port: u16, ns: u64) {
    if let Some(v) = wait_slot(WaitKey { netns, port, slot: wait::MAX_NS, _pad: 0 }) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe {
            if *v < ns {
                *v = ns;
            }
        }
    }
}

/// The current task's descriptor table: its array of files and their
/// number (`fget()`'s walk as plain reads: the task is current, so its
/// table cannot go away under us; a racing `close()` at worst yields a
/// file that matches nothing).
#[inline(always)]
fn fd_table(cfg: &Config) -> (u64, u32) {
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, cfg.task_files);
    let fdt: u64 = read(files, cfg.files_fdt);
    // `max_fds` and, 8 bytes on, `fd` (checked at load): one read.
    let [max_fds, fds]: [u64; 2] = read(fdt, cfg.fdt_max_fds);
    (fds, max_fds as u32)
}

/// The file at descriptor `fd` of `table`.
#[inline(always)]
fn file_at((fds, max_fds): (u64, u32), fd: u64) -> u64 {
    if fd >= u64::from(max_fds) {
        return 0;
    }
    read(fds + 8 * fd, 0)
}

/// The `struct socket` of a socket file (anything else yields garbage that
/// matches no map entry and no watched port).
#[inline(always)]
fn socket_of_file(cfg: &Config, file: u64) -> u64 {
    read(file, cfg.file_private_data)
}

/// The `struct sock` of a socket file.
#[inline(always)]
fn sock_of_file(cfg: &Config, file: u64) -> u64 {
    read(socket_of_file(cfg, file), cfg.socket_sk)
}

/// `accept()` entry: keeps the listener's descriptor for the exit.
#[inline(always)]
fn accepting(ctx: &TracePointContext) {
    let Some(cfg) = config() else { return };
    if cfg.tp_accept_fd == OFFSET_NONE {
        return;
    }
    let fd = record::u64_at(ctx, cfg.tp_accept_fd);
    let tid = bpf_get_current_pid_tgid();
    match ACCEPTING.get_ptr_mut(tid) {
        // SAFETY: this thread's own entry: only it writes there, and only
        // its exit deletes it.
        Some(p) => unsafe { *p = fd },
        None => {
            let _ = ACCEPTING.insert(tid, fd, 0);
        }
    }
}

/// Counts one accept for the listener behind descriptor `fd`, if watched.
#[inline(always)]
fn count_accept(cfg: &Config, table: (u64, u32), fd: u64) {
    let socket = socket_of_file(cfg, file_at(table, fd));
    let inode: u64 = read(socket, cfg.socket_i_ino);
    let key = ListenerSocket { socket, inode };
    // Only watched listeners have entries: a hit needs no more reads. The
    // CPU that made the entry holds the listener's identity; the other
    // CPUs' slots (zeroed) only count.
    if let Some(v) = LISTENER_ACCEPTS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*v).accepts += 1 };
        return;
    }
    let id = identity(cfg, read(socket, cfg.socket_sk));
    if !id.valid() || !watched(cfg, &id) {
        return;
    }
    // As in `wait_slot`: a racing CPU's element is kept, and this one
    // counts in its own slot of it.
    let v = ListenerAccepts { accepts: 1, inode, netns: id.netns, port: id.port, _pad: [0; 2] };
    if LISTENER_ACCEPTS.insert(key, v, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    match LISTENER_ACCEPTS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(v) => unsafe {
            (*v).accepts += 1;
            ((*v).inode, (*v).netns, (*v).port) = (inode, id.netns, id.port);
        },
        None => bump(stat::LISTENER_ACCEPTS_FULL),
    }
}

/// `accept()` returned descriptor `ret`: one accept more for a watched
/// listener, and if the connection was queued on a watched port, one wait
/// more in that port's histogram.
#[inline(always)]
fn accepted(ctx: &TracePointContext) {
    let Some(cfg) = config() else { return };
    if cfg.tp_accept_ret == OFFSET_NONE {
        return;
    }
    let listener_fd = match ACCEPTING.get_ptr_mut(bpf_get_current_pid_tgid()) {
        // SAFETY: this thread's own entry, as in `accepting`.
        Some(p) => unsafe { core::mem::replace(&mut *p, CALL_DONE) },
        None => CALL_DONE,
    };
    let listener_fd = (listener_fd != CALL_DONE).then_some(listener_fd);
    let ret = record::u64_at(ctx, cfg.tp_accept_ret) as i64;
    if ret < 0 {
        return;
    }
    let table = fd_table(cfg);
    let unnamed = listener_fd.is_none();
    if let Some(fd) = listener_fd {
        count_accept(cfg, table, fd);
    }
    let child = sock_of_file(cfg, file_at(table, ret as u64));
    if child == 0 {
        return;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let Some(q) = (unsafe { QUEUED.get(child) }).copied() else {
        return;
    };
    if !unqueue(child, &q) {
        return;
    }
    // An entry whose socket's end was missed, at an address reused since
    // by a socket of another port.
    // (A child its client reset has released its port: `inet_put_port()`
    // zeroes `inet_num` when `tcp_set_state()` closes it.)
    let port: u16 = read(child, cfg.sk_num);
    if port != 0 && port != q.port {
        return;
    }
    if unnamed {
        // A connection that arrived while qtrace ran, accepted by a call
        // whose listener is unknown: missing from the per-listener counts.
        bump(stat::LISTENER_ACCEPTS_FULL);
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let ns = now.saturating_sub(q.queued_ns);
    add(q.netns, q.port, wait::bucket(ns), 1);
    add(q.netns, q.port, wait::SUM_NS, ns);
    raise_max(q.netns, q.port, ns);
    let state: u8 = read(child, cfg.sk_state);
    if state == TCP_CLOSE_WAIT || state == TCP_CLOSE {
        add(q.netns, q.port, wait::CLIENT_GONE, 1);
    }
}

/// `sched:sched_process_exit`: the exiting thread's `ACCEPTING` entry goes.
#[tracepoint]
pub(crate) fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: only whether there is an entry; most threads never accepted.
    if unsafe { ACCEPTING.get(tid) }.is_some() {
        let _ = ACCEPTING.remove(tid);
    }
    0
}

#[tracepoint]
pub(crate) fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    accepting(&ctx);
    0
}

#[tracepoint]
pub(crate) fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    accepting(&ctx);
    0
}

#[tracepoint]
pub(crate) fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    accepted(&ctx);
    0
}

#[tracepoint]
pub(crate) fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    accepted(&ctx);
    0
}
