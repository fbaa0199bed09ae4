//! A snapshot of every TCP listener with what an operator needs next to
//! it: SYN queue length, owning processes, the namespace's `somaxconn` and
//! whether it clamped the backlog.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::host::identity::Identity;
use crate::host::ns_state::Settings;
use crate::host::procs::Owner;
use crate::host::sock_diag::Listener;
use crate::host::Survey;
use crate::model::backlog::{self, Clamp, RequestedBacklogs};
use crate::model::ports::PortSet;

/// One listener and its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerRow {
    pub netns: u32,
    pub listener: Listener,
    /// Requests in its SYN queue; `None` when another listener on the same
    /// port could own them (the dump does not say which).
    pub syn_queue: Option<u32>,
    pub owners: Vec<Owner>,
    /// Who it belongs to (`host::identity`).
    pub owner: Option<Identity>,
    pub somaxconn: Option<u32>,
    /// The backlog the application asked for, when qtrace saw the call.
    pub requested_backlog: Option<i32>,
    pub clamp: Clamp,
}

fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// Counts the requests (`SYN_RECV` sockets, by local address and port) each
/// listener owns. A request belongs to the listeners on its port bound to
/// its address or to a wildcard; when more than one could own it, the
/// count of each is unknown.
pub(crate) fn syn_queues(listeners: &[Listener], requests: &[(IpAddr, u16)]) -> Vec<Option<u32>> {
    let mut counts: Vec<Option<u32>> = vec![Some(0); listeners.len()];
    for &(addr, port) in requests {
        let addr = unmapped(addr);
        let owners: Vec<usize> = listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.port == port && (l.addr.is_unspecified() || unmapped(l.addr) == addr))
            .map(|(i, _)| i)
            .collect();
        match owners[..] {
            [one] => {
                if let Some(c) = &mut counts[one] {
                    *c += 1;
                }
            }
            _ => owners.iter().for_each(|&i| counts[i] = None),
        }
    }
    counts
}

/// Every listener on a watched port of every namespace `survey` saw,
/// sorted by namespace, port and address, with its SYN queue, owners,
/// `somaxconn` and clamp.
pub(crate) fn rows(
    survey: Survey,
    ports: &PortSet,
    settings: &BTreeMap<u32, Settings>,
    requested: Option<&RequestedBacklogs>,
) -> Vec<ListenerRow> {
    let Survey { listeners, mut requests, mut owners, mut identities } = survey;
    let mut rows = Vec::new();
    for ns in listeners {
        let reqs = requests.remove(&ns.netns).unwrap_or_default();
        let syn = syn_queues(&ns.listeners, &reqs);
        let somaxconn = settings.get(&ns.netns).and_then(|s| s.somaxconn);
        for (l, syn_queue) in ns.listeners.into_iter().zip(syn) {
            if !ports.contains(l.port) {
                continue;
            }
            let requested_backlog = requested.and_then(|r| r.get(u64::from(l.inode))).map(|r| r.backlog);
            let mut own = owners.remove(&u64::from(l.inode)).unwrap_or_default();
            let owner = identities.remove(&u64::from(l.inode));
            own.sort();
            rows.push(ListenerRow {
                netns: ns.netns,
                clamp: backlog::clamp(requested_backlog, l.accept_queue_max, somaxconn),
                listener: l,
                syn_queue,
                owners: own,
                owner,
                somaxconn,
                requested_backlog,
            });
        }
    }
    rows.sort_by_key(|a| (a.netns, a.listener.port, a.listener.addr));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(addr: &str, port: u16) -> Listener {
        Listener { addr: addr.parse().unwrap(), ..Listener::example(port, (0, 8), 0) }
    }

    #[test]
    fn requests_go_to_the_one_listener_that_can_own_them() {
        let ls = [l("127.0.0.1", 80), l("0.0.0.0", 81), l("10.0.0.1", 82), l("0.0.0.0", 82), l("::", 83)];
        let r = |a: &str, p| (a.parse().unwrap(), p);
        let reqs =
            [r("127.0.0.1", 80), r("127.0.0.1", 80), r("10.1.1.1", 81), r("10.0.0.2", 82), r("::ffff:127.0.0.1", 83), r("127.0.0.1", 99)];
        assert_eq!(syn_queues(&ls, &reqs), vec![Some(2), Some(1), Some(0), Some(1), Some(1)]);
        // 10.0.0.1:82 could be either listener on 82: both unknown.
        let reqs = [r("10.0.0.1", 82)];
        assert_eq!(syn_queues(&ls, &reqs), vec![Some(0), Some(0), None, None, Some(0)]);
    }
}
