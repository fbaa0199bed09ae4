//! What the host tells without eBPF: listeners in every network namespace
//! (`netns`, `sock_diag`), each namespace's sysctls and counters
//! (`ns_state`), which processes hold a socket (`procs`) and who they are
//! (`identity`), and what container runtimes say of their containers
//! (`runtime`).
pub mod identity;
pub mod netns;
pub(crate) mod ns_find;
pub(crate) mod ns_plan;
pub(crate) mod ns_state;
pub(crate) mod procs;
pub mod runtime;
pub(crate) mod sock_diag;
pub(crate) mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use qtrace_common::ListenStart;

use crate::host::identity::Identity;
use crate::host::netns::{Namespaces, NsListeners};
use crate::host::procs::Owner;

/// Every listener, every request socket and the processes holding each
/// listener, read in one go (`qtrace listeners`, doctor's report).
pub(crate) struct Survey {
    pub listeners: Vec<NsListeners>,
    /// Local address and port of each request (`SYN_RECV`), by namespace.
    pub requests: BTreeMap<u32, Vec<(IpAddr, u16)>>,
    pub owners: BTreeMap<u64, Vec<Owner>>,
    /// Who each listener belongs to, from its processes.
    pub identities: BTreeMap<u64, Identity>,
}

/// Reads a [`Survey`]; also returns how many processes' descriptors could
/// not be read (their listeners show no owner).
pub(crate) fn survey(namespaces: &mut Namespaces) -> (Survey, usize) {
    let listeners = namespaces.listeners();
    let requests = namespaces.requests();
    let inodes: BTreeSet<u64> = listeners.iter().flat_map(|ns| ns.listeners.iter().map(|l| u64::from(l.inode))).collect();
    let procs::Owners { by_inode: owners, polled_by, unreadable } = procs::owners(&inodes, &reuseport_grouped(&listeners));
    let procfs = identity::ProcFs::host();
    let of = |ino: &u64| {
        owners
            .get(ino)
            .and_then(|holders| procfs.of_holders(holders, polled_by.get(ino)))
            .unwrap_or_else(|| identity::not_found(unreadable))
    };
    let names = netns::names();
    let netns_of: BTreeMap<u64, u32> =
        listeners.iter().flat_map(|ns| ns.listeners.iter().map(|l| (u64::from(l.inode), ns.netns))).collect();
    let named = |ino: &u64| Identity { netns_name: netns_of.get(ino).and_then(|n| names.get(n)).cloned(), ..of(ino) };
    let identities = inodes.iter().map(|ino| (*ino, named(ino))).collect();
    (Survey { listeners, requests, owners, identities }, unreadable)
}

/// The listeners of `snapshot` that share their namespace, address and
/// port with another: an `SO_REUSEPORT` group, whose members only the
/// process polling each tells apart.
pub(crate) fn reuseport_grouped(snapshot: &[NsListeners]) -> BTreeSet<u64> {
    let mut by_place: BTreeMap<(u32, IpAddr, u16), Vec<u64>> = BTreeMap::new();
    for ns in snapshot {
        for l in &ns.listeners {
            by_place.entry((ns.netns, l.addr, l.port)).or_default().push(u64::from(l.inode));
        }
    }
    by_place.into_values().filter(|inodes| inodes.len() > 1).flatten().collect()
}

/// What the kernel side saw since the last poll that says where listeners
/// can be.
#[derive(Debug, Default)]
pub struct KernelNews {
    /// Namespaces (by inode) where a socket started listening, with who
    /// did it; `None` when the kernel does not record them.
    pub listen_starts: Option<Vec<(u32, ListenStart)>>,
    /// Whether some listen starts were not recorded (their map was full).
    pub starts_overflowed: bool,
    /// Namespaces whose drop counters moved.
    pub active: BTreeSet<u32>,
}

/// What the tracer reads from the host, so it runs against fakes in tests.
pub trait HostInputs {
    /// Finds new namespaces and forgets vanished ones, from `news` where it
    /// can.
    fn refresh(&mut self, news: &KernelNews);
    /// Listeners of every namespace that can have some, now.
    fn listeners(&mut self) -> Vec<NsListeners>;
    /// The socket inode that process `pid`'s descriptor `fd` refers to,
    /// with the process.
    fn socket_of(&self, pid: u32, fd: u32) -> Option<(u64, Owner)>;
    /// The owner of each listener socket in `wanted` (one entry each),
    /// starting from the process that called `listen()` where `known`
    /// has it; `grouped` are those in an `SO_REUSEPORT` group
    /// ([`reuseport_grouped`]).
    fn identify(&self, wanted: &BTreeSet<u64>, known: &BTreeMap<u64, Owner>, grouped: &BTreeSet<u64>) -> BTreeMap<u64, Identity>;
    /// When process `pid` started ([`Identity::start`]); `None` once it is
    /// gone.
    fn started(&self, pid: u32) -> Option<u64>;
    /// The `ip netns` names of namespaces, by inode ([`netns::names`]).
    fn netns_names(&self) -> BTreeMap<u32, String>;
}

impl HostInputs for Namespaces {
    fn refresh(&mut self, news: &KernelNews) {
        Namespaces::refresh(self, news);
    }
    fn listeners(&mut self) -> Vec<NsListeners> {
        Namespaces::listeners(self)
    }
    fn socket_of(&self, pid: u32, fd: u32) -> Option<(u64, Owner)> {
        procs::socket_of(pid, fd)
    }
    fn identify(&self, wanted: &BTreeSet<u64>, known: &BTreeMap<u64, Owner>, grouped: &BTreeSet<u64>) -> BTreeMap<u64, Identity> {
        identity::ProcFs::host().resolve(wanted, known, grouped)
    }
    fn started(&self, pid: u32) -> Option<u64> {
        identity::started_in(std::path::Path::new("/proc"), pid)
    }
    fn netns_names(&self) -> BTreeMap<u32, String> {
        netns::names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock_diag::Listener;

    #[test]
    fn reuseport_groups_share_namespace_address_and_port() {
        let l = |addr: &str, port, inode| Listener { addr: addr.parse().unwrap(), inode, ..Listener::example(port, (0, 4), 0) };
        let snapshot = [
            NsListeners { netns: 1, listeners: vec![l("127.0.0.1", 80, 1), l("127.0.0.1", 80, 2), l("0.0.0.0", 80, 3), l("::", 80, 4)] },
            NsListeners { netns: 2, listeners: vec![l("127.0.0.1", 80, 5)] },
        ];
        assert_eq!(reuseport_grouped(&snapshot), BTreeSet::from([1, 2]));
    }
}
