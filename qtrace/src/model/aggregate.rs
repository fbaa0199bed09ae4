//! Per-port aggregation: a pure function of decoded events, the kernel's
//! counter snapshots and listener snapshots. No I/O and no clock reads here.
//!
//! Truth comes from the kernel: per-(netns, port, kind) totals are the
//! in-kernel counters (exact even when the ring buffer overflowed); events
//! only add detail (distinct connections, last event). Drops no hook saw one
//! by one are derived from the listeners' own drop counters:
//!
//! `counted = Σ listener drop-counter deltas − Σ kind weight × kind count`
//!
//! with the weights of [`Kind::listener_drop_weight`]. The two snapshots are
//! taken moments apart while the kernel keeps counting, so a single sample
//! may briefly see a drop in one and not yet in the other. `counted` only
//! ever grows by the smaller of the last two derived values: a momentary
//! excess is never reported, and a quiet listener converges exactly.

use crate::model::outcome::{Outcome, Outcomes};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use qtrace_common::{ClosedListener, CounterKey, ListenerAccepts, WaitKey};

use crate::host::identity::Identity;
use crate::host::netns::NsListeners;
use crate::model::accept_wait::AcceptWait;
use crate::model::counts::Counts;
use crate::model::event::{Decoded, Kind};
use crate::model::listener_flow::ListenerFlow;
use crate::model::ports::PortSet;

/// Distinct connections remembered per port; beyond this the count is a
/// lower bound (shown with `+`), so memory stays bounded under a storm.
pub(crate) const CONNECTIONS_CAP: usize = 65_536;
/// Distinct connections remembered over all ports (about 20 MiB): a long
/// run with many overflowing ports stays bounded too.
pub(crate) const CONNECTIONS_TOTAL_CAP: usize = 262_144;

/// Closed listeners listed per port, with their final flow.
const CLOSED_LISTENERS_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub netns: u32,
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct PortStats {
    /// Per kind, indexed by [`Kind::index`]: kernel counters, plus the
    /// derived counted drops in the `ListenerDropCounted` slot.
    pub kinds: Counts,
    /// Drop-counter deltas of this port's listeners since qtrace started.
    pub listener_drops: u64,
    /// Events received through the ring buffer.
    pub events: u64,
    /// Per kind: events over the port's budget, counted in `kinds` but not
    /// sent (the kernel's `SUPPRESSED` map).
    pub suppressed: Counts,
    connections: HashSet<(SocketAddr, SocketAddr)>,
    pub connections_capped: bool,
    pub last: Option<Decoded>,
    /// Accept queue now and its bound, from the latest listener snapshot.
    pub accept_queue: Option<(u32, u32)>,
    /// Whether a listener exists on this port now.
    pub listening: bool,
    /// Drops per second over the last interval.
    pub rate: f64,
    prev_total: u64,
    derived_prev: u64,
    /// Deltas of listeners that closed, kept so totals do not shrink.
    closed_drops: u64,
    /// Seconds since a listener was last seen on this port (0 while one is).
    pub gone_for: f64,
    /// The distinct owners of the port's listeners; once they are gone,
    /// the last ones known.
    pub owners: Vec<Arc<Identity>>,
    /// How long accepted connections waited in the accept queue.
    pub accept_wait: AcceptWait,
    /// The port's listener sockets by cookie: those open now, and the
    /// latest that closed.
    pub listeners: BTreeMap<u64, ListenerFlow>,
    /// Arrivals and accepts of its listeners that closed and are no longer
    /// listed.
    closed_flow: (u64, u64),
    /// Whether accepts are traced: without, arrivals and accepts are
    /// unknown, not zero.
    pub accepts_traced: bool,
    /// The most arrivals reported so far (a counter never goes back).
    arrivals_seen: u64,
    /// What became of its connections that had drops.
    pub outcomes: Outcomes,
}

impl PortStats {
    /// What the tables call the port's owner: the most specific name its
    /// listeners' owners share ([`Identity::name`]), `-` when none is known.
    pub fn owner_name(&self) -> String {
        Identity::common(self.owners.iter().map(|o| &**o)).map_or_else(|| "-".into(), |o| o.name())
    }

    /// Packets lost to clients: every kind but cookies, counted drops included.
    pub fn drops(&self) -> u64 {
        self.kinds.drops()
    }
    pub fn count(&self, k: Kind) -> u64 {
        self.kinds[k]
    }
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
    /// Handshakes completed on the port since qtrace started: accepted,
    /// still queued, or reset in the queue by their listener's close.
    pub fn arrivals(&self) -> u64 {
        let flows: u64 = self.listeners.values().map(|l| if l.open { l.arrivals() } else { l.arrivals_accepted() }).sum();
        (self.closed_flow.0 + flows + self.accept_wait.listener_closed).max(self.arrivals_seen)
    }
    /// Connections `accept()` returned on the port since qtrace started.
    pub fn accepts(&self) -> u64 {
        self.closed_flow.1 + self.listeners.values().map(|l| l.accepts).sum::<u64>()
    }
    /// Arrivals and accepts per second over the last interval.
    pub fn flow_rates(&self) -> (f64, f64) {
        self.listeners.values().filter(|l| l.open).fold((0.0, 0.0), |(a, b), l| (a + l.arrival_rate, b + l.accept_rate))
    }
    fn hooked_weight(&self) -> u64 {
        self.kinds.iter().filter(|(k, _)| *k != Kind::ListenerDropCounted).map(|(k, n)| k.listener_drop_weight() * n).sum()
    }
}

#[derive(Debug, Clone)]
struct Track {
    port: u16,
    baseline: u32,
    last: u32,
}

/// Drops known only from listener counters, newly reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedDelta {
    pub key: PortKey,
    pub count: u64,
    pub total: u64,
}

/// Ring-buffer and map troubles, from the kernel's stats map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Losses {
    /// Events counted but not delivered (ring buffer full).
    pub ringbuf_full: u64,
    /// Events delivered but not counted (counters map full).
    pub counter_map_full: u64,
    /// Overflows whose listener could not be read.
    pub read_failed: u64,
    /// Exits without a matching entry record.
    pub entry_missing: u64,
    /// Ring-buffer records that did not decode.
    pub undecodable: u64,
    /// Events over their port's budget, counted but not sent on purpose
    /// (every port, expired ones included).
    pub suppressed: u64,
    /// Events over budget not tallied in `suppressed` (its map was full);
    /// they are in the totals.
    pub suppressed_map_full: u64,
    /// Connections whose accept-queue wait is not measured: the map of
    /// queued connections was full when they arrived.
    pub queued_map_full: u64,
    /// Accept-queue waits not in the histograms (their map was full).
    pub wait_map_full: u64,
    /// Queued connections accepted through a path qtrace does not trace
    /// (io_uring, in-kernel accepts): their waits are not measured.
    pub accept_unseen: u64,
    /// Accepts not attributed to their listener (its map was full, or too
    /// many threads were in `accept()` at once): in the port's waits, not
    /// in its listeners' accepts.
    pub listener_accepts_lost: u64,
    /// Outcomes the kernel decided (recovered, reset) that the ring buffer
    /// had no room for, and drops not followed (see `stat::OUTCOME_LOST`).
    pub outcomes_lost: u64,
}

#[derive(Debug, Default)]
pub struct Aggregator {
    ports: BTreeMap<PortKey, PortStats>,
    tracks: HashMap<(u32, u64), Track>,
    seen_first_snapshot: bool,
    filter_ports: PortSet,
    filter_netns: Option<u32>,
    /// Whether drops are derived from listener counters (only where hooks
    /// miss some `tcp_listendrop()` paths: the tracepoint tier; each such path
    /// moves the listener's `sk_drops`, since 9caad864151e, 4.7).
    derive_counted: bool,
    pub losses: Losses,
    /// Ports forgotten by [`Aggregator::expire`], and their drops.
    pub expired: Expired,
    /// Final drop counters of tracked listeners that closed, by (netns,
    /// cookie), for the next [`Aggregator::on_listeners`].
    finals: HashMap<(u32, u64), u32>,
    /// Distinct connections remembered over all ports.
    connections_total: usize,
    /// The kernel's accepts per listener, by (netns, socket inode).
    listener_accepts: HashMap<(u32, u32), u64>,
    accepts_traced: bool,
}

/// What expiry took out of the aggregation, so totals stay accountable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub ports: u64,
    pub drops: u64,
    pub suppressed: u64,
}

impl Aggregator {
    pub fn new(filter_netns: Option<u32>, filter_ports: PortSet) -> Self {
        Self { filter_netns, filter_ports, derive_counted: true, ..Self::default() }
    }

    /// Whether accepts are traced (see [`PortStats::accepts_traced`]).
    pub fn set_accepts_traced(&mut self, on: bool) {
        self.accepts_traced = on;
    }

    /// On tiers that hook every `tcp_listendrop()` caller, whatever else
    /// moves a listener's drop counter is not a listen drop: derive nothing.
    pub fn set_derive_counted(&mut self, on: bool) {
        self.derive_counted = on;
    }

    pub(crate) fn watched(&self, netns: u32, port: u16) -> bool {
        self.filter_netns.is_none_or(|n| n == netns) && self.filter_ports.contains(port)
    }

    pub fn ports(&self) -> &BTreeMap<PortKey, PortStats> {
        &self.ports
    }

    /// Adds one event's detail (its count comes from the kernel counters).
    pub fn on_event(&mut self, ev: &Decoded) {
        let st = self.ports.entry(PortKey { netns: ev.netns, port: ev.local.port() }).or_default();
        st.events += 1;
        let pair = (ev.local, ev.remote);
        if st.connections.len() < CONNECTIONS_CAP && self.connections_total < CONNECTIONS_TOTAL_CAP {
            if st.connections.insert(pair) {
                self.connections_total += 1;
            }
        } else if !st.connections.contains(&pair) {
            st.connections_capped = true;
        }
        st.last = Some(ev.clone());
    }

    /// Replaces the per-kind totals with the kernel's counters; returns the
    /// namespaces where they moved.
    pub fn on_counters<I: IntoIterator<Item = (CounterKey, u64)>>(&mut self, counters: I) -> BTreeSet<u32> {
        let mut moved = BTreeSet::new();
        for (key, value) in counters {
            let Some(kind) = Kind::from_id(key.kind) else {
                continue;
            };
            let st = self.ports.entry(PortKey { netns: key.netns, port: key.port }).or_default();
            if st.kinds[kind] != value {
                moved.insert(key.netns);
            }
            st.kinds[kind] = value;
        }
        moved
    }

    /// Replaces the per-kind suppressed tallies with the kernel's.
    pub fn on_suppressed<I: IntoIterator<Item = (CounterKey, u64)>>(&mut self, tallies: I) {
        for (key, value) in tallies {
            let Some(kind) = Kind::from_id(key.kind) else {
                continue;
            };
            self.ports.entry(PortKey { netns: key.netns, port: key.port }).or_default().suppressed[kind] = value;
        }
    }

    /// Replaces each port's accept-queue waits with the kernel's totals.
    pub fn on_accept_waits<I: IntoIterator<Item = (WaitKey, u64)>>(&mut self, slots: I) {
        for (key, value) in slots {
            if self.watched(key.netns, key.port) {
                let st = self.ports.entry(PortKey { netns: key.netns, port: key.port }).or_default();
                st.accepts_traced = self.accepts_traced;
                st.accept_wait.set(key.slot, value);
            }
        }
    }

    /// Counts an outcome not written (over its port's budget).
    pub fn on_outcome_suppressed(&mut self, o: &Outcome) {
        if let Some(st) = self.ports.get_mut(&PortKey { netns: o.netns, port: o.local_port }) {
            st.outcomes.suppressed += 1;
        }
    }

    /// Counts decided outcomes in their ports. A port its drops did not
    /// make (one expired since) is not made again.
    pub fn on_outcomes(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            if let Some(st) = self.ports.get_mut(&PortKey { netns: o.netns, port: o.local_port }) {
                st.outcomes.add(o);
            }
        }
    }

    /// Takes the kernel's accepts per listener (all of them: those of a
    /// listener that closed come once more after it left the snapshot).
    pub fn on_listener_accepts(&mut self, entries: &[ListenerAccepts]) {
        self.listener_accepts = entries.iter().map(|e| ((e.netns, e.inode as u32), e.accepts)).collect();
    }

    /// Names each listener's owner (`owner_of` by socket inode).
    pub fn name_listeners(&mut self, owner_of: impl Fn(u32) -> Option<Arc<Identity>>) {
        for st in self.ports.values_mut() {
            // A closed listener keeps the owner it had.
            for l in st.listeners.values_mut().filter(|l| l.open) {
                if let Some(o) = owner_of(l.inode) {
                    l.owner = Some(o);
                }
            }
        }
    }

    /// Updates the flow of each listener in the snapshot, and folds those
    /// that closed into their port's totals.
    fn update_flows(&mut self, snapshot: &[NsListeners], first: bool) {
        let mut live: HashSet<(u32, u64)> = HashSet::new();
        for ns in snapshot {
            for l in ns.listeners.iter().filter(|l| self.filter_netns.is_none_or(|n| n == ns.netns) && self.filter_ports.contains(l.port)) {
                live.insert((ns.netns, l.cookie));
                let st = self.ports.entry(PortKey { netns: ns.netns, port: l.port }).or_default();
                st.accepts_traced = self.accepts_traced;
                let f = st
                    .listeners
                    .entry(l.cookie)
                    .or_insert_with(|| ListenerFlow::new(l.cookie, l.inode, l.accept_queue, l.accept_queue_max, !first));
                (f.queue, f.queue_max) = (l.accept_queue, l.accept_queue_max);
                if let Some(t) = self.tracks.get(&(ns.netns, l.cookie)) {
                    f.drops = u64::from(t.last.wrapping_sub(t.baseline));
                }
            }
        }
        for (key, st) in &mut self.ports {
            for (cookie, f) in &mut st.listeners {
                f.open &= live.contains(&(key.netns, *cookie));
                // A closed listener's last accepts come in while its entry
                // lasts; the map's values only grow.
                if let Some(a) = self.listener_accepts.get(&(key.netns, f.inode)) {
                    f.accepts = f.accepts.max(*a);
                }
                f.settle();
            }
            // The latest closed listeners stay listed; older ones (cookies
            // grow) only in the port's totals.
            let closed: Vec<u64> = st.listeners.iter().filter(|(_, f)| !f.open).map(|(c, _)| *c).collect();
            for cookie in closed.iter().take(closed.len().saturating_sub(CLOSED_LISTENERS_KEPT)) {
                let f = st.listeners.remove(cookie).expect("listed above");
                st.closed_flow.0 += f.arrivals_accepted();
                st.closed_flow.1 += f.accepts;
            }
            st.arrivals_seen = st.arrivals();
        }
    }

    /// Events suppressed over the whole run.
    pub fn suppressed(&self) -> u64 {
        self.expired.suppressed + self.ports.values().map(|st| st.suppressed.total()).sum::<u64>()
    }

    /// Takes the final drop counters of listeners that closed (recorded in
    /// the kernel as they closed; see `listener_close` in qtrace-ebpf). A
    /// tracked listener's final value replaces the last one a snapshot
    /// read; a listener no snapshot ever saw was born while qtrace watched,
    /// so all its drops are new.
    pub fn on_closed(&mut self, closed: &[ClosedListener]) {
        for c in closed {
            if !self.watched(c.netns, c.port) {
                continue;
            }
            if c.cookie != 0 && self.tracks.contains_key(&(c.netns, c.cookie)) {
                self.finals.insert((c.netns, c.cookie), c.drops);
            } else {
                self.ports.entry(PortKey { netns: c.netns, port: c.port }).or_default().closed_drops += u64::from(c.drops);
            }
        }
    }

    /// Takes a listener snapshot: queue state, drop-counter deltas, and the
    /// drops no hook saw individually. The first snapshot is the baseline.
    pub fn on_listeners(&mut self, snapshot: &[NsListeners]) -> Vec<CountedDelta> {
        let first = !self.seen_first_snapshot;
        self.seen_first_snapshot = true;
        let mut live: HashSet<(u32, u64)> = HashSet::new();
        let mut queues: HashMap<PortKey, (u32, u32)> = HashMap::new();
        for ns in snapshot {
            for l in &ns.listeners {
                if !self.watched(ns.netns, l.port) {
                    continue;
                }
                let id = (ns.netns, l.cookie);
                live.insert(id);
                let drops = l.drops.unwrap_or(0);
                // Listeners already there at start count from their current
                // value; later ones were born while qtrace watched.
                let track = self.tracks.entry(id).or_insert(Track { port: l.port, baseline: if first { drops } else { 0 }, last: drops });
                track.last = drops;
                let q = queues.entry(PortKey { netns: ns.netns, port: l.port }).or_insert((0, 0));
                q.0 += l.accept_queue;
                q.1 += l.accept_queue_max;
            }
        }
        self.close_tracks(&live);
        self.update_flows(snapshot, first);
        let mut per_port: HashMap<PortKey, u64> = HashMap::new();
        for ((netns, _), t) in &self.tracks {
            *per_port.entry(PortKey { netns: *netns, port: t.port }).or_default() += u64::from(t.last.wrapping_sub(t.baseline));
        }
        for (key, q) in &queues {
            self.ports.entry(*key).or_default().accept_queue = Some(*q);
        }
        let mut out = Vec::new();
        for (key, st) in &mut self.ports {
            st.listening = queues.contains_key(key);
            if !st.listening {
                st.accept_queue = None;
            }
            st.listener_drops = st.closed_drops + per_port.get(key).copied().unwrap_or(0);
            let derived = st.listener_drops.saturating_sub(st.hooked_weight());
            let settled = derived.min(st.derived_prev);
            st.derived_prev = derived;
            let slot = &mut st.kinds[Kind::ListenerDropCounted];
            if self.derive_counted && settled > *slot {
                out.push(CountedDelta { key: *key, count: settled - *slot, total: settled });
                *slot = settled;
            }
        }
        out
    }

    /// Folds the drop counters of tracked listeners missing from `live`
    /// (closed) into their port, with their final value where the kernel
    /// recorded one.
    fn close_tracks(&mut self, live: &HashSet<(u32, u64)>) {
        let closed: Vec<(u32, u64)> = self.tracks.keys().filter(|id| !live.contains(id)).copied().collect();
        for id in closed {
            if let Some(t) = self.tracks.remove(&id) {
                let last = self.finals.remove(&id).unwrap_or(t.last);
                let st = self.ports.entry(PortKey { netns: id.0, port: t.port }).or_default();
                st.closed_drops += u64::from(last.wrapping_sub(t.baseline));
                if let Some(f) = st.listeners.get_mut(&id.1) {
                    f.drops = u64::from(last.wrapping_sub(t.baseline));
                }
            }
        }
        // Only closed listeners have finals; anything left is stale.
        self.finals.clear();
    }

    /// Takes the owners of each port's listeners now; ports without
    /// listeners keep the last ones known (their records still name them).
    pub fn on_owners(&mut self, by_port: BTreeMap<PortKey, Vec<Arc<Identity>>>) {
        for (key, owners) in by_port {
            if let Some(st) = self.ports.get_mut(&key) {
                st.owners = owners;
            }
        }
    }

    /// Updates per-port rates and how long each port has had no listener,
    /// after `seconds` of wall time.
    pub fn tick(&mut self, seconds: f64) {
        for st in self.ports.values_mut() {
            let total = st.drops();
            st.rate = if seconds > 0.0 { total.saturating_sub(st.prev_total) as f64 / seconds } else { 0.0 };
            st.prev_total = total;
            st.listeners.values_mut().for_each(|l| l.tick(seconds));
            st.gone_for = if st.listening { 0.0 } else { st.gone_for + seconds };
        }
    }

    /// Sets each port's rate to its drops over `seconds` (for a summary).
    pub fn average_rates(&mut self, seconds: f64) {
        for st in self.ports.values_mut() {
            st.rate = if seconds > 0.0 { st.drops() as f64 / seconds } else { 0.0 };
        }
    }

    /// Takes out ports that have had no listener for `after` seconds and
    /// returns them (with their final totals), so a long run's memory and
    /// metric series follow the listeners that exist, not every port that
    /// ever dropped. The caller also deletes their kernel counters, which
    /// would otherwise bring them back at the next poll.
    pub fn expire(&mut self, after: f64) -> Vec<(PortKey, PortStats)> {
        let gone: Vec<PortKey> = self.ports.iter().filter(|(_, st)| !st.listening && st.gone_for >= after).map(|(k, _)| *k).collect();
        let out: Vec<(PortKey, PortStats)> = gone.into_iter().filter_map(|k| self.ports.remove(&k).map(|st| (k, st))).collect();
        for (_, st) in &out {
            self.connections_total -= st.connections.len();
            self.expired.ports += 1;
            self.expired.drops += st.drops();
            self.expired.suppressed += st.suppressed.total();
        }
        out
    }

    /// Forgets ports with no listener and no drops (keeps memory bounded
    /// under listener churn; ports with drops stay for the summary).
    pub fn forget_idle(&mut self) {
        // A listener-counter delta not yet settled into counted drops keeps
        // its port too.
        let total = &mut self.connections_total;
        self.ports.retain(|_, st| {
            let keep = st.listening || st.kinds.is_active() || st.listener_drops > 0 || st.accept_wait.is_active() || st.closed_flow.0 > 0;
            if !keep {
                *total -= st.connections.len();
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock_diag::Listener;

    fn listener(port: u16, cookie: u64, drops: u32, q: (u32, u32)) -> Listener {
        Listener { cookie, ..Listener::example(port, q, drops) }
    }

    fn snap(netns: u32, ls: Vec<Listener>) -> Vec<NsListeners> {
        vec![NsListeners { netns, listeners: ls }]
    }

    fn key(kind: u8) -> CounterKey {
        CounterKey { netns: 7, port: 8080, kind, _pad: 0 }
    }

    fn event(kind: Kind, remote_port: u16) -> Decoded {
        Decoded::example(kind, 7, "127.0.0.1:8080", &format!("127.0.0.1:{remote_port}"))
    }

    #[test]
    fn syn_stage_drops_are_derived_from_the_listener_counter() {
        let mut agg = Aggregator::new(None, PortSet::default());
        // Baseline: 5 drops happened before qtrace started.
        assert!(agg.on_listeners(&snap(7, vec![listener(8080, 1, 5, (0, 2))])).is_empty());
        // 12 new listener drops: 3 ACK overflows (each moves the counter
        // twice) and 6 SYN-stage drops no hook saw.
        agg.on_counters([(key(qtrace_common::kind::ACK_OVERFLOW), 3)]);
        // First sample is held back until a second one agrees.
        assert!(agg.on_listeners(&snap(7, vec![listener(8080, 1, 17, (3, 2))])).is_empty());
        let deltas = agg.on_listeners(&snap(7, vec![listener(8080, 1, 17, (3, 2))]));
        let k = PortKey { netns: 7, port: 8080 };
        assert_eq!(deltas, vec![CountedDelta { key: k, count: 6, total: 6 }]);
        let st = &agg.ports()[&k];
        assert_eq!(st.drops(), 9, "3 ACK overflows + 6 counted = what ListenDrops would show");
        assert_eq!(st.accept_queue, Some((3, 2)));
        // Nothing new: nothing emitted.
        assert!(agg.on_listeners(&snap(7, vec![listener(8080, 1, 17, (3, 2))])).is_empty());
    }

    #[test]
    fn a_transient_excess_is_never_reported() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 0, (0, 2))]));
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 0, (0, 2))]));
        // The listener counter moved twice for an ACK overflow whose event
        // counter is not yet visible: derived says 2 for one sample.
        assert!(agg.on_listeners(&snap(7, vec![listener(8080, 1, 2, (3, 2))])).is_empty());
        agg.on_counters([(key(qtrace_common::kind::ACK_OVERFLOW), 1)]);
        assert!(agg.on_listeners(&snap(7, vec![listener(8080, 1, 2, (3, 2))])).is_empty());
        assert_eq!(agg.ports()[&PortKey { netns: 7, port: 8080 }].drops(), 1);
    }

    #[test]
    fn discards_are_taken_out_and_hooked_tiers_derive_nothing() {
        for derive in [true, false] {
            let mut agg = Aggregator::new(None, PortSet::default());
            agg.set_derive_counted(derive);
            agg.on_listeners(&snap(7, vec![listener(8080, 1, 0, (0, 64))]));
            // 10 deferred bare ACKs and 4 SYN-stage drops moved the counter.
            agg.on_counters([(key(qtrace_common::kind::LISTENER_DISCARD), 10)]);
            agg.on_listeners(&snap(7, vec![listener(8080, 1, 14, (0, 64))]));
            agg.on_listeners(&snap(7, vec![listener(8080, 1, 14, (0, 64))]));
            let st = &agg.ports()[&PortKey { netns: 7, port: 8080 }];
            assert_eq!(st.drops(), if derive { 4 } else { 0 });
            assert_eq!(st.count(Kind::ListenerDiscard), 10);
        }
    }

    #[test]
    fn closed_listeners_keep_their_drops_and_new_ones_count_from_zero() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 10, (0, 2))]));
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 14, (0, 2))]));
        // Listener 1 closed, listener 2 opened on the same port with 3 drops.
        agg.on_listeners(&snap(7, vec![listener(8080, 2, 3, (0, 2))]));
        let d = agg.on_listeners(&snap(7, vec![listener(8080, 2, 3, (0, 2))]));
        assert_eq!(d.last().map(|d| d.total), Some(7));
    }

    #[test]
    fn final_counters_of_closed_listeners_complete_the_totals() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 10, (0, 2))]));
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 14, (0, 2))]));
        // It dropped 3 more before it closed, after the last snapshot; and a
        // listener no snapshot saw (cookie 0) opened, dropped 5 and closed.
        let closed = |cookie, drops| ClosedListener { cookie, netns: 7, drops, port: 8080, _pad: [0; 6] };
        agg.on_closed(&[closed(1, 17), closed(0, 5)]);
        agg.on_listeners(&snap(7, vec![]));
        let d = agg.on_listeners(&snap(7, vec![]));
        assert_eq!(d.last().map(|d| d.total), Some(7 + 5), "14 - 10 + 3, and 5");
        // A later snapshot without finals keeps the total.
        assert!(agg.on_listeners(&snap(7, vec![])).is_empty());
    }

    #[test]
    fn remembered_connections_are_bounded_over_all_ports_and_freed_on_expiry() {
        let mut agg = Aggregator::new(None, PortSet::default());
        let per_port = CONNECTIONS_TOTAL_CAP / 4 + 10;
        for port in 1..=5u16 {
            for i in 0..per_port {
                let mut ev = event(Kind::AckOverflow, 1);
                ev.local = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
                ev.remote = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(), 1);
                agg.on_event(&ev);
            }
        }
        assert_eq!(agg.connections_total, CONNECTIONS_TOTAL_CAP);
        assert_eq!(agg.ports().values().map(PortStats::connections).sum::<usize>(), CONNECTIONS_TOTAL_CAP);
        assert!(agg.ports().values().last().unwrap().connections_capped, "the port that found no room says so");
        // No listener anywhere: after expiry the room is free again.
        agg.on_counters((1..=5u16).map(|port| (CounterKey { netns: 7, port, kind: qtrace_common::kind::ACK_OVERFLOW, _pad: 0 }, 1)));
        agg.on_listeners(&snap(7, vec![]));
        agg.tick(1.0);
        assert_eq!(agg.expire(1.0).len(), 5);
        assert_eq!(agg.connections_total, 0);
    }

    #[test]
    fn filters_apply_to_listeners() {
        let mut agg = Aggregator::new(Some(7), PortSet::new(vec!["8080".parse().unwrap()]));
        let mut s = snap(7, vec![listener(8080, 1, 0, (0, 2)), listener(9090, 2, 0, (0, 2))]);
        s.extend(snap(8, vec![listener(8080, 3, 0, (0, 2))]));
        agg.on_listeners(&s);
        assert_eq!(agg.ports().keys().copied().collect::<Vec<_>>(), vec![PortKey { netns: 7, port: 8080 }]);
    }

    #[test]
    fn events_add_distinct_connections_and_rates_follow_counters() {
        let mut agg = Aggregator::new(None, PortSet::default());
        for p in [1000, 1000, 1001, 1000, 1002] {
            agg.on_event(&event(Kind::AckOverflow, p));
        }
        agg.on_counters([(key(qtrace_common::kind::ACK_OVERFLOW), 5), (key(qtrace_common::kind::SYNCOOKIE_SENT), 4)]);
        agg.tick(2.0);
        let st = &agg.ports()[&PortKey { netns: 7, port: 8080 }];
        assert_eq!((st.events, st.connections(), st.drops()), (5, 3, 5));
        assert_eq!(st.rate, 2.5);
        assert_eq!(st.last.as_ref().map(|e| e.remote.port()), Some(1002));
    }

    #[test]
    fn idle_ports_are_forgotten_but_ports_with_drops_stay() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 0, (0, 2)), listener(9090, 2, 0, (0, 2))]));
        agg.on_counters([(key(qtrace_common::kind::ACCEPT_QUEUE_FULL), 1)]);
        agg.on_listeners(&snap(7, vec![]));
        agg.forget_idle();
        assert_eq!(agg.ports().keys().map(|k| k.port).collect::<Vec<_>>(), vec![8080]);
    }

    #[test]
    fn average_rates_cover_the_whole_run() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_counters([(key(qtrace_common::kind::ACCEPT_QUEUE_FULL), 30)]);
        agg.tick(0.1);
        assert_eq!(agg.ports()[&PortKey { netns: 7, port: 8080 }].rate, 300.0, "30 drops seen in the last 100 ms");
        agg.average_rates(60.0);
        assert_eq!(agg.ports()[&PortKey { netns: 7, port: 8080 }].rate, 0.5);
    }

    #[test]
    fn ports_expire_only_after_their_listeners_are_gone_long_enough() {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.on_listeners(&snap(7, vec![listener(8080, 1, 0, (0, 2)), listener(9090, 2, 0, (0, 2))]));
        agg.on_counters([(key(qtrace_common::kind::ACCEPT_QUEUE_FULL), 3)]);
        agg.on_counters([(CounterKey { netns: 7, port: 9090, kind: qtrace_common::kind::ACCEPT_QUEUE_FULL, _pad: 0 }, 1)]);
        // 8080 closes; 9090 stays open however long it is quiet.
        agg.on_listeners(&snap(7, vec![listener(9090, 2, 0, (0, 2))]));
        for _ in 0..5 {
            agg.tick(1.0);
            assert!(agg.expire(10.0).is_empty(), "gone 5 s at most, kept");
        }
        // It reopens before expiry: the clock starts again.
        agg.on_listeners(&snap(7, vec![listener(8080, 3, 0, (0, 2)), listener(9090, 2, 0, (0, 2))]));
        agg.tick(1.0);
        agg.on_listeners(&snap(7, vec![listener(9090, 2, 0, (0, 2))]));
        for _ in 0..9 {
            agg.tick(1.0);
        }
        assert!(agg.expire(10.0).is_empty(), "9 s since it closed again");
        agg.tick(1.0);
        let gone = agg.expire(10.0);
        assert_eq!(gone.iter().map(|(k, st)| (k.port, st.drops())).collect::<Vec<_>>(), vec![(8080, 3)]);
        assert_eq!(agg.ports().keys().map(|k| k.port).collect::<Vec<_>>(), vec![9090]);
        assert_eq!(agg.expired, Expired { ports: 1, drops: 3, suppressed: 0 });
        for _ in 0..100 {
            agg.tick(1.0);
        }
        assert!(agg.expire(10.0).is_empty(), "a quiet open listener never expires");
    }
}
