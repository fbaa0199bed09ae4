//! The owners of listeners, kept by socket inode: a listener's identity is
//! asked of the host once, when the listener first appears (and again if
//! the process it names is gone or replaced), and forgotten when it
//! closes, so what each one costs does not grow with its events.
//! From them come each port's owners (for its records and metrics) and the
//! owner each event names, by the local address it reached.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::host::identity::Identity;
use crate::host::netns::NsListeners;
use crate::host::sock_diag::Listener;
use crate::model::aggregate::PortKey;

/// Identities of the watched listeners, by socket inode.
#[derive(Debug, Default)]
pub(crate) struct ListenerOwners {
    by_inode: HashMap<u64, Arc<Identity>>,
    /// Moves whenever a listener's identity is added or forgotten, so
    /// what is derived from them is rebuilt only then.
    generation: u64,
}

/// Which owner an event names, by the local address it was sent to, as
/// the kernel picks a listener (`__inet_lookup_listener`): the listeners
/// bound to that very address if there are any, else the port's wildcard
/// ones that take its family. An IPv4 packet goes to a `0.0.0.0` listener
/// before a dual-stack `::` one (the kernel scores `AF_INET` sockets
/// higher), and to a `::` one only when there is no `0.0.0.0` one; an
/// IPv6 packet only to `::` ones. Several listeners so chosen (an `SO_REUSEPORT` group)
/// name what their owners share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventOwners<T> {
    specific: Vec<(IpAddr, T)>,
    /// For IPv4 packets (and IPv4-mapped IPv6 ones).
    wildcard_v4: Option<T>,
    wildcard_v6: Option<T>,
}

impl<T> EventOwners<T> {
    pub(crate) fn get(&self, local: IpAddr) -> Option<&T> {
        let local = unmapped(local);
        let wildcard = if local.is_ipv4() { &self.wildcard_v4 } else { &self.wildcard_v6 };
        self.specific.iter().find(|(a, _)| *a == local).map(|(_, t)| t).or(wildcard.as_ref())
    }

    /// The same choice, each owner turned into something else (the NDJSON
    /// sink's rendered text).
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> EventOwners<U> {
        EventOwners {
            specific: self.specific.into_iter().map(|(a, t)| (a, f(t))).collect(),
            wildcard_v4: self.wildcard_v4.map(&mut f),
            wildcard_v6: self.wildcard_v6.map(f),
        }
    }
}

fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

impl ListenerOwners {
    /// Asks `identify`, once for all of them, the owners of the listeners of
    /// `snapshot` that `watched` selects and that have none yet (with those
    /// of the snapshot in `SO_REUSEPORT` groups), and forgets
    /// the listeners that are gone. A listener `identify` says nothing of
    /// is remembered as unknown rather than asked again.
    /// `netns_names` gives the namespaces' `ip netns` names, asked only
    /// when there are listeners to resolve.
    pub(crate) fn update(
        &mut self,
        snapshot: &[NsListeners],
        watched: impl Fn(u32, u16) -> bool,
        identify: impl FnOnce(&BTreeSet<u64>, &BTreeSet<u64>) -> BTreeMap<u64, Identity>,
        netns_names: impl FnOnce() -> BTreeMap<u32, String>,
    ) {
        let live: BTreeMap<u64, u32> = listeners(snapshot, &watched).map(|(netns, l)| (u64::from(l.inode), netns)).collect();
        let before = self.by_inode.len();
        self.by_inode.retain(|ino, _| live.contains_key(ino));
        let mut changed = self.by_inode.len() != before;
        let wanted: BTreeSet<u64> = live.keys().filter(|i| !self.by_inode.contains_key(i)).copied().collect();
        if !wanted.is_empty() {
            let mut found = identify(&wanted, &crate::host::reuseport_grouped(snapshot));
            let names = netns_names();
            for ino in wanted {
                let mut id = found.remove(&ino).unwrap_or_else(|| Identity::unknown("not resolved"));
                id.netns_name = live.get(&ino).and_then(|netns| names.get(netns)).cloned();
                self.by_inode.insert(ino, Arc::new(id));
            }
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
    }

    /// Forgets the identities whose process is gone or is another one now
    /// (its start time changed: the pid was reused), and returns their
    /// listeners, for [`Self::update`] to resolve again. A socket outlives
    /// the process that opened it when it is handed over: a daemon forking
    /// after `listen()`, an nginx binary upgrade, `SCM_RIGHTS`. Each
    /// distinct process is looked at once, so this costs one read per
    /// owning process at each poll, whatever the events.
    pub(crate) fn forget_replaced(&mut self, started: impl Fn(u32) -> Option<u64>) -> BTreeSet<u64> {
        let mut now: HashMap<u32, Option<u64>> = HashMap::new();
        let mut replaced = BTreeSet::new();
        self.by_inode.retain(|&ino, id| {
            let Some(pid) = id.pid else { return true };
            let same = *now.entry(pid).or_insert_with(|| started(pid)) == id.start;
            if !same {
                replaced.insert(ino);
            }
            same
        });
        if !replaced.is_empty() {
            self.generation += 1;
        }
        replaced
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn get(&self, inode: u32) -> Option<&Arc<Identity>> {
        self.by_inode.get(&u64::from(inode))
    }

    /// The distinct owners of each port's listeners in `snapshot`, by pid.
    pub(crate) fn by_port(&self, snapshot: &[NsListeners]) -> BTreeMap<PortKey, Vec<Arc<Identity>>> {
        let mut out: BTreeMap<PortKey, Vec<Arc<Identity>>> = BTreeMap::new();
        for (netns, l) in listeners(snapshot, &|_, _| true) {
            let Some(id) = self.get(l.inode) else { continue };
            let list = out.entry(PortKey { netns, port: l.port }).or_default();
            if !list.iter().any(|o| o == id) {
                list.push(id.clone());
            }
        }
        for list in out.values_mut() {
            list.sort_by_key(|o| o.pid);
        }
        out
    }

    /// For each port of `snapshot`, the owner an event names by its local
    /// address ([`EventOwners`]).
    pub(crate) fn for_events(&self, snapshot: &[NsListeners]) -> HashMap<PortKey, EventOwners<Identity>> {
        let mut ports: HashMap<PortKey, Vec<(IpAddr, &Identity)>> = HashMap::new();
        for (netns, l) in listeners(snapshot, &|_, _| true) {
            if let Some(id) = self.get(l.inode) {
                ports.entry(PortKey { netns, port: l.port }).or_default().push((unmapped(l.addr), id));
            }
        }
        let choice =
            |bound: &[(IpAddr, &Identity)], addr: IpAddr| Identity::common(bound.iter().filter(|(a, _)| *a == addr).map(|(_, id)| *id));
        let (any_v4, any_v6) = (IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8]));
        let mut out = HashMap::new();
        for (key, bound) in ports {
            let mut addrs: Vec<IpAddr> = bound.iter().map(|(a, _)| *a).filter(|a| !a.is_unspecified()).collect();
            addrs.sort();
            addrs.dedup();
            let specific = addrs.into_iter().filter_map(|a| choice(&bound, a).map(|id| (a, id))).collect();
            let wildcard_v6 = choice(&bound, any_v6);
            let wildcard_v4 = choice(&bound, any_v4).or_else(|| wildcard_v6.clone());
            out.insert(key, EventOwners { specific, wildcard_v4, wildcard_v6 });
        }
        out
    }
}

fn listeners<'a>(snapshot: &'a [NsListeners], watched: &'a impl Fn(u32, u16) -> bool) -> impl Iterator<Item = (u32, &'a Listener)> + 'a {
    snapshot.iter().flat_map(move |ns| ns.listeners.iter().filter(move |l| watched(ns.netns, l.port)).map(move |l| (ns.netns, l)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::Workload;

    fn listener(addr: &str, port: u16, inode: u32) -> Listener {
        Listener { addr: addr.parse().unwrap(), inode, ..Listener::example(port, (0, 8), 0) }
    }

    fn process(pid: u32) -> Identity {
        Identity {
            pid: Some(pid),
            comm: Some("srv".into()),
            workload: Workload { unit: Some("srv.service".into()), ..Workload::default() },
            ..Identity::default()
        }
    }

    /// A host whose listener `inode` is held by process `inode * 10`,
    /// counting what it is asked.
    #[derive(Default)]
    struct Counting {
        calls: usize,
        asked: Vec<u64>,
    }

    impl Counting {
        fn identify(&mut self, wanted: &BTreeSet<u64>) -> BTreeMap<u64, Identity> {
            self.calls += 1;
            self.asked.extend(wanted);
            wanted.iter().map(|&i| (i, process(i as u32 * 10))).collect()
        }
    }

    fn snap(ls: Vec<Listener>) -> Vec<NsListeners> {
        vec![NsListeners { netns: 7, listeners: ls }]
    }

    /// Each listener is asked about once, however many polls see it; one
    /// that appears is asked alone; one that closes is forgotten; unwatched
    /// ones are never asked.
    #[test]
    fn each_listener_is_resolved_once() {
        let mut host = Counting::default();
        let mut owners = ListenerOwners::default();
        let watched = |_: u32, port: u16| port != 9999;
        let first = snap(vec![listener("0.0.0.0", 80, 1), listener("::", 80, 2), listener("0.0.0.0", 9999, 3)]);
        for _ in 0..5 {
            owners.update(&first, watched, |w, _| host.identify(w), BTreeMap::new);
        }
        assert_eq!((host.calls, host.asked.clone()), (1, vec![1, 2]));
        let generation = owners.generation();
        let more = snap(vec![listener("0.0.0.0", 80, 1), listener("::", 80, 2), listener("127.0.0.1", 81, 4)]);
        owners.update(&more, watched, |w, _| host.identify(w), BTreeMap::new);
        owners.update(&more, watched, |w, _| host.identify(w), BTreeMap::new);
        assert_eq!((host.calls, host.asked.clone()), (2, vec![1, 2, 4]));
        assert!(owners.generation() > generation);
        let generation = owners.generation();
        owners.update(&snap(vec![listener("127.0.0.1", 81, 4)]), watched, |w, _| host.identify(w), BTreeMap::new);
        assert_eq!(host.calls, 2, "a listener closing asks nothing");
        assert!(owners.generation() > generation, "but what is derived is rebuilt");
        assert!(owners.get(1).is_none() && owners.get(4).is_some());
        // A listener the host says nothing of is unknown, not asked again.
        owners.update(&snap(vec![listener("127.0.0.1", 82, 5)]), watched, |_, _| BTreeMap::new(), BTreeMap::new);
        assert_eq!(owners.get(5).unwrap().unknown.as_deref(), Some("not resolved"));
        owners.update(&snap(vec![listener("127.0.0.1", 82, 5)]), watched, |_, _| panic!("asked twice"), BTreeMap::new);
    }

    /// A listener whose process is gone, or whose pid now names another
    /// process, is resolved again; one whose process is still there is
    /// not, and each process is looked at once.
    #[test]
    fn a_listener_handed_to_another_process_is_resolved_again() {
        let started_at = |pid, start| Identity { start: Some(start), ..process(pid) };
        let mut owners = ListenerOwners::default();
        let ls = snap(vec![listener("0.0.0.0", 80, 1), listener("::", 80, 2), listener("0.0.0.0", 81, 3), listener("0.0.0.0", 82, 4)]);
        let first = BTreeMap::from([(1, started_at(10, 5)), (2, started_at(10, 5)), (3, started_at(30, 7)), (4, started_at(40, 9))]);
        owners.update(&ls, |_, _| true, |_, _| first.clone(), BTreeMap::new);
        let looked = std::cell::RefCell::new(Vec::new());
        // Process 10 is still the same; 30 exited; 40's pid was reused.
        let host = |pid| {
            looked.borrow_mut().push(pid);
            match pid {
                10 => Some(5),
                40 => Some(99),
                _ => None,
            }
        };
        let generation = owners.generation();
        assert_eq!(owners.forget_replaced(host), BTreeSet::from([3, 4]));
        looked.borrow_mut().sort();
        assert_eq!(*looked.borrow(), [10, 30, 40], "once per process, not per listener");
        assert!(owners.generation() > generation);
        owners.update(&ls, |_, _| true, |w, _| w.iter().map(|&i| (i, started_at(i as u32 * 100, 1))).collect(), BTreeMap::new);
        assert_eq!([1, 2, 3, 4].map(|i| owners.get(i).unwrap().pid), [Some(10), Some(10), Some(300), Some(400)]);
        let generation = owners.generation();
        assert!(owners.forget_replaced(|pid| Some(if pid == 10 { 5 } else { 1 })).is_empty());
        assert_eq!(owners.generation(), generation, "nothing changed");
        // One without a process (not found) is not looked at.
        owners.update(&snap(vec![listener("0.0.0.0", 83, 5)]), |_, _| true, |_, _| BTreeMap::new(), BTreeMap::new);
        assert!(owners.forget_replaced(|_| panic!("looked at")).is_empty());
    }

    #[test]
    fn ports_list_their_distinct_owners() {
        let mut owners = ListenerOwners::default();
        // Port 80: IPv4 and IPv6 listeners of one process; port 81: an
        // SO_REUSEPORT pair of two.
        let ls = vec![listener("0.0.0.0", 80, 1), listener("::", 80, 2), listener("0.0.0.0", 81, 4), listener("0.0.0.0", 81, 3)];
        let pid_of = |ino: u64| if ino <= 2 { 10 } else { ino as u32 * 10 };
        owners.update(&snap(ls.clone()), |_, _| true, |w, _| w.iter().map(|&i| (i, process(pid_of(i)))).collect(), BTreeMap::new);
        let by_port = owners.by_port(&snap(ls));
        let pids = |port| by_port[&PortKey { netns: 7, port }].iter().map(|o| o.pid.unwrap()).collect::<Vec<_>>();
        assert_eq!(pids(80), [10], "one process, listed once");
        assert_eq!(pids(81), [30, 40], "sorted by pid");
    }

    #[test]
    fn events_name_the_listeners_that_could_take_them() {
        let mut owners = ListenerOwners::default();
        // Port 53: two processes on two addresses (a local resolver and a
        // DNS server); port 80: a wildcard listener and a specific one of
        // another process; port 443: an SO_REUSEPORT group of two.
        let ls = vec![
            listener("127.0.0.53", 53, 1),
            listener("10.0.0.1", 53, 2),
            listener("0.0.0.0", 80, 3),
            listener("10.0.0.1", 80, 4),
            listener("::", 443, 5),
            listener("::", 443, 6),
        ];
        owners.update(&snap(ls.clone()), |_, _| true, |w, _| Counting::default().identify(w), BTreeMap::new);
        let events = owners.for_events(&snap(ls));
        let owner = |port, addr: &str| events[&PortKey { netns: 7, port }].get(addr.parse().unwrap()).cloned();
        assert_eq!(owner(53, "127.0.0.53").and_then(|o| o.pid), Some(10));
        assert_eq!(owner(53, "10.0.0.1").and_then(|o| o.pid), Some(20));
        assert_eq!(owner(53, "::ffff:10.0.0.1").and_then(|o| o.pid), Some(20), "IPv4-mapped is the IPv4 address");
        assert_eq!(owner(53, "10.9.9.9"), None, "no listener takes it");
        assert_eq!(owner(80, "127.0.0.1").and_then(|o| o.pid), Some(30), "only the wildcard listener");
        assert_eq!(owner(80, "10.0.0.1").and_then(|o| o.pid), Some(40), "the specific listener before the wildcard one");
        assert_eq!(owner(80, "::1"), None, "an IPv6 packet never reaches 0.0.0.0");
        let group = owner(443, "::1").unwrap();
        assert_eq!((group.pid, group.workload.unit.as_deref()), (None, Some("srv.service")));
        let v4_group = owner(443, "127.0.0.1").unwrap();
        assert_eq!(v4_group.pid, None, "IPv4 to dual-stack :: listeners, here a group");
    }

    /// A port with a `0.0.0.0` listener and a `::` one of another process
    /// (which must then be v6-only): each family goes to its own.
    #[test]
    fn events_go_to_the_listener_of_their_family() {
        let mut owners = ListenerOwners::default();
        let ls = vec![listener("::", 80, 1), listener("0.0.0.0", 80, 2), listener("::", 81, 3), listener("::1", 82, 4)];
        owners.update(&snap(ls.clone()), |_, _| true, |w, _| Counting::default().identify(w), BTreeMap::new);
        let events = owners.for_events(&snap(ls));
        let pid = |port, addr: &str| events[&PortKey { netns: 7, port }].get(addr.parse().unwrap()).and_then(|o| o.pid);
        assert_eq!(pid(80, "127.0.0.1"), Some(20));
        assert_eq!(pid(80, "::ffff:127.0.0.1"), Some(20), "IPv4-mapped is IPv4");
        assert_eq!(pid(80, "::1"), Some(10));
        assert_eq!(pid(81, "10.0.0.1"), Some(30), "a dual-stack :: listener alone takes IPv4");
        assert_eq!(pid(82, "::1"), Some(40));
        assert_eq!(pid(82, "127.0.0.1"), None, "::1 takes no IPv4");
    }
}
