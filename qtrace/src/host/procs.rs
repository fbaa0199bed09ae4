//! Which processes hold a socket: `/proc/PID/fd/N` links read
//! `socket:[INODE]`, the inode sock_diag reports. Without privileges only
//! the caller's own processes are visible; the rest stay unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::Path;

use serde::Serialize;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

impl Owner {
    /// `comm(pid)`, what the tables show.
    pub fn short(&self) -> String {
        format!("{}({})", self.comm, self.pid)
    }
}

/// The inode of a `socket:[INODE]` link target.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The command name of `pid` (`/proc/PID/comm`, bytes that are not UTF-8
/// replaced), or `?`.
pub(crate) fn comm(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/comm")).map(|s| String::from_utf8_lossy(&s).trim_end().to_owned()).unwrap_or_else(|_| "?".into())
}

/// The socket inode descriptor `fd` of process `pid` refers to, with the
/// process; `None` once the descriptor or the process is gone.
pub(crate) fn socket_of(pid: u32, fd: u32) -> Option<(u64, Owner)> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let ino = socket_inode(link.to_str()?)?;
    Some((ino, Owner { pid, comm: comm(pid) }))
}

/// Who holds which sockets, and how many processes could not be looked
/// at: other users' `/proc/PID/fd` takes CAP_SYS_PTRACE (to read the
/// links) and CAP_DAC_READ_SEARCH (to list them).
#[derive(Debug, Default)]
pub(crate) struct Owners {
    pub by_inode: BTreeMap<u64, Vec<Owner>>,
    /// The processes that wait for each socket in an epoll instance: the
    /// ones that accept from it, where several hold it.
    pub polled_by: BTreeMap<u64, BTreeSet<u32>>,
    pub unreadable: usize,
}

/// The inodes of the files an epoll instance watches, from its
/// `/proc/PID/fdinfo/FD` text (`ep_show_fdinfo` in fs/eventpoll.c prints a
/// `tfd: FD events: MASK data: DATA pos:POS ino:HEX sdev:HEX` line per
/// watched file).
pub(crate) fn epoll_targets(fdinfo: &str) -> impl Iterator<Item = u64> + '_ {
    fdinfo.lines().filter(|l| l.starts_with("tfd:")).filter_map(|l| {
        let hex = l.split_whitespace().find_map(|f| f.strip_prefix("ino:"))?;
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Whether process `pid` of the `/proc` at `root` watches socket `ino` in
/// one of its epoll instances (`/proc/PID/fd` links
/// `anon_inode:[eventpoll]`); `None` when its descriptors cannot be read
/// (another user's, without CAP_SYS_PTRACE) or it is gone.
pub(crate) fn polls(root: &Path, pid: u32, ino: u64) -> Option<bool> {
    let dir = root.join(pid.to_string());
    let mut found = false;
    for fd in std::fs::read_dir(dir.join("fd")).ok()?.flatten() {
        let link = std::fs::read_link(fd.path());
        if link.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) {
            return None;
        }
        found |= link.is_ok_and(|l| l.as_os_str() == EVENTPOLL) && epoll_watches(&dir, &fd.file_name(), |i| i == ino);
    }
    Some(found)
}

const EVENTPOLL: &str = "anon_inode:[eventpoll]";

/// Whether the epoll instance at descriptor `fd` of the process at `dir`
/// watches a file `wanted` accepts.
fn epoll_watches(dir: &Path, fd: &std::ffi::OsStr, mut wanted: impl FnMut(u64) -> bool) -> bool {
    // Bounded: the kernel lists an instance's files in the order of its
    // tree (by file address, not registration), so a connection server
    // watching many thousand sockets may list its listener past the bound.
    let mut text = String::new();
    let read = std::fs::File::open(dir.join("fdinfo").join(fd)).and_then(|f| f.take(FDINFO_MAX).read_to_string(&mut text));
    // A line cut by the bound could name another inode.
    let whole = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    read.is_ok() && epoll_targets(whole).any(&mut wanted)
}

/// Enough of an epoll instance's fdinfo for about 8,000 watched files.
const FDINFO_MAX: u64 = 1 << 20;

/// Every process holding each socket inode in `wanted`, by inode, and of
/// those holding one in `pollers_of`, which ones wait for it in epoll.
/// Reading an epoll instance's fdinfo makes the kernel list all its files
/// under the instance's lock, which a busy proxy's `epoll_ctl()` waits
/// for: only the holders of `pollers_of` (an `SO_REUSEPORT` group's
/// listeners) have theirs read.
pub(crate) fn owners(wanted: &BTreeSet<u64>, pollers_of: &BTreeSet<u64>) -> Owners {
    let mut out = Owners::default();
    if wanted.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            scan_process(pid, wanted, pollers_of, &mut out);
        }
    }
    out
}

/// [`owners`] for one process.
fn scan_process(pid: u32, wanted: &BTreeSet<u64>, pollers_of: &BTreeSet<u64>, out: &mut Owners) {
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    let dir = Path::new("/proc").join(pid.to_string());
    let fds = match std::fs::read_dir(dir.join("fd")) {
        Ok(fds) => fds,
        Err(e) => {
            out.unreadable += usize::from(denied(&e));
            return;
        }
    };
    let (mut name, mut epolls, mut polled_held) = (None, Vec::new(), false);
    for fd in fds.flatten() {
        let link = match std::fs::read_link(fd.path()) {
            Ok(link) => link,
            // Listed but not readable: every link of it will be the same.
            Err(e) if denied(&e) => {
                out.unreadable += 1;
                return;
            }
            Err(_) => continue,
        };
        if link.as_os_str() == EVENTPOLL {
            epolls.push(fd.file_name());
            continue;
        }
        let Some(ino) = link.to_str().and_then(socket_inode).filter(|i| wanted.contains(i)) else {
            continue;
        };
        polled_held |= pollers_of.contains(&ino);
        let comm = name.get_or_insert_with(|| comm(pid)).clone();
        let list = out.by_inode.entry(ino).or_default();
        if !list.iter().any(|o| o.pid == pid) {
            list.push(Owner { pid, comm });
        }
    }
    if !polled_held {
        return;
    }
    for fd in epolls {
        epoll_watches(&dir, &fd, |ino| {
            if pollers_of.contains(&ino) {
                out.polled_by.entry(ino).or_default().insert(pid);
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn epoll_fdinfo() {
        // Two listeners and a socketpair, as an nginx worker's instance
        // shows them (6.18); an older kernel's lines without `ino:`.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n\
            tfd:        4 events:     2019 data:     562c82d86e90  pos:0 ino:9d7163 sdev:9\n\
            tfd:        9 events: 80000019 data:     562c4f297340  pos:0 ino:40e sdev:10\n\
            tfd:        7 events:       19 data:     562c82d86f80\n";
        assert_eq!(epoll_targets(text).collect::<Vec<_>>(), [0x9d7163, 0x40e]);
        assert_eq!(epoll_targets("tfd: 1 ino:zz\n").count(), 0);
    }

    #[test]
    fn finds_its_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let ino = socket_inode(link.to_str().unwrap()).unwrap();
        let found = owners(&[ino].into(), &BTreeSet::new());
        assert_eq!(found.by_inode[&ino], vec![Owner { pid: std::process::id(), comm: comm(std::process::id()) }]);
    }
}
