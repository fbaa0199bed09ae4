//! A running trace: kernel and host inputs in, per-port aggregation out.
//! `watch` and `doctor` each drive one and hand what it finds to a
//! [`Sink`]; nothing here formats. The inputs are traits
//! ([`KernelInputs`], [`HostInputs`]) so the loop runs against fakes.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use qtrace_common::OutcomeRecord;

use crate::host::netns::{Namespaces, NsListeners};
use crate::host::sock_diag::Listener;
use crate::host::system;
use crate::host::{HostInputs, KernelNews};
use crate::kernel::limits::{Limit, Refusal};
use crate::kernel::maps::{KernelInputs, KernelMaps};
use crate::kernel::probe::{Filter, HookChoice, Probe, Tier};
use crate::model::aggregate::{Aggregator, CountedDelta, Losses, PortKey, PortStats};
use crate::model::backlog::{Requested, RequestedBacklogs};
use crate::model::event::Decoded;
use crate::model::outcome::{gave_up, Fate, Outcome, Outcomes};
use crate::model::owners::ListenerOwners;
use crate::model::ports::PortSet;

/// A `listen(2)` qtrace saw, matched to its listener.
#[derive(Debug, Clone)]
pub(crate) struct ListenSeen {
    pub netns: u32,
    pub listener: Listener,
    pub requested: Requested,
}

/// Where a ring-buffer record keeps its kind: an [`OutcomeRecord`] there
/// has [`qtrace_common::kind::OUTCOME`].
const OUTCOME_AT: usize = std::mem::offset_of!(qtrace_common::Event, kind);

/// What one poll found new.
#[derive(Debug, Default)]
pub(crate) struct PollReport {
    /// Events the ring buffer had no room for since the last poll.
    pub lost: u64,
    /// Drops counted from listeners' drop counters since the last poll.
    pub counted: Vec<CountedDelta>,
    /// `listen(2)` calls matched since the last poll.
    pub listens: Vec<ListenSeen>,
    /// Ports forgotten because their listeners are gone, with final totals.
    pub expired: Vec<(PortKey, PortStats)>,
    /// Connections with drops whose outcome was decided since the last poll
    /// (at the final poll, every one still open, as pending).
    pub outcomes: Vec<Outcome>,
}

/// Where a trace's findings go: one per output mode (`output::*`), and
/// doctor's sampler.
pub(crate) trait Sink {
    /// One event from the ring buffer.
    fn event(&mut self, ev: &Decoded);
    /// A poll's news, with the tracer as it now stands.
    fn polled(&mut self, tracer: &Tracer, report: &PollReport) -> Result<()>;
}

/// How the attached tier sees this kernel.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    pub tier: Tier,
    /// Better tiers that could not attach, best first.
    pub refused: Vec<Refusal>,
    pub limits: Vec<Limit>,
    /// The per-port event budget the programs apply (`None`: unlimited).
    pub max_event_rate: Option<u32>,
}

pub(crate) struct Tracer<K = KernelMaps, H = Namespaces> {
    kernel: K,
    pub host: H,
    pub attachment: Attachment,
    pub agg: Aggregator,
    pub backlogs: RequestedBacklogs,
    /// Listeners as of the latest poll.
    pub listeners: Vec<NsListeners>,
    /// Who each watched listener belongs to.
    pub owners: ListenerOwners,
    /// Whether owners are resolved at all (`--no-owner` turns it off).
    pub identify: bool,
    /// Forget ports whose listeners have been gone this long (`None`: keep
    /// every port that dropped until the end).
    pub expire_after: Option<Duration>,
    ports: PortSet,
    boot_offset: i128,
    undecodable: u64,
    /// Outcomes the kernel sent since the last poll.
    decided: Vec<Outcome>,
    /// Set for the final poll: connections still open are pending.
    finishing: bool,
    last_poll: Instant,
    /// Namespaces whose drop counters moved at the latest poll: the next
    /// refresh looks for those it does not know.
    active: BTreeSet<u32>,
}

/// What a finished trace leaves.
pub(crate) struct Finished {
    pub agg: Aggregator,
    pub namespaces: Namespaces,
    pub backlogs: RequestedBacklogs,
}

impl Tracer {
    /// Takes a baseline of every listener, then attaches; names the
    /// listeners' owners from the start unless `owners` is false
    /// (`--no-owner`: then never).
    pub(crate) fn start(choice: HookChoice, filter: &Filter, mut namespaces: Namespaces, owners: bool) -> Result<Self> {
        // Baseline of every listener's drop counter before the hooks go in.
        let listeners = namespaces.listeners();
        let probe = Probe::attach(choice, filter)?;
        let attachment = Attachment {
            tier: probe.tier,
            refused: probe.refused.clone(),
            limits: probe.limits.clone(),
            max_event_rate: filter.max_event_rate,
        };
        let kernel = probe.into_maps()?;
        let mut t = Self::with_inputs(kernel, namespaces, attachment, filter, listeners);
        t.identify = owners;
        if owners {
            t.identify_listeners();
        }
        Ok(t)
    }

    /// The final accounting, while the hooks still count: two polls a
    /// moment apart let the listener-derived totals settle. Then detaches.
    pub(crate) async fn finish(mut self, sink: &mut impl Sink) -> Result<Finished> {
        for (i, pause) in [Duration::ZERO, Duration::from_millis(100)].into_iter().enumerate() {
            tokio::time::sleep(pause).await;
            self.finishing = i == 1;
            self.drain(|ev| sink.event(ev));
            let mut report = self.poll()?;
            if self.finishing {
                // Outcomes the kernel sent while the last sweep took the
                // rest as pending: their entries had left its map first.
                self.drain(|ev| sink.event(ev));
                let late = std::mem::take(&mut self.decided);
                self.agg.on_outcomes(&late);
                let agg = &mut self.agg;
                report.outcomes.extend(Outcomes::budget(late, self.attachment.max_event_rate, |o| agg.on_outcome_suppressed(o)));
            }
            sink.polled(&self, &report)?;
        }
        self.kernel.detach();
        Ok(Finished { agg: self.agg, namespaces: self.host, backlogs: self.backlogs })
    }

    /// The ring buffer's descriptor, to wait on while `self` lives.
    pub(crate) fn events_fd(&self) -> std::os::fd::RawFd {
        self.kernel.events_fd()
    }
}

impl<K: KernelInputs, H: HostInputs> Tracer<K, H> {
    /// A tracer over given inputs; `listeners` is the baseline snapshot,
    /// taken before the programs attached.
    pub(crate) fn with_inputs(kernel: K, host: H, attachment: Attachment, filter: &Filter, listeners: Vec<NsListeners>) -> Self {
        let mut agg = Aggregator::new(filter.netns, filter.ports.clone());
        agg.set_accepts_traced(!attachment.limits.iter().any(|l| matches!(l, Limit::AcceptWaitMissing(_))));
        agg.on_listeners(&listeners);
        // Only the tracepoint tier misses `tcp_listendrop()` callers.
        agg.set_derive_counted(attachment.tier == Tier::Tracepoint);
        Self {
            kernel,
            host,
            attachment,
            agg,
            backlogs: RequestedBacklogs::default(),
            listeners,
            owners: ListenerOwners::default(),
            identify: true,
            expire_after: None,
            ports: filter.ports.clone(),
            boot_offset: system::boot_offset_ns(),
            undecodable: 0,
            decided: Vec::new(),
            finishing: false,
            last_poll: Instant::now(),
            active: BTreeSet::new(),
        }
    }

    /// Decodes and aggregates every record waiting in the ring buffer,
    /// handing each to `each` as well.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&Decoded)) {
        let (agg, undecodable, offset, decided) = (&mut self.agg, &mut self.undecodable, self.boot_offset, &mut self.decided);
        self.kernel.drain_events(&mut |record| {
            if record.get(OUTCOME_AT) == Some(&qtrace_common::kind::OUTCOME) {
                match OutcomeRecord::from_bytes(record).and_then(|r| Outcome::from_record(&r, offset)) {
                    Some(o) => decided.push(o),
                    None => *undecodable += 1,
                }
                return;
            }
            match Decoded::decode(record, offset) {
                Ok(ev) => {
                    agg.on_event(&ev);
                    each(&ev);
                }
                Err(_) => *undecodable += 1,
            }
        });
    }

    /// Outcomes decided since the last call: the kernel's, then the
    /// connections whose clients gave up (all still open when finishing,
    /// as pending).
    fn take_outcomes(&mut self) -> Vec<Outcome> {
        let now = system::monotonic_ns();
        let finishing = self.finishing;
        let taken = self.kernel.take_dropped(&|t| finishing || gave_up(t, now));
        let mut out = std::mem::take(&mut self.decided);
        for (key, t) in taken {
            let fate = if gave_up(&t, now) { Fate::Abandoned } else { Fate::Pending };
            out.push(Outcome::from_track(&key, &t, fate, now, self.boot_offset));
        }
        out
    }

    /// Reads the kernel's counters, the listeners and the `listen(2)` calls;
    /// reports what is new.
    pub(crate) fn poll(&mut self) -> Result<PollReport> {
        // Listeners first, counters second: every drop a listener's counter
        // already shows is then in the per-kind counters too, so drops still
        // in flight between the two reads are never taken for drops no hook
        // saw (they would be counted twice under a steady storm). Listen
        // starts before the listeners: a namespace where one started is read.
        let news = KernelNews {
            listen_starts: self.kernel.take_listen_starts(),
            starts_overflowed: self.kernel.listen_starts_overflowed(),
            active: std::mem::take(&mut self.active),
        };
        // Accepts before the queues: a connection accepted between the two
        // reads then counts in neither until the next poll, rather than in
        // both (arrivals are accepts plus queue growth).
        let accepts = self.kernel.listener_accepts(&self.listeners)?;
        self.host.refresh(&news);
        self.listeners = self.host.listeners();
        // After the snapshot: every listener it misses has its final
        // counter recorded already (the tracepoint fires before unhash).
        let live: HashSet<(u32, u64)> =
            self.listeners.iter().flat_map(|ns| ns.listeners.iter().map(move |l| (ns.netns, l.cookie))).collect();
        let closed = self.kernel.take_closed(&live);
        self.agg.on_closed(&closed);
        // Suppressed before counters: the kernel counts an event, then
        // tallies it as suppressed, so no tally is ahead of its count.
        let suppressed = self.kernel.suppressed()?;
        self.active = self.agg.on_counters(self.kernel.counters()?);
        self.agg.on_suppressed(suppressed);
        self.agg.on_accept_waits(self.kernel.accept_waits()?);
        let before = self.agg.losses.ringbuf_full;
        self.agg.losses = Losses { undecodable: self.undecodable, suppressed: self.agg.suppressed(), ..self.kernel.losses()? };
        let lost = self.agg.losses.ringbuf_full - before;
        // Outcomes before the ports are ticked and expired: an outcome
        // must not bring back a port just forgotten.
        let outcomes = self.take_outcomes();
        self.agg.on_outcomes(&outcomes);
        let agg = &mut self.agg;
        let outcomes = Outcomes::budget(outcomes, self.attachment.max_event_rate, |o| agg.on_outcome_suppressed(o));
        self.agg.on_listener_accepts(&accepts);
        let counted = self.agg.on_listeners(&self.listeners);
        let elapsed = self.last_poll.elapsed().as_secs_f64();
        self.last_poll = Instant::now();
        self.agg.tick(elapsed);
        self.agg.forget_idle();
        let expired = self.expire();
        let listens = self.match_listen_calls();
        if self.identify {
            self.identify_listeners();
        }
        Ok(PollReport { lost, counted, listens, expired, outcomes })
    }

    /// Resolves the owners of listeners that appeared (after the `listen()`
    /// calls are matched: the process that called it needs no search), and
    /// gives each port the owners of its listeners now.
    /// Listeners whose process is gone or replaced are resolved again from
    /// the processes holding them now, not from the `listen()` caller.
    fn identify_listeners(&mut self) {
        let (agg, host, backlogs) = (&mut self.agg, &self.host, &self.backlogs);
        let replaced = self.owners.forget_replaced(|pid| host.started(pid));
        self.owners.update(
            &self.listeners,
            |netns, port| agg.watched(netns, port),
            |wanted, grouped| {
                let caller = |ino| backlogs.get(ino).filter(|_| !replaced.contains(&ino)).map(|r| (ino, r.owner.clone()));
                let known = wanted.iter().filter_map(|&ino| caller(ino)).collect();
                host.identify(wanted, &known, grouped)
            },
            || host.netns_names(),
        );
        agg.on_owners(self.owners.by_port(&self.listeners));
        let owners = &self.owners;
        agg.name_listeners(|inode| owners.get(inode).cloned());
    }

    /// Takes out ports gone for `expire_after`, and deletes their kernel
    /// counters: otherwise the next poll brings them back, and the map
    /// (`COUNTERS_MAX` entries) fills up over a long run. A listener
    /// reopened on the port later counts from 0.
    fn expire(&mut self) -> Vec<(PortKey, PortStats)> {
        let Some(after) = self.expire_after else {
            return Vec::new();
        };
        let expired = self.agg.expire(after.as_secs_f64());
        if !expired.is_empty() {
            let keys: Vec<PortKey> = expired.iter().map(|(k, _)| *k).collect();
            self.kernel.forget_ports(&keys);
        }
        expired
    }

    /// Matches the `listen(2)` calls recorded since the last poll to the
    /// listeners of the latest snapshot.
    fn match_listen_calls(&mut self) -> Vec<ListenSeen> {
        let calls = self.kernel.take_listen_calls();
        let host = &self.host;
        let mut out = Vec::new();
        for ino in self.backlogs.collect(calls, |pid, fd| host.socket_of(pid, fd)) {
            let found = self.listeners.iter().find_map(|ns| ns.listeners.iter().find(|l| u64::from(l.inode) == ino).map(|l| (ns.netns, l)));
            if let (Some((netns, l)), Some(req)) = (found, self.backlogs.get(ino)) {
                if self.ports.contains(l.port) {
                    out.push(ListenSeen { netns, listener: l.clone(), requested: req.clone() });
                }
            }
        }
        let live = self.listeners.iter().flat_map(|ns| ns.listeners.iter().map(|l| u64::from(l.inode))).collect();
        self.backlogs.retain(&live);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use qtrace_common::{kind, ClosedListener, CounterKey, ListenCall, ListenKey, ListenStart};

    use super::*;
    use crate::host::identity::Identity;
    use crate::host::ns_plan::{Depth, Plan};
    use crate::host::procs::Owner;

    const NETNS: u32 = 7;
    const PORT: u16 = 8080;

    /// A kernel that keeps counting: a listen-queue storm adds `per_read`
    /// drops at every read of either side, to the hook's per-kind counter
    /// and to the listener's drop counter alike (as `tcp_listendrop()` does).
    #[derive(Default)]
    struct Storm {
        drops: u64,
        per_read: u64,
        /// Drops before the programs attached: in the listener's counter,
        /// not in the per-kind counters, which start at zero.
        before_attach: u64,
        /// Listener inodes whose owner the host was asked for.
        identified: Vec<u64>,
    }

    impl Storm {
        fn step(&mut self) -> u64 {
            self.drops += self.per_read;
            self.drops
        }
    }

    struct FakeKernel(Rc<RefCell<Storm>>);
    struct FakeHost(Rc<RefCell<Storm>>);

    impl KernelInputs for FakeKernel {
        fn drain_events(&mut self, _: &mut dyn FnMut(&[u8])) {}
        fn counters(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
            let mut storm = self.0.borrow_mut();
            let drops = storm.step() - storm.before_attach;
            let key = CounterKey { netns: NETNS, port: PORT, kind: kind::ACK_OVERFLOW, _pad: 0 };
            Ok([(key, drops)].into())
        }
        fn suppressed(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
            Ok(BTreeMap::new())
        }
        fn losses(&mut self) -> Result<Losses> {
            Ok(Losses::default())
        }
        fn take_closed(&mut self, _: &HashSet<(u32, u64)>) -> Vec<ClosedListener> {
            Vec::new()
        }
        fn take_listen_calls(&mut self) -> Vec<(ListenKey, ListenCall)> {
            Vec::new()
        }
        fn take_listen_starts(&mut self) -> Option<Vec<(u32, ListenStart)>> {
            None
        }
        fn forget_ports(&mut self, _: &[PortKey]) {}
    }

    impl HostInputs for FakeHost {
        fn refresh(&mut self, _: &KernelNews) {}
        fn listeners(&mut self) -> Vec<NsListeners> {
            // An overflowing final ACK moves the drop counter twice
            // (`Kind::listener_drop_weight`).
            let counter = 2 * self.0.borrow_mut().step();
            vec![NsListeners { netns: NETNS, listeners: vec![Listener::example(PORT, (9, 8), counter as u32)] }]
        }
        fn socket_of(&self, _: u32, _: u32) -> Option<(u64, Owner)> {
            None
        }
        fn identify(&self, wanted: &BTreeSet<u64>, _: &BTreeMap<u64, Owner>, _: &BTreeSet<u64>) -> BTreeMap<u64, Identity> {
            self.0.borrow_mut().identified.extend(wanted);
            wanted.iter().map(|&ino| (ino, Identity { pid: Some(ino as u32 + 1000), ..Identity::default() })).collect()
        }
        fn started(&self, _: u32) -> Option<u64> {
            None
        }
        fn netns_names(&self) -> BTreeMap<u32, String> {
            BTreeMap::from([(NETNS, "blue".to_owned())])
        }
    }

    fn tracer(storm: &Rc<RefCell<Storm>>) -> Tracer<FakeKernel, FakeHost> {
        let mut host = FakeHost(storm.clone());
        let baseline = host.listeners();
        let drops = storm.borrow().drops;
        storm.borrow_mut().before_attach = drops;
        let attachment = Attachment { tier: Tier::Tracepoint, refused: Vec::new(), limits: Vec::new(), max_event_rate: None };
        Tracer::with_inputs(FakeKernel(storm.clone()), host, attachment, &Filter::default(), baseline)
    }

    /// Under a steady storm, every drop the hook counted is in the per-kind
    /// counter and in the listener's drop counter: none may be reported
    /// again as a drop no hook saw. Reading the counters before the
    /// listeners would see the listeners ahead by one step at every poll.
    #[test]
    fn a_storm_between_the_reads_is_not_counted_twice() {
        let storm = Rc::new(RefCell::new(Storm { per_read: 5, ..Storm::default() }));
        let mut t = tracer(&storm);
        let mut counted = 0;
        for _ in 0..10 {
            counted += t.poll().unwrap().counted.iter().map(|d| d.count).sum::<u64>();
        }
        let st = &t.agg.ports()[&PortKey { netns: NETNS, port: PORT }];
        assert_eq!(counted, 0, "drops the hook saw were derived again from the listener's counter");
        assert_eq!(st.drops(), st.count(crate::model::event::Kind::AckOverflow));
        assert!(st.drops() > 0, "the storm was counted");
    }

    /// The listener's owner is asked of the host once, at start, not at
    /// every poll however much it drops; the port's totals name it and its
    /// namespace.
    #[test]
    fn a_listener_is_identified_once() {
        let storm = Rc::new(RefCell::new(Storm { per_read: 5, ..Storm::default() }));
        let mut t = tracer(&storm);
        for _ in 0..10 {
            t.poll().unwrap();
        }
        let inode = u64::from(Listener::example(PORT, (0, 0), 0).inode);
        assert_eq!(storm.borrow().identified, [inode]);
        let st = &t.agg.ports()[&PortKey { netns: NETNS, port: PORT }];
        assert_eq!(st.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), [Some(inode as u32 + 1000)]);
        // The namespace's `ip netns` name comes with the owner.
        assert_eq!(st.owners[0].netns_name.as_deref(), Some("blue"));
    }

    /// A host of namespaces and the kernel's reports about them, for the
    /// incremental discovery: which namespaces were read, and the walks.
    #[derive(Default)]
    struct World {
        listeners: BTreeMap<u32, Vec<Listener>>,
        starts: Vec<(u32, ListenStart)>,
        counters: BTreeMap<CounterKey, u64>,
        reads: BTreeMap<u32, usize>,
        walks: Vec<Depth>,
    }

    struct WorldKernel(Rc<RefCell<World>>);

    /// Follows the same [`Plan`] as `Namespaces`, over the world's
    /// namespaces: every namespace in the world can be located.
    struct WorldHost {
        world: Rc<RefCell<World>>,
        plan: Option<Plan>,
    }

    impl KernelInputs for WorldKernel {
        fn drain_events(&mut self, _: &mut dyn FnMut(&[u8])) {}
        fn counters(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
            Ok(self.0.borrow().counters.clone())
        }
        fn suppressed(&mut self) -> Result<BTreeMap<CounterKey, u64>> {
            Ok(BTreeMap::new())
        }
        fn losses(&mut self) -> Result<Losses> {
            Ok(Losses::default())
        }
        fn take_closed(&mut self, _: &HashSet<(u32, u64)>) -> Vec<ClosedListener> {
            Vec::new()
        }
        fn take_listen_calls(&mut self) -> Vec<(ListenKey, ListenCall)> {
            Vec::new()
        }
        fn take_listen_starts(&mut self) -> Option<Vec<(u32, ListenStart)>> {
            Some(std::mem::take(&mut self.0.borrow_mut().starts))
        }
        fn forget_ports(&mut self, _: &[PortKey]) {}
    }

    impl HostInputs for WorldHost {
        fn refresh(&mut self, news: &KernelNews) {
            let now = Instant::now();
            let mut world = self.world.borrow_mut();
            let plan = self.plan.get_or_insert_with(Plan::default);
            let exists: Vec<u32> = world.listeners.keys().copied().collect();
            let mut depth = plan.learn(news, now, |ino, _| exists.contains(&ino));
            while let Some(d) = depth {
                world.walks.push(d);
                depth = plan.walked(exists.clone(), d, now);
            }
        }
        fn listeners(&mut self) -> Vec<NsListeners> {
            let mut world = self.world.borrow_mut();
            let mut out = Vec::new();
            for (ino, ls) in world.listeners.clone() {
                if let Some(plan) = &mut self.plan {
                    if !plan.due(ino) {
                        continue;
                    }
                    plan.read(ino, ls.len());
                }
                *world.reads.entry(ino).or_default() += 1;
                out.push(NsListeners { netns: ino, listeners: ls });
            }
            out
        }
        fn socket_of(&self, _: u32, _: u32) -> Option<(u64, Owner)> {
            None
        }
        fn identify(&self, _: &BTreeSet<u64>, _: &BTreeMap<u64, Owner>, _: &BTreeSet<u64>) -> BTreeMap<u64, Identity> {
            BTreeMap::new()
        }
        fn started(&self, _: u32) -> Option<u64> {
            None
        }
        fn netns_names(&self) -> BTreeMap<u32, String> {
            BTreeMap::new()
        }
    }

    /// Namespaces without listeners are not read at every poll, yet none
    /// that gets a listener is missed: a reported listen start gets it read
    /// at the next poll, and drops counted in a namespace qtrace does not
    /// know get a walk that finds it. The drops its listener's counter
    /// shows are counted.
    #[test]
    fn namespaces_are_read_when_they_can_have_listeners() {
        let world = Rc::new(RefCell::new(World::default()));
        world.borrow_mut().listeners = [(1, vec![Listener::example(80, (0, 8), 0)]), (2, vec![])].into();
        let mut host = WorldHost { world: world.clone(), plan: None };
        let baseline = host.listeners();
        let attachment = Attachment { tier: Tier::Tracepoint, refused: Vec::new(), limits: Vec::new(), max_event_rate: None };
        let mut t = Tracer::with_inputs(WorldKernel(world.clone()), host, attachment, &Filter::default(), baseline);
        let reads = |ino: u32| world.borrow().reads.get(&ino).copied().unwrap_or(0);
        t.poll().unwrap();
        assert_eq!(world.borrow().walks, [Depth::Threads], "the first poll walks every thread");
        let before = reads(2);
        t.poll().unwrap();
        t.poll().unwrap();
        assert_eq!(reads(2), before, "a namespace without listeners is not read again");
        assert_eq!(reads(1), before + 2, "one with listeners is read at every poll");

        // A listener in namespace 2, reported by the kernel; SYN-stage drops
        // only its drop counter shows.
        let mut late = Listener::example(90, (0, 8), 12);
        late.cookie = 2;
        world.borrow_mut().listeners.insert(2, vec![late]);
        world.borrow_mut().starts.push((2, ListenStart { tgid: 5, tid: 6 }));
        t.poll().unwrap();
        assert_eq!(reads(2), before + 1, "read at the poll after its listen start");
        t.poll().unwrap();
        assert_eq!(t.agg.ports()[&PortKey { netns: 2, port: 90 }].drops(), 12, "its drops are counted");

        // Namespace 3 appears and its start is lost, but the kernel counts
        // drops there: the next poll walks and reads it.
        world.borrow_mut().listeners.insert(3, vec![Listener::example(70, (8, 8), 0)]);
        let key = CounterKey { netns: 3, port: 70, kind: kind::ACK_OVERFLOW, _pad: 0 };
        world.borrow_mut().counters.insert(key, 4);
        t.poll().unwrap();
        assert_eq!(reads(3), 0, "the counters are read after the listeners");
        t.poll().unwrap();
        assert_eq!(world.borrow().walks, [Depth::Threads, Depth::Processes], "drops in an unknown namespace walk at once");
        assert_eq!(reads(3), 1);
        assert_eq!(t.listeners.iter().find(|n| n.netns == 3).map(|n| n.listeners.len()), Some(1));
    }
}
