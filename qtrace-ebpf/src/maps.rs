//! The maps both sides share (names and value types from `qtrace-common`)
//! and the per-CPU scratch the entry/exit program pairs use.

use aya_ebpf::bindings::BPF_F_RDONLY_PROG;
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use qtrace_common::{Config, CounterKey, BUDGETS_MAX, COUNTERS_MAX, EVENTS_BYTES, PORTS_LEN};

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
pub(crate) static COUNTERS: PerCpuHashMap<CounterKey, u64> = PerCpuHashMap::with_max_entries(COUNTERS_MAX, 0);

#[map]
pub(crate) static SUPPRESSED: PerCpuHashMap<CounterKey, u64> = PerCpuHashMap::with_max_entries(COUNTERS_MAX, 0);

/// Shared by every CPU (a per-CPU bucket would multiply the budget by the
/// number of CPUs); see `emit::within_budget` for what a race costs.
#[map]
pub(crate) static BUDGETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(BUDGETS_MAX, 0);

#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(qtrace_common::stat::LEN, 0);

/// Read-only for programs and frozen by userspace before they load, so the
/// verifier reads it as constants (see [`qtrace_common::MAP_CONFIG`]).
#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, BPF_F_RDONLY_PROG);

/// The configuration userspace wrote before attaching.
#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[map]
pub(crate) static PORTS: Array<u8> = Array::with_max_entries(PORTS_LEN, 0);

/// Listener state at `tcp_conn_request` entry, compared at its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SynEntry {
    pub sk: u64,
    pub skb: u64,
    pub drops: u32,
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    pub syn_qlen: u32,
    /// This CPU's `ListenDrops` of the listener's namespace.
    pub cpu_drops: u64,
}

/// Arguments of `tcp_v*_syn_recv_sock` kept by the kprobe for the kretprobe.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AckEntry {
    pub sk: u64,
    pub skb: u64,
    pub req_unhash: u64,
}

// Softirq processing of one packet does not nest on a CPU, so one slot per
// CPU is enough. tcp_v6_syn_recv_sock calls tcp_v4_syn_recv_sock for
// v4-mapped peers, hence a slot per function.
#[map]
pub(crate) static SYN_ENTRY: PerCpuArray<SynEntry> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static ACK_V4_ENTRY: PerCpuArray<AckEntry> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static ACK_V6_ENTRY: PerCpuArray<AckEntry> = PerCpuArray::with_max_entries(1, 0);
