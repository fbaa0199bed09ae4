//! Which processes hold a socket: `/proc/PID/fd/N` links read
//! `socket:[INODE]`, the inode sock_diag reports. Without privileges only
//! the caller's own processes are visible; the rest stay unknown.

use std::collections::BTreeMap;
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
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The command name of `pid` (`/proc/PID/comm`), or `?`.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_owned()).unwrap_or_else(|_| "?".into())
}

/// Every process holding each socket inode in `wanted`, by inode.
pub fn owners(wanted: &std::collections::BTreeSet<u64>) -> BTreeMap<u64, Vec<Owner>> {
    let mut out: BTreeMap<u64, Vec<Owner>> = BTreeMap::new();
    if wanted.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
            continue;
        };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = link.to_str().and_then(socket_inode) else {
                continue;
            };
            if wanted.contains(&ino) {
                let comm = name.get_or_insert_with(|| comm(pid)).clone();
                let list = out.entry(ino).or_default();
                if !list.iter().any(|o| o.pid == pid) {
                    list.push(Owner { pid, comm });
                }
            }
        }
    }
    out
}

/// How many processes' descriptor tables could not be read: other users'
/// `/proc/PID/fd` takes CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
pub fn unreadable() -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    procs
        .flatten()
        .filter(|p| p.file_name().to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())))
        .filter(|p| match std::fs::read_dir(p.path().join("fd")) {
            Err(e) => denied(&e),
            // Listing may be allowed (CAP_DAC_READ_SEARCH) and reading the
            // links not (they take a ptrace check).
            Ok(mut fds) => fds.find_map(Result::ok).is_some_and(|fd| std::fs::read_link(fd.path()).is_err_and(|e| denied(&e))),
        })
        .count()
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
    fn finds_its_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let ino = socket_inode(link.to_str().unwrap()).unwrap();
        let found = owners(&[ino].into());
        assert_eq!(found[&ino], vec![Owner { pid: std::process::id(), comm: comm(std::process::id()) }]);
    }
}
