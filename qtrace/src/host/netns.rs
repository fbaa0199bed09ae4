//! Network namespaces on the host, found the way `lsns` and `ip netns` do:
//! every task's `/proc/<pid>/task/<tid>/ns/net` plus the bind mounts under
//! `/run/netns`. qtrace keeps one sock_diag socket per namespace, created in
//! a short-lived thread that `setns(2)`s into it (a socket stays in the
//! namespace it was created in).
//!
//! A socket pins its namespace, so sockets of namespaces no longer found are
//! closed on every refresh: qtrace must not keep dead containers' namespaces
//! alive.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::sock_diag::{DiagSocket, Listener};

/// Inode of a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn inode_of(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.ino() as u32)
}

/// The calling process's network namespace.
pub fn own() -> io::Result<u32> {
    inode_of(Path::new("/proc/self/ns/net"))
}

/// Resolves a user's `--netns` value: an inode number, a name from
/// `ip netns` (`/run/netns/NAME`) or a path to a namespace file.
pub fn resolve(spec: &str) -> Result<u32> {
    if let Ok(inode) = spec.parse::<u32>() {
        return Ok(inode);
    }
    let path = if spec.contains('/') { PathBuf::from(spec) } else { Path::new("/run/netns").join(spec) };
    let inode = inode_of(&path).with_context(|| format!("network namespace {spec:?} not found ({})", path.display()))?;
    if !is_nsfs(&path) {
        bail!("{} is not a network namespace file", path.display());
    }
    Ok(inode)
}

/// Namespace files live on nsfs (`NSFS_MAGIC`).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, valid when zeroed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) writes into a struct we own; c is NUL-terminated.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as libc::c_long == NSFS_MAGIC }
}

/// Where each namespace can be entered, keyed by inode.
fn discover() -> BTreeMap<u32, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if let Ok(ino) = inode_of(&e.path()) {
                    found.entry(ino).or_insert_with(|| e.path());
                }
            }
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let ns = t.path().join("ns/net");
            // readlink gives "net:[4026531840]" without opening anything.
            let Ok(link) = std::fs::read_link(&ns) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(ino) = link.strip_prefix("net:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok()) {
                found.entry(ino).or_insert(ns);
            }
        }
    }
    found
}

/// Runs `f` on a short-lived thread inside the namespace at `path`. Sockets
/// and `/proc/thread-self/net` or `/proc/sys/net` files it opens belong to
/// that namespace.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on a namespace fd we hold open; it only
            // changes this short-lived thread's namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Listeners of one namespace.
#[derive(Debug, Clone)]
pub struct NsListeners {
    pub netns: u32,
    pub listeners: Vec<Listener>,
}

/// The namespaces qtrace watches and a sock_diag socket in each.
pub struct Namespaces {
    only: Option<u32>,
    own: u32,
    sockets: BTreeMap<u32, DiagSocket>,
    /// Where each watched namespace can be entered.
    paths: BTreeMap<u32, PathBuf>,
    /// Namespaces that could not be entered, with why (shown once).
    pub unreachable: BTreeMap<u32, String>,
}

impl Namespaces {
    /// Watches every namespace, or only `only`.
    pub fn new(only: Option<u32>) -> Result<Self> {
        let own = own().context("reading /proc/self/ns/net")?;
        let mut ns = Self { only, own, sockets: BTreeMap::new(), paths: BTreeMap::new(), unreachable: BTreeMap::new() };
        ns.refresh();
        if let Some(inode) = only {
            if !ns.sockets.contains_key(&inode) {
                let why = ns.unreachable.get(&inode).cloned().unwrap_or_else(|| "no process or /run/netns entry has it".into());
                bail!("network namespace {inode} cannot be watched: {why}");
            }
        }
        Ok(ns)
    }

    /// Finds new namespaces and forgets vanished ones.
    pub fn refresh(&mut self) {
        let found = discover();
        let wanted: BTreeSet<u32> = found.keys().copied().filter(|i| self.only.is_none_or(|o| o == *i)).collect();
        self.sockets.retain(|ino, _| wanted.contains(ino));
        self.paths.retain(|ino, _| wanted.contains(ino));
        self.unreachable.retain(|ino, _| wanted.contains(ino));
        for ino in wanted {
            if self.sockets.contains_key(&ino) || self.unreachable.contains_key(&ino) {
                continue;
            }
            let sock = if ino == self.own { DiagSocket::open() } else { run_in(&found[&ino], DiagSocket::open) };
            match sock {
                Ok(s) => {
                    self.sockets.insert(ino, s);
                    self.paths.insert(ino, found[&ino].clone());
                }
                Err(e) => {
                    let why =
                        if e.raw_os_error() == Some(libc::EPERM) { "entering it needs CAP_SYS_ADMIN".to_owned() } else { e.to_string() };
                    self.unreachable.insert(ino, why);
                }
            }
        }
    }

    /// Listeners of every watched namespace. A namespace whose dump fails is
    /// forgotten (it is found again on the next refresh if it still exists).
    pub fn listeners(&mut self) -> Vec<NsListeners> {
        self.each(|sock| sock.listeners()).into_iter().map(|(netns, listeners)| NsListeners { netns, listeners }).collect()
    }

    /// Local address and port of every request socket (`SYN_RECV`) of
    /// every watched namespace: the SYN queues' contents.
    pub fn requests(&mut self) -> BTreeMap<u32, Vec<(IpAddr, u16)>> {
        self.each(|sock| sock.requests()).into_iter().collect()
    }

    fn each<T>(&mut self, mut f: impl FnMut(&mut DiagSocket) -> io::Result<T>) -> Vec<(u32, T)> {
        let mut out = Vec::with_capacity(self.sockets.len());
        let mut failed = Vec::new();
        for (ino, sock) in &mut self.sockets {
            match f(sock) {
                Ok(v) => out.push((*ino, v)),
                Err(_) => failed.push(*ino),
            }
        }
        for ino in failed {
            self.sockets.remove(&ino);
            self.paths.remove(&ino);
        }
        out
    }

    /// Runs `f` inside each watched namespace `which` selects (directly for
    /// qtrace's own) and keeps what it read; a namespace where `f` fails
    /// (gone meanwhile, files unreadable) is left out.
    pub fn read_each<T: Send>(&self, f: impl Fn() -> io::Result<T> + Sync, which: impl Fn(u32) -> bool) -> BTreeMap<u32, T> {
        self.paths
            .iter()
            .filter(|(ino, _)| which(**ino))
            .filter_map(|(ino, path)| Some((*ino, if *ino == self.own { f() } else { run_in(path, &f) }.ok()?)))
            .collect()
    }

    /// How a person enters namespace `ino` to run a command there (empty
    /// for qtrace's own namespace).
    pub fn enter_command(&self, ino: u32) -> String {
        match self.paths.get(&ino) {
            _ if ino == self.own => String::new(),
            Some(p) if p.starts_with("/run/netns") || p.starts_with("/var/run/netns") => {
                format!("ip netns exec {} ", p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
            }
            Some(p) => format!("nsenter --net={} ", p.display()),
            None => format!("nsenter --net=<namespace {ino}> "),
        }
    }

    /// qtrace's own namespace.
    pub fn own(&self) -> u32 {
        self.own
    }

    pub fn count(&self) -> usize {
        self.sockets.len()
    }
}
