//! Root suite: who a listener belongs to. A server process of the test's
//! own making, in a systemd-style unit cgroup the test creates, overflows;
//! qtrace's records and metrics must name that process and that unit. So
//! do servers in real containers, run by podman and by containerd
//! (`owner/containers.rs`), with the names, image and pod the test gave
//! them. The oracle is what the test itself set up (the pid it forked, the
//! cgroup it moved it into, the names and annotations it passed), never
//! qtrace. Host only: the guests of the kernel
//! matrix have no cgroup hierarchy of their own.

mod common;
#[path = "owner/containers.rs"]
mod containers;

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{
    addr, connect, connect_nonblocking, http_get, port, promtool_accepts, require_root, sample, settle, unsupported, wait_connected,
    Finished, NetNs, Qtrace,
};
use containers::{random_id, random_uuid, Containerd, CtrTask, InContainer, PodCgroup, PodmanContainer, RootFs};
use serde_json::Value;
use socket2::{SockAddr, Socket};

/// The command name the server gives itself.
const COMM: &str = "qtrace-srv";

/// The unified (v2) cgroup hierarchy, wherever it is mounted (a hybrid
/// host has it at `/sys/fs/cgroup/unified`), or a mount of it made here.
struct Cgroup2 {
    root: PathBuf,
    mounted: bool,
}

impl Cgroup2 {
    fn find_or_mount() -> Self {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER`
        let found = info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2" && left.split(' ').nth(3)? == "/").then(|| left.split(' ').nth(4).map(PathBuf::from))?
        });
        if let Some(root) = found {
            return Self { root, mounted: false };
        }
        let root = std::env::temp_dir().join(format!("qtrace-cgroup2-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("mount point");
        let status = std::process::Command::new("mount").args(["-t", "cgroup2", "none"]).arg(&root).status().expect("mount runs");
        assert!(status.success(), "mounting cgroup2 on {}", root.display());
        Self { root, mounted: true }
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.root).status();
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// `system.slice/qtrace-test-<pid>-<n>.service` under the v2 hierarchy,
/// removed (with `system.slice` if this made it) on drop, once empty.
struct UnitCgroup {
    name: String,
    dir: PathBuf,
    made_slice: bool,
    hierarchy: Cgroup2,
}

impl UnitCgroup {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let hierarchy = Cgroup2::find_or_mount();
        let slice = hierarchy.root.join("system.slice");
        let made_slice = !slice.exists();
        let name = format!("qtrace-test-{}-{}.service", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = slice.join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self { name, dir, made_slice, hierarchy }
    }

    /// The path `/proc/PID/cgroup` shows for it.
    fn path(&self) -> String {
        format!("/system.slice/{}", self.name)
    }

    fn add(&self, pid: i32) {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).unwrap_or_else(|e| panic!("{}: {e}", procs.display()));
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if self.made_slice {
            let _ = std::fs::remove_dir(self.hierarchy.root.join("system.slice"));
        }
    }
}

/// A server in a process of its own, forked in a namespace: it waits to be
/// told, then names itself [`COMM`], listens with backlog 4 and never
/// accepts. Killed on drop.
struct Server {
    pid: i32,
    go: OwnedFd,
    ready: OwnedFd,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: both were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// In a forked child: waits for a byte on `go`, names itself `name`,
/// listens on `to` with backlog 4 and says so on `ready`; exits the child
/// if any of that fails.
///
/// # Safety
/// Only async-signal-safe calls, on memory prepared before the fork.
unsafe fn wait_then_listen(go: i32, ready: i32, to: &SockAddr, name: &CString) {
    // SAFETY: plain system calls on descriptors and memory the child owns.
    unsafe {
        let mut byte = 0u8;
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        let fd = libc::socket(i32::from(to.family()), libc::SOCK_STREAM, 0);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4);
        if fd < 0 || libc::bind(fd, to.as_ptr().cast(), to.len()) != 0 || libc::listen(fd, 4) != 0 {
            libc::_exit(2);
        }
        libc::write(ready, (&raw const byte).cast(), 1);
    }
}

/// The child's side. The test process has other threads, so only
/// async-signal-safe calls run here, on memory prepared before the fork.
fn serve(go: i32, ready: i32, to: &SockAddr, name: &CString) -> ! {
    // SAFETY: async-signal-safe calls only, in the forked child.
    unsafe {
        wait_then_listen(go, ready, to, name);
        loop {
            libc::pause();
        }
    }
}

impl Server {
    fn fork(ns: &NetNs, at: SocketAddr) -> Self {
        Self::fork_running(ns, at, serve)
    }

    /// Forks a child running `body` (async-signal-safe, never returning)
    /// with the pipes' ends, the address and [`COMM`].
    fn fork_running(ns: &NetNs, at: SocketAddr, body: fn(i32, i32, &SockAddr, &CString) -> !) -> Self {
        let (go_r, go) = pipe();
        let (ready, ready_w) = pipe();
        let to = SockAddr::from(at);
        let name = CString::new(COMM).unwrap();
        // Forked from a thread inside the namespace: the child is in it.
        // SAFETY: the child only runs `body`, which never returns.
        let pid = ns.run(|| match unsafe { libc::fork() } {
            0 => body(go_r.as_raw_fd(), ready_w.as_raw_fd(), &to, &name),
            pid => pid,
        });
        assert!(pid > 0, "fork");
        Self { pid, go, ready }
    }

    /// Tells it to listen and waits until it does.
    fn listen(&self) {
        let mut byte = 0u8;
        // SAFETY: one byte each way on our own pipes.
        unsafe {
            assert_eq!(libc::write(self.go.as_raw_fd(), (&raw const byte).cast(), 1), 1, "server gone");
            assert_eq!(libc::read(self.ready.as_raw_fd(), (&raw mut byte).cast(), 1), 1, "the server could not listen");
        }
    }
}

/// The handing-over server's side: it listens as [`serve`] does, then, told
/// again, forks a child that keeps the listener, sends the child's pid and
/// exits, as a daemon that forks after `listen()` does.
fn serve_then_hand_over(go: i32, ready: i32, to: &SockAddr, name: &CString) -> ! {
    // SAFETY: async-signal-safe calls only, in the forked child.
    unsafe {
        wait_then_listen(go, ready, to, name);
        let mut byte = 0u8;
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(1);
        }
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        let pid: i32 = libc::getpid();
        libc::write(ready, (&raw const pid).cast(), 4);
        loop {
            libc::pause();
        }
    }
}

impl Server {
    /// Tells the listening server to hand its listener to a child of its
    /// own and exit ([`serve_then_hand_over`]); returns the child's pid,
    /// once the server has exited.
    fn hand_over(&self) -> i32 {
        let (byte, mut child) = (0u8, 0i32);
        // SAFETY: one byte, then a pid, on our own pipes; our own child.
        unsafe {
            assert_eq!(libc::write(self.go.as_raw_fd(), (&raw const byte).cast(), 1), 1, "server gone");
            assert_eq!(libc::read(self.ready.as_raw_fd(), (&raw mut child).cast(), 4), 4, "no child took the listener");
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        child
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Three final ACKs that overflow the server's accept queue, as
/// `common::ack_scenario` makes them but against a listener of another
/// process: four unaccepted connections, four requests whose ACKs
/// nftables holds back, then data segments carry the ACKs: one completes
/// and fills the queue, three overflow.
fn ack_overflow(ns: &NetNs, a: SocketAddr) -> Vec<Socket> {
    let mut held: Vec<Socket> = ns.run(|| (0..4).map(|_| connect(a)).collect());
    ns.block(a.port(), false);
    let clients: Vec<Socket> = ns.run(|| (0..4).map(|_| connect_nonblocking(a)).collect());
    clients.iter().for_each(wait_connected);
    ns.unblock();
    for c in &clients {
        let _ = c.send(b"x");
    }
    held.extend(clients);
    held
}

/// Asserts `owner` (an `owner` object) names the server in its unit, in
/// the namespace `ns` the test made with `ip netns add`.
fn names_the_server(what: &str, owner: &Value, server: i32, unit: &UnitCgroup, ns: &NetNs) {
    let exe = std::env::current_exe().expect("own executable");
    assert_eq!(owner["pid"], server, "{what}: the pid the test forked, in {owner}");
    assert_eq!(owner["comm"], COMM, "{what}: {owner}");
    assert_eq!(owner["exe"].as_str().map(Path::new), Some(exe.as_path()), "{what}: {owner}");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(owner["uid"], unsafe { libc::geteuid() }, "{what}: {owner}");
    // The suite runs as root: uid 0 is named from the process's own
    // /etc/passwd (the host's here), read the guarded way.
    assert_eq!(owner["user"], "root", "{what}: {owner}");
    assert!(owner.get("unknown").is_none(), "{what}: everything is known: {owner}");
    assert_eq!(owner["cgroup"], unit.path(), "{what}: {owner}");
    assert_eq!(owner["unit"], unit.name.as_str(), "{what}: {owner}");
    assert_eq!(owner["slice"], "system.slice", "{what}: {owner}");
    assert!(owner.get("container_id").is_none() && owner.get("pod_uid").is_none(), "{what}: no container, no pod: {owner}");
    assert_eq!(owner["netns_name"], ns.name.as_str(), "{what}: the namespace's `ip netns` name: {owner}");
}

/// The fields an `event` record's owner has (docs/events.md): those that
/// name it. The container's id only when it has no name.
const NAMING: [&str; 8] = ["pid", "comm", "unit", "container_name", "container_id", "pod_name", "pod_namespace", "netns_name"];

/// Asserts an `event` record's `owner` names the owner `full` (a record's
/// whole owner object, checked against the test's own facts) by exactly
/// its naming fields.
fn names_briefly(what: &str, event_owner: &Value, full: &Value) {
    let named = |k: &str| full.get(k).is_some() && !(k == "container_id" && full.get("container_name").is_some());
    for k in NAMING.iter().copied().filter(|k| named(k)) {
        assert_eq!(event_owner.get(k), full.get(k), "{what}: {k} in {event_owner}, of {full}");
    }
    let extra: Vec<&String> = event_owner.as_object().expect("an object").keys().filter(|k| !named(k)).collect();
    assert!(extra.is_empty(), "{what}: only naming fields, not {extra:?}: {event_owner}");
}

/// A server in `system.slice/NAME.service` overflows at the SYN and ACK
/// stages: the `summary`, every `event` and `counted` record and the
/// `qtrace_listener_info` series name its pid and unit, and its drops still
/// equal the namespace's `ListenDrops`.
#[test]
fn a_unit_s_listener_is_named_on_records_and_metrics() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=0"]);
    let p = port();
    let a = addr("127.0.0.1", p);
    let unit = UnitCgroup::new();
    let server = Server::fork(&ns, a);
    // In its unit before it listens: qtrace reads a listener's owner once.
    unit.add(server.pid);
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json", "--interval", "0.2", "--metrics-addr", "127.0.0.1:0"]);
    let before = ns.counters();
    server.listen();
    // Several polls: the listener is identified before anything drops.
    std::thread::sleep(Duration::from_millis(1500));
    let clients = ack_overflow(&ns, a);
    let burst: Vec<Socket> = ns.run(|| (0..20).map(|_| connect_nonblocking(a)).collect());
    std::thread::sleep(Duration::from_millis(2500));
    ns.block(p, true);
    let listen_drops = settle(Duration::from_millis(600), || ns.counters()).delta(&before, "ListenDrops");
    let (_, _, metrics) = http_get(&q.metrics_addr(), "/metrics", None);
    let done = q.stop(libc::SIGTERM);
    drop((clients, burst));
    assert!(done.status.success(), "{:?}", done.stderr);

    assert!(listen_drops >= 3, "the server overflowed (ListenDrops +{listen_drops})");
    if done.counted_is_upper_bound() {
        unsupported("owner", "exact totals", "counted drops are an upper bound on this kernel");
        assert!(done.drops(p) >= listen_drops);
    } else {
        assert_eq!(done.drops(p), listen_drops, "qtrace's drops vs ListenDrops delta");
    }
    let summary = done.summary(p).expect("a summary for the port");
    names_the_server("summary", &summary["owner"], server.pid, &unit, &ns);
    assert_eq!(summary["owners"].as_array().map(Vec::len), Some(1), "one owner: {summary}");
    names_the_server("summary's owners", &summary["owners"][0], server.pid, &unit, &ns);
    let events: Vec<&Value> = done.of_type("event").filter(|e| e["local_port"] == p).collect();
    match done.ack_detail_missing() {
        Some(why) if !done.sees_syn_stage() => unsupported("owner", "owners on events", &why),
        _ => assert!(!events.is_empty(), "events for the port"),
    }
    for e in events {
        names_briefly("event", &e["owner"], &summary["owner"]);
    }
    for c in done.of_type("counted").filter(|c| c["local_port"] == p) {
        names_the_server("counted", &c["owner"], server.pid, &unit, &ns);
    }
    let series = format!(
        "qtrace_listener_info{{netns=\"{}\",port=\"{p}\",pid=\"{}\",comm=\"{COMM}\",unit=\"{}\"}}",
        ns.inode(),
        server.pid,
        unit.name
    );
    assert_eq!(sample(&metrics, &series), Some(1.0), "{series} in\n{metrics}");
    assert_eq!(
        metrics.matches(&format!("qtrace_listener_info{{netns=\"{}\",port=\"{p}\"", ns.inode())).count(),
        1,
        "one owner, one series"
    );
}

/// A server that listens, forks a child that keeps the listener and exits
/// (a daemon forking after `listen()`): records after that name the child,
/// not the pid that called `listen()`, which is gone. The oracle is the two
/// pids the test made.
#[test]
fn a_listener_handed_to_a_child_names_the_child() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=0"]);
    let p = port();
    let a = addr("127.0.0.1", p);
    let unit = UnitCgroup::new();
    let server = Server::fork_running(&ns, a, serve_then_hand_over);
    unit.add(server.pid);
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json", "--interval", "0.2"]);
    server.listen();
    // Several polls: the listener is identified as the parent's.
    std::thread::sleep(Duration::from_millis(1500));
    let child = server.hand_over();
    let _kill_child = KillOnDrop(child);
    assert_ne!(child, server.pid);
    std::thread::sleep(Duration::from_millis(1500));
    let clients = ack_overflow(&ns, a);
    std::thread::sleep(Duration::from_millis(1500));
    ns.block(p, true);
    let done = q.stop(libc::SIGTERM);
    drop(clients);
    assert!(done.status.success(), "{:?}", done.stderr);

    let listens: Vec<&Value> = done.of_type("listen").filter(|l| l["local_port"] == p).collect();
    if let Some(l) = listens.first() {
        assert_eq!(l["pid"], server.pid, "the listen() caller is the parent: {l}");
    }
    let summary = done.summary(p).expect("a summary for the port");
    names_the_server("summary", &summary["owner"], child, &unit, &ns);
    assert_eq!(summary["owners"].as_array().map(Vec::len), Some(1), "only the child: {summary}");
    let events: Vec<&Value> = done.of_type("event").filter(|e| e["local_port"] == p).collect();
    for e in &events {
        names_briefly("event", &e["owner"], &summary["owner"]);
    }
    for c in done.of_type("counted").filter(|c| c["local_port"] == p) {
        names_the_server("counted", &c["owner"], child, &unit, &ns);
    }
    assert!(!events.is_empty() || done.of_type("counted").any(|c| c["local_port"] == p), "the child's listener overflowed");
}

/// Kills a process that is not the test's child (no wait) on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Debian's nginx, where the package puts it (`cargo xtask test`
/// installs it).
const NGINX: &str = "/usr/sbin/nginx";

/// An nginx master with two workers in `ns`, each worker with its own
/// `reuseport` listener on `a` (backlog 4), run as user `nobody`, its
/// files in a scratch directory; stopped and removed on drop.
struct Nginx {
    dir: PathBuf,
    master: i32,
    workers: Vec<i32>,
}

impl Nginx {
    fn start(ns: &NetNs, a: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("qtrace-nginx-{}-{}", std::process::id(), a.port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let d = dir.display();
        let temps: String =
            ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].iter().map(|t| format!("{t}_temp_path {d}/{t};\n")).collect();
        let conf = format!(
            "user nobody nogroup;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n{temps} server {{ listen {a} reuseport backlog=4; return 200 \"ok\\n\"; }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let conf = dir.join("nginx.conf");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, NGINX, "-c"])
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("{NGINX} (Debian package nginx): {e}"));
        assert!(out.status.success(), "nginx did not start: {}", String::from_utf8_lossy(&out.stderr));
        // The master writes its pid once it has daemonized; its children
        // are the workers, each registering its own listener as it starts.
        let master = until(Duration::from_secs(10), || std::fs::read_to_string(dir.join("nginx.pid")).ok()?.trim().parse::<i32>().ok());
        let master = master.unwrap_or_else(|| panic!("no nginx pid file in {d}"));
        let mut nginx = Self { dir, master, workers: Vec::new() };
        let children = format!("/proc/{master}/task/{master}/children");
        let workers = until(Duration::from_secs(10), || {
            let pids: Vec<i32> = std::fs::read_to_string(&children).ok()?.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            (pids.len() == 2).then_some(pids)
        });
        nginx.workers = workers.unwrap_or_else(|| panic!("nginx {master} did not start two workers"));
        // Each worker has reached its event loop once it waits for one of
        // the listeners (`ss` gives their inodes) in its epoll instance.
        let ss = ns.exec(&["ss", "-Hltne", &format!("sport = :{}", a.port())]);
        let listeners: Vec<String> = ss
            .split_whitespace()
            .filter_map(|f| f.strip_prefix("ino:"))
            .map(|i| format!("ino:{:x} ", i.parse::<u64>().expect("an inode")))
            .collect();
        assert_eq!(listeners.len(), 2, "two reuseport listeners: {ss}");
        for &w in &nginx.workers {
            let waits = || listeners.iter().any(|l| epoll_fdinfo(w).contains(l.as_str())).then_some(());
            let polls = until(Duration::from_secs(10), waits);
            assert!(polls.is_some(), "nginx worker {w} never waited for a listener");
        }
        nginx
    }
}

/// The fdinfo text of every epoll instance of process `pid`.
fn epoll_fdinfo(pid: i32) -> String {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    let epolls = fds.iter().filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]"));
    epolls.filter_map(|fd| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok()).collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master first: it would start a new worker for each one
        // that dies while it lives.
        // SAFETY: kill has no memory preconditions; these are nginx's
        // processes, started above (a stopped worker dies of SIGKILL too).
        unsafe {
            libc::kill(self.master, libc::SIGKILL);
            for &w in &self.workers {
                libc::kill(w, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `f` gives once it gives something, trying every 100 ms for `limit`.
fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match f() {
            None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            found => return found,
        }
    }
}

/// The `qtrace_listener_info` samples for `port` in namespace `netns`, each
/// as its label text (`netns="…",port="…",pid="…",…`).
fn listener_info(metrics: &str, netns: u64, port: u16) -> Vec<String> {
    let (n, p) = (format!("netns=\"{netns}\""), format!("port=\"{port}\""));
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("qtrace_listener_info{")?.split_once("} ").filter(|(_, v)| v.trim() == "1"))
        .map(|(labels, _)| labels.to_owned())
        .filter(|labels| labels.split(',').any(|l| l == n) && labels.split(',').any(|l| l == p))
        .collect()
}

/// The incident: an nginx whose one worker stalls (SIGSTOP) under
/// load. Its own `reuseport` listener overflows while the other worker
/// serves. The `summary` for port 8080 names nginx and each listener's own
/// worker (which the test knows as the master's children), not the master
/// that opened them; `qtrace_listener_info` names both workers; the
/// drops equal the namespace's `ListenDrops`.
#[test]
fn a_stalled_nginx_worker_is_named_with_its_own_listener() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=0"]);
    let p = 8080;
    let a = addr("127.0.0.1", p);
    let nginx = Nginx::start(&ns, a);
    let q = Qtrace::watch(&["--port", "8080", "--netns", &ns.name, "--json", "--interval", "0.2", "--metrics-addr", "127.0.0.1:0"]);
    let before = ns.counters();
    // SAFETY: kill has no memory preconditions; nginx's own worker.
    assert_eq!(unsafe { libc::kill(nginx.workers[0], libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(600));
    let load: Vec<Socket> = ns.run(|| (0..60).map(|_| connect_nonblocking(a)).collect());
    // Long enough for the dropped SYNs' first retransmission (1 s).
    std::thread::sleep(Duration::from_millis(2500));
    ns.block(p, true);
    let listen_drops = settle(Duration::from_millis(600), || ns.counters()).delta(&before, "ListenDrops");
    let (_, _, metrics) = http_get(&q.metrics_addr(), "/metrics", None);
    let done = q.stop(libc::SIGTERM);
    drop(load);
    assert!(done.status.success(), "{:?}", done.stderr);

    assert!(listen_drops >= 3, "the stalled worker's listener overflowed (ListenDrops +{listen_drops})");
    if done.counted_is_upper_bound() {
        unsupported("owner", "exact totals", "counted drops are an upper bound on this kernel");
        assert!(done.drops(p) >= listen_drops);
    } else {
        assert_eq!(done.drops(p), listen_drops, "qtrace's drops vs ListenDrops delta");
    }
    let summary = done.summary(p).expect("a summary for port 8080");
    let owner = &summary["owner"];
    assert_eq!((owner["comm"].as_str(), owner["exe"].as_str()), (Some("nginx"), Some(NGINX)), "names nginx: {summary}");
    assert_eq!(owner["user"], "nobody", "the workers' user, as nginx.conf says: {owner}");
    let mut owners: Vec<i64> = summary["owners"].as_array().expect("owners").iter().filter_map(|o| o["pid"].as_i64()).collect();
    owners.sort_unstable();
    let mut workers: Vec<i64> = nginx.workers.iter().map(|&w| i64::from(w)).collect();
    workers.sort_unstable();
    assert_eq!(owners, workers, "each listener's own worker, not the master {}: {summary}", nginx.master);
    for e in done.of_type("event").filter(|e| e["local_port"] == p) {
        assert_eq!(e["owner"]["comm"], "nginx", "{e}");
    }
    let info = listener_info(&metrics, ns.inode(), p);
    for w in &nginx.workers {
        let named = info.iter().any(|l| l.split(',').any(|f| f == format!("pid=\"{w}\"")) && l.contains("comm=\"nginx\""));
        assert!(named, "qtrace_listener_info names worker {w}: {info:?}");
    }
    assert_eq!(info.len(), 2, "one series per worker: {info:?}");
}

/// The server's side as user `nobody` (uid and gid 65534): it drops root
/// before it waits, then listens as [`serve`] does.
fn serve_as_nobody(go: i32, ready: i32, to: &SockAddr, name: &CString) -> ! {
    // SAFETY: async-signal-safe calls only, in the forked child.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
            libc::_exit(3);
        }
    }
    serve(go, ready, to, name)
}

const NOBODY: u32 = 65534;

/// qtrace without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (root otherwise,
/// as a locked-down DaemonSet might run it) and two servers of user
/// `nobody`: one listening before qtrace starts, one after (whose
/// `listen()` the kernel reports, but whose descriptor qtrace may not read
/// to find the socket). The `start` record says at once which owners it
/// cannot name and why, and both servers' records name no process rather
/// than a wrong one, and say why. The oracle is the capabilities the test
/// dropped and the users it gave the servers.
#[test]
fn without_ptrace_an_owner_says_what_is_missing() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=0"]);
    let (p1, p2) = (port(), port());
    let (a1, a2) = (addr("127.0.0.1", p1), addr("127.0.0.1", p2));
    let (early, late) = (Server::fork_running(&ns, a1, serve_as_nobody), Server::fork_running(&ns, a2, serve_as_nobody));
    early.listen();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--bounding-set=-sys_ptrace,-dac_read_search", "--inh-caps=-sys_ptrace,-dac_read_search", "--"]);
    cmd.arg(common::bin()).args([
        "watch",
        "--json",
        "--interval",
        "0.2",
        "--netns",
        &ns.name,
        "--port",
        &p1.to_string(),
        "--port",
        &p2.to_string(),
    ]);
    let q = Qtrace::command(cmd);
    late.listen();
    std::thread::sleep(Duration::from_millis(1000));
    let clients: Vec<Socket> = ns.run(|| [a1, a2].iter().flat_map(|&a| (0..12).map(move |_| connect_nonblocking(a))).collect());
    std::thread::sleep(Duration::from_millis(1500));
    ns.block(p1, true);
    ns.block(p2, true);
    let done = q.stop(libc::SIGTERM);
    drop(clients);
    assert!(done.status.success(), "{:?}", done.stderr);

    let limit = done.limit("owners_partial").expect("the start record says owners are partial");
    assert_eq!(limit["reason"], "without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH", "{limit}");
    for (p, which) in [(p1, "early"), (p2, "late")] {
        let owner = &done.summary(p).unwrap_or_else(|| panic!("a summary for the {which} server"))["owner"];
        assert!(owner.get("pid").is_none() && owner.get("comm").is_none(), "{which}: no process rather than a wrong one: {owner}");
        let why = owner["unknown"].as_str().unwrap_or_default();
        assert!(why.contains("descriptors could not be read"), "{which}: says why: {owner}");
        assert_eq!(owner["netns_name"], ns.name.as_str(), "{which}: what needs no privilege is still given: {owner}");
    }
}

/// With qtrace watching `port` (metrics on), stops the container's
/// server (SIGSTOP: it accepts nothing more, so its accept queue fills;
/// the kernel still answers SYNs) and sends 30 connections from inside
/// its namespace. Returns the namespace's `ListenDrops` growth, a scrape
/// of the metrics and qtrace's records.
fn overflow_in_container(c: &InContainer, port: u16) -> (u64, String, Finished) {
    c.wait_listening(port);
    let q = Qtrace::watch(&["--port", &port.to_string(), "--json", "--interval", "0.2", "--metrics-addr", "127.0.0.1:0"]);
    // Several polls: the listener and its owner are read before any drop.
    std::thread::sleep(Duration::from_millis(1500));
    let before = c.counters();
    c.signal(libc::SIGSTOP);
    let a = addr("127.0.0.1", port);
    let burst: Vec<Socket> = c.run(|| (0..30).map(|_| connect_nonblocking(a)).collect());
    std::thread::sleep(Duration::from_millis(2500));
    // Closing them stops their SYN retransmits: the counters settle.
    drop(burst);
    let listen_drops = settle(Duration::from_millis(600), || c.counters()).delta(&before, "ListenDrops");
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, metrics) = http_get(&q.metrics_addr(), "/metrics", None);
    let done = q.stop(libc::SIGTERM);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert!(listen_drops >= 10, "the container's listener overflowed (ListenDrops +{listen_drops})");
    (listen_drops, metrics, done)
}

/// qtrace's drops of `port` equal the namespace's `ListenDrops` growth,
/// and every record that names an owner for it passes `check`.
fn drops_and_owners(done: &Finished, port: u16, listen_drops: u64, check: impl Fn(&str, &Value)) {
    if done.counted_is_upper_bound() {
        unsupported("owner", "exact totals", "counted drops are an upper bound on this kernel");
        assert!(done.drops(port) >= listen_drops);
    } else {
        assert_eq!(done.drops(port), listen_drops, "qtrace's drops vs the container's ListenDrops delta");
    }
    let summary = done.summary(port).expect("a summary for the port");
    check("summary", &summary["owner"]);
    assert_eq!(summary["owners"].as_array().map(Vec::len), Some(1), "one owner: {summary}");
    let mut named = 0;
    for r in done.of_type("counted").filter(|r| r["local_port"] == port) {
        check("counted", &r["owner"]);
        named += 1;
    }
    for r in done.of_type("event").filter(|r| r["local_port"] == port) {
        names_briefly("event", &r["owner"], &summary["owner"]);
        named += 1;
    }
    assert!(named > 0, "event or counted records for the port");
}

/// A container podman runs from an image the test made: qtrace names it
/// (podman, its id and name, the image) on every record and in
/// `qtrace_listener_info`, and counts its namespace's drops exactly.
#[test]
fn a_podman_container_is_named_with_its_image() {
    require_root();
    let p = port();
    let rootfs = RootFs::new("podman");
    let (name, image) = (format!("qtrace-test-{}-{p}", std::process::id()), format!("localhost/qtrace-test-busybox:{p}"));
    let container = PodmanContainer::run(&rootfs, &name, &image, p);
    let c = &container.process;
    let (listen_drops, metrics, done) = overflow_in_container(c, p);

    drops_and_owners(&done, p, listen_drops, |what, owner| {
        assert_eq!(owner["pid"], c.pid, "{what}: the container's process: {owner}");
        assert_eq!(owner["comm"], "httpd", "{what}: {owner}");
        assert_eq!(owner["user"], "root", "{what}: from the image's own /etc/passwd: {owner}");
        assert_eq!(owner["container_runtime"], "podman", "{what}: {owner}");
        assert_eq!(owner["container_id"], container.id.as_str(), "{what}: {owner}");
        assert_eq!(owner["container_name"], name.as_str(), "{what}: {owner}");
        assert_eq!(owner["image"], image.as_str(), "{what}: {owner}");
        assert!(owner.get("pod_name").is_none() && owner.get("pod_uid").is_none(), "{what}: no pod: {owner}");
        assert!(owner.get("unknown").is_none(), "{what}: everything is known: {owner}");
    });
    let series = format!(
        "qtrace_listener_info{{netns=\"{}\",port=\"{p}\",pid=\"{}\",comm=\"httpd\",container=\"{name}\",container_id=\"{}\",image=\"{image}\"}}",
        c.netns(),
        c.pid,
        container.id
    );
    assert_eq!(sample(&metrics, &series), Some(1.0), "{series} in\n{metrics}");
    let drops = format!("qtrace_drops_total{{netns=\"{}\",port=\"{p}\"}}", c.netns());
    assert_eq!(sample(&metrics, &drops), Some(done.drops(p) as f64), "no pod, no pod label: {drops} in\n{metrics}");
}

/// A Kubernetes pod's container as containerd's CRI plugin would run it,
/// driven with `ctr`: the annotations the plugin writes and the kubelet's
/// cgroupfs layout, given by the test. qtrace names the pod, its namespace
/// and the container on records and metrics, the runtime from where its
/// state is (the cgroup path does not say), and counts exactly.
#[test]
fn a_containerd_pod_container_is_named_with_its_pod() {
    require_root();
    let p = port();
    let rootfs = RootFs::new("containerd");
    let containerd = Containerd::start();
    let (id, uid) = (random_id(), random_uuid());
    let (pod, namespace, ctr_name, image) = (format!("web-{p}"), "qtrace-test", "httpd", "registry.example/qtrace/busybox:1.35");
    let annotations = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", ctr_name),
        ("io.kubernetes.cri.image-name", image),
        ("io.kubernetes.cri.sandbox-name", &pod),
        ("io.kubernetes.cri.sandbox-namespace", namespace),
        ("io.kubernetes.cri.sandbox-uid", &uid),
    ];
    let cgroup = PodCgroup::new(&uid);
    let task = CtrTask::run(&containerd, &rootfs, &id, &cgroup.path(&id), &annotations, p);
    let c = &task.process;
    let (listen_drops, metrics, done) = overflow_in_container(c, p);

    drops_and_owners(&done, p, listen_drops, |what, owner| {
        assert_eq!(owner["pid"], c.pid, "{what}: the task's process: {owner}");
        assert_eq!(owner["comm"], "httpd", "{what}: {owner}");
        assert_eq!(owner["cgroup"], cgroup.path(&id), "{what}: {owner}");
        assert_eq!(owner["container_runtime"], "containerd", "{what}: {owner}");
        assert_eq!(owner["container_id"], id.as_str(), "{what}: {owner}");
        assert_eq!(owner["pod_uid"], uid, "{what}: {owner}");
        assert_eq!(owner["container_name"], ctr_name, "{what}: {owner}");
        assert_eq!(owner["image"], image, "{what}: {owner}");
        assert_eq!(owner["pod_name"], pod.as_str(), "{what}: {owner}");
        assert_eq!(owner["pod_namespace"], namespace, "{what}: {owner}");
        assert!(owner.get("unknown").is_none(), "{what}: everything is known: {owner}");
    });
    let netns = c.netns();
    let series = format!(
        "qtrace_listener_info{{netns=\"{netns}\",port=\"{p}\",pid=\"{}\",comm=\"httpd\",container=\"{ctr_name}\",container_id=\"{id}\",image=\"{image}\",pod=\"{pod}\",namespace=\"{namespace}\",pod_uid=\"{uid}\"}}",
        c.pid
    );
    assert_eq!(sample(&metrics, &series), Some(1.0), "{series} in\n{metrics}");
    let drops = format!("qtrace_drops_total{{netns=\"{netns}\",port=\"{p}\",pod=\"{pod}\",namespace=\"{namespace}\"}}");
    assert_eq!(sample(&metrics, &drops), Some(done.drops(p) as f64), "{drops} in\n{metrics}");
    assert_eq!(metrics.matches(&format!("qtrace_drops_total{{netns=\"{netns}\",port=\"{p}\"")).count(), 1, "one series for the port");
    promtool_accepts(&metrics);
}

/// `--no-owner`: the start record says owners are off, and no record or
/// metric names one, although the server is as nameable as in
/// [`a_unit_s_listener_is_named_on_records_and_metrics`].
#[test]
fn no_owner_names_no_one() {
    let ns = NetNs::new(&["net.ipv4.tcp_syncookies=0", "net.ipv4.tcp_abort_on_overflow=0"]);
    let p = port();
    let a = addr("127.0.0.1", p);
    let server = Server::fork(&ns, a);
    server.listen();
    let q = Qtrace::watch(&["--port", &p.to_string(), "--json", "--interval", "0.2", "--no-owner", "--metrics-addr", "127.0.0.1:0"]);
    std::thread::sleep(Duration::from_millis(600));
    let clients = ack_overflow(&ns, a);
    std::thread::sleep(Duration::from_millis(1500));
    ns.block(p, true);
    let (_, _, metrics) = http_get(&q.metrics_addr(), "/metrics", None);
    let done = q.stop(libc::SIGTERM);
    drop(clients);
    assert!(done.status.success(), "{:?}", done.stderr);

    assert!(done.limit("owners_off").is_some(), "the start record says owners are off");
    assert!(done.limit("owners_partial").is_none(), "nothing is partial of what is not done");
    let summary = done.summary(p).expect("a summary for the port");
    let records: Vec<&Value> = ["event", "counted", "summary"].iter().flat_map(|t| done.of_type(t)).collect();
    assert!(records.iter().any(|r| r["local_port"] == p), "records for the port");
    for r in records {
        assert!(r.get("owner").is_none() && r.get("owners").is_none(), "no owner: {r}");
    }
    assert!(summary["drops"].as_u64() > Some(0), "{summary}");
    assert!(!metrics.contains("qtrace_listener_info{"), "no info series:\n{metrics}");
}
