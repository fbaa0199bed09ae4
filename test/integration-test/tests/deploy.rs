//! The deployment files in deploy/: the systemd unit passes
//! `systemd-analyze verify`, the DaemonSet passes Kubernetes' schema
//! (`kubernetes-validate --strict`), the Grafana dashboard and the alert
//! rules (`promtool check rules`) ask only for metrics qtrace serves, the
//! scrape example passes `promtool check config` and the web config example
//! qtrace's parser, and the capability set both name is exactly
//! enough: with it qtrace sees everything, without any one of them it says
//! what is missing (root, host only).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{addr, bin, connect_nonblocking, listener, port, require_root, settle, NetNs};
use serde_json::Value;
use socket2::Socket;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The capabilities the unit grants, without the `CAP_` prefix, lower case.
fn unit_capabilities() -> BTreeSet<String> {
    let unit = read("qtrace.service");
    let list = |key: &str| -> BTreeSet<String> {
        let line = unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in the unit"));
        line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()).collect()
    };
    let bounding = list("CapabilityBoundingSet=");
    assert_eq!(bounding, list("AmbientCapabilities="), "the unit grants what it bounds");
    bounding
}

/// The capabilities the DaemonSet adds, lower case.
fn daemonset_capabilities() -> BTreeSet<String> {
    common::daemonset_capabilities(&read("kubernetes/daemonset.yaml")).iter().map(|c| c.to_ascii_lowercase()).collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("qtrace-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // verify checks that ExecStart's binary exists: point it at this build.
    let unit = read("qtrace.service").replace("/usr/local/bin/qtrace", &bin());
    std::fs::write(dir.join("qtrace.service"), unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(dir.join("qtrace.service")).output().expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify: {}", text(&out));
    // And it catches a broken unit, so the pass above means something.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("qtrace.service"), "[Service]\nExecStart=relative/path\n").unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(dir.join("qtrace.service")).output().expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success() || !out.stderr.is_empty(), "a relative ExecStart should be reported");
}

fn validate(path: &std::path::Path) -> Output {
    // As a module: no dependence on where pip put its script.
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(path)
        .output()
        .expect("kubernetes-validate runs (cargo xtask test installs it)")
}

#[test]
fn the_daemonset_passes_the_kubernetes_schema() {
    let path = deploy("kubernetes/daemonset.yaml");
    let out = validate(&path);
    assert!(out.status.success() && text(&out).contains("passed"), "{}", text(&out));
    // A misspelt field fails the same check.
    let broken = std::env::temp_dir().join(format!("qtrace-daemonset-{}.yaml", std::process::id()));
    std::fs::write(&broken, read("kubernetes/daemonset.yaml").replace("hostNetwork:", "hostNetwrok:")).unwrap();
    let out = validate(&broken);
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "strict validation should reject hostNetwrok: {}", text(&out));

    // Same capabilities as the unit; the scrape annotation and the
    // container port agree with --metrics-addr.
    let yaml = read("kubernetes/daemonset.yaml");
    assert!(yaml.contains("- ALL"), "drops every other capability");
    assert!(daemonset_capabilities().contains("sys_admin"), "enters the pods' namespaces");
    assert!(yaml.contains("prometheus.io/port: \"9810\"") && yaml.contains("containerPort: 9810") && yaml.contains(":9810"));
    assert!(yaml.contains("hostPID: true") && yaml.contains("hostNetwork: true"));
    // The node's port serves HTTPS with basic auth, from the Secret.
    assert!(yaml.contains("--web-config-file=/etc/qtrace/web-config.yml") && yaml.contains("mountPath: /etc/qtrace"));
    assert!(yaml.contains("secretName: qtrace-web-config") && yaml.contains("prometheus.io/scheme: https"));
}

/// The DaemonSet's web-config.yml: qtrace refuses it until its placeholder
/// is a bcrypt hash, then reads TLS from the files beside it.
#[test]
fn the_web_config_example_is_refused_until_its_hash_is_set() {
    use qtrace::metrics::web_config::{Pem, WebConfig};
    let path = deploy("kubernetes/web-config.yml");
    let e = WebConfig::load(&path).expect_err("the placeholder is not a hash").to_string();
    assert!(e.starts_with("basic_auth_users: prometheus: not a bcrypt hash"), "{e}");
    let hash = bcrypt::hash("password", 4).expect("bcrypt hash");
    let text = read("kubernetes/web-config.yml").replace("REPLACE-WITH-A-BCRYPT-HASH", &hash);
    let config = WebConfig::parse(&text, std::path::Path::new("/etc/qtrace")).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.tls.expect("TLS");
    assert_eq!((tls.cert, tls.key), (Pem::File("/etc/qtrace/tls.crt".into()), Pem::File("/etc/qtrace/tls.key".into())));
    assert_eq!(config.users.get("prometheus"), Some(&hash));
}

/// The scrape example passes `promtool check config`, which catches a
/// broken one.
#[test]
fn the_scrape_example_passes_promtool() {
    let check = |path: &std::path::Path| Command::new("promtool").args(["check", "config"]).arg(path).output().expect("promtool runs");
    let out = check(&deploy("prometheus/scrape.yml"));
    assert!(out.status.success(), "promtool check config: {}", text(&out));
    let scrape = read("prometheus/scrape.yml");
    assert!(scrape.contains("scheme: https") && scrape.contains("basic_auth:") && scrape.contains("ca_file:"));
    let broken = std::env::temp_dir().join(format!("qtrace-scrape-{}.yml", std::process::id()));
    std::fs::write(&broken, scrape.replace("password_file:", "password_fiel:")).unwrap();
    let out = check(&broken);
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "a misspelt key should fail: {}", text(&out));
}

/// Metric names a PromQL expression uses (identifiers followed by `{`, `[`
/// or `)`, that start with qtrace_ or process_).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("qtrace_") || word.starts_with("process_") {
                out.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_dashboard_asks_only_for_metrics_qtrace_serves() {
    let dash: Value = serde_json::from_str(&read("grafana/qtrace.json")).expect("the dashboard is JSON");
    // What qtrace serves, from its own encoder with every kind present.
    let served = qtrace_metric_names();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            exprs.push(q.to_owned());
        }
    }
    assert!(exprs.len() >= 6, "panels with queries: {exprs:?}");
    for e in &exprs {
        for name in metric_names(e) {
            assert!(served.contains(&name), "{e}: qtrace serves no {name} (it serves {served:?})");
        }
    }
    assert!(exprs.iter().any(|e| e.contains("rate(qtrace_drops_total")), "a per-port drop-rate panel");
}

#[test]
fn the_alert_rules_pass_promtool_and_use_served_metrics() {
    let out = Command::new("promtool").args(["check", "rules"]).arg(deploy("prometheus/alerts.yml")).output().expect("promtool runs");
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
    let served = qtrace_metric_names();
    let rules = read("prometheus/alerts.yml");
    let exprs: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();
    assert!(exprs.len() >= 3, "{exprs:?}");
    for e in exprs {
        for name in metric_names(e) {
            assert!(served.contains(&name), "{e}: qtrace serves no {name}");
        }
    }
}

fn qtrace_metric_names() -> BTreeSet<String> {
    use qtrace::metrics::{openmetrics, registry, PortRow, Snapshot};
    let every_kind = qtrace::model::event::Kind::ALL.iter().fold(Default::default(), |mut c: qtrace::model::counts::Counts, k| {
        c[*k] = 1;
        c
    });
    // Every outcome, and a recovered connection's delay.
    let mut outcomes = qtrace::model::outcome::Outcomes { counts: [1; 4], ..Default::default() };
    outcomes.delay.record(1_000_000_000);
    let row = PortRow {
        netns: 1,
        port: 80,
        kinds: every_kind,
        suppressed: every_kind,
        drops: 1,
        listener_drops: 1,
        accept_queue: Some((1, 2)),
        owners: vec![std::sync::Arc::new(qtrace::host::identity::Identity { pid: Some(1), ..Default::default() })],
        outcomes,
    };
    // One accept, so the accept-wait histogram is served too...
    let mut wait = qtrace::model::accept_wait::AcceptWait::default();
    wait.set(0, 1);
    let accept_waits = std::collections::BTreeMap::from([((1, 80), wait)]);
    // And one listener socket, so the per-listener series are too.
    let share = qtrace::metrics::ListenerShare { inode: 1, pid: Some(1), arrivals: 1, accepts: 1, accept_queue: 0 };
    let flows =
        std::collections::BTreeMap::from([((1, 80), qtrace::metrics::PortFlow { arrivals: 1, accepts: 1, listeners: vec![share] })]);
    let snap = Snapshot { tier: "tracepoint".into(), ports: vec![row], polled: true, accept_waits, flows, ..Default::default() };
    let text = openmetrics(&registry(std::sync::Arc::new(std::sync::Mutex::new(snap))));
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(str::to_owned).collect()
}

/// Runs qtrace as root's uid with only `caps` (what the unit and the
/// DaemonSet do), inside `inside` if given.
fn with_caps(caps: &BTreeSet<String>, inside: Option<&NetNs>, args: &[&str]) -> Output {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut cmd = match inside {
        // nsenter, not `ip netns exec`: only the network namespace changes
        // (ip remounts /sys, which hides tracefs).
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", ns.name)).arg("setpriv");
            c
        }
        None => Command::new("setpriv"),
    };
    cmd.args(["--inh-caps=-all", &format!("--bounding-set=-all{set}"), "--"]).arg(bin()).args(args).stdin(Stdio::null());
    cmd.output().expect("setpriv runs")
}

/// A listener held only by a process of another user (nobody): the
/// test's own socket, handed to `sleep` as its descriptor 3.
fn foreign_listener(ns: &NetNs, p: u16) -> std::process::Child {
    let srv: Socket = ns.run(|| listener(addr("127.0.0.1", p), 2));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&srv);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "sleep", "60"]);
    // SAFETY: dup2 is async-signal-safe; fd 3 of the child becomes the
    // listener (dup2 clears close-on-exec on the copy).
    unsafe {
        cmd.pre_exec(move || if libc::dup2(fd, 3) == 3 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
    }
    let child = cmd.spawn().expect("setpriv sleep starts");
    drop(srv);
    child
}

/// A deployment's capability set and where it runs qtrace: the unit in the
/// namespace it watches (`--netns /proc/self/ns/net`, no setns), the
/// DaemonSet outside every namespace it watches.
fn least_privilege(what: &str, caps: &BTreeSet<String>, inside: bool) {
    require_root();
    let ns = NetNs::new(&[]);
    let p = port();
    let mut holder = foreign_listener(&ns, p);
    let ps = p.to_string();
    let (place, scope): (Option<&NetNs>, Vec<&str>) =
        if inside { (Some(&ns), vec!["--netns", "/proc/self/ns/net"]) } else { (None, vec![]) };
    let args = |extra: &[&'static str]| -> Vec<String> {
        extra.iter().map(|s| s.to_string()).chain(scope.iter().map(|s| s.to_string())).chain(["--port".into(), ps.clone()]).collect()
    };
    let run = |caps: &BTreeSet<String>, extra: &[&'static str]| {
        let a = args(extra);
        with_caps(caps, place, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // All of them: the owner is named, nothing is reported missing.
    let out = run(caps, &["listeners", "--json"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{what}: {}", text(&out));
    let row: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: one JSON row: {e}: {}", text(&out)));
    assert_eq!(row["processes"][0]["pid"], holder.id(), "{what}: the owner of another user's listener: {row}");
    // The same capabilities read who it is, with nothing left unknown.
    assert_eq!(row["owner"]["pid"], holder.id(), "{what}: {row}");
    assert_eq!(row["owner"]["uid"], 65534, "{what}: {row}");
    assert!(row["owner"].get("unknown").is_none(), "{what}: {row}");

    // watch while the listener overflows: drops equal the namespace's
    // ListenDrops delta, and no limit is reported but the tier's own.
    let before = ns.counters();
    let watch = std::thread::scope(|s| {
        let w = s.spawn(|| run(caps, &["watch", "--json", "--duration", "5"]));
        std::thread::sleep(Duration::from_millis(1500));
        let clients: Vec<Socket> = ns.run(|| (0..20).map(|_| connect_nonblocking(addr("127.0.0.1", p))).collect());
        std::thread::sleep(Duration::from_millis(1500));
        drop(clients);
        w.join().unwrap()
    });
    let kernel = settle(Duration::from_millis(500), || ns.counters().get("ListenDrops")) - before.get("ListenDrops");
    let stderr = String::from_utf8_lossy(&watch.stderr).into_owned();
    assert!(watch.status.success(), "{what}: {stderr}");
    for needs in ["CAP_", "cannot", "hidden", "not recorded"] {
        assert!(!stderr.contains(needs), "{what}: with its capabilities nothing is missing, yet: {stderr}");
    }
    let records: Vec<Value> =
        String::from_utf8_lossy(&watch.stdout).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let summary = records
        .iter()
        .find(|r| r["type"] == "summary" && r["local_port"] == p)
        .unwrap_or_else(|| panic!("{what}: no summary for the port: {stderr}"));
    assert!(kernel >= 20, "the listener overflowed (ListenDrops +{kernel})");
    assert_eq!(summary["drops"], kernel, "{what}: drops vs ListenDrops delta");
    // The start record says the same: no limit but the tier's own (no
    // record of listen() calls or of closing listeners missing, no hidden
    // kernel addresses), every namespace entered. And the tier it attached.
    let start = records.iter().find(|r| r["type"] == "start").unwrap_or_else(|| panic!("{what}: no start record: {stderr}"));
    for l in start["limits"].as_array().unwrap_or_else(|| panic!("{what}: limits in {start}")) {
        let needs_more = ["listen_calls_missing", "closed_listeners_missing"].iter().any(|id| l["id"] == *id)
            || l["reason"].as_str().is_some_and(|r| r.contains("hidden"));
        assert!(!needs_more, "{what}: with its capabilities nothing is missing, yet: {l}");
    }
    let unreachable = &start["unreachable_namespaces"];
    assert!(unreachable.as_array().is_none_or(Vec::is_empty), "{what}: every namespace entered, yet: {unreachable}");
    let tier = start["tier"].as_str().unwrap_or_default().to_owned();

    // Without each one, qtrace names what is missing.
    for cap in caps {
        let less: BTreeSet<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        // CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON too: without
        // it, loading fails and the line names both ways.
        let (extra, fails, named): (&[&'static str], bool, &[&str]) = match cap.as_str() {
            "bpf" => (&["watch", "--duration", "1"], true, &["CAP_BPF"]),
            "perfmon" => (&["watch", "--duration", "1"], true, &["CAP_PERFMON"]),
            "sys_admin" if less.contains("bpf") => (&["watch", "--duration", "1"], false, &["CAP_SYS_ADMIN"]),
            "sys_admin" => (&["watch", "--duration", "1"], true, &["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"]),
            "syslog" => (&["watch", "--json", "--duration", "1"], false, &["CAP_SYSLOG"]),
            "sys_ptrace" => (&["listeners"], false, &["CAP_SYS_PTRACE"]),
            "dac_read_search" => (&["listeners"], false, &["CAP_DAC_READ_SEARCH"]),
            other => panic!("{what} grants {other}: say here what it is for"),
        };
        if cap == "syslog" && tier != "tracepoint" {
            // Kernel addresses only tell functions apart on the tracepoint tier.
            common::unsupported(
                "least_privilege",
                "CAP_SYSLOG",
                &format!("only the tracepoint tier reads kernel addresses; this kernel runs {tier}"),
            );
            continue;
        }
        let out = run(&less, extra);
        let all = text(&out);
        assert_eq!(!out.status.success(), fails, "{what} without CAP_{cap}: {all}");
        for n in named {
            assert!(all.contains(n), "{what} without CAP_{cap}, qtrace should name {n}: {all}");
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    least_privilege("qtrace.service", &unit_capabilities(), true);
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_each_is_needed() {
    least_privilege("daemonset.yaml", &daemonset_capabilities(), false);
}
