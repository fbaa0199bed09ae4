//! `qtrace doctor`'s report: capabilities, each namespace's settings and
//! counter growth, then the findings; for people or as NDJSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::diagnose::{evidence_line, Finding, NsSample, Severity};
use crate::output::style::Style;

/// What this kernel and this run of qtrace can see (`"type": "capabilities"`).
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub kernel: String,
    /// `/sys/kernel/btf/vmlinux` exists (qtrace needs it for any capture).
    pub btf: bool,
    pub root: bool,
    /// The hook tier the capture ran with; null without a capture.
    pub tier: Option<String>,
    /// Why there was no capture.
    pub capture_error: Option<String>,
    /// What the tier could not see, and why better tiers were refused.
    pub limits: Vec<String>,
    pub seconds: f64,
}

impl Capabilities {
    pub fn probe() -> Self {
        // SAFETY: uname(2) fills a zeroed struct we own; geteuid has no preconditions.
        let (kernel, root) = unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            let kernel = if libc::uname(&mut u) == 0 {
                std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
            } else {
                "unknown".into()
            };
            (kernel, libc::geteuid() == 0)
        };
        Self {
            ty: "capabilities",
            kernel,
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            root,
            tier: None,
            capture_error: None,
            limits: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// `"type": "settings"` with the counters' growth over the window.
pub fn settings_json(s: &NsSample) -> Value {
    let mut v = json!({ "type": "settings", "netns": s.netns });
    if let (Value::Object(m), Value::Object(settings)) = (&mut v, json!(s.settings)) {
        m.extend(settings);
        m.insert("counters_delta".into(), json!(s.delta));
    }
    v
}

/// `"type": "finding"`.
pub fn finding_json(f: &Finding) -> Value {
    let mut v = json!({ "type": "finding" });
    if let (Value::Object(m), Value::Object(rest)) = (&mut v, json!(f)) {
        m.extend(rest);
    }
    v
}

/// The report for people: what qtrace could see, each namespace's settings
/// and counter growth, then the findings.
pub fn report(caps: &Capabilities, namespaces: &[NsSample], findings: &[Finding], style: Style) -> String {
    let mut out = String::new();
    capabilities(&mut out, caps, style);
    let _ = writeln!(out, "\n{}", style.bold("Settings and counters"));
    for s in namespaces {
        settings(&mut out, s);
    }
    let _ = writeln!(out, "\n{}", style.bold("Findings"));
    for f in findings {
        finding(&mut out, f, style);
    }
    out
}

/// The first line (kernel, BTF, window, capture) and the capture's limits.
fn capabilities(out: &mut String, caps: &Capabilities, style: Style) {
    let capture = match (&caps.tier, &caps.capture_error) {
        (Some(t), _) => format!("eBPF capture with the {t} tier"),
        (None, Some(e)) => format!("no eBPF capture ({e})"),
        (None, None) => "no eBPF capture".into(),
    };
    let _ = writeln!(
        out,
        "{} Linux {}, BTF {}, {:.1} s sampled, {capture}",
        style.bold("qtrace doctor:"),
        caps.kernel,
        if caps.btf { "yes" } else { "no" },
        caps.seconds
    );
    for l in &caps.limits {
        let _ = writeln!(out, "  {}", style.dim(&format!("note: {l}")));
    }
}

/// A namespace's settings, and under them its counters' growth.
fn settings(out: &mut String, s: &NsSample) {
    let d = &s.delta;
    let _ = writeln!(out, "  netns {}: {}", s.netns, s.settings.line());
    let _ = writeln!(
        out,
        "  {:>w$}  +{} ListenOverflows, +{} ListenDrops, +{} TCPReqQFullDrop, +{} TCPReqQFullDoCookies, +{} TCPSynRetrans, +{} OutRsts",
        "",
        d.listen_overflows,
        d.listen_drops,
        d.req_qfull_drop,
        d.req_qfull_do_cookies,
        d.syn_retrans,
        d.out_rsts,
        w = format!("netns {}:", s.netns).len() - 2
    );
}

/// A finding: severity and summary, evidence, then the remedies.
fn finding(out: &mut String, f: &Finding, style: Style) {
    let label = match f.severity {
        Severity::Critical => style.red(f.severity.label()),
        Severity::Warning => style.yellow(f.severity.label()),
        Severity::Info => f.severity.label().to_owned(),
    };
    let _ = writeln!(out, "{label} {}", f.summary);
    let ev = evidence_line(&f.evidence);
    if !ev.is_empty() {
        let _ = writeln!(out, "  evidence: {ev}");
    }
    let label = if f.severity == Severity::Info { "next:" } else { "fix: " };
    for (i, r) in f.remedy.iter().enumerate() {
        let _ = writeln!(out, "  {} {r}", if i == 0 { label } else { "     " });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ns_state::NetCounters;
    use crate::model::backlog::Clamp;
    use crate::model::diagnose::sample::{input, listener, ns, settings};
    use crate::model::diagnose::{diagnose, Input, ListenerSample};
    use crate::model::event::Kind;

    fn caps(tier: Option<&str>, capture_error: Option<&str>, limits: &[&str]) -> Capabilities {
        Capabilities {
            ty: "capabilities",
            kernel: "6.8.0-test".into(),
            btf: true,
            root: true,
            tier: tier.map(Into::into),
            capture_error: capture_error.map(Into::into),
            limits: limits.iter().map(|&l| l.into()).collect(),
            seconds: 5.0,
        }
    }

    fn with_kinds(mut l: ListenerSample, counts: &[(Kind, u64)]) -> ListenerSample {
        let mut kinds = [0; Kind::ALL.len()];
        for &(kind, n) in counts {
            kinds[kind.index()] = n;
        }
        l.kinds = Some(kinds);
        l
    }

    /// In namespace 7 (syncookies off, somaxconn 64): 8080's accept queue
    /// overflows after somaxconn provably clamped its backlog of 4096, and
    /// 9090's SYN queue overflows.
    fn overflowing() -> (Capabilities, Input) {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 52, req_qfull_drop: 12, syn_retrans: 21, ..Default::default() };
        let mut n = ns(settings(0, 0), delta);
        n.settings.somaxconn = Some(64);
        let accept =
            with_kinds(listener(8080, (64, 64), 40, Clamp::Proven, Some(4096)), &[(Kind::AcceptQueueFull, 25), (Kind::AckOverflow, 15)]);
        let syn = with_kinds(listener(9090, (0, 128), 12, Clamp::No, None), &[(Kind::SynQueueFull, 12)]);
        let caps = caps(Some("kprobe"), None, &["fentry tier unavailable: no BPF trampoline on this kernel"]);
        (caps, input(n, vec![accept, syn]))
    }

    /// qtrace's own namespace, quiet, with a listener whose bound only
    /// likely was clamped; no capture.
    fn quiet() -> (Capabilities, Input) {
        let mut n = ns(settings(1, 0), NetCounters::default());
        n.enter = String::new();
        n.settings.somaxconn = Some(64);
        (caps(None, Some("--no-capture"), &[]), input(n, vec![listener(8080, (0, 64), 0, Clamp::Likely, None)]))
    }

    fn people((caps, input): (Capabilities, Input)) -> String {
        report(&caps, &input.namespaces, &diagnose(&input), Style { on: false })
    }

    /// The lines `qtrace doctor --json` prints.
    fn ndjson((caps, input): (Capabilities, Input)) -> String {
        let caps = serde_json::to_value(&caps).unwrap();
        let settings = input.namespaces.iter().map(settings_json);
        let findings = diagnose(&input);
        let lines: Vec<String> =
            std::iter::once(caps).chain(settings).chain(findings.iter().map(finding_json)).map(|v| v.to_string()).collect();
        lines.join("\n")
    }

    #[test]
    fn overflows() {
        insta::assert_snapshot!("report_of_overflows", people(overflowing()));
        insta::assert_snapshot!("ndjson_of_overflows", ndjson(overflowing()));
    }

    #[test]
    fn a_quiet_namespace() {
        insta::assert_snapshot!("report_of_a_quiet_namespace", people(quiet()));
        insta::assert_snapshot!("ndjson_of_a_quiet_namespace", ndjson(quiet()));
    }
}
