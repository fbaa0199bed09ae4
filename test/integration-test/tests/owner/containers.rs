//! Real containers for the owner suite: a root filesystem of the test's
//! making (busybox-static's `httpd`), run by Debian's podman and by a
//! containerd the test starts itself, each with a guard that removes the
//! container, its image or cgroups and the daemon however the test ends.
//! The names, annotations and ids come from the test; the runtimes only
//! carry them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{counters_of, run_in_netns, Counters};

/// Runs a program and returns its stdout; fails the test, naming the
/// program (and the package it comes from), when it cannot run or fails.
pub(crate) fn run(cmd: &mut Command, package: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (install Debian's {package}: cargo xtask setup)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// 32 random bytes in hex: a container id as runtimes make them.
pub(crate) fn random_id() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").and_then(|a| Ok((a, std::fs::read("/proc/sys/kernel/random/uuid")?)));
    let (a, b) = bytes.expect("random uuids");
    let hex: String = [a, b].concat().into_iter().filter(u8::is_ascii_hexdigit).map(char::from).collect();
    assert_eq!(hex.len(), 64);
    hex
}

/// A random UUID, as a pod's UID.
pub(crate) fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random uuid").trim().to_owned()
}

/// A root filesystem: busybox-static's binary as `/bin/busybox`, `sh` and
/// `httpd`, and an `/etc/passwd` naming root. Removed on drop.
pub(crate) struct RootFs(pub PathBuf);

impl RootFs {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rootfs-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("root filesystem");
        }
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("/bin/busybox (install Debian's busybox-static)");
        for applet in ["sh", "httpd"] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).expect("applet link");
        }
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        Self(dir)
    }
}

impl Drop for RootFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A container's first process as the host numbers it, seen through its
/// `/proc` directory: its network namespace, its counters, and signals.
pub(crate) struct InContainer {
    pub pid: i32,
}

impl InContainer {
    /// Runs `f` on a thread inside the process's network namespace.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&format!("/proc/{}/ns/net", self.pid), f)
    }

    /// Its network namespace's inode number, as qtrace labels it.
    pub(crate) fn netns(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{}/ns/net", self.pid)).expect("namespace link").ino()
    }

    /// Its namespace's `TcpExt` counters (what `nstat` reads there).
    pub(crate) fn counters(&self) -> Counters {
        counters_of(&format!("/proc/{}", self.pid))
    }

    /// Waits until something listens on `port` in its namespace.
    pub(crate) fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let local = format!(":{port:04X} ");
        let listening = || {
            ["tcp", "tcp6"].iter().any(|t| {
                let table = std::fs::read_to_string(format!("/proc/{}/net/{t}", self.pid)).unwrap_or_default();
                // `sl local rem st ...`: st 0A is LISTEN.
                table.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(local.trim_end())) && l.contains(" 0A "))
            })
        };
        while !listening() {
            assert!(Instant::now() < deadline, "nothing listens on {port} in the container");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions.
        assert_eq!(unsafe { libc::kill(self.pid, sig) }, 0, "signal {sig} to {}", self.pid);
    }
}

/// podman as this machine needs it (docs: MACHINE-FACTS): no
/// CAP_SYS_RESOURCE to raise limits, so no default ulimits.
pub(crate) fn podman() -> Command {
    let conf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("owner-containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").expect("containers.conf");
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf);
    cmd
}

/// A podman container and the image it was made from, both removed on
/// drop.
pub(crate) struct PodmanContainer {
    pub name: String,
    pub image: String,
    pub id: String,
    pub process: InContainer,
}

impl PodmanContainer {
    /// Makes image `image` from `rootfs` (`podman import`) and runs
    /// `httpd` on `port` in container `name`, with a network namespace of
    /// its own (loopback only) and runc (crun refuses this machine's
    /// hybrid cgroups).
    pub(crate) fn run(rootfs: &RootFs, name: &str, image: &str, port: u16) -> Self {
        let tar = rootfs.0.with_extension("tar");
        run(Command::new("tar").arg("-C").arg(&rootfs.0).arg("-cf").arg(&tar).arg("."), "tar");
        run(podman().arg("import").arg(&tar).arg(image), "podman");
        let _ = std::fs::remove_file(&tar);
        let mut guard = Self { name: name.into(), image: image.into(), id: String::new(), process: InContainer { pid: 0 } };
        let args = ["run", "--detach", "--name", name, "--runtime", "runc", "--ulimit", "host", "--network", "none", image];
        guard.id = run(podman().args(args).args(["/bin/httpd", "-f", "-p", &port.to_string()]), "podman");
        let pid = run(podman().args(["inspect", "--format", "{{.State.Pid}}", name]), "podman");
        guard.process.pid = pid.parse().unwrap_or_else(|_| panic!("podman inspect's pid: {pid:?}"));
        guard
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", "--time", "0", &self.name]).output();
        let _ = podman().args(["rmi", "--force", &self.image]).output();
    }
}

/// A containerd daemon: the one already serving `/run/containerd`, or one
/// the test starts with its own root and socket in a temporary directory
/// and containerd's default state directory (`/run/containerd`, where
/// qtrace looks), stopped on drop.
pub(crate) struct Containerd {
    pub address: String,
    child: Option<Child>,
    dir: PathBuf,
    made_state: bool,
}

const CONTAINERD_STATE: &str = "/run/containerd";

impl Containerd {
    pub(crate) fn start() -> Self {
        let default = format!("{CONTAINERD_STATE}/containerd.sock");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("containerd-{}", std::process::id()));
        if Self::answers(&default) {
            return Self { address: default, child: None, dir, made_state: false };
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("containerd's directory");
        let address = dir.join("containerd.sock").display().to_string();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{CONTAINERD_STATE}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{address}\"\n",
            dir.join("root").display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("containerd's config");
        let made_state = !Path::new(CONTAINERD_STATE).exists();
        let log = std::fs::File::create(dir.join("log")).expect("containerd's log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd: {e} (install Debian's containerd: cargo xtask setup)"));
        let me = Self { address, child: Some(child), dir, made_state };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Self::answers(&me.address) {
            let log = std::fs::read_to_string(me.dir.join("log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "containerd did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    fn answers(address: &str) -> bool {
        Path::new(address).exists()
            && Command::new("ctr").args(["--address", address, "version"]).output().is_ok_and(|o| o.status.success())
    }

    /// `ctr --address ADDRESS -n k8s.io ARGS` (the CRI plugin's namespace).
    pub(crate) fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.args(["--address", &self.address, "--namespace", "k8s.io"]).args(args);
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: kill has no memory preconditions; our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
            if self.made_state {
                let _ = std::fs::remove_dir_all(CONTAINERD_STATE);
            }
        }
    }
}

/// The cgroupfs directories of a Kubernetes pod, as the kubelet's
/// cgroupfs driver makes them (`/kubepods/burstable/pod<UID>`), in every
/// hierarchy; runc makes the container's own below and removes it, this
/// removes the pod's (and `kubepods` if it made it) on drop.
pub(crate) struct PodCgroup {
    pub uid: String,
    made_kubepods: bool,
}

impl PodCgroup {
    pub(crate) fn new(uid: &str) -> Self {
        let made_kubepods = !hierarchies().iter().any(|h| h.join("kubepods").exists());
        Self { uid: uid.into(), made_kubepods }
    }

    /// The path a container `id` of the pod gets (`ctr run --cgroup`).
    pub(crate) fn path(&self, id: &str) -> String {
        format!("/kubepods/burstable/pod{}/{id}", self.uid)
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for h in hierarchies() {
            let _ = std::fs::remove_dir(h.join(format!("kubepods/burstable/pod{}", self.uid)));
            if self.made_kubepods {
                let _ = std::fs::remove_dir(h.join("kubepods/burstable"));
                let _ = std::fs::remove_dir(h.join("kubepods"));
            }
        }
    }
}

/// Where each cgroup hierarchy (v1 controllers, v2) is mounted.
fn hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// A task containerd runs, killed and deleted (with its container) on drop.
pub(crate) struct CtrTask<'a> {
    pub containerd: &'a Containerd,
    pub id: String,
    pub process: InContainer,
}

impl<'a> CtrTask<'a> {
    /// `ctr run --detach` of `httpd` on `port` from `rootfs`, in cgroup
    /// `cgroup`, with `annotations` in its OCI bundle; a network namespace
    /// of its own comes with ctr's default spec.
    pub(crate) fn run(
        containerd: &'a Containerd,
        rootfs: &RootFs,
        id: &str,
        cgroup: &str,
        annotations: &[(&str, &str)],
        port: u16,
    ) -> Self {
        let mut args: Vec<String> = vec!["run".into(), "--detach".into(), "--cgroup".into(), cgroup.into()];
        for (k, v) in annotations {
            args.extend(["--annotation".into(), format!("{k}={v}")]);
        }
        args.extend(["--rootfs".into(), rootfs.0.display().to_string(), id.into()]);
        args.extend(["/bin/httpd", "-f", "-p"].map(String::from));
        args.push(port.to_string());
        let mut task = Self { containerd, id: id.into(), process: InContainer { pid: 0 } };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&mut containerd.ctr(&args), "containerd");
        let listing = run(&mut containerd.ctr(&["task", "list"]), "containerd");
        // `TASK PID STATUS`
        let pid = listing.lines().find_map(|l| l.strip_prefix(id)?.split_whitespace().next()?.parse().ok());
        task.process.pid = pid.unwrap_or_else(|| panic!("no pid for {id} in\n{listing}"));
        task
    }
}

impl Drop for CtrTask<'_> {
    fn drop(&mut self) {
        let _ = self.containerd.ctr(&["task", "kill", "--signal", "SIGKILL", &self.id]).output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.containerd.ctr(&["task", "delete", &self.id]).output().is_ok_and(|o| !o.status.success()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.containerd.ctr(&["container", "delete", &self.id]).output();
    }
}
