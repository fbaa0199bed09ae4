//! Requested versus effective backlog. `listen(fd, backlog)` stores
//! `min(backlog, net.core.somaxconn)` as the accept-queue bound
//! (`__sys_listen()`; a negative backlog counts as huge) and keeps the
//! request nowhere, so a clamp is only proven when qtrace saw the call
//! (`listen_calls` in the kernel side); otherwise a bound equal to
//! `somaxconn` is flagged as a likely clamp.

use std::collections::{BTreeMap, BTreeSet};

use qtrace_common::{ListenCall, ListenKey};
use serde::Serialize;

use crate::host::procs::Owner;

/// Whether `somaxconn` cut a listener's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Clamp {
    /// The bound is what the application asked for, or below `somaxconn`.
    No,
    /// The bound equals `somaxconn` and the call was not seen: the
    /// application probably asked for more.
    Likely,
    /// qtrace saw the application ask for more than it got.
    Proven,
}

/// Classifies a listener's accept-queue bound `max`.
pub(crate) fn clamp(requested: Option<i32>, max: u32, somaxconn: Option<u32>) -> Clamp {
    match requested {
        // Compared unsigned, as the kernel does: -1 means "the most allowed".
        Some(r) if r as u32 > max => Clamp::Proven,
        Some(_) => Clamp::No,
        None if somaxconn == Some(max) => Clamp::Likely,
        None => Clamp::No,
    }
}

/// One `listen(2)` call matched to its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requested {
    pub backlog: i32,
    pub owner: Owner,
}

/// Requested backlogs by socket inode.
#[derive(Debug, Default)]
pub(crate) struct RequestedBacklogs {
    by_inode: BTreeMap<u64, Requested>,
}

impl RequestedBacklogs {
    /// Takes the calls the kernel recorded, oldest first, matching each
    /// (process, descriptor) to its socket with `socket_of`. Calls whose
    /// descriptor is already gone (closed, or the process exited) match
    /// nothing. Returns the inodes matched now.
    pub(crate) fn collect(
        &mut self,
        mut calls: Vec<(ListenKey, ListenCall)>,
        socket_of: impl Fn(u32, u32) -> Option<(u64, Owner)>,
    ) -> Vec<u64> {
        calls.sort_by_key(|(_, c)| c.ts_ns);
        let mut found = Vec::new();
        for (key, call) in calls {
            if let Some((ino, owner)) = socket_of(key.tgid, key.fd) {
                self.by_inode.insert(ino, Requested { backlog: call.backlog, owner });
                found.push(ino);
            }
        }
        found
    }

    pub(crate) fn get(&self, inode: u64) -> Option<&Requested> {
        self.by_inode.get(&inode)
    }

    /// Forgets sockets that no longer listen (bounded memory under churn).
    pub(crate) fn retain(&mut self, live: &BTreeSet<u64>) {
        self.by_inode.retain(|ino, _| live.contains(ino));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_is_proven_only_by_a_seen_request() {
        assert_eq!(clamp(Some(4096), 64, Some(64)), Clamp::Proven);
        assert_eq!(clamp(Some(-1), 4096, Some(4096)), Clamp::Proven);
        assert_eq!(clamp(Some(64), 64, Some(64)), Clamp::No);
        assert_eq!(clamp(Some(5), 5, Some(4096)), Clamp::No);
        assert_eq!(clamp(None, 64, Some(64)), Clamp::Likely);
        assert_eq!(clamp(None, 5, Some(64)), Clamp::No);
        assert_eq!(clamp(None, 64, None), Clamp::No);
    }
}
