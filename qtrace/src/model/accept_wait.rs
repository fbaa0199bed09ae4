//! One port's accept-queue waits, from the kernel's histogram slots
//! ([`qtrace_common::wait`]): how many connections were accepted, how long
//! they waited (percentiles read from log-linear buckets, the maximum
//! exact), and the connections the server worked on for nobody.

use std::collections::BTreeMap;

use qtrace_common::wait;

/// A port's accept-queue waits since qtrace started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptWait {
    /// Connections accepted per histogram bucket.
    buckets: BTreeMap<u8, u64>,
    pub sum_ns: u64,
    pub max_ns: u64,
    /// Accepted after their client had left (FIN or RST while queued).
    pub client_gone: u64,
    /// Reset while queued because their listener closed.
    pub listener_closed: u64,
}

/// What the records show of it: counts, and waits in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WaitSummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl AcceptWait {
    /// Sets slot `slot` to `value` (the kernel's running totals).
    pub fn set(&mut self, slot: u8, value: u64) {
        match slot {
            wait::SUM_NS => self.sum_ns = value,
            wait::MAX_NS => self.max_ns = value,
            wait::CLIENT_GONE => self.client_gone = value,
            wait::LISTENER_CLOSED => self.listener_closed = value,
            b if b < wait::BUCKETS => {
                self.buckets.insert(b, value);
            }
            _ => {}
        }
    }

    /// Adds one value of `ns` (a histogram kept in userspace, in the
    /// kernel's buckets).
    pub fn record(&mut self, ns: u64) {
        *self.buckets.entry(wait::bucket(ns)).or_default() += 1;
        self.sum_ns += ns;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Connections accepted in bucket `b`.
    pub fn count_in(&self, b: u8) -> u64 {
        self.buckets.get(&b).copied().unwrap_or(0)
    }

    /// Connections accepted.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// Whether anything was measured.
    pub fn is_active(&self) -> bool {
        self.count() > 0 || self.listener_closed > 0
    }

    /// The wait at quantile `q` (0 < q <= 1) in nanoseconds: the middle of
    /// the bucket that holds the `ceil(q * count)`-th shortest wait, never
    /// above the exact maximum. `None` before the first accept.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (lo, hi) = wait::bounds(b);
                return Some((lo + (hi - lo) / 2).min(self.max_ns.max(lo)));
            }
        }
        Some(self.max_ns)
    }

    /// Count, p50, p99 and maximum; `None` before the first accept.
    pub fn summary(&self) -> Option<WaitSummary> {
        let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
        Some(WaitSummary { count: self.count(), p50: ms(self.quantile_ns(0.5)?), p99: ms(self.quantile_ns(0.99)?), max: ms(self.max_ns) })
    }

    /// Connections accepted with a wait below `le_ns` (a bucket bound:
    /// exact there), for cumulative histogram buckets.
    pub fn count_below(&self, le_ns: u64) -> u64 {
        self.buckets.iter().filter(|(b, _)| wait::bounds(**b).1 <= le_ns).map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(waits_ns: &[u64]) -> AcceptWait {
        let mut w = AcceptWait::default();
        let mut counts: BTreeMap<u8, u64> = BTreeMap::new();
        for &ns in waits_ns {
            *counts.entry(wait::bucket(ns)).or_default() += 1;
        }
        for (b, n) in counts {
            w.set(b, n);
        }
        w.set(wait::SUM_NS, waits_ns.iter().sum());
        w.set(wait::MAX_NS, waits_ns.iter().copied().max().unwrap_or(0));
        w
    }

    #[test]
    fn percentiles_are_within_an_eighth_of_the_true_value() {
        // 1..=1000 ms: p50 is 500 ms, p99 990 ms.
        let waits: Vec<u64> = (1..=1000).map(|ms| ms * 1_000_000).collect();
        let w = with(&waits);
        assert_eq!(w.count(), 1000);
        let p50 = w.quantile_ns(0.5).unwrap() as f64;
        let p99 = w.quantile_ns(0.99).unwrap() as f64;
        assert!((p50 / 500e6 - 1.0).abs() <= 0.125, "p50 {p50}");
        assert!((p99 / 990e6 - 1.0).abs() <= 0.125, "p99 {p99}");
        assert_eq!(w.summary().unwrap().max, 1000.0);
    }

    #[test]
    fn a_percentile_never_exceeds_the_maximum() {
        let w = with(&[300_000_000]);
        assert_eq!(w.quantile_ns(0.99), Some(300_000_000));
        assert_eq!(w.summary(), Some(WaitSummary { count: 1, p50: 300.0, p99: 300.0, max: 300.0 }));
    }

    #[test]
    fn nothing_accepted_has_no_percentiles() {
        let mut w = AcceptWait::default();
        w.set(wait::LISTENER_CLOSED, 3);
        assert_eq!(w.summary(), None);
        assert!(w.is_active());
        assert!(!AcceptWait::default().is_active());
    }

    #[test]
    fn cumulative_counts_at_bucket_bounds_are_exact() {
        let w = with(&[1 << 20, (1 << 21) - 1, 1 << 21, 1 << 30]);
        assert_eq!(w.count_below(1 << 20), 0);
        assert_eq!(w.count_below(1 << 21), 2);
        assert_eq!(w.count_below(1 << 22), 3);
        assert_eq!(w.count_below(u64::MAX), 4);
    }
}
