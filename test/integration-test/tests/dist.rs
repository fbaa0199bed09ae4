//! The release artifacts `cargo xtask dist` makes, checked the way a user
//! meets them (root, host only; `cargo xtask test` builds them first and
//! names each in a `QTRACE_DIST_*` variable): static binaries for both
//! architectures; tarballs, `.deb`s and `.rpm`s that hold what they should;
//! the `.deb` installed into a clean Debian; the static binary counting
//! drops inside Debian 11, whose C library the glibc build cannot use; the
//! OCI image loaded and run with the DaemonSet's settings; the checksums;
//! and the same bytes from a second `dist`. Every count is compared with
//! the namespace's own `ListenDrops`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{addr, connect_nonblocking, free_port, http_get, listener, port, require_root, sample, settle, NetNs, Qtrace};
use socket2::Socket;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ARCHES: [(&str, &str); 2] = [("X86_64", "x86_64-unknown-linux-musl"), ("AARCH64", "aarch64-unknown-linux-musl")];
const SETTLE: Duration = Duration::from_millis(400);

/// An artifact's path, from the variable `cargo xtask test` sets.
fn artifact(var: &str) -> PathBuf {
    std::env::var_os(format!("QTRACE_DIST_{var}"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("QTRACE_DIST_{var} names a release artifact: run the suites with `cargo xtask test`"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd`; its stdout, failing the test unless it succeeds.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    out.stdout
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[test]
fn the_binaries_are_static_for_their_architecture() {
    for ((arch, _), machine) in ARCHES.iter().zip(["x86-64", "ARM aarch64"]) {
        let said = run(Command::new("file").arg("-b").arg(artifact(&format!("BIN_{arch}"))));
        assert!(said.starts_with("ELF 64-bit LSB") && said.contains(machine), "{arch}: {said}");
        assert!(said.contains("statically linked") || said.contains("static-pie linked"), "{arch}: {said}");
        assert!(!said.contains("dynamically linked") && !said.contains("interpreter"), "{arch}: {said}");
    }
    // The same check tells a glibc build (this test itself) apart, so it
    // can fail.
    let glibc = run(Command::new("file").arg("-b").arg(std::env::current_exe().unwrap()));
    assert!(glibc.contains("dynamically linked"), "a glibc build: {glibc}");
    // Every root suite runs the binary that ships.
    assert!(
        std::fs::read(common::bin()).unwrap() == std::fs::read(artifact("BIN_X86_64")).unwrap(),
        "QTRACE_BIN ({}) is the static x86_64 build",
        common::bin()
    );

    let version = run(Command::new(artifact("BIN_X86_64")).arg("--version"));
    let field = |name: &str| version.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name} in {version}"));
    assert_eq!(version.lines().next(), Some(format!("qtrace {VERSION}").as_str()), "{version}");
    assert_eq!(field("target: "), "x86_64-unknown-linux-musl");
    let commit = run(Command::new("git").arg("-C").arg(repo("")).args(["rev-parse", "--short=12", "HEAD"]));
    assert_eq!(field("commit: "), commit.trim());
    assert!(field("built: ").len() == 10 && field("built: ").starts_with("20"), "{version}");
    let digest = field("eBPF object sha256: ");
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
}

#[test]
fn sha256sums_list_every_artifact_and_match() {
    let dir = artifact("DIR");
    let sums = std::fs::read_to_string(artifact("SUMS")).expect("SHA256SUMS");
    let listed: BTreeSet<&str> = sums.lines().filter_map(|l| l.split_once("  ").map(|(_, name)| name)).collect();
    let mut want: BTreeSet<String> = ["TARBALL", "DEB", "RPM"]
        .iter()
        .flat_map(|kind| ARCHES.iter().map(move |(arch, _)| artifact(&format!("{kind}_{arch}"))))
        .chain([artifact("OCI")])
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, want.iter().map(String::as_str).collect(), "{sums}");
    run(Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(&dir));
    // A changed artifact fails the check.
    let copy = dir.join(format!("sums-check-{}", std::process::id()));
    std::fs::create_dir_all(&copy).unwrap();
    let first = want.pop_first().unwrap();
    std::fs::write(copy.join(&first), b"not the artifact").unwrap();
    let line = sums.lines().find(|l| l.ends_with(&format!("  {first}"))).unwrap();
    std::fs::write(copy.join("SHA256SUMS"), format!("{line}\n")).unwrap();
    let out = Command::new("sha256sum").args(["--check", "SHA256SUMS"]).current_dir(&copy).output().unwrap();
    let _ = std::fs::remove_dir_all(&copy);
    assert!(!out.status.success(), "sha256sum should notice a changed file");
}

#[test]
fn the_tarballs_hold_the_binary_its_documentation_and_licences() {
    for (arch, triple) in ARCHES {
        let tarball = artifact(&format!("TARBALL_{arch}"));
        let top = format!("qtrace-{VERSION}-{triple}");
        let listed = run(Command::new("tar").arg("-tzf").arg(&tarball));
        let listed: BTreeSet<&str> = listed.lines().collect();
        for want in [
            "qtrace",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "LICENSE-GPL2",
            "THIRD-PARTY-LICENSES",
            "man/man1/qtrace.1",
            "man/man1/qtrace-watch.1",
            "completions/qtrace.bash",
            "completions/_qtrace",
            "completions/qtrace.fish",
            "deploy/qtrace.service",
            "deploy/kubernetes/daemonset.yaml",
        ] {
            assert!(listed.contains(format!("{top}/{want}").as_str()), "{} lacks {want}: {listed:?}", tarball.display());
        }
        let member = |name: &str| bytes(Command::new("tar").arg("-xzOf").arg(&tarball).arg(format!("{top}/{name}")));
        assert!(
            member("qtrace") == std::fs::read(artifact(&format!("BIN_{arch}"))).unwrap(),
            "{arch}: the tarball's binary is the static build"
        );
        assert_eq!(member("LICENSE-GPL2"), std::fs::read(repo("LICENSE-GPL2")).unwrap());
        let notices = String::from_utf8_lossy(&member("THIRD-PARTY-LICENSES")).into_owned();
        third_party_notices_name_every_crate(&notices, triple, &member("qtrace"));
        // Owned by root, dated: nothing of the build machine's users.
        let long = run(Command::new("tar").args(["-tvzf"]).arg(&tarball).arg("--numeric-owner"));
        assert!(long.lines().all(|l| l.split_whitespace().nth(1) == Some("0/0")), "{long}");
    }
}

/// The notices name every crate whose source the binary for `triple`
/// itself names (panic locations carry `registry/src/INDEX/NAME-VERSION/`),
/// no proc-macro (those run in the compiler, cargo metadata says which),
/// and Rust's standard library and musl, with licence texts.
fn third_party_notices_name_every_crate(notices: &str, triple: &str, binary: &[u8]) {
    let listed: BTreeSet<(String, String)> = notices
        .lines()
        .filter_map(|l| {
            let (crate_, _) = l.split_once(": ")?;
            let (name, version) = crate_.split_once(' ')?;
            (!name.is_empty() && version.starts_with(|c: char| c.is_ascii_digit()) && !version.contains(' '))
                .then(|| (name.to_owned(), version.to_owned()))
        })
        .collect();
    let text = String::from_utf8_lossy(binary);
    let mut named = BTreeSet::new();
    for (_, rest) in text.match_indices("registry/src/").map(|(i, _)| text[i..].split_at(13)) {
        let Some(dir) = rest.split('/').nth(1) else { continue };
        // NAME-VERSION: the version starts after the last '-' followed by a digit.
        let version_at = dir.rmatch_indices('-').map(|(i, _)| i).find(|&i| dir[i + 1..].starts_with(|c: char| c.is_ascii_digit()));
        if let Some(at) = version_at {
            // A path that ends the string (no '/' after it) runs into what follows.
            let version: String = dir[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || ".+-".contains(*c)).collect();
            named.insert((dir[..at].to_owned(), version));
        }
    }
    assert!(named.len() > 20, "{triple}: the binary names only {} crates' sources: {named:?}", named.len());
    let missing: Vec<_> = named.difference(&listed).collect();
    assert!(missing.is_empty(), "{triple}: THIRD-PARTY-LICENSES lacks crates compiled into the binary: {missing:?}");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let meta: serde_json::Value =
        serde_json::from_str(&run(Command::new(cargo).args(["metadata", "--format-version=1"]).current_dir(repo("")))).unwrap();
    let proc_macros: BTreeSet<(String, String)> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["targets"].as_array().unwrap().iter().any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "proc-macro")))
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["version"].as_str().unwrap().to_owned()))
        .collect();
    let wrong: Vec<_> = listed.intersection(&proc_macros).collect();
    assert!(wrong.is_empty(), "proc-macros are not in the binary: {wrong:?}");
    for want in ["Permission is hereby granted, free of charge", "Apache License", "The Rust standard library", "musl libc"] {
        assert!(notices.contains(want), "THIRD-PARTY-LICENSES lacks {want:?}");
    }
}

#[test]
fn the_rpms_list_their_files_and_metadata() {
    for ((arch, _), rpm_arch) in ARCHES.iter().zip(["x86_64", "aarch64"]) {
        let rpm = artifact(&format!("RPM_{arch}"));
        let info = run(Command::new("rpm").arg("-qpi").arg(&rpm));
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':').map(str::trim))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
        };
        assert_eq!(field("Name"), "qtrace");
        assert_eq!(field("Version"), VERSION);
        assert_eq!(field("Architecture"), rpm_arch);
        assert_eq!(field("License"), "(MIT OR Apache-2.0) AND (MIT OR GPL-2.0-only)");
        let files = run(Command::new("rpm").arg("-qpl").arg(&rpm));
        let files: BTreeSet<&str> = files.lines().collect();
        for want in [
            "/usr/bin/qtrace",
            "/usr/lib/systemd/system/qtrace.service",
            "/usr/share/man/man1/qtrace.1.gz",
            "/usr/share/bash-completion/completions/qtrace",
            "/usr/share/licenses/qtrace/LICENSE-MIT",
            "/usr/share/licenses/qtrace/LICENSE-APACHE",
            "/usr/share/licenses/qtrace/LICENSE-GPL2",
            "/usr/share/licenses/qtrace/THIRD-PARTY-LICENSES",
        ] {
            assert!(files.contains(want), "{} lacks {want}: {files:?}", rpm.display());
        }
        let modes = run(Command::new("rpm").args(["-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]"]).arg(&rpm));
        assert!(modes.lines().any(|l| l == "-rwxr-xr-x root /usr/bin/qtrace"), "{modes}");
        let licences = run(Command::new("rpm").args(["-qpL"]).arg(&rpm));
        assert_eq!(licences.lines().count(), 4, "four %license files: {licences}");
        // The packaged binary is the static build.
        let payload =
            bytes(Command::new("sh").arg("-c").arg(format!("rpm2cpio '{}' | cpio -i --quiet --to-stdout ./usr/bin/qtrace", rpm.display())));
        assert!(payload == std::fs::read(artifact(&format!("BIN_{arch}"))).unwrap(), "{arch}: the rpm's binary is the static build");
    }
}

/// A copy of the cached clean Debian root filesystem, with the kernel's
/// filesystems mounted in it (slaves of the host's, so unmounting them
/// here never unmounts the host's); unmounted and removed when dropped.
struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
}

static CHROOTS: AtomicU32 = AtomicU32::new(0);

impl Chroot {
    fn new() -> Self {
        require_root();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "dist-debian-{}-{}",
            std::process::id(),
            CHROOTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        run(Command::new("cp").arg("-a").arg(artifact("DEBIAN_ROOT")).arg(&root));
        let mut c = Self { root, mounted: Vec::new() };
        c.mount(&["-t", "proc", "proc"], "proc");
        // /sys with the host's mounts under it: BTF, tracefs, bpffs.
        c.mount(&["--rbind", "/sys"], "sys");
        run(Command::new("mount").arg("--make-rslave").arg(c.root.join("sys")));
        c
    }

    /// The host's named network namespaces (`ip netns`), as the DaemonSet
    /// mounts them: qtrace opens a namespace through a process in it or
    /// its /run/netns entry.
    fn mount_netns(&mut self) {
        self.mount(&["--rbind", "/run/netns"], "run/netns");
        run(Command::new("mount").arg("--make-rslave").arg(self.root.join("run/netns")));
    }

    fn mount(&mut self, how: &[&str], at: &str) {
        let target = self.root.join(at);
        std::fs::create_dir_all(&target).unwrap();
        run(Command::new("mount").args(how).arg(&target));
        self.mounted.push(target);
    }

    /// `cmd ARGS` inside, with a plain environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C");
        cmd
    }

    fn put(&self, from: &Path, at: &str) {
        std::fs::copy(from, self.root.join(at.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{} -> {at}: {e}", from.display()));
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let mut clean = true;
        for target in self.mounted.iter().rev() {
            clean &= Command::new("umount").arg("-R").arg(target).status().is_ok_and(|s| s.success());
        }
        // Never delete through a mount that is still there.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.display().to_string();
        if clean && !mounts.lines().any(|l| l.split_whitespace().nth(4).is_some_and(|m| m.starts_with(&root))) {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("dist: left {root} in place: something is still mounted under it");
        }
    }
}

#[test]
fn the_deb_installs_into_a_clean_debian() {
    let debian = Chroot::new();
    debian.put(&artifact("DEB_X86_64"), "/tmp/qtrace.deb");
    run(&mut debian.command(&["dpkg", "-i", "/tmp/qtrace.deb"]));
    let status = run(&mut debian.command(&["dpkg-query", "-W", "-f=${Status} ${Version} ${Architecture}", "qtrace"]));
    assert_eq!(status, format!("install ok installed {VERSION} amd64"));

    let man = run(debian.command(&["man", "qtrace"]).env("MANPAGER", "cat").env("MANWIDTH", "80"));
    assert!(man.contains("NAME") && man.contains("qtrace") && man.contains("watch"), "man qtrace:\n{man}");
    let bash = run(&mut debian.command(&["qtrace", "completions", "bash"]));
    assert!(bash.contains("complete -F") && bash.contains("qtrace"), "{bash}");
    assert!(debian.root.join("usr/share/bash-completion/completions/qtrace").is_file());

    // The unit verifies against the installed binary, and is not enabled.
    let out = debian.command(&["systemd-analyze", "verify", "/lib/systemd/system/qtrace.service"]).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify: {}", text(&out));
    let unit = std::fs::read_to_string(debian.root.join("lib/systemd/system/qtrace.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/qtrace watch"), "{unit}");
    let enabled = debian.command(&["systemctl", "is-enabled", "qtrace.service"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "{}", text(&enabled));
    let copyright = std::fs::read_to_string(debian.root.join("usr/share/doc/qtrace/copyright")).unwrap();
    assert!(copyright.contains("License: MIT or Apache-2.0") && copyright.contains("License: MIT or GPL-2"), "{copyright}");
    let notices = run(&mut debian.command(&["zcat", "/usr/share/doc/qtrace/THIRD-PARTY-LICENSES.gz"]));
    assert!(notices.contains("\naya ") && copyright.contains("/usr/share/doc/qtrace/THIRD-PARTY-LICENSES.gz"), "{copyright}");

    // The arm64 package names its architecture and carries the aarch64 build.
    let deb = artifact("DEB_AARCH64");
    assert_eq!(run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Architecture")).trim(), "arm64");
    let payload =
        bytes(Command::new("sh").arg("-c").arg(format!("dpkg-deb --fsys-tarfile '{}' | tar -xOf - ./usr/bin/qtrace", deb.display())));
    assert!(payload == std::fs::read(artifact("BIN_AARCH64")).unwrap(), "the arm64 .deb's binary is the aarch64 static build");
}

/// A never-accepting `listen(2)` under 40 connects, left to retransmit:
/// the server, the clients and the namespace's `ListenDrops` before.
fn overflow(ns: &NetNs, p: u16) -> (Socket, Vec<Socket>, u64) {
    let before = ns.counters().get("ListenDrops");
    let srv = ns.run(|| listener(addr("127.0.0.1", p), 2));
    let clients: Vec<Socket> = ns.run(|| (0..40).map(|_| connect_nonblocking(addr("127.0.0.1", p))).collect());
    std::thread::sleep(Duration::from_millis(2500));
    (srv, clients, before)
}

/// The namespace's `ListenDrops` growth since `before`, once it is still.
fn listen_drops_since(ns: &NetNs, before: u64) -> u64 {
    let delta = settle(SETTLE, || ns.counters().get("ListenDrops")) - before;
    assert!(delta >= 40, "the burst should overflow (ListenDrops +{delta})");
    delta
}

#[test]
fn the_static_binary_counts_drops_inside_debian_11() {
    let ns = NetNs::new(&[]);
    let mut debian = Chroot::new();
    debian.mount_netns();
    debian.put(&artifact("BIN_X86_64"), "/usr/local/bin/qtrace");
    // Debian 11's C library is too old for a program built here against
    // this machine's glibc: this test itself.
    debian.put(&std::env::current_exe().unwrap(), "/usr/local/bin/built-here");
    let libc = run(&mut debian.command(&["ldd", "--version"]));
    assert!(libc.lines().next().is_some_and(|l| l.ends_with(" 2.31")), "{libc}");
    let glibc = debian.command(&["built-here", "--list"]).output().unwrap();
    assert!(!glibc.status.success() && text(&glibc).contains("GLIBC_2."), "{}", text(&glibc));
    let inode = ns.inode().to_string();

    let p = port();
    let q = Qtrace::command(debian.command(&["qtrace", "watch", "--netns", &inode, "--port", &p.to_string(), "--json"]));
    let (srv, clients, before) = overflow(&ns, p);
    drop(clients);
    let kernel = listen_drops_since(&ns, before);
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_eq!(done.drops(p), kernel, "watch in Debian 11: drops for port {p} vs the ListenDrops delta");

    // listeners: the listener's own drop counter, as ss shows it.
    let listed = run(&mut debian.command(&["qtrace", "listeners", "--netns", &inode, "--json"]));
    let record: serde_json::Value =
        listed.lines().map(|l| serde_json::from_str(l).unwrap()).find(|r: &serde_json::Value| r["local_port"] == p).expect("the listener");
    assert_eq!(record["drops"], ns.ss_drops(p), "listeners in Debian 11 vs ss -ltm");
    assert_eq!(record["drops"], kernel, "and the namespace's ListenDrops: the only listener that dropped");
    drop(srv);

    // doctor: the finding's evidence is the namespace's counters.
    let p = port();
    let before_all = ns.counters();
    let q = Qtrace::command(debian.command(&["qtrace", "doctor", "--netns", &inode, "--duration", "4", "--json"]));
    let (srv, clients, _) = overflow(&ns, p);
    ns.block(p, true);
    let done = q.wait();
    let after = ns.counters();
    assert!(done.status.success(), "{:?}", done.stderr);
    let finding = done
        .of_type("finding")
        .find(|f| f["id"] == "accept_queue_overflow" && f["local_port"] == p)
        .unwrap_or_else(|| panic!("no accept_queue_overflow finding for {p}: {}", done.stdout));
    assert!(after.delta(&before_all, "ListenDrops") >= 30, "the burst overflowed");
    assert_eq!(finding["evidence"]["ListenDrops"], after.delta(&before_all, "ListenDrops"), "doctor in Debian 11 vs ListenDrops");
    drop((srv, clients));
}

/// Stops and removes a container (and its image) however the test ends.
struct Container {
    name: String,
    image: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "--force", "--time", "2", &self.name]).output();
        let _ = Command::new("podman").args(["rmi", "--force", &self.image]).output();
    }
}

/// podman as this machine needs it: no CAP_SYS_RESOURCE to raise
/// limits, so no default ulimits.
fn podman() -> Command {
    let conf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf);
    cmd
}

#[test]
fn the_image_runs_as_the_daemonset_does() {
    require_root();
    // The DaemonSet names this release's image, as pushed to a registry.
    let yaml = std::fs::read_to_string(repo("deploy/kubernetes/daemonset.yaml")).unwrap();
    let named = yaml.lines().find_map(|l| l.trim().strip_prefix("image: ")).expect("the DaemonSet's image");
    assert!(named.ends_with(&format!("/qtrace:{VERSION}")), "the DaemonSet runs {named}, the release is {VERSION}");
    let archive = artifact("OCI");
    let raw = run(Command::new("skopeo").arg("inspect").arg("--raw").arg(format!("oci-archive:{}", archive.display())));
    let index: serde_json::Value = serde_json::from_str(&raw).expect("an image index");
    let platforms: BTreeSet<String> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap().to_owned()).collect();
    assert_eq!(platforms, ["amd64", "arm64"].map(String::from).into());

    let loaded = run(podman().arg("load").arg("--input").arg(&archive));
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: ").or(l.strip_prefix("Loaded image(s): ")))
        .expect("podman names the image")
        .trim()
        .to_owned();
    assert!(image.ends_with(&format!("qtrace:{VERSION}")), "{loaded}");
    let name = format!("qtrace-dist-{}", std::process::id());
    let _guard = Container { name: name.clone(), image: image.clone() };
    let labels = run(podman().args(["image", "inspect", "--format", "{{.Architecture}} {{json .Labels}}", &image]));
    assert!(labels.starts_with("amd64 "), "{labels}");
    assert!(labels.contains(&format!("\"org.opencontainers.image.version\":\"{VERSION}\"")), "{labels}");
    assert!(labels.contains("org.opencontainers.image.licenses"), "{labels}");

    // As deploy/kubernetes/daemonset.yaml runs it: host PID and network,
    // every capability dropped but its set, read-only root, tracefs and
    // the named namespaces mounted from the host.
    let ns = NetNs::new(&[]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut run_it = podman();
    run_it.args(["run", "--rm", "--name", &name, "--runtime", "runc", "--ulimit", "host", "--pid", "host", "--network", "host"]);
    run_it.args(["--cap-drop", "all", "--read-only", "--security-opt", "no-new-privileges", "--user", "0"]);
    for cap in common::daemonset_capabilities(&std::fs::read_to_string(repo("deploy/kubernetes/daemonset.yaml")).unwrap()) {
        run_it.args(["--cap-add", &cap]);
    }
    run_it.args(["--volume", "/sys/kernel/tracing:/sys/kernel/tracing:ro", "--volume", "/run/netns:/run/netns:ro,rslave"]);
    run_it.args([&image, "watch", &format!("--metrics-addr={metrics}"), "--json", "--expire=600"]);
    let q = Qtrace::command(run_it);
    let p = port();
    let (srv, clients, before) = overflow(&ns, p);
    drop(clients);
    let kernel = listen_drops_since(&ns, before);
    let series = format!("qtrace_drops_total{{netns=\"{}\",port=\"{p}\"}}", ns.inode());
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        let (_, _, body) = http_get(&metrics, "/metrics", None);
        let seen = sample(&body, &series);
        if seen == Some(kernel as f64) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(served, Some(kernel as f64), "the image's /metrics {series} vs the ListenDrops delta");
    // podman passes SIGTERM on to qtrace, which prints its summary.
    let done = q.stop(libc::SIGTERM);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_eq!(done.drops(p), kernel, "the image's NDJSON drops for port {p} vs the ListenDrops delta");
    drop(srv);
}

/// A second `cargo xtask dist` of the same commit, into another
/// directory, gives the same bytes for every artifact (cargo rebuilds the
/// binaries only if it sees a change; everything else is made again).
#[test]
fn a_second_dist_gives_the_same_bytes() {
    let first = std::fs::read_to_string(artifact("SUMS")).unwrap();
    let again = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dist-again-{}", std::process::id()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    run(Command::new(cargo).args(["xtask", "dist", "--out"]).arg(&again).current_dir(repo("")));
    eprintln!("dist: the second dist took {:.0?}", started.elapsed());
    let second = std::fs::read_to_string(again.join("SHA256SUMS")).unwrap();
    let _ = std::fs::remove_dir_all(&again);
    assert_eq!(second, first, "SHA256SUMS of two builds of one commit");
}
