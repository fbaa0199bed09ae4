//! A running trace: the attached programs, the maps they fill, every
//! watched namespace's listeners and the aggregation of it all. `watch`
//! and `doctor` each drive one; neither formats anything here.

use std::time::{Duration, Instant};

use anyhow::Result;
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use qtrace_common::{ClosedListener, CounterKey, ListenCall, ListenKey};

use crate::host::netns::{Namespaces, NsListeners};
use crate::host::sock_diag::Listener;
use crate::kernel::maps;
use crate::kernel::probe::{Filter, HookChoice, Maps, Probe, Tier};
use crate::model::aggregate::{Aggregator, CountedDelta, PortKey, PortStats};
use crate::model::backlog::{Requested, RequestedBacklogs};
use crate::model::event::{self, Decoded};
use crate::model::ports::PortSet;

/// A `listen(2)` qtrace saw, matched to its listener.
#[derive(Debug, Clone)]
pub struct ListenSeen {
    pub netns: u32,
    pub listener: Listener,
    pub requested: Requested,
}

/// What one poll found new.
#[derive(Debug, Default)]
pub struct PollReport {
    /// Events the ring buffer had no room for since the last poll.
    pub lost: u64,
    /// Drops counted from listeners' drop counters since the last poll.
    pub counted: Vec<CountedDelta>,
    /// `listen(2)` calls matched since the last poll.
    pub listens: Vec<ListenSeen>,
    /// Ports forgotten because their listeners are gone, with final totals.
    pub expired: Vec<(PortKey, PortStats)>,
}

pub struct Tracer {
    pub probe: Probe,
    pub agg: Aggregator,
    pub namespaces: Namespaces,
    pub backlogs: RequestedBacklogs,
    /// Listeners as of the latest poll.
    pub listeners: Vec<NsListeners>,
    /// Forget ports whose listeners have been gone this long (`None`: keep
    /// every port that dropped until the end).
    pub expire_after: Option<Duration>,
    ports: PortSet,
    counters: PerCpuHashMap<MapData, CounterKey, u64>,
    stats: PerCpuArray<MapData, u64>,
    listen_calls: Option<HashMap<MapData, ListenKey, ListenCall>>,
    closed: Option<HashMap<MapData, u64, ClosedListener>>,
    boot_offset: i128,
    undecodable: u64,
    last_poll: Instant,
}

impl Tracer {
    /// Takes a baseline of every listener, then attaches. Returns the ring
    /// buffer separately: callers wait on it their own way.
    pub fn start(choice: HookChoice, filter: &Filter, mut namespaces: Namespaces) -> Result<(Self, RingBuf<MapData>)> {
        let mut agg = Aggregator::new(filter.netns, filter.ports.clone());
        // Baseline of every listener's drop counter before the hooks go in.
        let listeners = namespaces.listeners();
        agg.on_listeners(&listeners);
        let mut probe = Probe::attach(choice, filter)?;
        let Maps { events, counters, stats, listen_calls, closed } = probe.take_maps()?;
        agg.set_derive_counted(probe.tier == Tier::Tracepoint);
        let tracer = Self {
            probe,
            agg,
            namespaces,
            backlogs: RequestedBacklogs::default(),
            listeners,
            expire_after: None,
            ports: filter.ports.clone(),
            counters,
            stats,
            listen_calls,
            closed,
            boot_offset: event::boot_offset_ns(),
            undecodable: 0,
            last_poll: Instant::now(),
        };
        Ok((tracer, events))
    }

    /// What the attached tier cannot see on this kernel, one sentence each.
    pub fn limits(&self) -> Vec<String> {
        let p = &self.probe;
        let mut out: Vec<String> = p.refused.iter().map(|(tier, why)| format!("{tier} tier unavailable: {why}")).collect();
        if p.tier == Tier::Tracepoint {
            out.push("SYN-stage drops and syncookie-ACK overflows have no hook on the tracepoint tier: they are counted from each listener's drop counter (kind listener_drop_counted), without per-connection detail".into());
            if let Some(why) = &p.ack_detail_missing {
                out.push(format!("{why}: ACK-stage overflows are counted from the listeners too"));
            }
            if p.counted_is_upper_bound {
                out.push("on this kernel a listener's drop counter also moves for request packets that are not listen drops (each overflowing final ACK a second time, TCP_DEFER_ACCEPT's bare ACKs): counted drops are an upper bound".into());
            }
        }
        if let Some(why) = &p.closed_missing {
            out.push(format!(
                "listeners' final drop counters are not recorded as they close ({why}): drops in a listener's last second may be missing"
            ));
        }
        if let Some(why) = &p.listen_calls_missing {
            out.push(format!("requested backlogs are not recorded ({why}): a clamp by somaxconn can only be inferred"));
        }
        out
    }

    /// Decodes and aggregates every record waiting in `ring`, handing each
    /// to `each` as well.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, mut each: impl FnMut(&Decoded)) {
        while let Some(item) = ring.next() {
            match Decoded::decode(&item, self.boot_offset) {
                Ok(ev) => {
                    self.agg.on_event(&ev);
                    each(&ev);
                }
                Err(_) => self.undecodable += 1,
            }
        }
    }

    /// Reads the kernel's counters, the listeners and the `listen(2)` calls;
    /// reports what is new.
    pub fn poll(&mut self) -> Result<PollReport> {
        // Listeners first, counters second: every drop a listener's counter
        // already shows is then in the per-kind counters too, so drops still
        // in flight between the two reads are never taken for drops no hook
        // saw (they would be counted twice under a steady storm).
        self.namespaces.refresh();
        self.listeners = self.namespaces.listeners();
        // After the snapshot: every listener it misses has its final
        // counter recorded already (the tracepoint fires before unhash).
        let closed = self.take_closed();
        self.agg.on_closed(&closed);
        self.agg.on_counters(maps::counters(&self.counters)?);
        let before = self.agg.losses.ringbuf_full;
        self.agg.losses = maps::losses(&self.stats, self.undecodable)?;
        let lost = self.agg.losses.ringbuf_full - before;
        let counted = self.agg.on_listeners(&self.listeners);
        let elapsed = self.last_poll.elapsed().as_secs_f64();
        self.last_poll = Instant::now();
        self.agg.tick(elapsed);
        self.agg.forget_idle();
        let expired = match self.expire_after {
            Some(after) => self.agg.expire(after.as_secs_f64()),
            None => Vec::new(),
        };
        if !expired.is_empty() {
            self.forget_counters(&expired);
        }
        let mut listens = Vec::new();
        if let Some(map) = &mut self.listen_calls {
            for ino in self.backlogs.collect(map) {
                let found =
                    self.listeners.iter().find_map(|ns| ns.listeners.iter().find(|l| u64::from(l.inode) == ino).map(|l| (ns.netns, l)));
                if let (Some((netns, l)), Some(req)) = (found, self.backlogs.get(ino)) {
                    if !self.ports.contains(l.port) {
                        continue;
                    }
                    listens.push(ListenSeen { netns, listener: l.clone(), requested: req.clone() });
                }
            }
            let live = self.listeners.iter().flat_map(|ns| ns.listeners.iter().map(|l| u64::from(l.inode))).collect();
            self.backlogs.retain(&live);
        }
        Ok(PollReport { lost, counted, listens, expired })
    }

    /// Takes the recorded final counters of listeners the latest snapshot
    /// no longer has. Those it still has (closed since) wait for the next.
    fn take_closed(&mut self) -> Vec<ClosedListener> {
        let Some(map) = &mut self.closed else {
            return Vec::new();
        };
        let live: std::collections::HashSet<(u32, u64)> =
            self.listeners.iter().flat_map(|ns| ns.listeners.iter().map(move |l| (ns.netns, l.cookie))).collect();
        let entries: Vec<(u64, ClosedListener)> =
            map.iter().filter_map(Result::ok).filter(|(_, c)| c.cookie == 0 || !live.contains(&(c.netns, c.cookie))).collect();
        for (sk, _) in &entries {
            let _ = map.remove(sk);
        }
        entries.into_iter().map(|(_, c)| c).collect()
    }

    /// Deletes the in-kernel counters of expired ports: otherwise the next
    /// poll brings them back, and the map (`COUNTERS_MAX` entries) fills up
    /// over a long run. A listener reopened on the port later counts from 0.
    fn forget_counters(&mut self, expired: &[(PortKey, PortStats)]) {
        let keys: Vec<CounterKey> = self
            .counters
            .keys()
            .filter_map(Result::ok)
            .filter(|k| expired.iter().any(|(e, _)| e.netns == k.netns && e.port == k.port))
            .collect();
        for k in keys {
            // Already gone is fine: nothing else deletes, but never fail a poll on it.
            let _ = self.counters.remove(&k);
        }
    }

    /// Detaches and unloads the programs.
    pub fn detach(self) -> (Aggregator, Namespaces, RequestedBacklogs) {
        self.probe.detach();
        (self.agg, self.namespaces, self.backlogs)
    }
}
