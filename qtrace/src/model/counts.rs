//! Per-kind counts: one number per [`Kind`], the shape every per-port
//! total, metric row and rate history shares.

use std::ops::{Index, IndexMut};

use crate::model::event::Kind;

/// One count per kind, indexed by [`Kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; Kind::ALL.len()]);

impl Counts {
    /// Packets lost to clients: every kind but cookies and discards,
    /// counted drops included. These add up to the namespace's `ListenDrops`.
    pub fn drops(&self) -> u64 {
        self.iter().filter(|(k, _)| k.is_drop()).map(|(_, n)| n).sum()
    }

    /// Every kind's count added up.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Whether anything overflowed: a drop, or a syncookie sent because
    /// the SYN queue was full. Quiet ports are summarised, not listed.
    pub fn is_active(&self) -> bool {
        self.drops() > 0 || self[Kind::SyncookieSent] > 0
    }

    /// Each kind with its count, in [`Kind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL.iter().map(|k| (*k, self[*k]))
    }

    /// The kinds that get a column in a table of `rows`: only those that
    /// occurred, so the view stays narrow and a tier that cannot see a kind
    /// shows no misleading zero. Discards are not overflows: they stay in
    /// the JSON summary.
    pub fn shown_kinds<'a>(rows: impl IntoIterator<Item = &'a Counts>) -> Vec<Kind> {
        let seen = rows.into_iter().fold(Counts::default(), |mut acc, c| {
            for (k, n) in c.iter() {
                acc[k] += n;
            }
            acc
        });
        Kind::ALL.into_iter().filter(|k| *k != Kind::ListenerDiscard && seen[*k] > 0).collect()
    }
}

impl Index<Kind> for Counts {
    type Output = u64;
    fn index(&self, k: Kind) -> &u64 {
        &self.0[k.index()]
    }
}

impl IndexMut<Kind> for Counts {
    fn index_mut(&mut self, k: Kind) -> &mut u64 {
        &mut self.0[k.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_leave_out_cookies_and_discards() {
        let mut c = Counts::default();
        assert!(!c.is_active());
        c[Kind::SyncookieSent] = 4;
        c[Kind::ListenerDiscard] = 9;
        assert_eq!(c.drops(), 0);
        assert!(c.is_active(), "cookies mean the SYN queue overflowed");
        c[Kind::AckOverflow] = 2;
        c[Kind::ListenerDropCounted] = 1;
        assert_eq!(c.drops(), 3);
    }

    #[test]
    fn only_kinds_that_happened_get_a_column() {
        let (mut a, mut b) = (Counts::default(), Counts::default());
        a[Kind::AckOverflow] = 1;
        b[Kind::SynQueueFull] = 2;
        b[Kind::ListenerDiscard] = 5;
        assert_eq!(Counts::shown_kinds([&a, &b]), vec![Kind::SynQueueFull, Kind::AckOverflow]);
    }
}
