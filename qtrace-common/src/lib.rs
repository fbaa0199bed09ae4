//! Types shared by the qtrace eBPF programs and the qtrace userspace.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is
//! `#[repr(C)]`, built from fixed-width integers with explicit padding, and has
//! its size asserted at compile time. Kinds and hooks are `u8` ids with named
//! constants: ids are never reused, only added.
#![no_std]

/// Ring buffer of [`Event`]s, one per dropped, reset or cookie-answered
/// handshake packet that passed the in-kernel filters.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU hash map [`CounterKey`] -> `u64`: exact per-(netns, port, kind)
/// totals, kept in the kernel so they survive a full ring buffer.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Per-CPU array of `u64` indexed by the `stat::*` ids: what could not be
/// delivered or attributed.
pub const MAP_STATS: &str = "STATS";
/// Array with one [`Config`] at index 0, written by userspace after the maps
/// are created and before any program is loaded, then frozen. The map is
/// read-only for programs (`BPF_F_RDONLY_PROG`), so once frozen the verifier
/// knows its contents as constants (`bpf_map_direct_read`, Linux 5.2): it
/// follows only the branch a configured value selects, which is how one
/// program reads a context slot that differs between kernels.
pub const MAP_CONFIG: &str = "CONFIG";
/// Array of 65536 `u8`: non-zero where the local port is watched (only
/// consulted when [`Config::filter_ports`] is set).
pub const MAP_PORTS: &str = "PORTS";
/// Per-CPU hash map [`CounterKey`] -> `u64`: per-(netns, port, kind)
/// events over the port's event budget, counted in [`MAP_COUNTERS`] like
/// every other but not sent (see [`Config::budget_interval_ns`]).
pub const MAP_SUPPRESSED: &str = "SUPPRESSED";
/// LRU hash map `u64` ((netns << 16) | port) -> `u64`: when that port's
/// next event is due under its budget, in `bpf_ktime_get_ns()` time.
pub const MAP_BUDGETS: &str = "BUDGETS";
/// Entries of [`MAP_BUDGETS`]: ports with recent events. Beyond this the
/// least recently used port's budget starts afresh.
pub const BUDGETS_MAX: u32 = 16_384;

/// LRU hash map [`ListenKey`] -> [`ListenCall`]: the backlog each
/// successful `listen(2)` asked for, kept until userspace has matched the
/// file descriptor to its socket.
pub const MAP_LISTEN_CALLS: &str = "LISTEN_CALLS";
/// Entries of [`MAP_LISTEN_CALLS`]; the oldest is evicted beyond this.
pub const LISTEN_CALLS_MAX: u32 = 4096;
/// LRU hash map `u64` (the socket's address) -> [`ClosedListener`]: each
/// watched listener's drop counter as it closed, which userspace takes out
/// at its next poll (a closed listener can no longer be read).
pub const MAP_CLOSED_LISTENERS: &str = "CLOSED_LISTENERS";
/// Entries of [`MAP_CLOSED_LISTENERS`]: listeners closed between two polls.
pub const CLOSED_LISTENERS_MAX: u32 = 4096;
/// Hash map `u32` (network namespace inode) -> [`ListenStart`]: the
/// namespaces where a TCP socket entered `TCP_LISTEN` since userspace last
/// took the entries, so it reads listeners only where they can have
/// appeared instead of in every namespace at every poll.
pub const MAP_LISTEN_STARTS: &str = "LISTEN_STARTS";
/// Entries of [`MAP_LISTEN_STARTS`]: distinct namespaces with a new
/// listener between two polls. A start that finds the map full is counted
/// in [`stat::LISTEN_STARTS_FULL`], and userspace then walks every thread
/// for namespaces instead. (Not an LRU map: without d4adf1c9ee77, "bpf:
/// Adjust free target to avoid global starvation of LRU map" (6.16; in
/// Debian's 6.12 kernels, not in its 6.1 and 5.10 ones), an LRU map keeps
/// up to 128 free entries per CPU and evicts long before it is full,
/// silently.)
pub const LISTEN_STARTS_MAX: u32 = 1024;
/// Hash map `u64` (the child socket's address) -> [`Queued`]: each
/// connection on a watched port from the moment its child socket is made
/// (and put on the accept queue) until `accept()` returns it or the socket
/// is destroyed (`tcp:tcp_destroy_sock`), whatever became of it.
/// Not an LRU map, for the reason [`LISTEN_STARTS_MAX`] gives: a full map is
/// counted in [`stat::QUEUED_FULL`], and that connection's wait is missing.
pub const MAP_QUEUED: &str = "QUEUED";
/// Entries of [`MAP_QUEUED`]: connections waiting in watched accept queues
/// at once, over every listener.
pub const QUEUED_MAX: u32 = 65_536;
/// Per-CPU hash map [`WaitKey`] -> `u64`: per watched (netns, port), the
/// accept-queue wait of every accepted connection as a histogram
/// ([`wait::bucket`]), its sum and maximum, and the connections the server
/// did work for in vain ([`wait::CLIENT_GONE`], [`wait::LISTENER_CLOSED`]).
/// Exact, in the kernel: no ring-buffer traffic.
pub const MAP_ACCEPT_WAIT: &str = "ACCEPT_WAIT";
/// Array of one `u32`: non-zero once every accept recorder is attached
/// (before, queued children are not recorded: nothing would remove them).
pub const MAP_ARMED: &str = "ARMED";
/// Per-CPU hash map [`ListenerSocket`] -> [`ListenerAccepts`]: every `accept()` that returned a connection from a
/// watched listener, whether or not its wait was measured. With each
/// listener's queue length (`sock_diag`), userspace derives its arrivals:
/// accepted plus the growth of its queue. Per listener, not per port:
/// with `SO_REUSEPORT` each listener has its own queue.
pub const MAP_LISTENER_ACCEPTS: &str = "LISTENER_ACCEPTS";
/// Entries of [`MAP_LISTENER_ACCEPTS`]: userspace deletes those of
/// listeners that closed; inserts beyond are counted in
/// [`stat::LISTENER_ACCEPTS_FULL`].
pub const LISTENER_ACCEPTS_MAX: u32 = 4096;
/// Entries of [`MAP_ACCEPT_WAIT`] (a port uses one per bucket it has seen,
/// plus four); inserts beyond are counted in [`stat::ACCEPT_WAIT_MAP_FULL`].
pub const ACCEPT_WAIT_MAX: u32 = 16_384;
/// Hash map [`ConnKey`] -> [`DropTrack`]: each connection (namespace and
/// 4-tuple) that had a handshake packet dropped on a watched port, until
/// its outcome is decided: the kernel takes it out when the connection is
/// established (recovered) or reset on overflow, userspace when its client
/// gave up (no retry in time) or at exit (pending). Not an LRU map, for
/// the reason [`LISTEN_STARTS_MAX`] gives (and an LRU map written from the
/// drop path coincided with guest soft lockups on 5.10): full, a new
/// connection is not followed and is counted in [`stat::OUTCOME_LOST`].
pub const MAP_DROPPED: &str = "DROPPED";
/// Entries of [`MAP_DROPPED`]: connections undecided at once (a client
/// that gave up is taken out some seconds after its last retry).
pub const DROPPED_MAX: u32 = 16_384;
/// Array of 65536 `u64`: per local port, the `bpf_ktime_get_ns()` of its
/// latest dropped handshake packet. A connection established on a port with
/// no drop within [`OUTCOME_HORIZON_NS`] is not looked up in
/// [`MAP_DROPPED`]: healthy ports cost an array read per connection.
pub const MAP_RECENT_DROP: &str = "RECENT_DROP";
/// How long after a port's latest drop a connection on it may still be one
/// that was dropped: past the 131 s a Linux client retries a SYN
/// (`tcp_syn_retries` 6, with 6.5's linear timeouts too) and the 63 s a
/// server keeps a request (`tcp_synack_retries` 5).
pub const OUTCOME_HORIZON_NS: u64 = 140_000_000_000;
/// Threads whose latest `accept()` the eBPF side keeps (alive threads that
/// ever accepted); a thread beyond has its accepts counted in
/// [`stat::LISTENER_ACCEPTS_FULL`].
pub const ACCEPTING_MAX: u32 = 16_384;

// Programs of the eBPF object, by the name userspace loads them by. aya-ebpf's
// attribute macros name a program after its function and take no other name
// (a tracepoint's `name` argument names the traced event, not the program), so
// these cannot be handed to the eBPF side: `tests/program_names.rs` reads the
// eBPF sources instead and fails when a program and its constant disagree.

/// SYN stage (`syn_stage.rs`): `tcp_conn_request`, as fentry/fexit or
/// kprobe/kretprobe pairs.
pub const PROG_FENTRY_TCP_CONN_REQUEST: &str = "fentry_tcp_conn_request";
pub const PROG_FEXIT_TCP_CONN_REQUEST: &str = "fexit_tcp_conn_request";
pub const PROG_KPROBE_TCP_CONN_REQUEST: &str = "kprobe_tcp_conn_request";
pub const PROG_KRETPROBE_TCP_CONN_REQUEST: &str = "kretprobe_tcp_conn_request";
/// ACK stage (`ack_stage.rs`): `tcp_v4_syn_recv_sock` / `tcp_v6_syn_recv_sock`,
/// fexit alone or kprobe/kretprobe pairs.
pub const PROG_FEXIT_TCP_V4_SYN_RECV_SOCK: &str = "fexit_tcp_v4_syn_recv_sock";
pub const PROG_FEXIT_TCP_V6_SYN_RECV_SOCK: &str = "fexit_tcp_v6_syn_recv_sock";
pub const PROG_KPROBE_TCP_V4_SYN_RECV_SOCK: &str = "kprobe_tcp_v4_syn_recv_sock";
pub const PROG_KRETPROBE_TCP_V4_SYN_RECV_SOCK: &str = "kretprobe_tcp_v4_syn_recv_sock";
pub const PROG_KPROBE_TCP_V6_SYN_RECV_SOCK: &str = "kprobe_tcp_v6_syn_recv_sock";
pub const PROG_KRETPROBE_TCP_V6_SYN_RECV_SOCK: &str = "kretprobe_tcp_v6_syn_recv_sock";
/// Tracepoint tier (`tracepoints.rs`): `skb:kfree_skb`.
pub const PROG_KFREE_SKB: &str = "kfree_skb";
/// Beside every tier: `syscalls:sys_enter_listen` / `sys_exit_listen`
/// (`listen_calls.rs`) and `sock:inet_sock_set_state` (`listener_close.rs`).
pub const PROG_SYS_ENTER_LISTEN: &str = "sys_enter_listen";
pub const PROG_SYS_EXIT_LISTEN: &str = "sys_exit_listen";
pub const PROG_INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
/// Beside every tier (`accept_wait.rs`): `syscalls:sys_exit_accept4` and
/// `sys_exit_accept`, where `accept()` returns a queued connection.
pub const PROG_SYS_EXIT_ACCEPT4: &str = "sys_exit_accept4";
pub const PROG_SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
/// ... and `sys_enter_accept4` / `sys_enter_accept`: which listener.
pub const PROG_SYS_ENTER_ACCEPT4: &str = "sys_enter_accept4";
pub const PROG_SYS_ENTER_ACCEPT: &str = "sys_enter_accept";
/// ... and `tcp:tcp_destroy_sock`, where every queued child ends.
pub const PROG_TCP_DESTROY_SOCK: &str = "tcp_destroy_sock";
/// ... and `sched:sched_process_exit`, where a thread's record of its
/// latest `accept()` goes.
pub const PROG_SCHED_PROCESS_EXIT: &str = "sched_process_exit";
/// Every `PROG_*` above, once.
pub const PROGRAMS: [&str; 20] = [
    PROG_FENTRY_TCP_CONN_REQUEST,
    PROG_FEXIT_TCP_CONN_REQUEST,
    PROG_KPROBE_TCP_CONN_REQUEST,
    PROG_KRETPROBE_TCP_CONN_REQUEST,
    PROG_FEXIT_TCP_V4_SYN_RECV_SOCK,
    PROG_FEXIT_TCP_V6_SYN_RECV_SOCK,
    PROG_KPROBE_TCP_V4_SYN_RECV_SOCK,
    PROG_KRETPROBE_TCP_V4_SYN_RECV_SOCK,
    PROG_KPROBE_TCP_V6_SYN_RECV_SOCK,
    PROG_KRETPROBE_TCP_V6_SYN_RECV_SOCK,
    PROG_KFREE_SKB,
    PROG_SYS_ENTER_LISTEN,
    PROG_SYS_EXIT_LISTEN,
    PROG_INET_SOCK_SET_STATE,
    PROG_SYS_EXIT_ACCEPT4,
    PROG_SYS_EXIT_ACCEPT,
    PROG_SYS_ENTER_ACCEPT4,
    PROG_SYS_ENTER_ACCEPT,
    PROG_TCP_DESTROY_SOCK,
    PROG_SCHED_PROCESS_EXIT,
];

/// Ring buffer size in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Distinct (netns, port, kind) counters the kernel keeps; inserts beyond this
/// are counted in [`stat::COUNTER_MAP_FULL`].
pub const COUNTERS_MAX: u32 = 16_384;
/// Number of entries in [`MAP_PORTS`].
pub const PORTS_LEN: u32 = 65_536;

/// What happened to a handshake packet. Values are stable ids.
pub mod kind {
    /// SYN dropped in `tcp_conn_request` because the accept queue was full.
    pub const ACCEPT_QUEUE_FULL: u8 = 1;
    /// SYN dropped in `tcp_conn_request` because the SYN queue was full and
    /// syncookies were off.
    pub const SYN_QUEUE_FULL: u8 = 2;
    /// SYN queue full, syncookies on: a cookie was sent instead (not a drop).
    pub const SYNCOOKIE_SENT: u8 = 3;
    /// Final ACK of a request from the SYN queue, accept queue full, dropped
    /// silently (`tcp_abort_on_overflow=0`).
    pub const ACK_OVERFLOW: u8 = 4;
    /// Same, and the kernel answered with a RST (`tcp_abort_on_overflow=1`).
    pub const ACK_OVERFLOW_RESET: u8 = 5;
    /// Final ACK carrying a valid syncookie, accept queue full, dropped.
    pub const COOKIE_ACK_OVERFLOW: u8 = 6;
    /// SYN dropped in `tcp_conn_request` for another reason (memory, route,
    /// security hook): queues were not full.
    pub const SYN_DROP_OTHER: u8 = 7;
    /// Not an overflow: a request-route packet that `tcp_v4_rcv` /
    /// `tcp_v6_rcv` discarded (`discard_and_relse`), which moves the
    /// listener's drop counter but not `ListenDrops` (for example the bare
    /// ACKs a `TCP_DEFER_ACCEPT` listener ignores). Counted, never sent.
    pub const LISTENER_DISCARD: u8 = 8;
    /// Highest id in use.
    pub const MAX: u8 = 8;
    /// Not a kind of drop: marks an [`super::OutcomeRecord`] in the ring
    /// buffer (the byte at offset 28 of every record is its kind).
    pub const OUTCOME: u8 = 0xff;
}

/// What became of a connection that had a handshake packet dropped.
/// Values are stable ids.
pub mod outcome {
    /// A later copy of its SYN or final ACK got through: it was
    /// established (the child's SYN_RECV -> ESTABLISHED).
    pub const RECOVERED: u8 = 1;
    /// Its final ACK overflowed with `tcp_abort_on_overflow=1`: the kernel
    /// answered with a RST.
    pub const RESET: u8 = 2;
    /// Its client stopped retrying (decided by userspace).
    pub const ABANDONED: u8 = 3;
    /// Still undecided when qtrace stopped (decided by userspace).
    pub const PENDING: u8 = 4;
}

/// Which program saw an event. Values are stable ids.
pub mod hook {
    pub const FEXIT_TCP_CONN_REQUEST: u8 = 1;
    pub const FEXIT_TCP_V4_SYN_RECV_SOCK: u8 = 2;
    pub const FEXIT_TCP_V6_SYN_RECV_SOCK: u8 = 3;
    pub const KRETPROBE_TCP_CONN_REQUEST: u8 = 4;
    pub const KRETPROBE_TCP_V4_SYN_RECV_SOCK: u8 = 5;
    pub const KRETPROBE_TCP_V6_SYN_RECV_SOCK: u8 = 6;
    pub const TP_KFREE_SKB: u8 = 7;
    /// Highest id in use.
    pub const MAX: u8 = 7;
}

/// Indexes of [`MAP_STATS`].
pub mod stat {
    /// Events counted but not delivered: the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Events delivered but not counted: the counters map was full.
    pub const COUNTER_MAP_FULL: u32 = 1;
    /// Overflows seen whose listener could not be read (event dropped).
    pub const READ_FAILED: u32 = 2;
    /// `tcp_conn_request` exits without a matching entry record.
    pub const ENTRY_MISSING: u32 = 3;
    /// Events over their port's budget not tallied: the suppressed map
    /// was full (they are in the totals all the same).
    pub const SUPPRESSED_MAP_FULL: u32 = 4;
    /// Listen starts not recorded: [`super::MAP_LISTEN_STARTS`] was full.
    pub const LISTEN_STARTS_FULL: u32 = 5;
    /// Connections whose accept-queue wait is not measured: the queued
    /// map was full when their child socket was made.
    pub const QUEUED_FULL: u32 = 6;
    /// Accept-queue waits not in the histograms: the histogram map was full.
    pub const ACCEPT_WAIT_MAP_FULL: u32 = 7;
    /// Queued connections that left the queue through an `accept()` qtrace
    /// does not trace (io_uring's `IORING_OP_ACCEPT`, `kernel_accept()`,
    /// 32-bit compat calls, MPTCP subflows): seen as they closed, already
    /// grafted onto a socket.
    pub const ACCEPT_UNSEEN: u32 = 8;
    /// Accepts not attributed to their listener: the listener map was
    /// full, or a connection queued while qtrace ran was accepted by a call
    /// whose listener is unknown (the call began before qtrace attached, or
    /// its thread found `ACCEPTING` full).
    pub const LISTENER_ACCEPTS_FULL: u32 = 9;
    /// Outcomes decided in the kernel (recovered, reset) not delivered (the
    /// ring buffer was full), drops not followed because
    /// [`super::MAP_DROPPED`] was full, and drops or establishments not
    /// followed because a program interrupted on the same CPU was
    /// following one.
    pub const OUTCOME_LOST: u32 = 10;
    /// Number of slots.
    pub const LEN: u32 = 11;
}

/// `TCP_LISTEN` in the kernel's `enum tcp_state` (`include/net/tcp_states.h`).
pub const TCP_LISTEN: u8 = 10;

/// Address families as the kernel numbers them.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Marks an offset that the running kernel does not have.
pub const OFFSET_NONE: u32 = u32::MAX;

/// One handshake packet that overflowed a listen queue (or was answered with a
/// syncookie), with the listener's backlog state when it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Network namespace inode of the listener.
    pub netns: u32,
    /// `sk_ack_backlog`: connections waiting in the accept queue.
    pub ack_backlog: u32,
    /// `sk_max_ack_backlog`: the accept queue bound, min(backlog, somaxconn).
    pub max_ack_backlog: u32,
    /// `icsk_accept_queue.qlen`: requests in the SYN queue.
    pub syn_qlen: u32,
    /// Local (listening) port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// A `kind::*` id.
    pub kind: u8,
    /// A `hook::*` id.
    pub hook: u8,
    /// [`AF_INET`] or [`AF_INET6`]: the family of the packet.
    pub family: u8,
    pub _pad: u8,
    /// Local address (IPv4 in the first 4 bytes), network byte order.
    pub laddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes), network byte order.
    pub raddr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Event>() == 64);

/// A ring-buffer record for a connection whose outcome the kernel decided
/// ([`outcome::RECOVERED`], [`outcome::RESET`]). 64 bytes like [`Event`],
/// with `kind` at the same offset ([`kind::OUTCOME`]), so the reader tells
/// the two apart by that byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// `bpf_ktime_get_ns()` when the outcome was decided.
    pub ts_ns: u64,
    pub netns: u32,
    /// The connection's history ([`DropTrack`]'s counts and kinds).
    pub syn_drops: u16,
    pub ack_drops: u16,
    /// `bpf_ktime_get_ns()` of its first drop.
    pub first_ns: u64,
    pub lport: u16,
    pub rport: u16,
    /// [`kind::OUTCOME`].
    pub kind: u8,
    /// An `outcome::*` id.
    pub outcome: u8,
    /// Address family of the connection's packets.
    pub family: u8,
    /// Bit `1 << k` for each `kind::*` id `k` of its drops.
    pub kinds: u8,
    /// Local and remote address, IPv4 as `::ffff:a.b.c.d`, network order.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<OutcomeRecord>() == 64);
const _: () = assert!(core::mem::offset_of!(OutcomeRecord, kind) == core::mem::offset_of!(Event, kind));

/// Key of [`MAP_DROPPED`]: one connection. Addresses in network order,
/// IPv4 as `::ffff:a.b.c.d`, so a v4 peer of a v6 listener has one key
/// whichever record names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub netns: u32,
    pub lport: u16,
    pub rport: u16,
}
const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);

/// Value of [`MAP_DROPPED`]: a connection's drops so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropTrack {
    /// `bpf_ktime_get_ns()` of its first, latest and previous drop (0
    /// before a second).
    pub first_ns: u64,
    pub last_ns: u64,
    pub prev_ns: u64,
    /// Dropped SYNs and dropped final ACKs (or data segments carrying it).
    pub syn_drops: u16,
    pub ack_drops: u16,
    /// Bit `1 << k` for each `kind::*` id `k` seen.
    pub kinds: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<DropTrack>() == 32);

/// Key of [`MAP_COUNTERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub netns: u32,
    pub port: u16,
    pub kind: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<CounterKey>() == 8);

/// Key of [`MAP_ACCEPT_WAIT`]: a watched port and one of its [`wait`]
/// slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitKey {
    pub netns: u32,
    pub port: u16,
    /// A histogram bucket (below [`wait::BUCKETS`]) or a `wait::*` slot.
    pub slot: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<WaitKey>() == 8);

/// Value of [`MAP_QUEUED`]: when and where a connection entered the
/// accept queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// `bpf_ktime_get_ns()` when its child socket was made.
    pub queued_ns: u64,
    pub netns: u32,
    /// The listener's (local) port.
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Queued>() == 16);

/// Key of [`MAP_LISTENER_ACCEPTS`]: the address of the listener's
/// `struct socket`, and its inode number (a listener made where a freed
/// one was, as the slab has it at once, is another key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerSocket {
    pub socket: u64,
    pub inode: u64,
}
const _: () = assert!(core::mem::size_of::<ListenerSocket>() == 16);

/// Value of [`MAP_LISTENER_ACCEPTS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerAccepts {
    /// Connections `accept()` returned from the listener on this CPU.
    pub accepts: u64,
    /// The listener's socket inode (`SOCK_INODE(socket)->i_ino`), which
    /// `sock_diag` reports too. Not the socket cookie: the kernel makes that
    /// only when something asks for it, so a listener `sock_diag` has not
    /// dumped yet has none.
    pub inode: u64,
    pub netns: u32,
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ListenerAccepts>() == 24);

/// Accept-queue wait histograms: the slots of a [`WaitKey`].
///
/// Buckets are log-linear in nanoseconds, four per power of two (each at
/// most 25% wide, so a percentile read at a bucket's middle is within
/// 12.5% of the true value): values 0 to 3 have a bucket each; a value
/// `v >= 4` with `p = floor(log2 v)` falls in `4 * (p - 1) + ((v >> (p - 2)) & 3)`.
/// Waits of 2^48 ns (3.3 days) and longer share the last bucket.
pub mod wait {
    /// Histogram buckets: slots `0..BUCKETS`.
    pub const BUCKETS: u8 = 188;
    /// Accepted connections whose client had left while they waited (the
    /// child was in `CLOSE_WAIT` or `CLOSE` when `accept()` returned it):
    /// work the server did for nobody. Also in the histogram.
    pub const CLIENT_GONE: u8 = 252;
    /// Queued connections reset because their listener closed
    /// (`inet_csk_listen_stop()`): never accepted, not in the histogram.
    pub const LISTENER_CLOSED: u8 = 253;
    /// Sum of the waits in the histogram, in nanoseconds.
    pub const SUM_NS: u8 = 254;
    /// Longest wait in the histogram, in nanoseconds (per CPU: the
    /// maximum over CPUs is the port's).
    pub const MAX_NS: u8 = 255;
    const _: () = assert!(BUCKETS <= CLIENT_GONE);

    /// `floor(log2 v)` for `v > 0`, without a loop (the verifier of 5.10
    /// takes no bounded loops it cannot unroll).
    #[inline(always)]
    pub const fn log2(mut v: u64) -> u32 {
        let mut r = 0;
        if v >= 1 << 32 {
            v >>= 32;
            r += 32;
        }
        if v >= 1 << 16 {
            v >>= 16;
            r += 16;
        }
        if v >= 1 << 8 {
            v >>= 8;
            r += 8;
        }
        if v >= 1 << 4 {
            v >>= 4;
            r += 4;
        }
        if v >= 1 << 2 {
            v >>= 2;
            r += 2;
        }
        if v >= 1 << 1 {
            r += 1;
        }
        r
    }

    /// The bucket of a wait of `ns` nanoseconds.
    #[inline(always)]
    pub const fn bucket(ns: u64) -> u8 {
        if ns < 4 {
            return ns as u8;
        }
        let p = log2(ns);
        if p >= 48 {
            return BUCKETS - 1;
        }
        (4 * (p - 1) + ((ns >> (p - 2)) & 3) as u32) as u8
    }

    /// The values bucket `b` holds: `lo..hi` nanoseconds (the last bucket
    /// holds everything from its `lo` up).
    pub const fn bounds(b: u8) -> (u64, u64) {
        if b < 4 {
            return (b as u64, b as u64 + 1);
        }
        let p = b as u32 / 4 + 1;
        let lo = (1u64 << p) + (b as u64 % 4) * (1u64 << (p - 2));
        (lo, lo + (1u64 << (p - 2)))
    }
}

/// Key of [`MAP_LISTEN_CALLS`]: the process and descriptor that listened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// Thread-group id (the process id in the initial pid namespace).
    pub tgid: u32,
    pub fd: u32,
}
const _: () = assert!(core::mem::size_of::<ListenKey>() == 8);

/// Value of [`MAP_LISTEN_CALLS`]: what `listen(2)` asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenCall {
    /// `bpf_ktime_get_ns()` at the call.
    pub ts_ns: u64,
    /// The backlog argument as the application passed it (negative values
    /// are taken as "as large as allowed" by the kernel).
    pub backlog: i32,
    pub fd: u32,
}
const _: () = assert!(core::mem::size_of::<ListenCall>() == 16);

/// Value of [`MAP_CLOSED_LISTENERS`]: a listener's final drop counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedListener {
    /// `sk_cookie`: what `sock_diag` reported it as (0 if it never did).
    pub cookie: u64,
    pub netns: u32,
    /// `sk_drops` when it left `TCP_LISTEN`.
    pub drops: u32,
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<ClosedListener>() == 24);

/// Value of [`MAP_LISTEN_STARTS`]: who last made a listener in the
/// namespace, so userspace can enter it through `/proc/<tgid>/task/<tid>/ns/net`
/// (a thread may have its own namespace) without walking every task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenStart {
    /// Thread-group id (the process id in the initial pid namespace).
    pub tgid: u32,
    /// Thread id of the caller.
    pub tid: u32,
}
const _: () = assert!(core::mem::size_of::<ListenStart>() == 8);

/// Load-time configuration: filters and kernel offsets resolved from the
/// running kernel's BTF and tracepoint formats, so one binary serves every
/// kernel from 5.10 on. [`OFFSET_NONE`] marks what the kernel lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Only this network namespace inode (0: all).
    pub filter_netns: u32,
    /// Non-zero: only ports marked in [`MAP_PORTS`].
    pub filter_ports: u32,

    /// `skb:kfree_skb`: offset of `skbaddr`, `rx_sk` and `reason` in the record
    /// (`rx_sk` since c53795d48ee8, "net: add rx_sk to trace_kfree_skb", 6.11).
    pub tp_kfree_skb_skbaddr: u32,
    pub tp_kfree_skb_rx_sk: u32,
    pub tp_kfree_skb_reason: u32,
    /// Value of `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` on this kernel (added by
    /// a11a791ca81e, "tcp: add four drop reasons to tcp_check_req()", 6.15).
    pub reason_listen_overflow: u32,

    /// `struct sock` (through `struct sock_common`).
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_rcv_saddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_net: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_drops: u32,
    /// `struct inet_connection_sock`: `icsk_accept_queue.qlen`.
    pub icsk_qlen: u32,
    /// `struct net`: `ns.inum`, and the two `net.ipv4` sysctls read per event.
    pub net_inum: u32,
    pub net_abort_on_overflow: u32,
    pub net_syncookies: u32,
    /// Size in bytes (1 or 4) of those two sysctls, from BTF: both became `u8`
    /// in 4ecc1baf362c ("tcp: convert elligible sysctls to u8", Linux 5.13,
    /// also in 5.10 stable since April 2023) and are `int` before.
    pub net_sysctl_size: u32,
    /// `struct sk_buff`.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_protocol: u32,
    /// `struct net`: `ipv4.sysctl_max_syn_backlog` (an `int` on every kernel).
    pub net_max_syn_backlog: u32,
    /// `skb:kfree_skb`: offset of `location` (the caller's address).
    pub tp_kfree_skb_location: u32,
    /// Value of `SKB_DROP_REASON_NO_SOCKET` (a syncookie ACK whose child
    /// could not be created, in `cookie_v4_check` / `cookie_v6_check`).
    pub reason_no_socket: u32,
    /// `struct sock`: `__sk_common.skc_state` (one byte).
    pub sk_state: u32,
    /// `syscalls:sys_enter_listen`: offsets of `fd` and `backlog`.
    pub tp_listen_fd: u32,
    pub tp_listen_backlog: u32,
    /// `syscalls:sys_exit_listen`: offset of `ret`.
    pub tp_listen_ret: u32,
    /// `sock:inet_sock_set_state`: offsets of `skaddr`, `oldstate`,
    /// `newstate` and `protocol` (and `sport`, further down).
    pub tp_state_skaddr: u32,
    pub tp_state_oldstate: u32,
    pub tp_state_newstate: u32,
    pub tp_state_protocol: u32,
    /// `struct sock`: `__sk_common.skc_cookie` (8 bytes).
    pub sk_cookie: u32,
    /// The per-port event budget as a token bucket in its GCRA form: a
    /// port's next event is due `budget_interval_ns` after the previous
    /// one, and may come up to `budget_burst_ns` early, so a burst of
    /// `budget_burst_ns / budget_interval_ns + 1` events passes at once and
    /// then one per interval. Events over it are counted (exact totals),
    /// tallied in [`MAP_SUPPRESSED`], and not sent. 0: no budget.
    pub budget_interval_ns: u32,
    pub budget_burst_ns: u32,
    /// `struct net`: `mib.net_statistics` (a per-CPU `struct linux_mib`),
    /// and the byte offset of `mibs[LINUX_MIB_LISTENDROPS]` in it: the
    /// namespace's `ListenDrops` on one CPU (see [`Config::per_cpu_offset`]).
    pub net_mib_net_statistics: u32,
    pub mib_listen_drops: u32,
    /// `syscalls:sys_exit_accept4` and `sys_exit_accept`: offset of `ret`,
    /// and of `fd` in their `sys_enter_*` records (each the same in both,
    /// checked at load).
    pub tp_accept_ret: u32,
    pub tp_accept_fd: u32,
    /// The walk from the current task to the socket behind a descriptor:
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds`,
    /// `fdtable.fd`, `file.private_data` (a socket file's `struct socket`)
    /// and `socket.sk`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `struct sock`: `sk_socket`, NULL until `accept()` grafts the child
    /// onto a `struct socket` (`sock_graft()`).
    pub sk_socket: u32,
    /// A socket's inode number from its `struct socket`: the two are
    /// allocated together as `struct socket_alloc` (`sock_alloc_inode()`),
    /// so `socket_alloc.vfs_inode` + `inode.i_ino` (`SOCK_INODE()`).
    pub socket_i_ino: u32,
    pub _pad: u32,
    /// `tcp:tcp_destroy_sock`: offset of `skaddr`.
    pub tp_destroy_skaddr: u32,
    /// Offset of `sport` in `tcp:tcp_destroy_sock` and in
    /// `sock:inet_sock_set_state`: the socket's `inet_sport` (host order),
    /// which stays when closing releases the port and zeroes `skc_num`
    /// (`inet_put_port()`).
    pub tp_destroy_sport: u32,
    pub tp_state_sport: u32,
    /// `sock:inet_sock_set_state`: offsets of `dport`, `saddr_v6` and
    /// `daddr_v6` (IPv4 sockets' addresses v4-mapped there, by
    /// `TP_STORE_ADDRS`): a connection's 4-tuple as it is established.
    pub tp_state_dport: u32,
    pub tp_state_saddr_v6: u32,
    pub tp_state_daddr_v6: u32,
    pub _pad2: u32,
    /// Where `tcp_conn_request`'s and `tcp_v4/v6_syn_recv_sock`'s values sit
    /// in the fentry/fexit context and the kprobe registers, by parameter
    /// name from the kernel's BTF.
    pub conn_request: ArgSlots,
    pub syn_recv_v4: ArgSlots,
    pub syn_recv_v6: ArgSlots,
    /// Address of the kernel's `__per_cpu_offset[NR_CPUS]` (kallsyms; 0
    /// where hidden): a per-CPU pointer plus entry N is CPU N's copy, which
    /// is how `this_cpu_ptr()` works.
    pub per_cpu_offset: u64,
    /// Text ranges from kallsyms as (start, end) pairs in [`range`] order:
    /// `ranges[2 * i] <= address < ranges[2 * i + 1]`; zero where unknown.
    pub ranges: [u64; 2 * range::LEN],
}
const _: () = assert!(core::mem::size_of::<Config>() == 248 + 16 * range::LEN);

/// Marks a parameter a traced function does not have (or a program does not
/// read).
pub const SLOT_NONE: u8 = u8::MAX;

/// Where a traced function's values sit, resolved by parameter name from the
/// running kernel's BTF rather than fixed at compile time: prototypes change
/// within a stable series (Debian's 6.12.117 gave `tcp_v4_syn_recv_sock` a
/// seventh parameter, `opt_child_init`, that 6.12.107 lacks: the backport of
/// 858d2a4f67ff, "tcp: fix potential race in tcp_v6_syn_recv_sock()").
///
/// A fentry/fexit context is the traced function's arguments as an array of
/// `u64` followed, for fexit, by its return value, so the return value's
/// slot is the number of parameters. A kprobe reads the same positions from
/// the argument registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgSlots {
    /// Position of the `sk` parameter (the listener).
    pub sk: u8,
    /// Position of the `skb` parameter (the packet).
    pub skb: u8,
    /// Position of `req_unhash` ([`SLOT_NONE`] where not read).
    pub req_unhash: u8,
    /// Number of parameters: the return value's slot in an fexit context.
    pub ret: u8,
}
const _: () = assert!(core::mem::size_of::<ArgSlots>() == 4);

impl ArgSlots {
    /// Nothing resolved: the programs that need these are never loaded.
    pub const NONE: Self = Self { sk: SLOT_NONE, skb: SLOT_NONE, req_unhash: SLOT_NONE, ret: SLOT_NONE };
}

/// Kernel functions whose text range the tracepoint tier matches `location`
/// against.
pub mod range {
    pub const TCP_V4_RCV: usize = 0;
    pub const TCP_V6_RCV: usize = 1;
    pub const COOKIE_V4_CHECK: usize = 2;
    pub const COOKIE_V6_CHECK: usize = 3;
    pub const LEN: usize = 4;
    /// Symbol names, in index order.
    pub const NAMES: [&str; LEN] = ["tcp_v4_rcv", "tcp_v6_rcv", "cookie_v4_check", "cookie_v6_check"];
}

impl Config {
    /// A configuration with every offset marked absent and no filter.
    pub const fn empty() -> Self {
        Self {
            filter_netns: 0,
            filter_ports: 0,
            tp_kfree_skb_skbaddr: OFFSET_NONE,
            tp_kfree_skb_rx_sk: OFFSET_NONE,
            tp_kfree_skb_reason: OFFSET_NONE,
            reason_listen_overflow: OFFSET_NONE,
            sk_family: OFFSET_NONE,
            sk_num: OFFSET_NONE,
            sk_rcv_saddr: OFFSET_NONE,
            sk_v6_rcv_saddr: OFFSET_NONE,
            sk_net: OFFSET_NONE,
            sk_ack_backlog: OFFSET_NONE,
            sk_max_ack_backlog: OFFSET_NONE,
            sk_drops: OFFSET_NONE,
            icsk_qlen: OFFSET_NONE,
            net_inum: OFFSET_NONE,
            net_abort_on_overflow: OFFSET_NONE,
            net_syncookies: OFFSET_NONE,
            net_sysctl_size: 0,
            skb_head: OFFSET_NONE,
            skb_network_header: OFFSET_NONE,
            skb_transport_header: OFFSET_NONE,
            skb_protocol: OFFSET_NONE,
            net_max_syn_backlog: OFFSET_NONE,
            tp_kfree_skb_location: OFFSET_NONE,
            reason_no_socket: OFFSET_NONE,
            sk_state: OFFSET_NONE,
            tp_listen_fd: OFFSET_NONE,
            tp_listen_backlog: OFFSET_NONE,
            tp_listen_ret: OFFSET_NONE,
            tp_state_skaddr: OFFSET_NONE,
            tp_state_oldstate: OFFSET_NONE,
            tp_state_newstate: OFFSET_NONE,
            tp_state_protocol: OFFSET_NONE,
            sk_cookie: OFFSET_NONE,
            budget_interval_ns: 0,
            budget_burst_ns: 0,
            net_mib_net_statistics: OFFSET_NONE,
            mib_listen_drops: OFFSET_NONE,
            tp_accept_ret: OFFSET_NONE,
            tp_accept_fd: OFFSET_NONE,
            task_files: OFFSET_NONE,
            files_fdt: OFFSET_NONE,
            fdt_max_fds: OFFSET_NONE,
            fdt_fd: OFFSET_NONE,
            file_private_data: OFFSET_NONE,
            socket_sk: OFFSET_NONE,
            sk_socket: OFFSET_NONE,
            socket_i_ino: OFFSET_NONE,
            _pad: 0,
            tp_destroy_skaddr: OFFSET_NONE,
            tp_destroy_sport: OFFSET_NONE,
            tp_state_sport: OFFSET_NONE,
            tp_state_dport: OFFSET_NONE,
            tp_state_saddr_v6: OFFSET_NONE,
            tp_state_daddr_v6: OFFSET_NONE,
            _pad2: 0,
            conn_request: ArgSlots::NONE,
            syn_recv_v4: ArgSlots::NONE,
            syn_recv_v6: ArgSlots::NONE,
            per_cpu_offset: 0,
            ranges: [0; 2 * range::LEN],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::empty()
    }
}

#[cfg(feature = "user")]
mod user {
    // Each: plain `#[repr(C)]` integers and byte arrays with explicit
    // padding fields, so every bit pattern is valid and there are no holes.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CounterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClosedListener {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenStart {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WaitKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Queued {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerAccepts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerSocket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropTrack {}
}

impl Event {
    /// Decodes an event from a ring-buffer record. `None` when the record is
    /// shorter than an event (never panics on garbage: every bit pattern of
    /// the right length is a valid `Event`).
    pub fn from_bytes(buf: &[u8]) -> Option<Self> {
        if buf.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked above; `Event` is `repr(C)` plain data for
        // which every bit pattern is valid; `read_unaligned` copes with any
        // alignment of the record.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<Self>()) })
    }
}

impl OutcomeRecord {
    /// Decodes an outcome from a ring-buffer record, as [`Event::from_bytes`].
    pub fn from_bytes(buf: &[u8]) -> Option<Self> {
        if buf.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: as in `Event::from_bytes`.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<Self>()) })
    }
}

#[cfg(test)]
mod tests {
    use super::wait;

    /// Every value falls in the bucket whose bounds hold it, buckets follow
    /// each other without gaps, and none is wider than a quarter of its
    /// lower bound (from 4 ns on).
    #[test]
    fn wait_buckets_tile_the_line() {
        for b in 0..wait::BUCKETS - 1 {
            let (lo, hi) = wait::bounds(b);
            assert_eq!(wait::bounds(b + 1).0, hi, "bucket {b} meets the next");
            assert_eq!(wait::bucket(lo), b, "lower bound of {b}");
            assert_eq!(wait::bucket(hi - 1), b, "last value of {b}");
            if lo >= 4 {
                assert!(4 * (hi - lo) <= lo, "bucket {b} is {lo}..{hi}");
            }
        }
        assert_eq!(wait::bucket(u64::MAX), wait::BUCKETS - 1);
        assert_eq!(wait::bucket(1 << 48), wait::BUCKETS - 1);
        assert_eq!(wait::bounds(wait::BUCKETS - 1).0, (1 << 47) + 3 * (1 << 45));
    }
}
