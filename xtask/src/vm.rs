//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's cloud kernels
//! under QEMU and runs the root integration suites `overflow` and
//! `diagnosis` (`test/integration-test/tests/`) inside each, once per hook
//! tier, with the static qtrace binary that ships. x86_64 guests boot every
//! series and pinned package; arm64 guests (`qemu-system-aarch64`, see
//! [`arch`]) run the overflow suite, built for aarch64, on the fentry and
//! kprobe tiers.
//!
//! The host kernel refuses fentry and has no kprobes, so the fentry and
//! kprobe tiers are proven here, on real distribution kernels. Kernel
//! packages are fetched with a private apt configuration (the system's
//! sources are untouched) and cached between runs. Each guest gets a newc
//! initramfs with busybox, qtrace, the test binary, the tools the tests call
//! (ip, ss, nft, bpftool) with their libraries, and the kernel's own modules
//! the tests need (nf_tables, tcp_diag). Its init prints machine-readable
//! lines and powers off; the host parses the serial console and prints the
//! kernel x tier x test matrix: pass, FAIL, or the parts a kernel cannot
//! support and why. A tier a kernel's configuration does not promise
//! (fentry on arm64 before 6.4) is tried, and qtrace's refusal is its row.
//! Guests boot two at a time (`QTRACE_VM_JOBS`): see [`parallel_guests`].

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The test of `--hooks auto`: run once per kernel, in a row of its own.
const AUTO_TEST: &str = "auto_picks_the_most_detailed_tier";
const BOOT_TIMEOUT: Duration = Duration::from_secs(1500);
/// Modules the tests need, in load order (dependencies first).
const MODULES: &[&str] =
    &["lib/libcrc32c", "net/netfilter/nfnetlink", "net/netfilter/nf_tables", "net/ipv4/inet_diag", "net/ipv4/tcp_diag"];
/// Tools the tests run.
const TOOLS: &[&str] = &["ip", "ss", "nft", "bpftool"];

mod arch;
mod libs;

pub(crate) use arch::{Arch, ARM64, X86_64};

fn cache_dir() -> PathBuf {
    std::env::var_os("QTRACE_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/qtrace")).join("vm")
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt options that keep lists and downloads in the cache, with bullseye,
/// bookworm and trixie from the system's own mirror, for `arch`'s packages.
fn apt_options(dir: &Path, arch: &Arch) -> Result<Vec<String>> {
    let sources = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").context("reading the system's Debian sources")?;
    let mirror =
        sources.lines().find_map(|l| l.strip_prefix("URIs:")).map(|s| s.trim().to_owned()).context("no URIs: line in debian.sources")?;
    fs::create_dir_all(dir.join("lists/partial"))?;
    fs::create_dir_all(dir.join("archives/partial"))?;
    let mut list = String::new();
    for suite in ["bullseye", "bookworm", "trixie"] {
        let _ = writeln!(list, "deb {mirror} {suite} main");
    }
    fs::write(dir.join("sources.list"), list)?;
    Ok(vec![
        format!("-o=Dir::Etc::SourceList={}", dir.join("sources.list").display()),
        "-o=Dir::Etc::SourceParts=/dev/null".into(),
        format!("-o=APT::Architecture={}", arch.deb),
        format!("-o=APT::Architectures={}", arch.deb),
        format!("-o=Dir::State::Lists={}", dir.join("lists").display()),
        format!("-o=Dir::Cache::Archives={}", dir.join("archives").display()),
    ])
}

/// Version-aware "newest": compares runs of digits numerically.
fn version_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in name.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                key.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((digits.parse().unwrap_or(0), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    key
}

/// Downloads (once) and unpacks one kernel package; returns its boot/.
fn unpack(dir: &Path, opts: &[String], pkg: &str) -> Result<PathBuf> {
    let unpacked = dir.join("kernels").join(pkg);
    let boot = unpacked.join("boot");
    if boot.is_dir() {
        return Ok(boot);
    }
    let dl = dir.join("downloads");
    fs::create_dir_all(&dl)?;
    run(Command::new("apt-get").args(opts).args(["download", "-qq", pkg]).current_dir(&dl))?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_"))))
        .with_context(|| format!("{pkg} was not downloaded"))?;
    fs::create_dir_all(&unpacked)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    Ok(boot)
}

/// A kernel to boot.
struct Kernel {
    /// The package's version, `6.12.117+deb13`.
    version: String,
    /// Why it is in the matrix: the newest of a series, pinned, or both.
    why: Vec<String>,
    vmlinuz: PathBuf,
    /// The most detailed tier its configuration promises (`--hooks auto`
    /// must pick it).
    expect_tier: &'static str,
}

/// Downloads (once) and unpacks the newest kernel of each series and every
/// pinned one. Returns them, and a line for each pinned kernel that could
/// not be had.
fn kernels(dir: &Path, arch: &Arch, opts: &[String], only: Option<&str>) -> Result<(Vec<Kernel>, Vec<String>)> {
    let mut out: Vec<Kernel> = Vec::new();
    for (series, pattern) in arch.series.iter().filter(|(series, _)| selected(only, series)) {
        let pattern = pattern.replace("ARCH", arch.deb);
        let found = run(Command::new("apt-cache").args(opts).args(["search", "--names-only", &pattern]))?;
        let mut names: Vec<&str> = found.lines().filter_map(|l| l.split_whitespace().next()).collect();
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        // Newest first; a mirror may list a package it no longer serves.
        let mut errors = Vec::new();
        let chosen =
            names.iter().take(4).find_map(|pkg| unpack(dir, opts, pkg).map_err(|e| errors.push(format!("{e:#}"))).ok().map(|b| (*pkg, b)));
        if names.is_empty() {
            bail!("the package lists name no {} kernel matching {pattern}", arch.deb);
        }
        let Some((pkg, boot)) = chosen else { bail!("no kernel matching {pattern} could be fetched: {}", errors.join("; ")) };
        out.push(kernel(arch, pkg, &boot, format!("newest {series}"))?);
    }
    let mut missing = Vec::new();
    for (pkg, differs) in arch.pinned.iter().filter(|(pkg, _)| selected(only, &arch.version_of(pkg))) {
        let why = format!("pinned: {differs}");
        let version = arch.version_of(pkg);
        if let Some(k) = out.iter_mut().find(|k| k.version == version) {
            k.why.push(why);
            continue;
        }
        match unpack(dir, opts, pkg).and_then(|boot| kernel(arch, pkg, &boot, why)) {
            Ok(k) => out.push(k),
            Err(e) => missing.push(format!("pinned kernel {version} ({differs}) could not be had, so it is not tested: {e:#}")),
        }
    }
    Ok((out, missing))
}

/// Fetches the package lists when there are none or they are older than
/// half a day, so new kernels join the matrix on a machine that keeps its
/// cache; a failed refresh with lists at hand is reported, not fatal.
fn update_lists(lists: &Path, opts: &[String]) -> Result<()> {
    const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
    // The package indexes themselves: `partial/` and `lock` are there
    // before the first update too.
    let indexes = fs::read_dir(lists).into_iter().flatten().flatten().filter(|e| e.file_name().to_string_lossy().contains("_Packages"));
    let newest = indexes.filter_map(|e| e.metadata().ok()?.modified().ok()).max();
    let age = newest.and_then(|t| t.elapsed().ok());
    if age.is_some_and(|a| a < MAX_AGE) {
        return Ok(());
    }
    match run(Command::new("apt-get").args(opts).args(["update", "-qq"])) {
        Err(e) if age.is_some() => {
            eprintln!("vm-test: refreshing the kernel package lists failed, using the cached ones: {e:#}");
            Ok(())
        }
        other => other.map(drop),
    }
}

fn kernel(arch: &Arch, pkg: &str, boot: &Path, why: String) -> Result<Kernel> {
    let file = |prefix: &str| {
        fs::read_dir(boot)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
    };
    let vmlinuz = file("vmlinuz-").with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let config = file("config-").and_then(|p| fs::read_to_string(p).ok()).with_context(|| format!("no config in {}", boot.display()))?;
    Ok(Kernel { version: arch.version_of(pkg), why: vec![why], vmlinuz, expect_tier: best_tier(&config) })
}

/// The tier a kernel's configuration promises: BPF trampolines need BTF and
/// ftrace direct calls (x86_64 from 5.5), kprobes `CONFIG_KPROBES`.
fn best_tier(config: &str) -> &'static str {
    let set = |opt: &str| config.lines().any(|l| l == format!("{opt}=y"));
    if set("CONFIG_DEBUG_INFO_BTF") && set("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") {
        "fentry"
    } else if set("CONFIG_KPROBES") {
        "kprobe"
    } else {
        "tracepoint"
    }
}

/// The start of every guest's init: file systems, modules, loopback.
const PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mkdir -p /proc /sys /dev /tmp /run /var
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
ln -s /run /var/run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
for m in /modules/*.ko; do insmod "$m" || echo "QTRACE-LOG insmod $m failed"; done
ip link set lo up
echo "QTRACE-KERNEL $(uname -r)"
"#;

/// The matrix: every suite once per tier, then `--hooks auto` once. A
/// tier the kernel's configuration does not promise is tried first: if
/// qtrace refuses it, its reason is the row.
const TEST_BODY: &str = r#"for tier in TIERS auto; do
  rm -f /tmp/report /tmp/notes
  case " UNPROMISED " in *" $tier "*)
    if ! qtrace watch --hooks $tier --json --duration 1 >/dev/null 2>/tmp/refused; then
      echo "QTRACE-REFUSED tier=$tier $(grep . /tmp/refused | tail -1)"
      continue
    fi;;
  esac
  for suite in SUITES; do
    # --hooks auto is one test, run once: the tier rows skip it.
    if [ $tier = auto ]; then pick="--exact AUTO_TEST"; else pick="--skip AUTO_TEST"; fi
    QTRACE_BIN=/usr/bin/qtrace QTRACE_TEST_HOOKS=$tier QTRACE_TEST_REPORT=/tmp/report QTRACE_TEST_NOTES=/tmp/notes \
      QTRACE_TEST_EXPECT_TIER=EXPECT_TIER $suite-tests --test-threads=1 $pick >/tmp/out 2>&1
    rc=$?
    grep -E '^test .* \.\.\. ' /tmp/out | sed "s/^/QTRACE-TEST tier=$tier /"
    [ $rc -ne 0 ] && sed "s/^/QTRACE-LOG tier=$tier /" /tmp/out
    echo "QTRACE-RESULT tier=$tier suite=$suite rc=$rc"
  done
  [ -f /tmp/report ] && sed "s/^/QTRACE-UNSUPPORTED tier=$tier /" /tmp/report
  [ -f /tmp/notes ] && sed "s/^/QTRACE-NOTE tier=$tier /" /tmp/notes
done
dmesg | tail -15 | sed 's/^/QTRACE-DMESG /'
echo QTRACE-DONE
poweroff -f
"#;

/// `cargo xtask vm-bench`: the bench's guest sections once per tier.
const BENCH_BODY: &str = r#"for tier in TIERS; do
  xtask bench-guest --hooks $tier --only SECTIONS --runs RUNS --out /tmp/bench-$tier >/tmp/out 2>&1
  rc=$?
  grep '^QTRACE-BENCH ' /tmp/out
  [ $rc -ne 0 ] && sed "s/^/QTRACE-LOG tier=$tier /" /tmp/out
  echo "QTRACE-RESULT tier=$tier rc=$rc"
done
echo QTRACE-DONE
poweroff -f
"#;

/// Installs a program in the guest's /usr/bin (ahead of busybox's applets,
/// which `--install` links into /bin) with the libraries it links, found
/// under `from` (a static binary, such as qtrace, takes none).
fn copy_with_libs(root: &Path, from: &Path, arch: &Arch, bin: &Path, name: &str) -> Result<()> {
    fs::create_dir_all(root.join("usr/bin"))?;
    fs::copy(bin, root.join("usr/bin").join(name)).with_context(|| format!("copying {}", bin.display()))?;
    for (lib, inside) in libs::closure(from, arch.multiarch, bin)? {
        let dest = root.join(inside);
        if !dest.exists() {
            fs::create_dir_all(dest.parent().context("a library's directory")?)?;
            fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
        }
    }
    Ok(())
}

/// The kernel's module directory inside the unpacked package.
fn module_dir(vmlinuz: &Path) -> Result<PathBuf> {
    let unpacked = vmlinuz.parent().and_then(Path::parent).context("kernel layout")?;
    let version = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
    for base in ["lib/modules", "usr/lib/modules"] {
        let d = unpacked.join(base).join(&version).join("kernel");
        if d.is_dir() {
            return Ok(d);
        }
    }
    bail!("no modules for {version}")
}

/// What goes into a guest besides its kernel's modules: `arch`'s tools
/// under `tools` (see [`Arch::tool_root`]), and `bins` (path, name in
/// /usr/bin).
struct Guest<'a> {
    arch: &'a Arch,
    tools: PathBuf,
    bins: Vec<(PathBuf, String)>,
}

/// Builds a newc initramfs for one kernel: busybox, the guest's programs
/// and tools with their libraries, `modules`, and `script` as init.
fn initramfs(dir: &Path, guest: &Guest, k: &Kernel, modules: &[&str], script: &str) -> Result<PathBuf> {
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("modules"))?;
    let busybox = guest.arch.tool(&guest.tools, "busybox").context("busybox-static is needed")?;
    fs::copy(&busybox, root.join("bin/busybox")).with_context(|| format!("copying {}", busybox.display()))?;
    for (bin, name) in &guest.bins {
        copy_with_libs(&root, &guest.tools, guest.arch, bin, name)?;
    }
    for tool in TOOLS {
        copy_with_libs(&root, &guest.tools, guest.arch, &guest.arch.tool(&guest.tools, tool)?, tool)?;
    }
    let mods = module_dir(&k.vmlinuz)?;
    for (i, m) in modules.iter().enumerate() {
        let dest = root.join("modules").join(format!("{i:02}-{}.ko", m.rsplit('/').next().unwrap()));
        let plain = mods.join(format!("{m}.ko"));
        let xz = mods.join(format!("{m}.ko.xz"));
        if plain.exists() {
            fs::copy(&plain, &dest)?;
        } else if xz.exists() {
            // busybox insmod takes plain ELF only.
            let data = Command::new("xz").arg("-dc").arg(&xz).output()?;
            if !data.status.success() {
                bail!("unpacking {}", xz.display());
            }
            fs::write(&dest, data.stdout)?;
        } else {
            bail!("module {m} not in {}", mods.display());
        }
    }
    let init = root.join("init");
    fs::write(&init, script)?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    // One image per guest: guests boot side by side (`QTRACE_VM_JOBS`).
    let image = dir.join(format!("initramfs-{}-{}.cpio.gz", guest.arch.deb, k.version));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}", root.display(), image.display()))
        .status()?;
    if !st.success() {
        bail!("building the initramfs failed");
    }
    Ok(image)
}

/// One guest boot: the serial console's text.
fn boot(arch: &Arch, vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let mut child = Command::new(arch.qemu)
        .args(arch.qemu_args)
        .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // A soft lockup panics (`softlockup_panic`) rather than run out the
        // boot timeout: then it is shown and the guest boots once more,
        // like any other guest panic (`boot_kernel`).
        .args(["-append", &format!("console={} quiet panic=-1 softlockup_panic=1", arch.console)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", arch.qemu))?;
    // Read as it comes: a console longer than the pipe's buffer would
    // otherwise stop the guest until the timeout.
    let mut out = child.stdout.take().context("qemu's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let start = Instant::now();
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = reader.join().unwrap_or_default();
    if timed_out {
        // What the guest said before it stalled is the clue: keep it.
        return Ok(format!("{console}\nQTRACE-BOOT-FAILED guest did not power off within {BOOT_TIMEOUT:?}"));
    }
    Ok(console)
}

/// Prints a guest's kernel oops from its first line, or the console's tail.
fn print_oops(console: &str) {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("] BUG:") || l.contains("] Oops") || l.contains("general protection") || l.contains("] RIP:"))
        .map_or(lines.len().saturating_sub(60), |i| i.saturating_sub(5));
    for l in lines[start..].iter().take(80) {
        eprintln!("{l}");
    }
}

/// One matrix cell's verdict.
fn verdict(console: &str, tier: &str, test: &str) -> String {
    let line = console.lines().find(|l| l.starts_with(&format!("QTRACE-TEST tier={tier} test {test} ... ")));
    let Some(line) = line else {
        return "FAIL (no result)".into();
    };
    if line.ends_with(" ok") {
        "pass".into()
    } else {
        "FAIL".into()
    }
}

/// Whether `QTRACE_VM_KERNELS` (`6.12,5.10`: series or versions) selects
/// this kernel; unset selects every one.
fn selected(only: Option<&str>, version: &str) -> bool {
    only.is_none_or(|o| {
        o.split(',').any(|k| version.strip_prefix(k.trim()).is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit())))
    })
}

/// Boots one kernel (once more after a guest panic) and returns its console.
fn boot_kernel(arch: &Arch, k: &Kernel, initrd: &Path) -> (String, &'static str) {
    let console = boot(arch, &k.vmlinuz, initrd).unwrap_or_else(|e| format!("QTRACE-BOOT-FAILED {e:#}"));
    if !console.contains("Kernel panic") {
        return (console, "");
    }
    // Software emulation has produced guest panics with corrupted register
    // state (seen once in __kmalloc on 6.12) and soft lockups of both vCPUs
    // (seen on 5.10, in different tiers and tests, with the cause not
    // found); show it and boot once more rather than hide it or fail on it
    // silently. A fault of qtrace's would come back on the second boot.
    eprintln!("--- {}: the guest panicked; its oops, then one more boot ---", k.version);
    print_oops(&console);
    let again = boot(arch, &k.vmlinuz, initrd).unwrap_or_else(|e| format!("QTRACE-BOOT-FAILED {e:#}"));
    (again, " (after one guest panic, shown above, and a second boot)")
}

/// The tests a guest ran, in the order of its first tier that ran them.
fn test_names(console: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    let ran = console.lines().filter_map(|l| l.strip_prefix("QTRACE-TEST tier=")).filter(|l| !l.starts_with("auto "));
    for name in ran.filter_map(|l| l.split_once(" test ")?.1.split(" ... ").next()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push("(suite)");
    }
    names
}

/// What qtrace says when a kernel cannot run a tier at all
/// (`qtrace/src/kernel/probe.rs`).
const KERNEL_REFUSALS: &[&str] = &["not supported by this kernel or architecture", "not built into this kernel"];

/// One kernel's part of the matrix: its lines, passes and failures. A tier
/// the kernel refused (one its configuration does not promise) is one
/// "unsupported" line with qtrace's reason, neither passed nor failed.
fn kernel_matrix(arch: &Arch, k: &Kernel, console: &str, matrix: &mut String) -> (usize, usize) {
    let (mut passes, mut failures) = (0, 0);
    let names = test_names(console);
    let auto = [AUTO_TEST];
    for (tier, names) in arch.tiers.iter().map(|t| (*t, &names[..])).chain([("auto", &auto[..])]) {
        if let Some(why) = console.lines().find_map(|l| l.strip_prefix(&format!("QTRACE-REFUSED tier={tier} "))) {
            // Only the kernel's own refusal is "unsupported"; any other
            // failure to start (a verifier error, a crash) is a failure.
            if KERNEL_REFUSALS.iter().any(|r| why.contains(r)) {
                let _ = writeln!(matrix, "  {tier:<11} unsupported: qtrace refuses it here: {why}");
            } else {
                failures += 1;
                let _ = writeln!(matrix, "  {tier:<11} FAIL (qtrace did not start, for a reason other than the kernel's): {why}");
            }
            continue;
        }
        for test in names {
            let v = verdict(console, tier, test);
            if v == "pass" {
                passes += 1
            } else {
                failures += 1
            }
            let _ = writeln!(matrix, "  {tier:<11} {test:<52} {v}");
        }
        for (kind, prefix) in [("unsupported", "QTRACE-UNSUPPORTED"), ("note", "QTRACE-NOTE")] {
            for l in console.lines().filter_map(|l| l.strip_prefix(&format!("{prefix} tier={tier} "))) {
                let _ = writeln!(matrix, "  {tier:<11}   {kind}: {l}");
            }
        }
    }
    if console.lines().any(|l| l.starts_with("QTRACE-RESULT") && !l.ends_with(" rc=0")) || !console.contains("QTRACE-DONE") {
        eprintln!("--- {}: failing tests' output and the kernel log ---", k.version);
        for l in console.lines().filter(|l| l.starts_with("QTRACE-LOG") || l.starts_with("QTRACE-DMESG") || l.starts_with("QTRACE-BOOT")) {
            eprintln!("{l}");
        }
        if !console.contains("QTRACE-DONE") {
            print_oops(console);
        }
    }
    (passes, failures)
}

/// What one architecture's guests run: its static qtrace and the suites'
/// test binaries (suite, executable) built for it.
pub(crate) struct GuestSet {
    pub(crate) arch: &'static Arch,
    pub(crate) qtrace: PathBuf,
    pub(crate) tests: Vec<(String, PathBuf)>,
}

/// The tiers above the one a kernel's configuration promises.
fn unpromised<'a>(arch: &'a Arch, k: &Kernel) -> Vec<&'a str> {
    arch.tiers.iter().copied().take_while(|t| *t != k.expect_tier).collect()
}

/// The apt options for `arch`, with its package lists fresh.
fn apt_for(dir: &Path, arch: &Arch) -> Result<Vec<String>> {
    let apt = if arch.is_native() { dir.join("apt") } else { dir.join(format!("apt-{}", arch.deb)) };
    let opts = apt_options(&apt, arch)?;
    update_lists(&apt.join("lists"), &opts)?;
    Ok(opts)
}

/// One guest of the matrix, ready to boot.
struct Job<'a> {
    arch: &'a Arch,
    kernel: Kernel,
    initrd: PathBuf,
}

/// One architecture's kernels, each with its initramfs; a pinned kernel
/// that could not be had is a line of the matrix.
fn arch_jobs<'a>(dir: &Path, set: &'a GuestSet, only: Option<&str>, matrix: &mut String) -> Result<Vec<Job<'a>>> {
    let arch = set.arch;
    let opts = apt_for(dir, arch)?;
    let (kernels, missing) = kernels(dir, arch, &opts, only)?;
    for line in &missing {
        eprintln!("vm-test: {line}");
        let _ = writeln!(matrix, "== {line}");
    }
    let mut bins = vec![(set.qtrace.clone(), "qtrace".to_owned())];
    bins.extend(set.tests.iter().map(|(suite, bin)| (bin.clone(), format!("{suite}-tests"))));
    let guest = Guest { arch, tools: arch.tool_root(dir, &opts)?, bins };
    let suites: Vec<&str> = set.tests.iter().map(|(s, _)| s.as_str()).collect();
    let mut jobs = Vec::new();
    for kernel in kernels {
        let body = TEST_BODY
            .replace("UNPROMISED", &unpromised(arch, &kernel).join(" "))
            .replace("TIERS", &arch.tiers.join(" "))
            .replace("SUITES", &suites.join(" "))
            .replace("EXPECT_TIER", kernel.expect_tier)
            .replace("AUTO_TEST", AUTO_TEST);
        let initrd = initramfs(dir, &guest, &kernel, MODULES, &format!("{PRELUDE}{body}"))?;
        jobs.push(Job { arch, kernel, initrd });
    }
    Ok(jobs)
}

/// What one guest printed, with the note of a second boot and how long
/// it ran.
struct Booted {
    console: String,
    note: &'static str,
    took: f64,
}

/// How many guests boot at once: `QTRACE_VM_JOBS`, 2 by default. A guest
/// under software emulation spends most of its run in the tests' own
/// waits (retransmission timers, settling, timeouts: measured at about
/// 0.5 of a host core on average for a two-vCPU guest), so two side by
/// side on two cores take about half the time of one after the other.
fn parallel_guests() -> Result<usize> {
    match std::env::var("QTRACE_VM_JOBS") {
        Err(_) => Ok(2),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("QTRACE_VM_JOBS: {v:?} is not a number of guests (1 or more)"),
        },
    }
}

/// Boots every job, `parallel` at a time, taking them in order; returns
/// their consoles in the jobs' order.
fn boot_all(jobs: &[Job], parallel: usize) -> Vec<Booted> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<Option<Booted>>> = std::sync::Mutex::new(jobs.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                eprintln!("vm-test: booting {} {}", job.arch.deb, job.kernel.version);
                let start = Instant::now();
                let (console, note) = boot_kernel(job.arch, &job.kernel, &job.initrd);
                let booted = Booted { console, note, took: start.elapsed().as_secs_f64() };
                eprintln!("vm-test: {} {} done after {:.0} s", job.arch.deb, job.kernel.version, booted.took);
                done.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(booted);
            });
        }
    });
    let done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.into_iter()
        .map(|b| b.unwrap_or(Booted { console: "QTRACE-BOOT-FAILED the guest's thread ended early".into(), note: "", took: 0.0 }))
        .collect()
}

/// `QTRACE_VM_ARCHES` (`amd64,arm64`, Debian's names) selects
/// architectures; unset selects every one. An unknown name is an error,
/// not an empty run that passes.
pub(crate) fn arch_selected(arch: &Arch) -> Result<bool> {
    let Ok(wanted) = std::env::var("QTRACE_VM_ARCHES") else { return Ok(true) };
    let names: Vec<&str> = wanted.split(',').map(str::trim).collect();
    if let Some(bad) = names.iter().find(|n| ![X86_64.deb, ARM64.deb].contains(n)) {
        bail!("QTRACE_VM_ARCHES: {bad:?} is not one of {}, {}", X86_64.deb, ARM64.deb);
    }
    Ok(names.contains(&arch.deb))
}

pub(crate) fn vm_test(sets: &[GuestSet]) -> Result<()> {
    let dir = cache_dir();
    fs::create_dir_all(&dir)?;
    let parallel = parallel_guests()?;
    let started = Instant::now();
    let (mut passes, mut failures) = (0, 0);
    let mut matrix = String::new();
    // QTRACE_VM_KERNELS=6.12,5.10 boots only those (for iterating locally).
    let only = std::env::var("QTRACE_VM_KERNELS").ok();
    let mut jobs = Vec::new();
    for set in sets {
        jobs.extend(arch_jobs(&dir, set, only.as_deref(), &mut matrix)?);
    }
    for (job, booted) in jobs.iter().zip(boot_all(&jobs, parallel)) {
        let (arch, k, took) = (job.arch, &job.kernel, booted.took);
        let _ = writeln!(
            matrix,
            "== {} {} ({}; auto should pick {}): {took:.0} s{}",
            arch.deb,
            k.version,
            k.why.join("; "),
            k.expect_tier,
            booted.note
        );
        let (p, f) = kernel_matrix(arch, k, &booted.console, &mut matrix);
        passes += p;
        failures += f;
    }
    print!("{matrix}");
    fs::write(dir.join("matrix.txt"), &matrix)?;
    println!("vm-test: {:.0} s in all, {parallel} guests at a time", started.elapsed().as_secs_f64());
    println!("vm-test: {passes} passed, {failures} failed");
    if failures > 0 {
        bail!("{failures} kernel/tier/test combinations failed");
    }
    if passes == 0 {
        bail!("no test ran: check QTRACE_VM_KERNELS and QTRACE_VM_ARCHES");
    }
    Ok(())
}

/// Modules the bench's guest sections need besides the tests': the storm
/// and the flood wire their namespace with a veth pair.
const BENCH_MODULES: &[&str] =
    &["lib/libcrc32c", "net/netfilter/nfnetlink", "net/netfilter/nf_tables", "net/ipv4/inet_diag", "net/ipv4/tcp_diag", "drivers/net/veth"];

/// One kernel's guest bench: its version and console.
pub(crate) struct GuestRun {
    pub version: String,
    pub console: String,
}

/// Boots each selected kernel (`QTRACE_VM_KERNELS`) with `qtrace` and this
/// xtask binary, and runs the bench's `sections` once per hook tier in it.
pub(crate) fn vm_bench(qtrace: &Path, sections: &str, runs: usize) -> Result<Vec<GuestRun>> {
    let dir = cache_dir();
    fs::create_dir_all(&dir)?;
    let only = std::env::var("QTRACE_VM_KERNELS").ok();
    let arch = &X86_64;
    let opts = apt_for(&dir, arch)?;
    let (kernels, missing) = kernels(&dir, arch, &opts, only.as_deref())?;
    for line in &missing {
        eprintln!("vm-bench: {line}");
    }
    let xtask = std::env::current_exe().context("the xtask binary")?;
    let bins = vec![(qtrace.to_owned(), "qtrace".to_owned()), (xtask, "xtask".to_owned())];
    let guest = Guest { arch, tools: arch.tool_root(&dir, &opts)?, bins };
    let body = BENCH_BODY.replace("TIERS", &arch.tiers.join(" ")).replace("SECTIONS", sections).replace("RUNS", &runs.to_string());
    let mut out = Vec::new();
    for k in &kernels {
        eprintln!("vm-bench: {}", k.version);
        let initrd = initramfs(&dir, &guest, k, BENCH_MODULES, &format!("{PRELUDE}{body}"))?;
        let (console, _) = boot_kernel(arch, k, &initrd);
        if !console.contains("QTRACE-DONE") || console.lines().any(|l| l.starts_with("QTRACE-RESULT") && !l.ends_with(" rc=0")) {
            eprintln!("--- {}: the guest bench's errors ---", k.version);
            console.lines().filter(|l| l.starts_with("QTRACE-LOG") || l.starts_with("QTRACE-BOOT")).for_each(|l| eprintln!("{l}"));
            if !console.contains("QTRACE-DONE") {
                print_oops(&console);
            }
        }
        out.push(GuestRun { version: k.version.clone(), console });
    }
    Ok(out)
}
