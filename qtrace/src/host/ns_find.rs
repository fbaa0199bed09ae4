//! Finding network namespaces on the host, the way `lsns` and `ip netns`
//! do: the bind mounts under `/run/netns` and the `ns/net` link of every
//! process (or every thread), and entering many of them to open a
//! sock_diag socket in each.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use qtrace_common::ListenStart;

use crate::host::ns_plan::Depth;
use crate::host::sock_diag::DiagSocket;

/// The namespace inode a `ns/net` link names: readlink gives
/// "net:[4026531840]" without opening anything.
pub(crate) fn linked_inode(link: &Path) -> Option<u32> {
    let target = std::fs::read_link(link).ok()?;
    target.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Whether `path` (a `ns/net` link or a `/run/netns` file) still leads to
/// namespace `ino`: a task's link follows the task, which may have exited
/// or moved.
pub(crate) fn leads_to(path: &Path, ino: u32) -> bool {
    linked_inode(path).or_else(|| std::fs::metadata(path).ok().map(|m| m.ino() as u32)) == Some(ino)
}

/// Where each namespace can be entered, keyed by inode.
pub(crate) fn discover(depth: Depth) -> BTreeMap<u32, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if let Ok(m) = std::fs::metadata(e.path()) {
                    found.entry(m.ino() as u32).or_insert_with(|| e.path());
                }
            }
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        if !p.file_name().as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let link = p.path().join("ns/net");
        match linked_inode(&link) {
            // A thread that called unshare(CLONE_NEWNET) or setns(2) has a
            // namespace its process does not: only a thread walk sees it.
            Some(ino) if depth == Depth::Processes => {
                found.entry(ino).or_insert(link);
            }
            // Threads, or a leader without namespaces (it exited while
            // other threads run on).
            _ => threads(&p.path(), &mut found),
        }
    }
    found
}

fn threads(proc_dir: &Path, found: &mut BTreeMap<u32, PathBuf>) {
    let Ok(tasks) = std::fs::read_dir(proc_dir.join("task")) else {
        return;
    };
    for t in tasks.flatten() {
        let link = t.path().join("ns/net");
        if let Some(ino) = linked_inode(&link) {
            found.entry(ino).or_insert(link);
        }
    }
}

/// A path into namespace `ino` through the thread that started a listener
/// there, or its process, if either still is in it.
pub(crate) fn through_task(ino: u32, who: &ListenStart) -> Option<PathBuf> {
    let thread = PathBuf::from(format!("/proc/{}/task/{}/ns/net", who.tgid, who.tid));
    let process = PathBuf::from(format!("/proc/{}/ns/net", who.tgid));
    [thread, process].into_iter().find(|p| linked_inode(p) == Some(ino))
}

/// Opens a sock_diag socket in each namespace, all from one short-lived
/// thread that `setns(2)`s from one to the next (a socket stays in the
/// namespace it was created in). Each path is checked to lead to its
/// inode once opened: task links follow their task.
pub(crate) fn open_sockets(targets: Vec<(u32, PathBuf)>) -> Vec<(u32, io::Result<DiagSocket>)> {
    if targets.is_empty() {
        return Vec::new();
    }
    std::thread::scope(|s| {
        s.spawn(|| targets.iter().map(|(ino, path)| (*ino, enter_and_open(*ino, path))).collect())
            .join()
            .unwrap_or_default()
    })
}

fn enter_and_open(ino: u32, path: &Path) -> io::Result<DiagSocket> {
    let ns = File::open(path)?;
    if ns.metadata()?.ino() as u32 != ino {
        return Err(io::Error::new(io::ErrorKind::NotFound, "the namespace is no longer there"));
    }
    // SAFETY: setns(2) on a namespace fd we hold open; it only changes the
    // calling thread's namespace, a thread `open_sockets` made for this.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    DiagSocket::open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_found_at_both_depths() {
        let own = linked_inode(Path::new("/proc/self/ns/net")).expect("own namespace link");
        for depth in [Depth::Processes, Depth::Threads] {
            let found = discover(depth);
            assert!(found.contains_key(&own), "{depth:?}");
            assert!(found.iter().all(|(ino, p)| leads_to(p, *ino)), "{depth:?}: every path leads to its namespace");
        }
        let me = ListenStart { tgid: std::process::id(), tid: std::process::id() };
        assert!(through_task(own, &me).is_some());
        assert!(through_task(own.wrapping_add(1), &me).is_none());
    }
}
