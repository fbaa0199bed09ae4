//! Which network namespaces a poll reads, and when to look for new ones,
//! decided from what the kernel reported; no I/O here, so the rules run
//! against fakes in tests.
//!
//! Reading listeners (sock_diag) in every namespace and walking every task
//! for new namespaces at every poll costs in proportion to the host's
//! namespaces and threads, not to the listeners watched. Instead:
//! - a namespace whose last read showed listeners is read at every poll
//!   (its queues and drop counters are what qtrace shows);
//! - one whose last read showed none is read again only when the kernel
//!   reports a socket starting to listen there (`LISTEN_STARTS`), or drops
//!   counted there, or at the slow rescan;
//! - namespaces are found by walking `/proc` at the start, at the slow
//!   rescan, and at once when the kernel names one that qtrace cannot
//!   enter from what it knows: first each process, then, if that missed
//!   it, each thread.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use qtrace_common::{ListenStart, LISTEN_STARTS_MAX};

use crate::host::KernelNews;

/// How often every namespace is looked for and read again, whatever the
/// kernel reported. It bounds how long qtrace can go without seeing a
/// listener whose start the kernel's report lost (more than
/// `LISTEN_STARTS_MAX` namespaces in one poll, or a path to listening that
/// does not go through `inet_csk_listen_start()`), how long a namespace
/// that lost its last process stays in the namespace count and the
/// unreachable list, and nothing else: sockets of namespaces without
/// listeners are closed at the next poll, so no rescan is needed for them
/// to die. Such a listener's drops still all count once it is found (it
/// was born while qtrace watched, so it counts from zero), and if it
/// closes first its final counter comes from `CLOSED_LISTENERS`. At thirty
/// seconds, entering and reading 1,000 namespaces (under 0.1 ms each)
/// costs about 0.2% of a core; the rescan walks processes, not threads.
pub(crate) const RESCAN: Duration = Duration::from_secs(30);

/// The kernel reports a listen start before `get_port()` and `hash()` put
/// the socket in the tables sock_diag reads (`inet_csk_listen_start()`), so
/// a read racing with `listen(2)` can miss it: a namespace where one
/// started is read at this many polls in a row.
const READS_AFTER_START: u8 = 2;

/// How much of `/proc` a walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Depth {
    /// `/proc/PID/ns/net` of every process, and `/run/netns`: cheap, but
    /// misses a namespace only one non-leading thread is in.
    Processes,
    /// Every thread's `/proc/PID/task/TID/ns/net` too.
    Threads,
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Reads still owed although the last one found no listener.
    owed: u8,
    /// Whether its last read found listeners.
    listening: bool,
}

/// The namespaces qtrace can enter, and which to read at each poll.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    known: BTreeMap<u32, Entry>,
    last_walk: Option<Instant>,
    /// Namespaces the kernel named that qtrace did not know, when, and
    /// how deep a walk has looked for them: not searched again before the
    /// next slow rescan.
    searched: BTreeMap<u32, (Instant, Depth)>,
}

impl Plan {
    /// Takes the kernel's news; `locate` tells whether a namespace named in
    /// a listen start can be entered (already known, or found through the
    /// thread that listened). Returns the walk this poll needs, if any.
    pub(crate) fn learn(&mut self, news: &KernelNews, now: Instant, mut locate: impl FnMut(u32, &ListenStart) -> bool) -> Option<Depth> {
        self.searched.retain(|_, (at, _)| now.duration_since(*at) < RESCAN);
        let starts = news.listen_starts.as_deref().unwrap_or_default();
        let mut depth = match self.last_walk {
            // The namespaces made between the first walk and the attach.
            None => Some(Depth::Threads),
            // Starts that found the map full are missing from it.
            Some(_) if news.starts_overflowed || starts.len() >= LISTEN_STARTS_MAX as usize / 2 => Some(Depth::Threads),
            Some(at) if now.duration_since(at) >= RESCAN => Some(Depth::Processes),
            Some(_) => None,
        };
        for (ino, who) in starts {
            if locate(*ino, who) {
                self.owe(*ino, READS_AFTER_START);
            } else {
                depth = depth.max(self.search(*ino, now));
            }
        }
        for ino in &news.active {
            if self.known.contains_key(ino) {
                self.owe(*ino, 1);
            } else {
                depth = depth.max(self.search(*ino, now));
            }
        }
        depth
    }

    /// A walk of processes for a namespace qtrace does not know (a thread
    /// walk follows if it misses it, see [`Plan::walked`]), unless one
    /// already looked for it since the last slow rescan.
    fn search(&mut self, ino: u32, now: Instant) -> Option<Depth> {
        if self.searched.contains_key(&ino) {
            return None;
        }
        self.searched.insert(ino, (now, Depth::Processes));
        Some(Depth::Processes)
    }

    fn owe(&mut self, ino: u32, reads: u8) {
        let e = self.known.entry(ino).or_default();
        e.owed = e.owed.max(reads);
    }

    /// After a walk to `depth`: every namespace it found is read at this
    /// poll. Returns the deeper walk still needed: a walk of processes
    /// that missed a namespace the kernel named is followed at once by a
    /// walk of threads (a thread may have a namespace its process has not;
    /// walking 20,000 threads costs a hundred times more than walking
    /// processes, so it is done only when needed).
    pub(crate) fn walked(&mut self, found: impl IntoIterator<Item = u32>, depth: Depth, now: Instant) -> Option<Depth> {
        for ino in found {
            self.owe(ino, 1);
            self.searched.remove(&ino);
        }
        self.last_walk = Some(now);
        let mut deeper = None;
        for (_, walked) in self.searched.values_mut().filter(|(at, walked)| *at == now && *walked < Depth::Threads) {
            *walked = depth.max(*walked);
            if *walked < Depth::Threads {
                *walked = Depth::Threads;
                deeper = Some(Depth::Threads);
            }
        }
        deeper
    }

    /// Whether `ino` is read at this poll.
    pub(crate) fn due(&self, ino: u32) -> bool {
        self.known.get(&ino).is_some_and(|e| e.listening || e.owed > 0)
    }

    /// Whether `ino` was listening at its last read.
    pub(crate) fn listening(&self, ino: u32) -> bool {
        self.known.get(&ino).is_some_and(|e| e.listening)
    }

    /// Records a read of `ino`; returns whether to keep its socket for the
    /// next poll (a socket pins its namespace: one without listeners must
    /// not be kept alive by qtrace).
    pub(crate) fn read(&mut self, ino: u32, listeners: usize) -> bool {
        let e = self.known.entry(ino).or_default();
        e.listening = listeners > 0;
        e.owed = e.owed.saturating_sub(1);
        e.listening || e.owed > 0
    }

    /// Forgets a namespace that is gone or cannot be entered.
    pub(crate) fn forget(&mut self, ino: u32) {
        self.known.remove(&ino);
    }

    /// Keeps only the namespaces `keep` names (a listen start in one that
    /// cannot be entered must not leave it owed a read forever).
    pub(crate) fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.known.retain(|ino, _| keep(*ino));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn news(starts: &[u32], active: &[u32]) -> KernelNews {
        KernelNews {
            listen_starts: Some(starts.iter().map(|i| (*i, ListenStart { tgid: 1, tid: 1 })).collect()),
            starts_overflowed: false,
            active: active.iter().copied().collect(),
        }
    }

    #[test]
    fn the_first_poll_walks_threads_then_only_the_slow_rescan_walks() {
        let t0 = Instant::now();
        let mut plan = Plan::default();
        assert_eq!(plan.learn(&news(&[], &[]), t0, |_, _| true), Some(Depth::Threads));
        assert_eq!(plan.walked([1, 2], Depth::Threads, t0), None);
        assert!(plan.due(1) && plan.due(2), "everything found is read once");
        assert!(plan.read(1, 1), "a namespace with listeners keeps its socket");
        assert!(!plan.read(2, 0), "one without listeners does not");
        assert_eq!(plan.learn(&news(&[], &[]), t0 + Duration::from_secs(1), |_, _| true), None);
        assert!(plan.due(1) && !plan.due(2));
        assert_eq!(plan.learn(&news(&[], &[]), t0 + RESCAN, |_, _| true), Some(Depth::Processes));
    }

    #[test]
    fn a_listen_start_is_read_twice_then_dropped_if_still_empty() {
        let t0 = Instant::now();
        let mut plan = Plan::default();
        plan.learn(&news(&[], &[]), t0, |_, _| true);
        plan.walked([2], Depth::Threads, t0);
        plan.read(2, 0);
        assert_eq!(plan.learn(&news(&[2], &[]), t0, |_, _| true), None);
        assert!(plan.due(2));
        assert!(plan.read(2, 0), "the listener may not be hashed yet: read again");
        assert!(!plan.read(2, 0));
        assert!(!plan.due(2));
    }

    #[test]
    fn unknown_namespaces_are_searched_once_per_rescan() {
        let t0 = Instant::now();
        let mut plan = Plan::default();
        plan.learn(&news(&[], &[]), t0, |_, _| true);
        plan.walked([], Depth::Threads, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(plan.learn(&news(&[9], &[]), t1, |_, _| false), Some(Depth::Processes), "a start nobody can locate");
        assert_eq!(plan.walked([], Depth::Processes, t1), Some(Depth::Threads), "processes missed it: threads at once");
        assert_eq!(plan.walked([], Depth::Threads, t1), None);
        assert_eq!(plan.learn(&news(&[], &[9]), t1, |_, _| false), None, "not searched again so soon");
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(plan.learn(&news(&[], &[8]), t2, |_, _| false), Some(Depth::Processes), "drops in another unknown one");
        assert_eq!(plan.walked([8], Depth::Processes, t2), None, "found by the walk of processes");
        assert!(plan.due(8));
        let near_full: Vec<u32> = (100..100 + LISTEN_STARTS_MAX / 2).collect();
        assert_eq!(plan.learn(&news(&near_full, &[]), t1, |_, _| true), Some(Depth::Threads), "a nearly full map");
        let overflowed = KernelNews { starts_overflowed: true, ..news(&[], &[]) };
        assert_eq!(plan.learn(&overflowed, t1, |_, _| true), Some(Depth::Threads), "starts that found no room");
    }
}
