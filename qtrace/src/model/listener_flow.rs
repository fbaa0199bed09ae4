//! Arrivals and accepts per listener socket. With `SO_REUSEPORT` each
//! listener has its own accept queue, and one stalled worker overflows
//! while its siblings idle: per-port totals hide that.
//!
//! Accepts come from the kernel (`LISTENER_ACCEPTS`: every `accept()` that
//! returned a connection from the listener). Arrivals (handshakes
//! completed) follow from them and the listener's queue length at each
//! poll: whatever arrived was accepted or is still queued, so arrivals =
//! accepts + queue now − queue when qtrace first saw the listener (0 for a
//! listener born while qtrace watched). Exact at each poll, up to the
//! moments between reading the queue and the accepts; a connection reset
//! by its client while queued is still an arrival (`accept()` returns it).

use std::sync::Arc;

use crate::host::identity::Identity;

/// One listener socket's flow since qtrace first saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerFlow {
    pub cookie: u64,
    pub inode: u32,
    /// Accepted connections (the kernel's count).
    pub accepts: u64,
    /// Queue length when first seen: connections that arrived earlier.
    queue_first: u32,
    /// Accept queue now and its bound.
    pub queue: u32,
    pub queue_max: u32,
    /// Drops of this listener (its drop counter's growth).
    pub drops: u64,
    /// Per second over the last interval.
    pub arrival_rate: f64,
    pub accept_rate: f64,
    /// Highest arrival rate over any interval, and the accept rate then.
    pub peak: (f64, f64),
    prev: (u64, u64),
    pub owner: Option<Arc<Identity>>,
    /// False once it closed (its last counts stay).
    pub open: bool,
    /// The most arrivals reported so far: a counter never goes back (the
    /// queue and the accepts are read moments apart).
    arrivals_seen: u64,
}

impl ListenerFlow {
    /// A listener first seen with `queue` connections waiting; `born` when
    /// it appeared while qtrace watched (its queue then arrived since).
    pub fn new(cookie: u64, inode: u32, queue: u32, queue_max: u32, born: bool) -> Self {
        Self { cookie, inode, queue_first: if born { 0 } else { queue }, queue, queue_max, open: true, ..Self::default() }
    }

    /// Handshakes completed since qtrace first saw it (never fewer than
    /// reported before).
    pub fn arrivals(&self) -> u64 {
        (self.accepts + u64::from(self.queue)).saturating_sub(u64::from(self.queue_first)).max(self.arrivals_seen)
    }

    /// Keeps what [`Self::arrivals`] says now as its floor.
    pub fn settle(&mut self) {
        self.arrivals_seen = self.arrivals();
    }

    /// Handshakes completed since qtrace first saw it that were accepted
    /// or arrived before its last poll, once closed: what was queued at its
    /// close is counted by the kernel instead (connections reset by the
    /// close, per port), exactly.
    pub fn arrivals_accepted(&self) -> u64 {
        self.accepts.saturating_sub(u64::from(self.queue_first))
    }

    /// Rates after `seconds`.
    pub fn tick(&mut self, seconds: f64) {
        let now = (self.arrivals(), self.accepts);
        if seconds > 0.0 {
            self.arrival_rate = now.0.saturating_sub(self.prev.0) as f64 / seconds;
            self.accept_rate = now.1.saturating_sub(self.prev.1) as f64 / seconds;
            if self.arrival_rate > self.peak.0 {
                self.peak = (self.arrival_rate, self.accept_rate);
            }
        }
        self.prev = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_accepts_plus_queue_growth() {
        // 3 waiting at start; 10 accepted since, 5 waiting now: 12 arrived.
        let mut f = ListenerFlow::new(1, 1, 3, 128, false);
        f.accepts = 10;
        f.queue = 5;
        assert_eq!(f.arrivals(), 12);
        // Born while watched: its first queue arrived too.
        let mut g = ListenerFlow::new(2, 2, 3, 128, true);
        g.accepts = 1;
        assert_eq!(g.arrivals(), 4);
    }

    #[test]
    fn arrivals_never_go_back() {
        // 100 queued at one poll, all accepted by the next, but the accepts
        // were read before they happened: 100 arrivals, then still 100.
        let mut f = ListenerFlow::new(1, 1, 0, 128, true);
        f.queue = 100;
        f.settle();
        f.queue = 0;
        assert_eq!(f.arrivals(), 100);
        f.accepts = 100;
        assert_eq!(f.arrivals(), 100);
        f.accepts = 101;
        assert_eq!(f.arrivals(), 101);
    }

    #[test]
    fn rates_and_peak() {
        let mut f = ListenerFlow::new(1, 1, 0, 4, true);
        f.tick(1.0);
        f.queue = 4;
        f.accepts = 2;
        f.tick(2.0);
        assert_eq!((f.arrival_rate, f.accept_rate), (3.0, 1.0));
        f.accepts = 4;
        f.queue = 2;
        f.tick(1.0);
        assert_eq!((f.arrival_rate, f.accept_rate), (0.0, 2.0));
        assert_eq!(f.peak, (3.0, 1.0));
    }
}
