//! The kernel seam: [`KernelMaps`] owns the attached programs and every map
//! they fill (ring buffer, per-CPU counters and stats, closed listeners,
//! `listen(2)` calls, listen starts); [`KernelInputs`] is what the tracer reads through,
//! so it runs against fakes in tests.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::Ebpf;
use qtrace_common::{
    stat, wait, ClosedListener, ConnKey, CounterKey, DropTrack, ListenCall, ListenKey, ListenStart, ListenerAccepts, ListenerSocket,
    WaitKey, MAP_ACCEPT_WAIT, MAP_CLOSED_LISTENERS, MAP_COUNTERS, MAP_DROPPED, MAP_EVENTS, MAP_LISTENER_ACCEPTS, MAP_LISTEN_CALLS,
    MAP_LISTEN_STARTS, MAP_STATS, MAP_SUPPRESSED,
};

use crate::host::netns::NsListeners;
use crate::model::aggregate::{Losses, PortKey};

/// What the tracer reads from the kernel side.
pub trait KernelInputs {
    /// Hands every record waiting in the ring buffer to `each`.
    fn drain_events(&mut self, each: &mut dyn FnMut(&[u8]));
    /// Exact per-(netns, port, kind) totals.
    fn counters(&mut self) -> Result<BTreeMap<CounterKey, u64>>;
    /// Per-(netns, port, kind) events over their port's budget, not sent.
    fn suppressed(&mut self) -> Result<BTreeMap<CounterKey, u64>>;
    /// The kernel's part of [`Losses`] (`undecodable` and `suppressed` are
    /// userspace's sums).
    fn losses(&mut self) -> Result<Losses>;
    /// Takes the recorded final counters of closed listeners, except those
    /// `live` still lists by (netns, cookie): they wait for a later call.
    fn take_closed(&mut self, live: &HashSet<(u32, u64)>) -> Vec<ClosedListener>;
    /// Takes the connections with drops that `decided` says are decided,
    /// with their history, out of the kernel's map. Empty where outcomes
    /// are not followed.
    fn take_dropped(&mut self, _decided: &dyn Fn(&DropTrack) -> bool) -> Vec<(ConnKey, DropTrack)> {
        Vec::new()
    }

    /// Takes the `listen(2)` calls recorded since the last call.
    fn take_listen_calls(&mut self) -> Vec<(ListenKey, ListenCall)>;
    /// Takes the namespaces (by inode) where a socket started listening
    /// since the last call, with who did it; `None` when nothing records
    /// them (then every namespace must be read at every poll).
    fn take_listen_starts(&mut self) -> Option<Vec<(u32, ListenStart)>>;
    /// Whether listen starts found their map full since the last call
    /// (then some namespaces with new listeners are missing from it).
    fn listen_starts_overflowed(&mut self) -> bool {
        false
    }
    /// Per watched (netns, port), the accept-queue wait slots
    /// ([`qtrace_common::wait`]) over every CPU: summed, except the
    /// maximum, which is the largest of the CPUs'. Empty where waits are
    /// not measured.
    fn accept_waits(&mut self) -> Result<BTreeMap<WaitKey, u64>> {
        Ok(BTreeMap::new())
    }
    /// Accepts per listener socket, over every CPU.
    /// Entries of listeners missing from `live` (the latest snapshot) and
    /// the one before are returned one last time and deleted.
    fn listener_accepts(&mut self, _live: &[NsListeners]) -> Result<Vec<ListenerAccepts>> {
        Ok(Vec::new())
    }
    /// Deletes the counters (and suppressed tallies, and wait histograms)
    /// of `ports`.
    fn forget_ports(&mut self, ports: &[PortKey]);
}

/// The attached programs and their maps. Dropping it detaches them.
pub struct KernelMaps {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuHashMap<MapData, CounterKey, u64>,
    suppressed: PerCpuHashMap<MapData, CounterKey, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// `None` when the `listen(2)` recorders could not attach.
    listen_calls: Option<HashMap<MapData, ListenKey, ListenCall>>,
    /// `None` when the listener-close recorder could not attach.
    closed: Option<HashMap<MapData, u64, ClosedListener>>,
    /// Filled by the same program as `closed`.
    listen_starts: Option<HashMap<MapData, u32, ListenStart>>,
    /// `stat::LISTEN_STARTS_FULL` as of the last look.
    listen_starts_full: u64,
    /// `None` when the accept-queue wait recorders could not attach.
    accept_wait: Option<PerCpuHashMap<MapData, WaitKey, u64>>,
    /// Filled by the same programs.
    listener_accepts: Option<PerCpuHashMap<MapData, ListenerSocket, ListenerAccepts>>,
    /// Its entries whose listener the latest snapshot did not list.
    listeners_missing: HashSet<ListenerSocket>,
    /// Connections with drops and no outcome yet; `None` when the state
    /// tracepoint that sees them recover could not attach.
    dropped: Option<HashMap<MapData, ConnKey, DropTrack>>,
}

impl KernelMaps {
    /// Takes the maps out of the loaded object, which stays inside to keep
    /// the programs attached. `listen_calls` and `closed`: whether their
    /// recorders attached (and `accept_wait`).
    pub(crate) fn take(mut ebpf: Ebpf, listen_calls: bool, closed: bool, accept_wait: bool) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name} missing"));
        let events = RingBuf::try_from(take(MAP_EVENTS)?)?;
        let counters = PerCpuHashMap::try_from(take(MAP_COUNTERS)?)?;
        let suppressed = PerCpuHashMap::try_from(take(MAP_SUPPRESSED)?)?;
        let stats = PerCpuArray::try_from(take(MAP_STATS)?)?;
        let listen_calls = if listen_calls { Some(HashMap::try_from(take(MAP_LISTEN_CALLS)?)?) } else { None };
        let listen_starts = if closed { Some(HashMap::try_from(take(MAP_LISTEN_STARTS)?)?) } else { None };
        let closed = if closed { Some(HashMap::try_from(take(MAP_CLOSED_LISTENERS)?)?) } else { None };
        let listener_accepts = if accept_wait { Some(PerCpuHashMap::try_from(take(MAP_LISTENER_ACCEPTS)?)?) } else { None };
        let accept_wait = if accept_wait { Some(PerCpuHashMap::try_from(take(MAP_ACCEPT_WAIT)?)?) } else { None };
        let dropped = if closed.is_some() { Some(HashMap::try_from(take(MAP_DROPPED)?)?) } else { None };
        Ok(Self {
            ebpf,
            events,
            counters,
            suppressed,
            stats,
            listen_calls,
            closed,
            listen_starts,
            listen_starts_full: 0,
            accept_wait,
            listener_accepts,
            listeners_missing: HashSet::new(),
            dropped,
        })
    }

    /// The ring buffer's descriptor, to wait on. It stays open and the same
    /// for as long as `self` lives.
    pub fn events_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Detaches and unloads every program now.
    pub fn detach(mut self) {
        crate::kernel::probe::unload_all(&mut self.ebpf);
    }
}

impl KernelInputs for KernelMaps {
    fn drain_events(&mut self, each: &mut dyn FnMut(&[u8])) {
        while let Some(item) = self.events.next() {
            each(&item);
        }
    }

    fn counters(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
        sum_per_cpu(&self.counters).context("reading the counters map")
    }

    fn suppressed(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
        sum_per_cpu(&self.suppressed).context("reading the suppressed map")
    }

    fn losses(&mut self) -> Result<Losses> {
        let map = &self.stats;
        let get = |i: u32| -> Result<u64> { Ok(map.get(&i, 0).context("reading the stats map")?.iter().sum()) };
        Ok(Losses {
            ringbuf_full: get(stat::RINGBUF_FULL)?,
            counter_map_full: get(stat::COUNTER_MAP_FULL)?,
            read_failed: get(stat::READ_FAILED)?,
            entry_missing: get(stat::ENTRY_MISSING)?,
            undecodable: 0,
            suppressed: 0,
            suppressed_map_full: get(stat::SUPPRESSED_MAP_FULL)?,
            queued_map_full: get(stat::QUEUED_FULL)?,
            wait_map_full: get(stat::ACCEPT_WAIT_MAP_FULL)?,
            accept_unseen: get(stat::ACCEPT_UNSEEN)?,
            listener_accepts_lost: get(stat::LISTENER_ACCEPTS_FULL)?,
            outcomes_lost: get(stat::OUTCOME_LOST)?,
        })
    }

    fn take_dropped(&mut self, decided: &dyn Fn(&DropTrack) -> bool) -> Vec<(ConnKey, DropTrack)> {
        let Some(map) = &mut self.dropped else {
            return Vec::new();
        };
        let done: Vec<(ConnKey, DropTrack)> = map.iter().filter_map(Result::ok).filter(|(_, t)| decided(t)).collect();
        let mut taken = Vec::new();
        for (key, t) in done {
            // Looked up again just before: a drop since makes it open
            // again (a window of a syscall remains: the kernel has no
            // lookup-and-delete for hash maps before 5.14). One the kernel
            // decided meanwhile is its record's.
            if map.get(&key, 0).is_ok_and(|now| now.last_ns == t.last_ns) && map.remove(&key).is_ok() {
                taken.push((key, t));
            }
        }
        taken
    }

    fn take_closed(&mut self, live: &HashSet<(u32, u64)>) -> Vec<ClosedListener> {
        let Some(map) = &mut self.closed else {
            return Vec::new();
        };
        let entries: Vec<(u64, ClosedListener)> =
            map.iter().filter_map(Result::ok).filter(|(_, c)| c.cookie == 0 || !live.contains(&(c.netns, c.cookie))).collect();
        for (sk, _) in &entries {
            let _ = map.remove(sk);
        }
        entries.into_iter().map(|(_, c)| c).collect()
    }

    fn take_listen_calls(&mut self) -> Vec<(ListenKey, ListenCall)> {
        let Some(map) = &mut self.listen_calls else {
            return Vec::new();
        };
        let calls: Vec<(ListenKey, ListenCall)> = map.iter().filter_map(Result::ok).collect();
        for (key, _) in &calls {
            let _ = map.remove(key);
        }
        calls
    }

    fn take_listen_starts(&mut self) -> Option<Vec<(u32, ListenStart)>> {
        let map = self.listen_starts.as_mut()?;
        let starts: Vec<(u32, ListenStart)> = map.iter().filter_map(Result::ok).collect();
        for (netns, _) in &starts {
            // A start recorded again meanwhile is lost with it, but its
            // namespace is in `starts` already.
            let _ = map.remove(netns);
        }
        Some(starts)
    }

    fn listen_starts_overflowed(&mut self) -> bool {
        let full = self.stats.get(&stat::LISTEN_STARTS_FULL, 0).map_or(0, |v| v.iter().sum::<u64>());
        std::mem::replace(&mut self.listen_starts_full, full) != full
    }

    fn accept_waits(&mut self) -> Result<BTreeMap<WaitKey, u64>> {
        let Some(map) = &self.accept_wait else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for item in map.iter() {
            let (key, values) = item.context("reading the accept-wait map")?;
            let v = if key.slot == wait::MAX_NS { values.iter().copied().max().unwrap_or(0) } else { values.iter().sum() };
            out.insert(key, v);
        }
        Ok(out)
    }

    fn listener_accepts(&mut self, live: &[NsListeners]) -> Result<Vec<ListenerAccepts>> {
        let Some(map) = &mut self.listener_accepts else {
            return Ok(Vec::new());
        };
        let inodes: HashSet<(u32, u32)> = live.iter().flat_map(|ns| ns.listeners.iter().map(move |l| (ns.netns, l.inode))).collect();
        let mut out = Vec::new();
        let mut closed = Vec::new();
        for item in map.iter() {
            let (sk, per_cpu) = item.context("reading the listener accepts map")?;
            // Only the CPU that inserted the entry has its identity; the
            // others' slots start zeroed and only count.
            let mut total = per_cpu.iter().find(|v| v.netns != 0).copied().unwrap_or_default();
            total.accepts = per_cpu.iter().map(|v| v.accepts).sum();
            // A listener may be newer than the snapshot: only one missing
            // from two snapshots in a row is gone.
            if inodes.contains(&(total.netns, total.inode as u32)) {
                self.listeners_missing.remove(&sk);
            } else if !self.listeners_missing.insert(sk) {
                closed.push(sk);
            }
            out.push(total);
        }
        for sk in closed {
            self.listeners_missing.remove(&sk);
            let _ = map.remove(&sk);
        }
        Ok(out)
    }

    fn forget_ports(&mut self, ports: &[PortKey]) {
        let gone = |netns: u32, port: u16| ports.iter().any(|p| p.netns == netns && p.port == port);
        for map in [&mut self.counters, &mut self.suppressed] {
            let keys: Vec<CounterKey> = map.keys().filter_map(Result::ok).filter(|k| gone(k.netns, k.port)).collect();
            for k in keys {
                // Already gone is fine: never fail a poll on it.
                let _ = map.remove(&k);
            }
        }
        if let Some(map) = &mut self.accept_wait {
            let keys: Vec<WaitKey> = map.keys().filter_map(Result::ok).filter(|k| gone(k.netns, k.port)).collect();
            for k in keys {
                let _ = map.remove(&k);
            }
        }
    }
}

/// Each key's values summed over the CPUs.
fn sum_per_cpu(map: &PerCpuHashMap<MapData, CounterKey, u64>) -> Result<BTreeMap<CounterKey, u64>> {
    let mut out = BTreeMap::new();
    for item in map.iter() {
        // Only expiry deletes keys, between polls: any error here is a
        // real map failure.
        let (key, values) = item?;
        out.insert(key, values.iter().sum());
    }
    Ok(out)
}
