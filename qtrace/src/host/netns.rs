//! Network namespaces on the host (found by `ns_find`) and a sock_diag
//! socket in each one that is read, created in a short-lived thread that
//! `setns(2)`s into it (a socket stays in the namespace it was created in).
//!
//! Without listen starts from the kernel, every thread is walked and every
//! namespace read at each refresh. With them, [`Plan`] decides: namespaces
//! with listeners are read at every poll, the others when the kernel
//! reports a listener or drops there, and `/proc` is walked at the start,
//! every `ns_plan::RESCAN` and when the kernel names an unknown namespace.
//!
//! A socket pins its namespace: qtrace must not keep dead containers'
//! namespaces alive. Without a plan, sockets of namespaces no longer found
//! are closed at every refresh; with one, a socket is kept only while its
//! namespace has listeners (which keep it alive anyway) or owes a read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::{bail, Context, Result};
use qtrace_common::ListenStart;

use crate::host::ns_find;
use crate::host::ns_plan::{Depth, Plan};
use crate::host::sock_diag::{DiagSocket, Listener};
use crate::host::KernelNews;

/// Inode of a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn inode_of(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.ino() as u32)
}

/// The names `ip netns` knows, by namespace inode: the files under
/// `/run/netns` (and `/var/run/netns`, where that is not the same
/// directory). A namespace with several names (`ip netns attach`) gets
/// the first in byte order.
pub fn names() -> BTreeMap<u32, String> {
    let mut found: Vec<(String, u32)> = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            // A name is only a name if its file is a namespace; a plain
            // file left behind by a failed `ip netns add` is not.
            if let (Ok(ino), Some(name)) = (inode_of(&e.path()), e.file_name().to_str()) {
                if is_nsfs(&e.path()) {
                    found.push((name.to_owned(), ino));
                }
            }
        }
    }
    found.sort();
    let mut out = BTreeMap::new();
    for (name, ino) in found {
        out.entry(ino).or_insert(name);
    }
    out
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

/// A namespace qtrace can enter.
struct Known {
    /// Where it can be entered.
    path: PathBuf,
    /// Kept while it has listeners (or owes reads, see [`Plan`]).
    socket: Option<DiagSocket>,
}

/// The namespaces qtrace watches and a sock_diag socket in those that need
/// one.
pub struct Namespaces {
    only: Option<u32>,
    own: u32,
    known: BTreeMap<u32, Known>,
    /// Set once the kernel reports listen starts: from then on namespaces
    /// without listeners are read only when [`Plan`] says so.
    plan: Option<Plan>,
    /// Namespaces that could not be entered, with why (shown once).
    pub unreachable: BTreeMap<u32, String>,
}

impl Namespaces {
    /// Watches every namespace, or only `only`.
    pub fn new(only: Option<u32>) -> Result<Self> {
        let own = own().context("reading /proc/self/ns/net")?;
        let mut ns = Self { only, own, known: BTreeMap::new(), plan: None, unreachable: BTreeMap::new() };
        ns.walk(Depth::Threads);
        ns.open_due();
        if let Some(inode) = only {
            if !ns.known.contains_key(&inode) {
                let why = ns.unreachable.get(&inode).cloned().unwrap_or_else(|| "no process or /run/netns entry has it".into());
                bail!("network namespace {inode} cannot be watched: {why}");
            }
        }
        Ok(ns)
    }

    /// Finds new namespaces and forgets vanished ones: by walking every
    /// thread when `news` has no listen starts (the kernel does not record
    /// them), else as [`Plan`] decides from them.
    pub fn refresh(&mut self, news: &KernelNews) {
        if news.listen_starts.is_none() {
            self.plan = None;
            self.walk(Depth::Threads);
            self.open_due();
            return;
        }
        let now = Instant::now();
        let plan = self.plan.get_or_insert_with(Plan::default);
        let (known, unreachable, only) = (&mut self.known, &self.unreachable, self.only);
        let mut depth = plan.learn(news, now, |ino, who| locate(known, unreachable, only, ino, who));
        while let Some(d) = depth {
            let found = self.walk(d);
            depth = self.plan.as_mut().and_then(|plan| plan.walked(found, d, now));
        }
        if let Some(plan) = &mut self.plan {
            plan.retain(|ino| self.known.contains_key(&ino));
        }
        self.open_due();
    }

    /// Walks `/proc` to `depth` and forgets the namespaces that are gone;
    /// returns the inodes found. Without a [`Plan`], whatever the walk
    /// missed is gone. With one, a namespace the walk missed is kept while
    /// its path still leads to it (a thread's own namespace, missed by a
    /// walk of processes), or while it has listeners and a socket: its
    /// listeners keep it alive anyway.
    fn walk(&mut self, depth: Depth) -> Vec<u32> {
        let only = self.only;
        let found: BTreeMap<u32, PathBuf> = ns_find::discover(depth).into_iter().filter(|(i, _)| only.is_none_or(|o| o == *i)).collect();
        let plan = &mut self.plan;
        self.known.retain(|ino, k| {
            let Some(p) = plan else { return found.contains_key(ino) };
            let keep = found.contains_key(ino) || (p.listening(*ino) && k.socket.is_some()) || ns_find::leads_to(&k.path, *ino);
            if !keep {
                p.forget(*ino);
            }
            keep
        });
        self.unreachable.retain(|ino, _| found.contains_key(ino));
        for (ino, path) in &found {
            if !self.unreachable.contains_key(ino) {
                self.known.entry(*ino).or_insert_with(|| Known { path: path.clone(), socket: None }).path = path.clone();
            }
        }
        found.into_keys().collect()
    }

    /// Opens a socket in every known namespace that is to be read and has
    /// none; forgets those that cannot be entered.
    fn open_due(&mut self) {
        let plan = &self.plan;
        let due = |ino: u32| plan.as_ref().is_none_or(|p| p.due(ino));
        let targets: Vec<(u32, PathBuf)> =
            self.known.iter().filter(|(i, k)| k.socket.is_none() && due(**i)).map(|(i, k)| (*i, k.path.clone())).collect();
        let (own, others): (Vec<_>, Vec<_>) = targets.into_iter().partition(|(i, _)| *i == self.own);
        // Directly in qtrace's own: entering it would need CAP_SYS_ADMIN.
        let opened = own.into_iter().map(|(i, _)| (i, DiagSocket::open())).chain(ns_find::open_sockets(others));
        for (ino, sock) in opened.collect::<Vec<_>>() {
            match sock {
                Ok(s) => {
                    if let Some(k) = self.known.get_mut(&ino) {
                        k.socket = Some(s);
                    }
                }
                Err(e) => {
                    self.known.remove(&ino);
                    if let Some(p) = &mut self.plan {
                        p.forget(ino);
                    }
                    if e.raw_os_error() == Some(libc::EPERM) {
                        self.unreachable.insert(ino, "entering it needs CAP_SYS_ADMIN".to_owned());
                    }
                }
            }
        }
    }

    /// Listeners of every namespace that is to be read at this poll. A
    /// namespace whose dump fails is forgotten (a later walk finds it again
    /// if it still exists); one without listeners has its socket closed
    /// once [`Plan`] no longer owes it a read.
    pub fn listeners(&mut self) -> Vec<NsListeners> {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (ino, k) in &mut self.known {
            let Some(sock) = &mut k.socket else { continue };
            if self.plan.as_ref().is_some_and(|p| !p.due(*ino)) {
                continue;
            }
            match sock.listeners() {
                Ok(listeners) => {
                    if let Some(p) = &mut self.plan {
                        if !p.read(*ino, listeners.len()) {
                            k.socket = None;
                        }
                    }
                    out.push(NsListeners { netns: *ino, listeners });
                }
                Err(_) => failed.push(*ino),
            }
        }
        self.forget(failed);
        out
    }

    /// Forgets namespaces whose dump failed (gone meanwhile): a later walk
    /// finds them again if they still exist.
    fn forget(&mut self, failed: Vec<u32>) {
        for ino in failed {
            self.known.remove(&ino);
            if let Some(p) = &mut self.plan {
                p.forget(ino);
            }
        }
    }

    /// Local address and port of every request socket (`SYN_RECV`) of
    /// every watched namespace: the SYN queues' contents.
    pub fn requests(&mut self) -> BTreeMap<u32, Vec<(IpAddr, u16)>> {
        self.each(|sock| sock.requests()).into_iter().collect()
    }

    fn each<T>(&mut self, mut f: impl FnMut(&mut DiagSocket) -> io::Result<T>) -> Vec<(u32, T)> {
        let mut out = Vec::with_capacity(self.known.len());
        let mut failed = Vec::new();
        for (ino, k) in &mut self.known {
            let Some(sock) = &mut k.socket else { continue };
            match f(sock) {
                Ok(v) => out.push((*ino, v)),
                Err(_) => failed.push(*ino),
            }
        }
        self.forget(failed);
        out
    }

    /// Runs `f` inside each watched namespace `which` selects (directly for
    /// qtrace's own) and keeps what it read; a namespace where `f` fails
    /// (gone meanwhile, files unreadable) is left out.
    pub fn read_each<T: Send>(&self, f: impl Fn() -> io::Result<T> + Sync, which: impl Fn(u32) -> bool) -> BTreeMap<u32, T> {
        self.known
            .iter()
            .filter(|(ino, _)| which(**ino))
            .filter_map(|(ino, k)| Some((*ino, if *ino == self.own { f() } else { run_in(&k.path, &f) }.ok()?)))
            .collect()
    }

    /// How a person enters namespace `ino` to run a command there (empty
    /// for qtrace's own namespace).
    pub fn enter_command(&self, ino: u32) -> String {
        match self.known.get(&ino).map(|k| &k.path) {
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

    /// The one namespace watched (`--netns`), if only one is.
    pub fn only(&self) -> Option<u32> {
        self.only
    }

    /// Whether qtrace can enter namespace `ino` (as of its latest walk or
    /// listen start there).
    pub fn knows(&self, ino: u32) -> bool {
        self.known.contains_key(&ino)
    }

    /// How many namespaces qtrace can enter.
    pub fn count(&self) -> usize {
        self.known.len()
    }
}

/// Whether namespace `ino`, where `who` started a listener, can be
/// entered (or is known not to be); a new one is entered through that
/// thread, and so is a known one whose path no longer leads to it.
fn locate(known: &mut BTreeMap<u32, Known>, unreachable: &BTreeMap<u32, String>, only: Option<u32>, ino: u32, who: &ListenStart) -> bool {
    if only.is_some_and(|o| o != ino) || unreachable.contains_key(&ino) {
        return true;
    }
    let through = || ns_find::through_task(ino, who);
    match known.get_mut(&ino) {
        Some(k) if k.socket.is_some() || ns_find::leads_to(&k.path, ino) => true,
        Some(k) => through().map(|p| k.path = p).is_some(),
        None => through().map(|path| known.insert(ino, Known { path, socket: None })).is_some(),
    }
}
