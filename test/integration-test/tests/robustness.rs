//! Robustness (root): whatever stops `qtrace watch`, nothing of it stays in
//! the kernel; a closed pipe ends it quietly; bad input and missing
//! privileges get one line and a non-zero status, never a panic.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, require_root, NetNs, Qtrace};
use serde_json::Value;

/// Ids of the kernel's BPF programs, links or maps (`bpftool OBJ show`).
fn ids(obj: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool").args(["-j", obj, "show"]).output().expect("bpftool runs");
    assert!(out.status.success(), "bpftool {obj} show: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array().into_iter().flatten().filter_map(|o| o["id"].as_u64()).collect()
}

fn snapshot() -> [BTreeSet<u64>; 3] {
    [ids("prog"), ids("link"), ids("map")]
}

/// Waits until the kernel's lists are back to `before` (programs are freed
/// after the last descriptor closes, through RCU, not synchronously), or
/// gives up after 5 s and returns what is there.
fn settles_to(before: &[BTreeSet<u64>; 3]) -> [BTreeSet<u64>; 3] {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = snapshot();
        if &now == before || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn signals_leave_no_program_link_or_map_behind() {
    require_root();
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let before = snapshot();
        let q = Qtrace::watch(&["--json"]);
        let during = snapshot();
        assert!(during[0].len() > before[0].len(), "{name}: qtrace's programs are not in the kernel's list while it runs");
        assert!(during[2].len() > before[2].len(), "{name}: qtrace's maps are not in the kernel's list while it runs");
        let done = q.stop(sig);
        if sig != libc::SIGKILL {
            assert!(done.status.success(), "{name}: {:?} {:?}", done.status, done.stderr);
        }
        let after = settles_to(&before);
        for (i, what) in ["programs", "links", "maps"].iter().enumerate() {
            // What appeared while qtrace ran and is still there.
            let left: Vec<_> = after[i].iter().filter(|id| during[i].contains(id) && !before[i].contains(id)).collect();
            assert!(left.is_empty(), "{name}: {what} left behind: {left:?}");
        }
    }
}

#[test]
fn json_into_head_exits_quietly() {
    require_root();
    let start = Instant::now();
    let out = Command::new("bash")
        .args(["-c", &format!("set -o pipefail; {} watch --json | head -1", bin())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    let first: Value = serde_json::from_slice(&out.stdout).expect("head got one NDJSON record");
    assert_eq!(first["type"], "start");
    assert!(!stderr.contains("panic") && !stderr.contains("Broken pipe") && !stderr.contains("error"), "{stderr}");
    // It noticed the closed pipe without anything to write: within a tick or two.
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

/// Runs qtrace and returns (exit code, stderr lines).
fn run(args: &[&str], prefix: &[&str]) -> (Option<i32>, Vec<String>) {
    let (prog, pre) = match prefix.split_first() {
        Some((p, rest)) => (p.to_string(), rest.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        None => (bin(), vec![]),
    };
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !prefix.is_empty() {
        cmd.arg(bin());
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().expect("qtrace runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect())
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    require_root();
    let unwritable = "/proc/qtrace-no-such-dir/out.ndjson";
    let cases: &[(&[&str], &str)] = &[
        (&["watch", "--port", "0"], "0"),
        (&["watch", "--port", "65536"], "65536"),
        (&["watch", "--port", "abc"], "abc"),
        (&["watch", "--port", "9000-8000"], "9000-8000"),
        (&["watch", "--netns", "qtrace-no-such-namespace"], "qtrace-no-such-namespace"),
        (&["watch", "--interval", "0"], "0"),
        (&["watch", "--output", unwritable], unwritable),
        (&["doctor", "--duration", "-3"], "-3"),
        (&["listeners", "--netns", "/nonexistent/ns"], "/nonexistent/ns"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, named) in cases {
        let (code, stderr) = run(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{args:?}: not one line: {stderr:?}");
        assert!(stderr[0].starts_with("qtrace: "), "{args:?}: {stderr:?}");
        assert!(stderr[0].contains(named), "{args:?}: the line does not name {named:?}: {stderr:?}");
        assert!(!stderr[0].contains("panicked"), "{args:?}: {stderr:?}");
    }
}

#[test]
fn missing_privileges_are_named() {
    require_root();
    // An unprivileged user, then one with CAP_BPF but not CAP_PERFMON.
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
    let (code, stderr) = run(&["watch"], &nobody);
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(
        stderr,
        vec!["qtrace: error: loading eBPF programs needs root, CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)"]
    );
    let bpf_only = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all,+bpf", "--ambient-caps=+bpf"];
    let (code, stderr) = run(&["watch"], &bpf_only);
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(
        stderr,
        vec!["qtrace: error: loading eBPF programs needs root, CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)"]
    );
    // The demo says what it needs before making anything.
    let (code, stderr) = run(&["demo"], &nobody);
    assert_eq!((code, stderr.len()), (Some(2), 1), "{stderr:?}");
    assert!(stderr[0].starts_with("qtrace: error: qtrace demo needs root"), "{stderr:?}");
    // What needs no privilege still works for them.
    let (code, stderr) = run(&["listeners", "--json"], &nobody);
    assert_eq!(code, Some(0), "{stderr:?}");
}

#[test]
fn a_kernel_without_btf_is_explained() {
    require_root();
    // Simulated: QTRACE_BTF replaces /sys/kernel/btf/vmlinux.
    let dir = std::env::temp_dir().join(format!("qtrace-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let garbage = dir.join("garbage.btf");
    std::fs::write(&garbage, b"not BTF at all").expect("written");
    for (file, says) in [(dir.join("missing.btf"), "No such file"), (garbage.clone(), "not BTF data")] {
        let out = Command::new(bin()).arg("watch").env("QTRACE_BTF", &file).output().expect("qtrace runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(&file.display().to_string()) && lines[0].contains(says), "{stderr}");
        assert!(lines[0].contains("qtrace doctor --no-capture"), "names what still works: {stderr}");
    }
    // And doctor, told not to capture, still reports.
    let ns = NetNs::new(&[]);
    let out = Command::new(bin())
        .args(["doctor", "--no-capture", "--duration", "0.2", "--json", "--netns", &ns.name])
        .env("QTRACE_BTF", &garbage)
        .output()
        .expect("qtrace runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kernel whose `tcp_v4/v6_syn_recv_sock` lack a parameter the fentry and
/// kprobe programs read (simulated: this kernel's BTF with `req_unhash`
/// renamed, through QTRACE_BTF): both tiers are refused in one sentence
/// that names the function and the parameter, `auto` goes on to the
/// tracepoint tier, and asking for fentry alone fails in one line.
#[test]
fn a_changed_prototype_refuses_the_tiers_that_need_it() {
    require_root();
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("this host publishes its BTF");
    let (from, to) = (b"\0req_unhash\0", b"\0req_unhasX\0");
    let at = btf.windows(from.len()).position(|w| w == from).expect("req_unhash in the string section");
    btf[at..at + to.len()].copy_from_slice(to);
    let file = std::env::temp_dir().join(format!("qtrace-proto-{}.btf", std::process::id()));
    std::fs::write(&file, &btf).expect("written");
    let says = "tcp_v4_syn_recv_sock() has no parameter named req_unhash on this kernel";

    let out = Command::new(bin()).args(["watch", "--duration", "0.5", "--json"]).env("QTRACE_BTF", &file).output().expect("qtrace runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "auto falls back to the tracepoint tier: {stderr}");
    for tier in ["fentry", "kprobe"] {
        let refusal = format!("qtrace: {tier} tier unavailable: {says} (its parameters: sk, skb, req, dst, req_unhasX, own_req");
        assert!(stderr.lines().any(|l| l.starts_with(&refusal)), "{tier}: {stderr}");
    }
    let out = Command::new(bin()).args(["watch", "--hooks", "fentry", "--json"]).env("QTRACE_BTF", &file).output().expect("qtrace runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, no verifier log: {stderr}");
    assert!(stderr.contains(says), "{stderr}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn output_file_is_reopened_on_sighup() {
    require_root();
    let dir = std::env::temp_dir().join(format!("qtrace-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (path, rotated) = (dir.join("qtrace.ndjson"), dir.join("qtrace.ndjson.1"));
    let ns = NetNs::new(&[]);
    let q = Qtrace::watch(&["--json", "--netns", &ns.name, "--interval", "0.2", "--output", path.to_str().expect("utf-8")]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&path, &rotated).expect("rotated");
    let pid = q.pid();
    // SAFETY: kill(2) on the child qtrace.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    let done = q.stop(libc::SIGINT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert!(done.stdout.is_empty(), "nothing on stdout with --output: {}", done.stdout);
    let first = std::fs::read_to_string(&rotated).expect("the rotated file");
    let second = std::fs::read_to_string(&path).expect("a new file after SIGHUP");
    assert!(first.lines().any(|l| l.contains(r#""type":"settings""#)), "{first}");
    assert!(second.lines().any(|l| l.contains(r#""type":"losses""#)), "the final records go to the new file: {second}");
    let _ = std::fs::remove_dir_all(&dir);
}
