//! `qtrace doctor`'s report: capabilities, each namespace's settings and
//! counter growth, then the findings; for people or as NDJSON.

use std::fmt::Write as _;

use crate::model::diagnose::{evidence_line, Finding, NsSample, Severity};
use crate::model::record::{Record, Start, WindowRecord};
use crate::output::style::Style;

/// The lines `doctor --json` prints after its window: each namespace's
/// settings with the counters' growth over `seconds`, then the findings.
/// (Its `start` record went out when sampling began.)
pub(crate) fn ndjson(namespaces: &[NsSample], findings: &[Finding], seconds: f64) -> String {
    let windows =
        namespaces.iter().map(|s| Record::Window(WindowRecord { netns: s.netns, settings: s.settings, counters_delta: s.delta, seconds }));
    windows.chain(findings.iter().map(Record::Finding)).map(|r| r.line()).collect()
}

/// The report for people: what qtrace could see, each namespace's settings
/// and counter growth, then the findings.
pub(crate) fn report(start: &Start, seconds: f64, namespaces: &[NsSample], findings: &[Finding], style: Style) -> String {
    let mut out = String::new();
    capabilities(&mut out, start, seconds, style);
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
fn capabilities(out: &mut String, start: &Start, seconds: f64, style: Style) {
    let capture = match (&start.tier, &start.capture_error) {
        (Some(t), _) => format!("eBPF capture with the {t} tier"),
        (None, Some(e)) => format!("no eBPF capture ({e})"),
        (None, None) => "no eBPF capture".into(),
    };
    let _ = writeln!(
        out,
        "{} Linux {}, BTF {}, {:.1} s sampled, {capture}",
        style.bold("qtrace doctor:"),
        start.kernel,
        if start.btf { "yes" } else { "no" },
        seconds
    );
    let refused = start.refused.iter().map(ToString::to_string);
    for l in refused.chain(start.limits.iter().map(|l| l.text.clone())) {
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
    use crate::kernel::limits::Refusal;
    use crate::kernel::probe::Tier;
    use crate::model::backlog::Clamp;
    use crate::model::counts::Counts;
    use crate::model::diagnose::sample::{input, listener, ns, settings};
    use crate::model::diagnose::{diagnose, Input, ListenerSample};
    use crate::model::event::Kind;

    fn caps(tier: Option<Tier>, capture_error: Option<&str>, refused: &[(Tier, &str)]) -> Start {
        Start {
            tier,
            capture_error: capture_error.map(Into::into),
            refused: refused.iter().map(|&(tier, r)| Refusal { tier, reason: r.into() }).collect(),
            namespaces: 1,
            ..Start::new("6.8.0-test".into(), true, true, 0)
        }
    }

    fn with_kinds(mut l: ListenerSample, counts: &[(Kind, u64)]) -> ListenerSample {
        let mut kinds = Counts::default();
        for &(kind, n) in counts {
            kinds[kind] = n;
        }
        l.kinds = Some(kinds);
        l
    }

    /// In namespace 7 (syncookies off, somaxconn 64): 8080's accept queue
    /// overflows after somaxconn provably clamped its backlog of 4096, and
    /// 9090's SYN queue overflows.
    fn overflowing() -> (Start, Input) {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 52, req_qfull_drop: 12, syn_retrans: 21, ..Default::default() };
        let mut n = ns(settings(0, 0), delta);
        n.settings.somaxconn = Some(64);
        let accept =
            with_kinds(listener(8080, (64, 64), 40, Clamp::Proven, Some(4096)), &[(Kind::AcceptQueueFull, 25), (Kind::AckOverflow, 15)]);
        let syn = with_kinds(listener(9090, (0, 128), 12, Clamp::No, None), &[(Kind::SynQueueFull, 12)]);
        let caps = caps(Some(Tier::Kprobe), None, &[(Tier::Fentry, "no BPF trampoline on this kernel")]);
        (caps, input(n, vec![accept, syn]))
    }

    /// qtrace's own namespace, quiet, with a listener whose bound only
    /// likely was clamped; no capture.
    fn quiet() -> (Start, Input) {
        let mut n = ns(settings(1, 0), NetCounters::default());
        n.enter = String::new();
        n.settings.somaxconn = Some(64);
        (caps(None, Some("--no-capture"), &[]), input(n, vec![listener(8080, (0, 64), 0, Clamp::Likely, None)]))
    }

    fn people((start, input): (Start, Input)) -> String {
        report(&start, input.seconds, &input.namespaces, &diagnose(&input), Style { on: false })
    }

    /// The lines `qtrace doctor --json` prints: the start record, and
    /// after the window the rest.
    fn ndjson((start, input): (Start, Input)) -> String {
        Record::Start(&start).line() + &super::ndjson(&input.namespaces, &diagnose(&input), input.seconds)
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
