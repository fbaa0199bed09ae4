//! `cargo xtask vm-test`: boots Debian's cloud kernels under QEMU and runs
//! the release qtrace binary in each, once per hook tier.
//!
//! The host kernel refuses fentry and has no kprobes, so the fentry and
//! kprobe tiers are loaded and attached here, on real distribution kernels.
//! Kernel packages are fetched with a private apt configuration (the
//! system's sources are untouched) and cached between runs. The guest's
//! init prints one `QTRACE-RESULT` line per tier and powers off; the host
//! parses the serial console and prints a matrix.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Kernels to boot: (label, apt package-name pattern). The newest package
/// matching each pattern is used (names change with security updates).
const KERNELS: &[(&str, &str)] = &[
    ("5.10", r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$"),
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb13-cloud-amd64-unsigned$"),
];
const TIERS: &[&str] = &["fentry", "kprobe", "tracepoint"];
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

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
/// bookworm and trixie from the system's own mirror.
fn apt_options(dir: &Path) -> Result<Vec<String>> {
    let sources = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").context("reading the system's Debian sources")?;
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .map(|s| s.trim().to_owned())
        .context("no URIs: line in debian.sources")?;
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

/// Downloads (once) and unpacks each kernel; returns (label, vmlinuz).
fn kernels(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let apt = dir.join("apt");
    let opts = apt_options(&apt)?;
    let fresh = apt.join("lists").read_dir().map(|d| d.count() > 1).unwrap_or(false);
    if !fresh {
        run(Command::new("apt-get").args(&opts).args(["update", "-qq"]))?;
    }
    let mut out = Vec::new();
    for (label, pattern) in KERNELS {
        let found = run(Command::new("apt-cache").args(&opts).args(["search", "--names-only", pattern]))?;
        let mut names: Vec<&str> = found.lines().filter_map(|l| l.split_whitespace().next()).collect();
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        // Newest first; a mirror may list a package it no longer serves.
        let mut chosen = None;
        let mut errors = Vec::new();
        for pkg in names.iter().take(4) {
            match unpack(dir, &opts, pkg) {
                Ok(boot) => {
                    chosen = Some((*pkg, boot));
                    break;
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let Some((pkg, boot)) = chosen else { bail!("no kernel matching {pattern} could be fetched: {}", errors.join("; ")) };
        let vmlinuz = fs::read_dir(&boot)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
        out.push((format!("{label} ({})", pkg.trim_start_matches("linux-image-").trim_end_matches("-cloud-amd64-unsigned")), vmlinuz));
    }
    Ok(out)
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
echo "QTRACE-KERNEL $(uname -r)"
for tier in TIERS; do
  /bin/qtrace watch --hooks $tier --duration 1 --json >/tmp/out 2>/tmp/err
  rc=$?
  ready=$(grep -c '^qtrace: watching .* with the '$tier' tier' /tmp/err)
  echo "QTRACE-RESULT tier=$tier rc=$rc ready=$ready"
  sed 's/^/QTRACE-LOG /' /tmp/err
done
echo QTRACE-DONE
poweroff -f
"#;

/// Builds a newc initramfs: busybox, qtrace and the libraries it links.
fn initramfs(dir: &Path, qtrace: &Path) -> Result<PathBuf> {
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bin"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static is needed")?;
    fs::copy(qtrace, root.join("bin/qtrace"))?;
    let ldd = run(Command::new("ldd").arg(qtrace))?;
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap())?;
        fs::copy(lib, &dest).with_context(|| format!("copying {lib}"))?;
    }
    let init = root.join("init");
    fs::write(&init, INIT.replace("TIERS", &TIERS.join(" ")))?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    let image = dir.join("initramfs.cpio.gz");
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
fn boot(vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        // Nested KVM does not work on this kind of machine: software emulation.
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("guest did not power off within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn vm_test(qtrace: &Path) -> Result<()> {
    let dir = cache_dir();
    fs::create_dir_all(&dir)?;
    let initrd = initramfs(&dir, qtrace)?;
    let mut failures = 0;
    let mut matrix = String::from("kernel                       tier        result\n");
    for (label, vmlinuz) in kernels(&dir)? {
        let console = boot(&vmlinuz, &initrd).unwrap_or_else(|e| format!("QTRACE-BOOT-FAILED {e:#}"));
        for tier in TIERS {
            let line = console.lines().find(|l| l.starts_with(&format!("QTRACE-RESULT tier={tier} ")));
            let ok = line.is_some_and(|l| l.contains(" rc=0 ") && l.ends_with("ready=1"));
            if !ok {
                failures += 1;
            }
            let _ = writeln!(matrix, "{label:<28} {tier:<11} {}", if ok { "attached".into() } else { format!("FAIL {}", line.unwrap_or("no result")) });
        }
        if console.lines().any(|l| l.starts_with("QTRACE-RESULT") && !l.contains(" rc=0 ")) || !console.contains("QTRACE-DONE") {
            eprintln!("--- console of {label} ---");
            for l in console.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    print!("{matrix}");
    fs::write(dir.join("matrix.txt"), &matrix)?;
    if failures > 0 {
        bail!("{failures} kernel/tier combinations failed");
    }
    println!("vm-test: {} passed, 0 failed", KERNELS.len() * TIERS.len());
    Ok(())
}
