//! Who a listener belongs to, from what the host itself holds: the process
//! holding the socket (found by `procs`), its executable and user
//! (`/proc/PID`), and its cgroup, whose path names the systemd unit and,
//! when a container runtime made it, the container and the Kubernetes pod.
//!
//! This is read once per listener (`model::owners` keeps the answers by
//! socket inode), never per event. What cannot be known is left out and
//! the `unknown` field says why: nothing is guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::procs::{self, Owner};
use crate::host::runtime::{Container, Found, RuntimeState, StateError};

/// The identity of a listener's owner: the NDJSON `owner` object
/// (docs/events.md). Every field is absent when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The process that called `listen()` when qtrace saw the call, else the
    /// longest-running process holding the socket (a pre-forking server's
    /// parent rather than one of its workers); a service manager (systemd,
    /// holding socket units' listeners) only when nothing else holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// `/proc/PID/exe`, as the process's own mount namespace names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Effective uid, as qtrace's user namespace numbers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The uid's name in the process's own `/etc/passwd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The cgroup path (`/proc/PID/cgroup`, see [`cgroup_path`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(flatten)]
    pub workload: Workload,
    /// What the container's runtime says of it (`host::runtime`).
    #[serde(flatten)]
    pub container: Container,
    /// The name `ip netns` gives the listener's network namespace (its
    /// bind mount under `/run/netns`), where it has one. Container
    /// runtimes' namespaces usually have none: the container names them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    /// Why something above is missing, once per cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// When `pid` started (`/proc/PID/stat` field 22), to tell it from a
    /// later process given the same pid. Not part of the record.
    #[serde(skip)]
    pub start: Option<u64>,
}

/// What a cgroup path says about the workload: systemd's unit and slice,
/// a container runtime's container, Kubernetes' pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The innermost systemd service or scope that is not a container's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The innermost systemd slice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    /// The runtime that named the container's cgroup; absent when the path
    /// has the id but not the runtime (Kubernetes' cgroupfs driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<Runtime>,
    /// The container's full id (64 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The Kubernetes pod's UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// A container runtime, by the cgroup names it gives its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Runtime {
    /// Its name in records (`container_runtime`).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

impl Identity {
    /// An identity that is only a reason.
    pub(crate) fn unknown(why: impl Into<String>) -> Self {
        Self { unknown: Some(why.into()), ..Self::default() }
    }

    /// `comm(pid)`, what the tables show; `-` without a process.
    pub fn short(&self) -> String {
        match (&self.comm, self.pid) {
            (Some(comm), Some(pid)) => format!("{comm}({pid})"),
            (None, Some(pid)) => format!("?({pid})"),
            _ => "-".into(),
        }
    }

    /// The most specific name people know the owner by, for the tables:
    /// the Kubernetes pod (`namespace/pod/container`), else the
    /// container's name (or its runtime and short id), else the systemd
    /// service, else the process ([`Self::short`], or only its command
    /// when several processes share it).
    pub fn name(&self) -> String {
        let c = &self.container;
        if let (Some(ns), Some(pod)) = (&c.pod_namespace, &c.pod_name) {
            return match &c.container_name {
                Some(name) => format!("{ns}/{pod}/{name}"),
                None => format!("{ns}/{pod}"),
            };
        }
        if let Some(name) = &c.container_name {
            return name.clone();
        }
        if let Some(id) = &self.workload.container_id {
            let runtime = self.workload.container_runtime.map_or("container", Runtime::name);
            return format!("{runtime}:{}", &id[..id.len().min(12)]);
        }
        match (&self.workload.unit, &self.comm, self.pid) {
            (Some(unit), _, _) if unit.ends_with(".service") => unit.clone(),
            (_, Some(comm), None) => comm.clone(),
            _ => self.short(),
        }
    }

    /// The fields that name the owner, for the lines there are many of
    /// (`event` records): the process (`pid`, `comm`), its systemd unit,
    /// its container's name (its id only when it has none), its pod and
    /// namespace, and the network namespace's name. The rest (executable,
    /// user, cgroup path, image, why something is unknown) is in the port's
    /// `summary` and `counted` records and in `listeners`.
    pub fn naming(&self) -> Identity {
        let c = &self.container;
        Identity {
            pid: self.pid,
            comm: self.comm.clone(),
            workload: Workload {
                unit: self.workload.unit.clone(),
                container_id: c.container_name.is_none().then(|| self.workload.container_id.clone()).flatten(),
                ..Workload::default()
            },
            container: Container {
                container_name: c.container_name.clone(),
                pod_name: c.pod_name.clone(),
                pod_namespace: c.pod_namespace.clone(),
                ..Container::default()
            },
            netns_name: self.netns_name.clone(),
            ..Identity::default()
        }
    }

    /// What every one of `all` agrees on: a field they all share is kept,
    /// one they differ on is left out. One identity is returned whole;
    /// several say in `unknown` that only their common part is given.
    pub(crate) fn common<'a>(all: impl IntoIterator<Item = &'a Identity>) -> Option<Identity> {
        let mut all: Vec<&Identity> = all.into_iter().collect();
        all.dedup_by(|a, b| a == b);
        let mut out = (*all.first()?).clone();
        for o in &all[1..] {
            keep_equal(&mut out.pid, &o.pid);
            keep_equal(&mut out.comm, &o.comm);
            keep_equal(&mut out.exe, &o.exe);
            keep_equal(&mut out.uid, &o.uid);
            keep_equal(&mut out.user, &o.user);
            keep_equal(&mut out.cgroup, &o.cgroup);
            keep_equal(&mut out.start, &o.start);
            keep_equal(&mut out.netns_name, &o.netns_name);
            let (w, ow) = (&mut out.workload, &o.workload);
            keep_equal(&mut w.unit, &ow.unit);
            keep_equal(&mut w.slice, &ow.slice);
            keep_equal(&mut w.container_runtime, &ow.container_runtime);
            keep_equal(&mut w.container_id, &ow.container_id);
            keep_equal(&mut w.pod_uid, &ow.pod_uid);
            let (c, oc) = (&mut out.container, &o.container);
            keep_equal(&mut c.container_name, &oc.container_name);
            keep_equal(&mut c.image, &oc.image);
            keep_equal(&mut c.pod_name, &oc.pod_name);
            keep_equal(&mut c.pod_namespace, &oc.pod_namespace);
        }
        if all.len() > 1 {
            out.unknown = Self::why_common(&all);
        }
        Some(out)
    }

    /// Why the common part of several different identities lacks what it
    /// lacks: the reasons of those that are only a reason (a listener whose
    /// owner was not found), and that several owners differ when more than
    /// one is known.
    fn why_common(all: &[&Identity]) -> Option<String> {
        let only_reason = |o: &&&Identity| o.unknown.is_some() && Identity { unknown: None, ..(**o).clone() } == Identity::default();
        let (reasons, known): (Vec<&&Identity>, Vec<&&Identity>) = all.iter().partition(only_reason);
        let mut why: Vec<&str> = reasons.iter().filter_map(|o| o.unknown.as_deref()).collect();
        why.sort_unstable();
        why.dedup();
        let mut known: Vec<&Identity> = known.into_iter().copied().collect();
        known.sort_by_key(|o| (o.pid, o.start));
        known.dedup_by(|a, b| a == b);
        if known.len() > 1 {
            why.push("several listeners with different owners: only what they share is given");
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

fn keep_equal<T: PartialEq>(mine: &mut Option<T>, theirs: &Option<T>) {
    if mine != theirs {
        *mine = None;
    }
}

/// The one cgroup path of a `/proc/PID/cgroup` text: the unified (v2)
/// hierarchy's `0::PATH` unless it is the root, else the v1 `name=systemd`
/// hierarchy's, else the first v1 controller's that is not the root. On a
/// hybrid host the v2 line may be `/` while systemd's names the unit; on a
/// v1 host with Docker's cgroupfs driver only the controllers do.
pub fn cgroup_path(text: &str) -> Option<String> {
    let (mut v2, mut systemd, mut controller, mut any) = (None, None, None, None);
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let path = path.trim_end();
        if !path.starts_with('/') {
            continue;
        }
        any.get_or_insert(path);
        let slot = match (id, controllers) {
            ("0", "") => &mut v2,
            (_, "name=systemd") => &mut systemd,
            _ => &mut controller,
        };
        if path != "/" && slot.is_none() {
            *slot = Some(path);
        }
    }
    v2.or(systemd).or(controller).or(any).map(str::to_owned)
}

impl Workload {
    /// Reads a cgroup path (as [`cgroup_path`] gives it; `..` components, as
    /// a cgroup namespace shows paths outside it, are skipped). A path that
    /// leaves qtrace's cgroup namespace has lost its top: a Kubernetes
    /// pod's `kubepods` (`/../../pod<UID>/<ID>`), Docker's `docker`
    /// (`/../<ID>`); there a `pod<UID>` directory and a bare container id
    /// are read without them.
    pub fn from_cgroup(path: &str) -> Self {
        let outside = path.trim_start_matches('/').starts_with("..");
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != "." && *c != "..").collect();
        let mut w = Workload::default();
        for (i, part) in parts.iter().enumerate() {
            let above = Above { dirs: &parts[..i], outside };
            if let Some((runtime, id)) = container(part, above) {
                w.container_runtime = runtime;
                w.container_id = Some(id.to_owned());
            } else if part.ends_with(".service") || part.ends_with(".scope") {
                w.unit = Some((*part).to_owned());
            } else if part.ends_with(".slice") {
                w.slice = Some((*part).to_owned());
            }
            if let Some(uid) = pod_uid(part, above) {
                w.pod_uid = Some(uid);
            }
        }
        w
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directories above a cgroup directory, and whether the path started
/// outside qtrace's cgroup namespace (with `..`), where they are not all.
#[derive(Clone, Copy)]
struct Above<'a> {
    dirs: &'a [&'a str],
    outside: bool,
}

impl Above<'_> {
    /// Whether the directories are under Kubernetes' cgroupfs `kubepods`,
    /// or may be, having started outside the namespace.
    fn maybe_kubepods(&self) -> bool {
        self.outside || self.dirs.contains(&"kubepods")
    }
}

/// The runtime and id of a container's cgroup directory `part`, with the
/// directories `above` it. The systemd driver names the unit
/// `<prefix><id>.scope`; the cgroupfs drivers name the directory
/// `<prefix><id>` (CRI-O, podman) or the bare id under `docker/` or a
/// Kubernetes pod's directory. Conmon's and other helpers' scopes
/// (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) are not the
/// container.
fn container<'a>(part: &'a str, above: Above<'_>) -> Option<(Option<Runtime>, &'a str)> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    const PREFIXES: [(&str, Runtime); 5] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-payload-", Runtime::Podman),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Some((Some(runtime), id));
        }
    }
    if !is_container_id(part) {
        return None;
    }
    match above.dirs.split_last() {
        Some((&"docker", _)) => Some((Some(Runtime::Docker), part)),
        // The kubelet's cgroupfs driver: `kubepods[/QOS]/pod<UID>/<ID>`,
        // the same for containerd and CRI-O's bare ids.
        Some((parent, dirs)) if pod_uid(parent, Above { dirs, ..above }).is_some() => Some((None, part)),
        // Docker's cgroupfs driver seen from another container: `/../<ID>`.
        None if above.outside => Some((None, part)),
        _ => None,
    }
}

/// A pod's UID from its cgroup directory: `kubepods[-QOS]-pod<UID>.slice`
/// (systemd driver; the UID's dashes are underscores there) or `pod<UID>`
/// below `kubepods` (cgroupfs driver). UIDs are UUIDs, or 32 hex digits
/// for static pods.
fn pod_uid(part: &str, above: Above<'_>) -> Option<String> {
    let raw = if let Some(slice) = part.strip_suffix(".slice").filter(|s| s.starts_with("kubepods")) {
        slice.rsplit_once("-pod")?.1
    } else if above.maybe_kubepods() {
        part.strip_prefix("pod")?
    } else {
        return None;
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// Whether `uid` looks like a pod's UID: a UUID, or 32 hex digits.
fn is_pod_uid(uid: &str) -> bool {
    (32..=36).contains(&uid.len()) && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

/// The name of `uid` in a passwd file's text.
pub(crate) fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Reads the regular file `path` inside a process's root directory `root`
/// (`/proc/PID/root`) as the process itself would resolve it. The files
/// are the workload's own, a container image's, and qtrace is root: its
/// symlinks must not lead to qtrace's files (`RESOLVE_IN_ROOT` keeps them
/// inside; a symlink as the last component is refused), and nothing but a
/// regular file is ever opened for reading, since opening a device can act
/// on it (a watchdog, a tape) and a FIFO would block: the path is opened
/// with `O_PATH` first, which opens nothing, and its type checked
/// ([`reopen_regular`]). Only the first `PASSWD_MAX` bytes are read.
fn read_in_root(root: &Path, path: &str) -> io::Result<String> {
    use std::io::Read as _;
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let dir = std::fs::File::open(root)?;
    let path = std::ffi::CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain integers; all zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` and the NUL-terminated path, both alive.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), path.as_ptr(), &raw const how, size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat2 just returned, owned by nobody else.
    let file = reopen_regular(&unsafe { OwnedFd::from_raw_fd(fd as i32) })?;
    let mut bytes = Vec::new();
    file.take(PASSWD_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Opens for reading the file an `O_PATH` descriptor `path` refers to, if
/// it is a regular file (through `/proc/self/fd`, so the very file that was
/// checked); anything else is refused without being opened.
pub(crate) fn reopen_regular(path: &std::os::fd::OwnedFd) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // SAFETY: fstat fills a plain struct for a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is alive and writable.
    if unsafe { libc::fstat(path.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", path.as_raw_fd()))
}

/// More than any real `/etc/passwd`.
const PASSWD_MAX: u64 = 4 << 20;

/// The command name in a `/proc/PID` directory (`comm`; bytes that are not
/// UTF-8 replaced): the name itself, never a stand-in for a missing one.
fn read_comm(dir: &Path) -> io::Result<String> {
    let bytes = std::fs::read(dir.join("comm"))?;
    Ok(String::from_utf8_lossy(bytes.strip_suffix(b"\n").unwrap_or(&bytes)).into_owned())
}

/// What a failed read of `what` says in `unknown`.
fn why(what: &str, e: &io::Error) -> String {
    let cause = match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::NotFound => "not found".to_owned(),
        _ => e.to_string(),
    };
    format!("{what}: {cause}")
}

/// When process `pid` of the `/proc` at `root` started (`stat` field 22,
/// clock ticks since boot); `None` when it is gone or unreadable.
pub(crate) fn started_in(root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(root.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A `/proc` to read processes from: the host's, or a fake tree in tests.
pub(crate) struct ProcFs {
    root: PathBuf,
    /// qtrace's own user namespace (`/proc/self/ns/user`): uids of a
    /// process in another one are not the numbers its `/etc/passwd` uses.
    own_userns: Option<PathBuf>,
    /// Where container runtimes keep their containers' state.
    runtimes: RuntimeState,
}

impl ProcFs {
    pub(crate) fn host() -> Self {
        Self { root: "/proc".into(), own_userns: std::fs::read_link("/proc/self/ns/user").ok(), runtimes: RuntimeState::host() }
    }

    /// A fake `/proc` at `root`, whose runtimes' state is under
    /// `root/host` (absent unless a test makes it).
    #[cfg(test)]
    pub(crate) fn at(root: &Path, own_userns: &str) -> Self {
        let runtimes = RuntimeState::at(&root.join("host"));
        Self { root: root.to_owned(), own_userns: Some(own_userns.into()), runtimes }
    }

    fn dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// When `pid` started (`/proc/PID/stat` field 22, clock ticks since
    /// boot); `None` when it is gone or unreadable.
    pub(crate) fn started(&self, pid: u32) -> Option<u64> {
        started_in(&self.root, pid)
    }

    /// [`Self::started`], `u64::MAX` (last) when unknown.
    fn start_time(&self, pid: u32) -> u64 {
        self.started(pid).unwrap_or(u64::MAX)
    }

    /// The identity of a socket held by `holders` and waited for in epoll
    /// by `pollers` (as `procs::owners` finds them): the one holder that
    /// polls it, if exactly one does, else the longest-running one's that
    /// is still there, passing over service managers, which hold a copy
    /// of every socket-activated listener (`.socket` units) they hand to
    /// the service.
    ///
    /// An `SO_REUSEPORT` group's listeners are usually all opened by one
    /// parent and inherited by every worker, each of which accepts from
    /// its own (nginx's `reuseport`: `ngx_event_process_init` registers
    /// only the worker's own listener): which one polls it is the only
    /// thing that tells the listeners apart. A listener every worker
    /// polls (a pre-forking server without `reuseport`) is the parent's.
    pub(crate) fn of_holders(&self, holders: &[Owner], pollers: Option<&BTreeSet<u32>>) -> Option<Identity> {
        let polling: Vec<u32> = holders.iter().map(|o| o.pid).filter(|p| pollers.is_some_and(|s| s.contains(p))).collect();
        let sole = match polling[..] {
            [pid] => Some(pid),
            _ => None,
        };
        let mut by_age: Vec<&Owner> = holders.iter().collect();
        by_age.sort_by_cached_key(|o| (self.is_service_manager(o.pid), sole != Some(o.pid), self.start_time(o.pid), o.pid));
        by_age.into_iter().find_map(|o| self.describe(o))
    }

    /// Whether `pid` is a systemd manager: pid 1, or a process in an
    /// `init.scope` cgroup (the system manager's, and each user manager's
    /// `user@UID.service/init.scope`).
    fn is_service_manager(&self, pid: u32) -> bool {
        let cgroup = std::fs::read_to_string(self.dir(pid).join("cgroup")).ok();
        pid == 1 || cgroup.as_deref().and_then(cgroup_path).is_some_and(|p| p.rsplit('/').next() == Some("init.scope"))
    }

    /// Everything `/proc/PID` tells about `holder`; `None` when the process
    /// is gone (the caller looks for the socket's other holders).
    pub(crate) fn describe(&self, holder: &Owner) -> Option<Identity> {
        let dir = self.dir(holder.pid);
        let start = self.started(holder.pid);
        let comm = read_comm(&dir);
        let status = match std::fs::read_to_string(dir.join("status")) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Identity { pid: Some(holder.pid), comm: comm.ok(), start, ..Identity::unknown(why("status", &e)) }),
        };
        let mut missing = Vec::new();
        let mut id = Identity { pid: Some(holder.pid), start, ..Identity::default() };
        match comm {
            Ok(comm) => id.comm = Some(comm),
            Err(e) => missing.push(why("comm", &e)),
        }
        // `Uid:` real, effective, saved, filesystem.
        id.uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)?.parse().ok());
        match std::fs::read_link(dir.join("exe")) {
            Ok(exe) => id.exe = Some(exe.to_string_lossy().into_owned()),
            Err(e) => missing.push(why("exe", &e)),
        }
        if let Some(uid) = id.uid {
            match self.user(&dir, uid) {
                Ok(name) => id.user = Some(name),
                Err(e) => missing.push(e),
            }
        }
        match std::fs::read_to_string(dir.join("cgroup")) {
            Ok(text) => {
                id.cgroup = cgroup_path(&text);
                id.workload = id.cgroup.as_deref().map(Workload::from_cgroup).unwrap_or_default();
            }
            Err(e) => missing.push(why("cgroup", &e)),
        }
        if let Some(container) = id.workload.container_id.clone() {
            let state = self.runtimes.lookup(id.workload.container_runtime, &container);
            with_state(&mut id, state, &mut missing);
        }
        id.unknown = (!missing.is_empty()).then(|| missing.join("; "));
        Some(id)
    }

    /// The name of `uid` in the `/etc/passwd` the process itself sees, or
    /// why there is none.
    fn user(&self, dir: &Path, uid: u32) -> Result<String, String> {
        let userns = std::fs::read_link(dir.join("ns/user")).map_err(|e| why("user", &e))?;
        if self.own_userns.as_ref() != Some(&userns) {
            return Err("user: the process is in another user namespace".into());
        }
        let passwd = read_in_root(&dir.join("root"), "etc/passwd").map_err(|e| why("user: its /etc/passwd", &e))?;
        user_name(&passwd, uid).ok_or_else(|| format!("user: uid {uid} is not in its /etc/passwd"))
    }

    /// The identity of each listener socket in `wanted`: from the process
    /// that called `listen()` (`known`, when qtrace saw the call and the
    /// process is still there), else from the processes holding it, found
    /// by one walk of every process's descriptors ([`Self::of_holders`]).
    /// `grouped` are listeners that share their address and port with
    /// others (an `SO_REUSEPORT` group): one of those is its caller's only
    /// if the caller polls it, since nginx's master opens every worker's
    /// listener; elsewhere who polls a listener says nothing (nginx's
    /// `accept_mutex` has only its holder poll the one shared listener).
    pub(crate) fn resolve(&self, wanted: &BTreeSet<u64>, known: &BTreeMap<u64, Owner>, grouped: &BTreeSet<u64>) -> BTreeMap<u64, Identity> {
        let mut out = BTreeMap::new();
        for &ino in wanted {
            // A service manager called `listen()` for a socket unit: the
            // service it starts holds the socket too. A caller whose
            // descriptors qtrace may not read is taken on the kernel's
            // word: a walk would not find it either.
            let polls = |o: &Owner| !grouped.contains(&ino) || procs::polls(&self.root, o.pid, ino) != Some(false);
            let caller = known.get(&ino).filter(|o| !self.is_service_manager(o.pid) && polls(o));
            if let Some(id) = caller.and_then(|o| self.describe(o)) {
                out.insert(ino, id);
            }
        }
        let rest: BTreeSet<u64> = wanted.iter().filter(|i| !out.contains_key(i)).copied().collect();
        if rest.is_empty() {
            return out;
        }
        let found = procs::owners(&rest, grouped);
        for ino in rest {
            let holders = found.by_inode.get(&ino).map(Vec::as_slice).unwrap_or_default();
            let id = self.of_holders(holders, found.polled_by.get(&ino));
            out.insert(ino, id.unwrap_or_else(|| not_found(found.unreadable)));
        }
        out
    }
}

/// Adds what a container's runtime state says to `id`, or why it could
/// not be read to `missing`. The runtime whose state has the container
/// names it when the cgroup path did not. Whoever starts a container
/// writes its pod annotations or labels (`ctr run --annotation`, `docker
/// run --label`), so a pod is believed only of a container in a pod's
/// cgroup (which only the kubelet makes), and not when the runtime
/// records another pod's UID.
fn with_state(id: &mut Identity, state: Result<Found, StateError>, missing: &mut Vec<String>) {
    match state {
        Ok(found) => {
            let w = &mut id.workload;
            w.container_runtime = w.container_runtime.or(found.runtime);
            id.container = found.container;
            missing.extend(found.notes);
            let claimed = found.pod_uid.filter(|u| is_pod_uid(u));
            let doubt = match (&w.pod_uid, &claimed) {
                (None, _) => "its cgroup is no Kubernetes pod's",
                (Some(cgroup), Some(runtime)) if cgroup != runtime => "the pod UID its runtime recorded is not its cgroup's",
                _ => return,
            };
            let c = &mut id.container;
            if c.pod_name.is_some() || c.pod_namespace.is_some() {
                (c.pod_name, c.pod_namespace) = (None, None);
                missing.push(format!("pod: its runtime names one, but {doubt}"));
            }
        }
        Err(e) => missing.push(e.to_string()),
    }
}

/// The owner of a socket no process was found holding, after a walk where
/// `unreadable` processes' descriptors could not be read.
pub(crate) fn not_found(unreadable: usize) -> Identity {
    Identity::unknown(if unreadable > 0 {
        format!(
            "no process holding the socket was found; {unreadable} processes' descriptors could not be read (that takes CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
        )
    } else {
        "no process holding the socket was found: it may be held in another PID namespace".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c01db0b339c3b5f2e4b2d6c1a9b6f1f8b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const POD: &str = "6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b";

    fn w(path: &str) -> Workload {
        Workload::from_cgroup(path)
    }

    fn container_of(path: &str) -> (Option<Runtime>, Option<String>) {
        let w = w(path);
        (w.container_runtime, w.container_id)
    }

    #[test]
    fn the_most_specific_name() {
        let process = Identity { pid: Some(7), comm: Some("srv".into()), ..Identity::default() };
        assert_eq!(process.name(), "srv(7)");
        assert_eq!(Identity { pid: None, ..process.clone() }.name(), "srv", "the command several processes share");
        let session = Workload { unit: Some("session-3.scope".into()), ..Workload::default() };
        assert_eq!(Identity { workload: session, ..process.clone() }.name(), "srv(7)", "a scope is no service");
        let unit = Workload { unit: Some("srv.service".into()), ..Workload::default() };
        let served = Identity { workload: unit, ..process.clone() };
        assert_eq!(served.name(), "srv.service");
        let podman = Workload { container_runtime: Some(Runtime::Podman), container_id: Some(ID.into()), ..Workload::default() };
        let contained = Identity { workload: podman, ..served.clone() };
        assert_eq!(contained.name(), "podman:4c01db0b339c");
        let named = Container { container_name: Some("web".into()), ..Container::default() };
        assert_eq!(Identity { container: named.clone(), ..contained.clone() }.name(), "web");
        let pod = Container { pod_name: Some("checkout-7d9c".into()), pod_namespace: Some("shop".into()), ..named };
        assert_eq!(Identity { container: pod.clone(), ..contained.clone() }.name(), "shop/checkout-7d9c/web");
        let sandbox = Container { container_name: None, ..pod };
        assert_eq!(Identity { container: sandbox, ..contained }.name(), "shop/checkout-7d9c");
        assert_eq!(Identity::default().name(), "-");
    }

    #[test]
    fn picks_the_one_path_of_a_cgroup_file() {
        // cgroup v2 only.
        assert_eq!(cgroup_path("0::/system.slice/nginx.service\n").as_deref(), Some("/system.slice/nginx.service"));
        // Hybrid (this project's machine): both agree, v2 first.
        let hybrid = "9:name=systemd:/init.scope\n8:pids:/\n4:memory:/process_api/e0b0\n0::/init.scope\n";
        assert_eq!(cgroup_path(hybrid).as_deref(), Some("/init.scope"));
        // Hybrid with systemd in legacy mode: v2 is the root, systemd's names the unit.
        let legacy = "12:pids:/system.slice/sshd.service\n1:name=systemd:/system.slice/sshd.service\n0::/\n";
        assert_eq!(cgroup_path(legacy).as_deref(), Some("/system.slice/sshd.service"));
        // v1 with Docker's cgroupfs driver and no name=systemd hierarchy.
        let v1 = format!("11:cpuset:/\n10:memory:/docker/{ID}\n9:pids:/docker/{ID}\n0::/\n");
        assert_eq!(cgroup_path(&v1), Some(format!("/docker/{ID}")));
        // Old v1 kernels have no 0:: line at all.
        assert_eq!(
            cgroup_path("2:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n").as_deref(),
            Some("/user.slice/user-0.slice/session-1.scope")
        );
        // A process in the root cgroup; nothing usable; garbage.
        assert_eq!(cgroup_path("0::/\n").as_deref(), Some("/"));
        assert_eq!(cgroup_path(""), None);
        assert_eq!(cgroup_path("garbage\n1:x\n:::\n"), None);
        // Paths may hold colons; trailing blanks go.
        assert_eq!(cgroup_path("0::/a:b/c.scope  \n").as_deref(), Some("/a:b/c.scope"));
    }

    #[test]
    fn systemd_units_and_slices() {
        assert_eq!(
            w("/system.slice/nginx.service"),
            Workload { unit: Some("nginx.service".into()), slice: Some("system.slice".into()), ..Workload::default() }
        );
        let gnome = w("/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1b2c.scope");
        assert_eq!(gnome.unit.as_deref(), Some("vte-spawn-1b2c.scope"), "the innermost unit");
        assert_eq!(gnome.slice.as_deref(), Some("app-org.gnome.Terminal.slice"));
        assert_eq!(w("/user.slice/user-0.slice/session-3.scope").unit.as_deref(), Some("session-3.scope"));
        // A service's own sub-cgroups (delegation) stay in the service.
        assert_eq!(w("/system.slice/postgresql@15-main.service/payload").unit.as_deref(), Some("postgresql@15-main.service"));
        assert_eq!(w("/"), Workload::default());
        assert_eq!(w("/process_api/e0b0d40ed8c143f3950afd1a081e8f09"), Workload::default(), "nothing recognisable, nothing said");
    }

    #[test]
    fn docker_with_either_driver() {
        let sd = w(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!((sd.container_runtime, sd.container_id.as_deref()), (Some(Runtime::Docker), Some(ID)));
        assert_eq!(sd.unit, None, "the container's scope is not named as a unit");
        assert_eq!(sd.slice.as_deref(), Some("system.slice"));
        assert_eq!(container_of(&format!("/docker/{ID}")), (Some(Runtime::Docker), Some(ID.into())));
        // Docker in Docker: the innermost container.
        assert_eq!(container_of(&format!("/docker/{ID}/docker/{ID2}")), (Some(Runtime::Docker), Some(ID2.into())));
        // Not ids: too short, upper case, or a bare id under anything else.
        assert_eq!(container_of("/system.slice/docker-4c01db0b339c.scope"), (None, None));
        assert_eq!(container_of(&format!("/docker/{}", ID.to_uppercase())), (None, None));
        assert_eq!(container_of(&format!("/system.slice/{ID}")), (None, None));
        // Seen from another container's cgroup namespace, `docker/` is lost
        // and with it the runtime.
        assert_eq!(container_of(&format!("/../{ID}")), (None, Some(ID.into())));
        assert_eq!(container_of(&format!("/{ID}")), (None, None), "inside the namespace, nothing above it");
        assert_eq!(w("/system.slice/docker.service").unit.as_deref(), Some("docker.service"), "the daemon is no container");
    }

    #[test]
    fn kubernetes_with_containerd_and_cri_o() {
        let pod_ = POD.replace('-', "_");
        let cri = w(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{ID}.scope"));
        assert_eq!(
            (cri.container_runtime, cri.container_id.as_deref(), cri.pod_uid.as_deref()),
            (Some(Runtime::Containerd), Some(ID), Some(POD))
        );
        assert_eq!(cri.slice, Some(format!("kubepods-burstable-pod{pod_}.slice")));
        assert_eq!(cri.unit, None);
        // Guaranteed pods have no QoS slice.
        assert_eq!(w(&format!("/kubepods.slice/kubepods-pod{pod_}.slice/cri-containerd-{ID}.scope")).pod_uid.as_deref(), Some(POD));
        // cgroupfs driver: the bare id, whichever runtime made it.
        let fs = w(&format!("/kubepods/burstable/pod{POD}/{ID}"));
        assert_eq!((fs.container_runtime, fs.container_id.as_deref(), fs.pod_uid.as_deref()), (None, Some(ID), Some(POD)));
        assert_eq!(w(&format!("/kubepods/pod{POD}/{ID}")).pod_uid.as_deref(), Some(POD));
        // CRI-O, both drivers; its conmon is not the container.
        let crio = w(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_}.slice/crio-{ID}.scope"));
        assert_eq!((crio.container_runtime, crio.pod_uid.as_deref()), (Some(Runtime::CriO), Some(POD)));
        assert_eq!(container_of(&format!("/kubepods/besteffort/pod{POD}/crio-{ID}")), (Some(Runtime::CriO), Some(ID.into())));
        assert_eq!(container_of(&format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-conmon-{ID}.scope")), (None, None));
        // A static pod's UID is a hash; seen from inside a cgroup namespace
        // the path starts with `..`.
        let hash = "0123456789abcdef0123456789abcdef";
        let nested =
            w(&format!("/../../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{hash}.slice/cri-containerd-{ID}.scope"));
        assert_eq!((nested.pod_uid.as_deref(), nested.container_id.as_deref()), (Some(hash), Some(ID)));
        // cgroupfs driver seen from qtrace's own cgroup namespace (qtrace in
        // a pod): the path has lost `kubepods`, and the QoS class too when
        // the pods' classes are the same.
        let ns = w(&format!("/../../pod{POD}/{ID}"));
        assert_eq!((ns.container_runtime, ns.container_id.as_deref(), ns.pod_uid.as_deref()), (None, Some(ID), Some(POD)));
        let other_class = w(&format!("/../../../burstable/pod{POD}/{ID}"));
        assert_eq!((other_class.container_id.as_deref(), other_class.pod_uid.as_deref()), (Some(ID), Some(POD)));
        assert_eq!(w(&format!("/../../pod{POD}")).pod_uid.as_deref(), Some(POD), "a pod's own cgroup");
        assert_eq!(w(&format!("/../../podnot-a-uid/{ID}")), Workload::default(), "no pod, so no container below it");
        assert_eq!(w(&format!("/../../x/{ID}")).container_id, None, "a bare id under anything else");
        // Not pods: a QoS slice alone, a `pod` directory outside kubepods.
        assert_eq!(w("/kubepods.slice/kubepods-burstable.slice").pod_uid, None);
        assert_eq!(w(&format!("/system.slice/pod{POD}")).pod_uid, None);
        assert_eq!(w("/kubepods/burstable/podnot-a-uid").pod_uid, None);
    }

    #[test]
    fn podman_with_either_driver() {
        assert_eq!(container_of(&format!("/machine.slice/libpod-{ID}.scope")), (Some(Runtime::Podman), Some(ID.into())));
        // cgroup v2: the payload in a sub-cgroup of the scope.
        let v2 = w(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!((v2.container_runtime, v2.container_id.as_deref(), v2.unit), (Some(Runtime::Podman), Some(ID), None));
        assert_eq!(
            container_of(&format!("/machine.slice/libpod-{ID}.scope/libpod-payload-{ID}")),
            (Some(Runtime::Podman), Some(ID.into()))
        );
        // cgroupfs (as podman runs here, on a hybrid host).
        assert_eq!(container_of(&format!("/libpod_parent/libpod-{ID}")), (Some(Runtime::Podman), Some(ID.into())));
        // Rootless: inside the user's manager.
        let rootless = w(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"));
        assert_eq!((rootless.container_runtime, rootless.unit.as_deref()), (Some(Runtime::Podman), Some("user@1000.service")));
        let conmon = w(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!((conmon.container_id, conmon.unit), (None, Some(format!("libpod-conmon-{ID}.scope"))));
    }

    #[test]
    fn serializes_only_what_is_known() {
        let id = Identity {
            pid: Some(42),
            comm: Some("nginx".into()),
            workload: Workload { container_runtime: Some(Runtime::CriO), container_id: Some(ID.into()), ..Workload::default() },
            ..Identity::default()
        };
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!(r#"{{"pid":42,"comm":"nginx","container_runtime":"cri-o","container_id":"{ID}"}}"#)
        );
        assert_eq!(serde_json::to_string(&Identity::unknown("why")).unwrap(), r#"{"unknown":"why"}"#);
    }

    #[test]
    fn several_owners_share_what_they_agree_on() {
        let worker = |pid| Identity {
            pid: Some(pid),
            comm: Some("nginx".into()),
            workload: Workload { unit: Some("nginx.service".into()), ..Workload::default() },
            ..Identity::default()
        };
        assert_eq!(Identity::common([]), None);
        assert_eq!(Identity::common([&worker(1)]), Some(worker(1)));
        assert_eq!(Identity::common([&worker(1), &worker(1)]), Some(worker(1)), "the same owner twice is one");
        let both = Identity::common([&worker(1), &worker(2)]).unwrap();
        assert_eq!((both.pid, both.comm.as_deref(), both.workload.unit.as_deref()), (None, Some("nginx"), Some("nginx.service")));
        assert!(both.unknown.unwrap().contains("several listeners"));
        // A listener whose owner is unknown lends its reason, not a claim of
        // several owners.
        let lost = Identity::unknown("no process holding the socket was found");
        let one = Identity::common([&worker(1), &lost]).unwrap();
        assert_eq!((one.pid, one.comm, one.unknown.as_deref()), (None, None, Some("no process holding the socket was found")));
        assert_eq!(Identity::common([&lost, &lost.clone()]), Some(lost.clone()));
        let three = Identity::common([&worker(1), &lost, &worker(2)]).unwrap();
        assert_eq!(
            three.unknown.as_deref(),
            Some("no process holding the socket was found; several listeners with different owners: only what they share is given")
        );
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbad line\n:x:7:7::/:\n";
        assert_eq!(user_name(passwd, 33).as_deref(), Some("www-data"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 7), None, "an empty name is no name");
        assert_eq!(user_name(passwd, 1000), None);
    }

    /// A fake `/proc` with one process, removed on drop.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!("qtrace-fakeproc-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            Self(root)
        }

        /// Process `pid`, started at `start` ticks, effective uid 1001.
        fn process(&self, pid: u32, start: u64, exe: Option<&str>, userns: &str) -> PathBuf {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::create_dir_all(dir.join("root/etc")).unwrap();
            std::fs::write(dir.join("status"), "Name:\tsrv\nUid:\t1000\t1001\t1001\t1001\n").unwrap();
            std::fs::write(dir.join("comm"), "srv\n").unwrap();
            let fields: Vec<String> = (3..=52).map(|i| if i == 22 { start.to_string() } else { "0".into() }).collect();
            std::fs::write(dir.join("stat"), format!("{pid} (a (strange) name) {}", fields.join(" "))).unwrap();
            std::fs::write(dir.join("cgroup"), "0::/system.slice/srv.service\n").unwrap();
            std::fs::write(dir.join("root/etc/passwd"), "srv:x:1001:1001::/:/bin/false\n").unwrap();
            std::os::unix::fs::symlink(userns, dir.join("ns/user")).unwrap();
            if let Some(exe) = exe {
                std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
            }
            dir
        }

        /// Process `pid` waits for socket `ino` in an epoll instance.
        fn polls(&self, pid: u32, ino: u64) {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::create_dir_all(dir.join("fdinfo")).unwrap();
            std::os::unix::fs::symlink("anon_inode:[eventpoll]", dir.join("fd/8")).unwrap();
            std::fs::write(
                dir.join("fdinfo/8"),
                format!("pos:\t0\ntfd:        4 events:     2019 data:     0  pos:0 ino:{ino:x} sdev:9\n"),
            )
            .unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const USERNS: &str = "user:[4026531837]";

    /// A workload's `/etc/passwd` is read inside its root: a symlink in its
    /// path resolves inside it, one as the file itself is refused, and a
    /// FIFO or a device is refused without being opened.
    #[test]
    fn passwd_is_read_inside_the_process_root() {
        let fake = FakeProc::new("root");
        let dir = fake.process(10, 1, None, USERNS);
        let root = dir.join("root");
        let passwd = root.join("etc/passwd");
        assert!(read_in_root(&root, "etc/passwd").unwrap().starts_with("srv:x:1001"));
        // An absolute symlink in the path resolves inside the root (there is
        // no /inner on the host).
        std::fs::rename(root.join("etc"), root.join("inner")).unwrap();
        std::os::unix::fs::symlink("/inner", root.join("etc")).unwrap();
        assert!(read_in_root(&root, "etc/passwd").unwrap().starts_with("srv:x:1001"));
        std::fs::remove_file(root.join("etc")).unwrap();
        std::fs::rename(root.join("inner"), root.join("etc")).unwrap();
        std::fs::remove_file(&passwd).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &passwd).unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap_err().kind(), io::ErrorKind::InvalidData, "a symlink is no file");
        std::fs::remove_file(&passwd).unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap_err().kind(), io::ErrorKind::NotFound);
        let c_passwd = std::ffi::CString::new(passwd.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_passwd.as_ptr(), 0o600) }, 0);
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap_err().kind(), io::ErrorKind::InvalidData);
        let id = ProcFs::at(&fake.0, USERNS).describe(&holder(10)).unwrap();
        assert_eq!(id.unknown.as_deref(), Some("exe: not found; user: its /etc/passwd: not a regular file"));
        std::fs::remove_file(&passwd).unwrap();
        a_device_is_never_opened(&root, &c_passwd);
    }

    /// A character device as the workload's `/etc/passwd` (1:3, `/dev/null`,
    /// harmless if the check failed) is refused. Making one takes
    /// CAP_MKNOD: as root (CI) it must work; unprivileged, the same check
    /// is run on the host's own `/dev/null`.
    fn a_device_is_never_opened(root: &Path, c_passwd: &std::ffi::CString) {
        use std::os::fd::{FromRawFd as _, OwnedFd};
        // SAFETY: mknod on a NUL-terminated path.
        let made = unsafe { libc::mknod(c_passwd.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0;
        // SAFETY: geteuid has no preconditions.
        if made || unsafe { libc::geteuid() } == 0 {
            assert!(made, "root could not make a device: {}", io::Error::last_os_error());
            assert_eq!(read_in_root(root, "etc/passwd").unwrap_err().kind(), io::ErrorKind::InvalidData);
            return;
        }
        let null = std::ffi::CString::new("/dev/null").unwrap();
        // SAFETY: open on a NUL-terminated path; the descriptor is owned below.
        let fd = unsafe { libc::open(null.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: just opened, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        assert_eq!(reopen_regular(&fd).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    fn holder(pid: u32) -> Owner {
        Owner { pid, comm: "srv".into() }
    }

    #[test]
    fn describes_a_process_from_its_proc_directory() {
        let fake = FakeProc::new("describe");
        fake.process(10, 500, Some("/usr/bin/srv"), USERNS);
        let procfs = ProcFs::at(&fake.0, USERNS);
        let id = procfs.describe(&holder(10)).unwrap();
        assert_eq!(
            id,
            Identity {
                pid: Some(10),
                comm: Some("srv".into()),
                exe: Some("/usr/bin/srv".into()),
                uid: Some(1001),
                user: Some("srv".into()),
                cgroup: Some("/system.slice/srv.service".into()),
                workload: Workload { unit: Some("srv.service".into()), slice: Some("system.slice".into()), ..Workload::default() },
                container: Container::default(),
                netns_name: None,
                unknown: None,
                start: Some(500),
            }
        );
        assert_eq!(procfs.describe(&holder(11)), None, "a process that is gone");
        // A name that is not UTF-8 is kept, replaced bytes and all; none is
        // no name, not a stand-in (the holder's `?`).
        std::fs::write(fake.0.join("10/comm"), b"sr\xffv\n").unwrap();
        assert_eq!(procfs.describe(&holder(10)).unwrap().comm.as_deref(), Some("sr\u{fffd}v"));
        std::fs::remove_file(fake.0.join("10/comm")).unwrap();
        let unnamed = procfs.describe(&Owner { pid: 10, comm: "?".into() }).unwrap();
        assert_eq!((unnamed.comm, unnamed.unknown.as_deref()), (None, Some("comm: not found")));
    }

    #[test]
    fn says_why_something_is_missing() {
        let fake = FakeProc::new("missing");
        let dir = fake.process(10, 500, None, "user:[4026532999]");
        std::fs::remove_file(dir.join("cgroup")).unwrap();
        let id = ProcFs::at(&fake.0, USERNS).describe(&holder(10)).unwrap();
        assert_eq!((id.pid, id.uid, id.exe, id.user, id.cgroup), (Some(10), Some(1001), None, None, None));
        assert_eq!(id.unknown.as_deref(), Some("exe: not found; user: the process is in another user namespace; cgroup: not found"));
        // Same namespace, but the uid has no name there.
        std::fs::write(dir.join("root/etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let id = ProcFs::at(&fake.0, "user:[4026532999]").describe(&holder(10)).unwrap();
        assert!(id.unknown.unwrap().contains("user: uid 1001 is not in its /etc/passwd"));
    }

    /// A container's owner gets what its runtime's state says: from
    /// containerd's bundle when the cgroup path (the kubelet's cgroupfs
    /// driver) names neither the runtime nor, here, anything it lacks; and
    /// why not when the state is missing.
    #[test]
    fn a_container_is_named_from_its_runtime_state() {
        let fake = FakeProc::new("container");
        let dir = fake.process(10, 500, Some("/bin/srv"), USERNS);
        std::fs::write(dir.join("cgroup"), format!("0::/kubepods/burstable/pod{POD}/{ID}\n")).unwrap();
        let procfs = ProcFs::at(&fake.0, USERNS);
        let id = procfs.describe(&holder(10)).unwrap();
        assert_eq!((id.workload.container_runtime, id.container.clone()), (None, Container::default()));
        assert_eq!(id.unknown.as_deref(), Some("container state unreadable: not in containerd's, CRI-O's or Docker's state"));
        let bundle = fake.0.join(format!("host/run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}"));
        std::fs::create_dir_all(&bundle).unwrap();
        let annotations = format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{ID2}"}}}}"#
        );
        std::fs::write(bundle.join("config.json"), annotations).unwrap();
        let id = procfs.describe(&holder(10)).unwrap();
        assert_eq!(id.workload.container_runtime, Some(Runtime::Containerd), "where its state was found");
        assert_eq!(id.workload.pod_uid.as_deref(), Some(POD), "the cgroup path's pod, not the annotation's");
        let names = (id.container.container_name.as_deref(), id.container.pod_name.as_deref(), id.container.pod_namespace.as_deref());
        assert_eq!(names, (Some("app"), Some("web-0"), Some("shop")));
        assert_eq!((id.container.image, id.unknown), (None, None), "no image annotation: unknown, no reason to give");
        // The annotations are whoever started it's word: another pod's UID,
        // or no pod's cgroup at all, and the pod is not believed.
        let pod_of = |uid: &str, cgroup: &str| {
            let json = format!(
                r#"{{"annotations":{{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{uid}"}}}}"#
            );
            std::fs::write(bundle.join("config.json"), json).unwrap();
            std::fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
            let id = procfs.describe(&holder(10)).unwrap();
            (id.container.pod_name, id.container.pod_namespace, id.container.container_name, id.unknown)
        };
        let in_pod = format!("/kubepods/burstable/pod{POD}/{ID}");
        assert_eq!(pod_of(POD, &in_pod), (Some("web-0".into()), Some("shop".into()), Some("app".into()), None), "the same pod");
        let other = "0f0e0d0c-0b0a-4909-8807-060504030201";
        let (pod, ns, name, why) = pod_of(other, &in_pod);
        assert_eq!((pod, ns, name), (None, None, Some("app".into())));
        assert_eq!(why.as_deref(), Some("pod: its runtime names one, but the pod UID its runtime recorded is not its cgroup's"));
        let (pod, ns, _, why) = pod_of(POD, &format!("/system.slice/cri-containerd-{ID}.scope"));
        assert_eq!((pod, ns), (None, None));
        assert_eq!(why.as_deref(), Some("pod: its runtime names one, but its cgroup is no Kubernetes pod's"));
    }

    #[test]
    fn the_eldest_holder_still_there_owns_the_socket() {
        let fake = FakeProc::new("eldest");
        fake.process(300, 900, Some("/usr/sbin/nginx"), USERNS);
        fake.process(200, 100, Some("/usr/sbin/nginx"), USERNS);
        fake.process(100, 900, Some("/usr/sbin/nginx"), USERNS);
        let procfs = ProcFs::at(&fake.0, USERNS);
        let pid = |holders: &[u32]| procfs.of_holders(&holders.iter().map(|&p| holder(p)).collect::<Vec<_>>(), None).and_then(|id| id.pid);
        assert_eq!(pid(&[300, 200, 100]), Some(200), "by start time, not pid");
        assert_eq!(pid(&[300, 100]), Some(100), "ties by pid");
        assert_eq!(pid(&[7, 300]), Some(300), "one that is gone (no start time, no directory) is passed over");
        assert_eq!(pid(&[]), None);
        // A socket unit's listener: systemd (pid 1, and a user manager in
        // its `init.scope`) holds it longer than the service it started.
        fake.process(1, 1, Some("/usr/lib/systemd/systemd"), USERNS);
        let user_manager = fake.process(400, 2, Some("/usr/lib/systemd/systemd"), USERNS);
        std::fs::write(user_manager.join("cgroup"), "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n").unwrap();
        assert_eq!(pid(&[1, 400, 300]), Some(300), "the service, not its manager");
        assert_eq!(pid(&[1, 400]), Some(1), "a manager when nothing else holds it");
        let resolve =
            |caller: u32| procfs.resolve(&BTreeSet::from([u64::MAX]), &BTreeMap::from([(u64::MAX, holder(caller))]), &BTreeSet::new());
        fake.polls(300, u64::MAX);
        assert_eq!(resolve(300)[&u64::MAX].pid, Some(300), "the process that called listen() and polls it");
        assert_ne!(resolve(1)[&u64::MAX].pid, Some(1), "but not a manager that did");
        assert!(not_found(3).unknown.unwrap().contains("3 processes' descriptors could not be read"));
    }

    /// nginx with `reuseport`: the master and both workers hold each
    /// listener, each worker polls only its own, and each listener is
    /// named after its worker; one every worker polls is the master's.
    #[test]
    fn the_one_holder_polling_a_listener_owns_it() {
        let fake = FakeProc::new("pollers");
        for (pid, start) in [(100, 10), (101, 20), (102, 20)] {
            fake.process(pid, start, Some("/usr/sbin/nginx"), USERNS);
        }
        let procfs = ProcFs::at(&fake.0, USERNS);
        let holders = [holder(100), holder(101), holder(102)];
        let pid = |pollers: &[u32]| procfs.of_holders(&holders, Some(&pollers.iter().copied().collect())).and_then(|id| id.pid);
        assert_eq!(pid(&[102]), Some(102), "the worker that accepts from it");
        assert_eq!(pid(&[101, 102]), Some(100), "shared by the workers: the master");
        assert_eq!(pid(&[]), Some(100), "nobody polls it (blocking accept()): the eldest");
        assert_eq!(pid(&[7]), Some(100), "a poller that does not hold it does not count");
        // The master called listen() for a listener of a group but does
        // not poll it: it is not taken on its word (the walk of the real
        // /proc finds no holder here)...
        std::fs::create_dir_all(fake.0.join("100/fd")).unwrap();
        let ino = u64::MAX - 1;
        let (wanted, known, group) = (BTreeSet::from([ino]), BTreeMap::from([(ino, holder(100))]), BTreeSet::from([ino]));
        assert_eq!(procfs.resolve(&wanted, &known, &group)[&ino].pid, None);
        // ...unless its descriptors cannot be read: then nothing says it
        // handed the socket on...
        std::fs::remove_dir(fake.0.join("100/fd")).unwrap();
        assert_eq!(procfs.resolve(&wanted, &known, &group)[&ino].pid, Some(100));
        // ...or the listener is alone on its address: polling says nothing
        // of it (nginx's accept_mutex has one worker at a time poll it).
        std::fs::create_dir_all(fake.0.join("100/fd")).unwrap();
        assert_eq!(procfs.resolve(&wanted, &known, &BTreeSet::new())[&ino].pid, Some(100));
    }

    #[test]
    fn resolves_its_own_socket_on_this_host() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        let ino = procs::socket_inode(link.to_str().unwrap()).unwrap();
        let me = std::process::id();
        let procfs = ProcFs::host();
        let gone = BTreeMap::from([(ino, Owner { pid: u32::MAX, comm: "gone".into() })]);
        for known in [BTreeMap::new(), gone] {
            let id = procfs.resolve(&BTreeSet::from([ino]), &known, &BTreeSet::new()).remove(&ino).unwrap();
            assert_eq!(id.pid, Some(me), "{known:?}");
            assert_eq!(id.exe.as_deref().map(Path::new), Some(std::env::current_exe().unwrap().as_path()));
            // SAFETY: geteuid has no preconditions.
            assert_eq!(id.uid, Some(unsafe { libc::geteuid() }));
            assert_eq!(id.cgroup, cgroup_path(&std::fs::read_to_string("/proc/self/cgroup").unwrap()));
        }
        let nobody = procfs.resolve(&BTreeSet::from([u64::MAX]), &BTreeMap::new(), &BTreeSet::new());
        assert!(nobody[&u64::MAX].unknown.as_deref().unwrap().starts_with("no process holding the socket was found"));
        assert_eq!(nobody[&u64::MAX].pid, None);
    }
}
