//! `qtrace doctor`'s reasoning, as a pure function: from what was sampled
//! (each namespace's settings and counter deltas, each listener's queues
//! and drop-counter delta, and per-port kinds when the eBPF capture ran)
//! to findings in plain words, each with its evidence and a remedy.
//!
//! Attribution: a per-port kind seen by a hook is certain. Without one
//! (no capture, or the tracepoint tier's counted SYN-stage drops), a
//! listener whose drop counter moved is tied to the namespace counters
//! that moved in the same window, and the evidence says they are
//! namespace-wide.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::host::ns_state::{NetCounters, Settings};
use crate::host::procs::Owner;
use crate::model::backlog::Clamp;
use crate::model::event::Kind;
use crate::model::inventory::ListenerRow;

/// One namespace's sample.
#[derive(Debug, Clone)]
pub struct NsSample {
    pub netns: u32,
    pub settings: Settings,
    /// Counter growth over the window.
    pub delta: NetCounters,
    /// Prefix that runs a command in the namespace (`ip netns exec NAME `),
    /// empty for qtrace's own.
    pub enter: String,
}

/// One listener's sample.
#[derive(Debug, Clone)]
pub struct ListenerSample {
    /// State at the end of the window.
    pub row: ListenerRow,
    /// Growth of its drop counter over the window.
    pub drops_delta: u64,
    /// Longest accept queue seen while sampling.
    pub peak_accept_queue: u32,
    /// Per-kind counts from the capture, indexed by [`Kind::index`]; `None`
    /// without a capture.
    pub kinds: Option<[u64; Kind::ALL.len()]>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub seconds: f64,
    pub namespaces: Vec<NsSample>,
    pub listeners: Vec<ListenerSample>,
    /// Whether every listener was sampled (no `--port` filter): then
    /// namespace overflows that no listener explains are reported too.
    pub all_ports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// One conclusion. `id`s are stable (docs/events.md).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub netns: u32,
    pub local_addr: Option<String>,
    pub local_port: Option<u16>,
    pub processes: Vec<Owner>,
    pub summary: String,
    pub evidence: Map<String, Value>,
    pub remedy: Vec<String>,
}

/// A backlog worth suggesting: a power of two comfortably above `seen`.
fn suggest(seen: u32) -> u32 {
    seen.saturating_mul(4).clamp(1024, 65_535).next_power_of_two().min(65_535)
}

fn set_sysctl(ns: &NsSample, name: &str, value: u32) -> [String; 2] {
    let persist = if ns.enter.is_empty() {
        format!("keep it across reboots: echo '{name} = {value}' > /etc/sysctl.d/90-qtrace.conf")
    } else {
        format!("keep it: {name} is per network namespace, so set it where the namespace is made (Kubernetes: spec.securityContext.sysctls; Docker: --sysctl {name}={value})")
    };
    [format!("{}sysctl -w {name}={value}", ns.enter), persist]
}

fn describe(l: &ListenerSample) -> String {
    let r = &l.row.listener;
    let addr = if r.addr.is_ipv6() { format!("[{}]:{}", r.addr, r.port) } else { format!("{}:{}", r.addr, r.port) };
    match l.row.owners.first() {
        Some(o) => format!("{addr} ({})", o.short()),
        None => addr,
    }
}

fn kind_evidence(ev: &mut Map<String, Value>, kinds: &Option<[u64; Kind::ALL.len()]>) {
    if let Some(k) = kinds {
        for kind in Kind::ALL {
            if k[kind.index()] > 0 {
                ev.insert(kind.name().into(), k[kind.index()].into());
            }
        }
    }
}

struct Ctx<'a> {
    input: &'a Input,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    /// Adds a finding about namespace `at.0`, and listener `at.1` if any.
    fn push(
        &mut self,
        id: &'static str,
        severity: Severity,
        at: (&NsSample, Option<&ListenerSample>),
        summary: String,
        evidence: Map<String, Value>,
        remedy: Vec<String>,
    ) {
        let (ns, l) = at;
        self.out.push(Finding {
            id,
            severity,
            netns: ns.netns,
            local_addr: l.map(|l| l.row.listener.addr.to_string()),
            local_port: l.map(|l| l.row.listener.port),
            processes: l.map(|l| l.row.owners.clone()).unwrap_or_default(),
            summary,
            evidence,
            remedy,
        });
    }

    /// The window's length for evidence, to a tenth of a second.
    fn seconds(&self) -> Value {
        json!((self.input.seconds * 10.0).round() / 10.0)
    }

    fn secs(&self) -> String {
        format!("{:.1} s", self.input.seconds)
    }
}

/// Per-listener verdicts that the namespace findings build on.
#[derive(Default)]
struct Seen {
    accept_overflow: bool,
    syn_overflow: bool,
}

/// Everything doctor concludes, most severe first.
pub fn diagnose(input: &Input) -> Vec<Finding> {
    let mut cx = Ctx { input, out: Vec::new() };
    for ns in &input.namespaces {
        let listeners: Vec<&ListenerSample> = input.listeners.iter().filter(|l| l.row.netns == ns.netns).collect();
        let mut seen = Seen::default();
        for l in &listeners {
            listener_findings(&mut cx, ns, l, listeners.len(), &mut seen);
        }
        namespace_findings(&mut cx, ns, &listeners, &seen);
    }
    if !cx.out.iter().any(|f| f.severity != Severity::Info || f.id == "abort_on_overflow") {
        let n = input.listeners.len();
        let mut ev = Map::new();
        ev.insert("listeners".into(), n.into());
        ev.insert("namespaces".into(), input.namespaces.len().into());
        ev.insert("seconds".into(), cx.seconds());
        let netns = input.namespaces.first().map_or(0, |n| n.netns);
        cx.out.push(Finding {
            id: "no_overflow",
            severity: Severity::Info,
            netns,
            local_addr: None,
            local_port: None,
            processes: Vec::new(),
            summary: format!(
                "no listen-queue overflow in {} across {n} listener{} in {} namespace{}",
                cx.secs(),
                if n == 1 { "" } else { "s" },
                input.namespaces.len(),
                if input.namespaces.len() == 1 { "" } else { "s" }
            ),
            evidence: ev,
            remedy: vec!["if clients still fail, run `qtrace watch` during the next incident: overflows come in bursts".into()],
        });
    }
    cx.out.sort_by_key(|f| f.severity);
    cx.out
}

fn listener_findings(cx: &mut Ctx, ns: &NsSample, l: &ListenerSample, in_ns: usize, seen: &mut Seen) {
    let r = &l.row.listener;
    let k = |kind: Kind| l.kinds.map_or(0, |k| k[kind.index()]);
    let accept_hooked = k(Kind::AcceptQueueFull) + k(Kind::AckOverflow) + k(Kind::AckOverflowReset) + k(Kind::CookieAckOverflow);
    // Drops this listener had that no hook classified.
    let unclassified = if l.kinds.is_some() { k(Kind::ListenerDropCounted) } else { l.drops_delta };
    let d = &ns.delta;
    let accept = accept_hooked > 0 || (unclassified > 0 && d.listen_overflows > 0);
    let syn = k(Kind::SynQueueFull) > 0 || (unclassified > 0 && d.req_qfull_drop > 0);
    let cookies = k(Kind::SyncookieSent) + if l.kinds.is_none() && in_ns == 1 { d.req_qfull_do_cookies } else { 0 };
    let dropped = match l.kinds {
        Some(kinds) => Kind::ALL.iter().filter(|k| k.is_drop()).map(|k| kinds[k.index()]).sum(),
        None => l.drops_delta,
    };
    let somaxconn = l.row.somaxconn;
    let target = suggest(l.peak_accept_queue.max(r.accept_queue_max));
    let raise_backlog = format!(
        "raise the backlog {} passes to listen() (nginx: `listen {} backlog={target};`, Redis: tcp-backlog, Tomcat: acceptCount, Java: the ServerSocket backlog argument), then restart it: the bound is fixed at listen()",
        l.row.owners.first().map_or_else(|| "the application".to_owned(), |o| o.comm.clone()),
        r.port
    );
    let mut base = Map::new();
    base.insert("listener_drops".into(), l.drops_delta.into());
    base.insert("accept_queue".into(), r.accept_queue.into());
    base.insert("accept_queue_max".into(), r.accept_queue_max.into());
    base.insert("peak_accept_queue".into(), l.peak_accept_queue.into());
    base.insert("seconds".into(), cx.seconds());
    kind_evidence(&mut base, &l.kinds);
    let ns_wide = l.kinds.is_none() || k(Kind::ListenerDropCounted) > 0;

    if accept {
        seen.accept_overflow = true;
        let mut ev = base.clone();
        ev.insert("ListenOverflows".into(), d.listen_overflows.into());
        ev.insert("ListenDrops".into(), d.listen_drops.into());
        if ns_wide {
            ev.insert("namespace_counters".into(), "namespace-wide".into());
        }
        let mut remedy = vec![format!(
            "accept faster: more worker processes or threads in {}, and no slow work between accept() calls",
            l.row.owners.first().map_or("the application", |o| o.comm.as_str())
        )];
        remedy.push(raise_backlog.clone());
        if somaxconn.is_some_and(|s| s < target) {
            remedy.extend(set_sysctl(ns, "net.core.somaxconn", target));
        }
        cx.push(
            "accept_queue_overflow",
            Severity::Critical,
            (ns, Some(l)),
            format!(
                "{}: the accept queue ({}/{}) overflowed: {dropped} handshake packets dropped in {}; the application accepts connections more slowly than they arrive",
                describe(l),
                l.peak_accept_queue.max(r.accept_queue),
                r.accept_queue_max,
                cx.secs()
            ),
            ev,
            remedy,
        );
    }
    if syn {
        seen.syn_overflow = true;
        let mut ev = base.clone();
        ev.insert("TCPReqQFullDrop".into(), d.req_qfull_drop.into());
        ev.insert("tcp_syncookies".into(), json!(ns.settings.tcp_syncookies));
        ev.insert("tcp_max_syn_backlog".into(), json!(ns.settings.tcp_max_syn_backlog));
        let mut remedy = Vec::new();
        if ns.settings.tcp_syncookies == Some(0) {
            remedy.extend(set_sysctl(ns, "net.ipv4.tcp_syncookies", 1));
        }
        remedy.push(format!("{raise_backlog} (the SYN queue is bounded by the same backlog)"));
        if ns.settings.tcp_syncookies == Some(0) {
            if let Some(max) = ns.settings.tcp_max_syn_backlog {
                let [now, keep] = set_sysctl(ns, "net.ipv4.tcp_max_syn_backlog", suggest(max));
                remedy.push(format!("with syncookies off, SYNs are also dropped once fewer than a quarter of tcp_max_syn_backlog ({max}) is free: {now}; {keep}"));
            }
        }
        cx.push(
            "syn_queue_overflow",
            Severity::Critical,
            (ns, Some(l)),
            format!(
                "{}: the SYN queue overflowed with tcp_syncookies={}: {} SYNs dropped in {} (TCPReqQFullDrop +{}); clients retry after 1, 3, 7 s and see slow or timed-out connects",
                describe(l),
                ns.settings.tcp_syncookies.map_or("?".into(), |v| v.to_string()),
                if k(Kind::SynQueueFull) > 0 { k(Kind::SynQueueFull) } else { d.req_qfull_drop },
                cx.secs(),
                d.req_qfull_drop
            ),
            ev,
            remedy,
        );
    }
    if cookies > 0 {
        let mut ev = base.clone();
        ev.insert("syncookies_sent".into(), cookies.into());
        ev.insert("TCPReqQFullDoCookies".into(), d.req_qfull_do_cookies.into());
        cx.push(
            "syncookies_sent",
            Severity::Warning,
            (ns, Some(l)),
            format!(
                "{}: the SYN queue overflowed and {cookies} SYNs were answered with syncookies in {}: connections still succeed, but lose TCP options (window scaling, SACK) unless TCP timestamps are on",
                describe(l),
                cx.secs()
            ),
            ev,
            vec![raise_backlog.clone()],
        );
    }
    match l.row.clamp {
        Clamp::No => {}
        clamp => {
            let somax = somaxconn.unwrap_or(r.accept_queue_max);
            let mut ev = Map::new();
            ev.insert("requested_backlog".into(), json!(l.row.requested_backlog));
            ev.insert("accept_queue_max".into(), r.accept_queue_max.into());
            ev.insert("somaxconn".into(), json!(somaxconn));
            ev.insert("proof".into(), (if clamp == Clamp::Proven { "listen() call seen" } else { "bound equals somaxconn" }).into());
            let target = match l.row.requested_backlog {
                Some(req) if req > 0 => req as u32,
                _ => suggest(somax),
            };
            let mut remedy = set_sysctl(ns, "net.core.somaxconn", target).to_vec();
            remedy.push(format!(
                "then restart {}: the accept-queue bound is fixed when it calls listen()",
                l.row.owners.first().map_or("the application", |o| o.comm.as_str())
            ));
            let (severity, summary) = if clamp == Clamp::Proven {
                (
                    Severity::Warning,
                    format!(
                        "{}: listen() asked for a backlog of {}, net.core.somaxconn={somax} clamped it to {}",
                        describe(l),
                        l.row.requested_backlog.unwrap_or_default(),
                        r.accept_queue_max
                    ),
                )
            } else {
                (
                    if accept { Severity::Warning } else { Severity::Info },
                    format!(
                        "{}: the accept-queue bound ({}) equals net.core.somaxconn: the backlog asked for was probably larger and clamped (qtrace did not see the listen() call; run doctor while the service starts to prove it)",
                        describe(l),
                        r.accept_queue_max
                    ),
                )
            };
            cx.push("backlog_clamped", severity, (ns, Some(l)), summary, ev, remedy);
        }
    }
    if !accept && r.accept_queue_max > 0 && r.accept_queue >= r.accept_queue_max {
        let mut ev = base;
        ev.remove("seconds");
        cx.push(
            "accept_queue_full",
            Severity::Warning,
            (ns, Some(l)),
            format!(
                "{}: the accept queue is full right now ({}/{}): the next connection overflows; the application is not accepting",
                describe(l),
                r.accept_queue,
                r.accept_queue_max
            ),
            ev,
            vec![format!(
                "check that {} still calls accept(): it may be stuck or overloaded",
                l.row.owners.first().map_or("the application", |o| o.comm.as_str())
            )],
        );
    }
}

fn namespace_findings(cx: &mut Ctx, ns: &NsSample, listeners: &[&ListenerSample], seen: &Seen) {
    let d = &ns.delta;
    let all = cx.input.all_ports;
    let seconds = cx.seconds();
    let counters = |pairs: &[(&str, u64)]| -> Map<String, Value> {
        let mut m: Map<String, Value> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        m.insert("seconds".into(), seconds.clone());
        m
    };
    if all && !seen.accept_overflow && d.listen_overflows > 0 {
        cx.push(
            "accept_queue_overflow",
            Severity::Critical,
            (ns, None),
            format!(
                "network namespace {}: accept queues overflowed {} times in {} (ListenOverflows), on listeners qtrace could not single out (closed, or without a drop counter)",
                ns.netns,
                d.listen_overflows,
                cx.secs()
            ),
            counters(&[("ListenOverflows", d.listen_overflows), ("ListenDrops", d.listen_drops)]),
            vec!["run `qtrace watch` in this namespace to see which port overflows".into()],
        );
    }
    if all && !seen.syn_overflow && d.req_qfull_drop > 0 {
        let mut remedy = Vec::new();
        if ns.settings.tcp_syncookies == Some(0) {
            remedy.extend(set_sysctl(ns, "net.ipv4.tcp_syncookies", 1));
        }
        remedy.push("run `qtrace watch` in this namespace to see which port overflows".into());
        cx.push(
            "syn_queue_overflow",
            Severity::Critical,
            (ns, None),
            format!(
                "network namespace {}: SYN queues overflowed and {} SYNs were dropped in {} (TCPReqQFullDrop)",
                ns.netns,
                d.req_qfull_drop,
                cx.secs()
            ),
            counters(&[("TCPReqQFullDrop", d.req_qfull_drop)]),
            remedy,
        );
    }
    let cookies_attributed = cx.out.iter().any(|f| f.id == "syncookies_sent" && f.netns == ns.netns);
    if all && !cookies_attributed && d.req_qfull_do_cookies > 0 {
        cx.push(
            "syncookies_sent",
            Severity::Warning,
            (ns, None),
            format!(
                "network namespace {}: SYN queues overflowed and {} SYNs were answered with syncookies in {}",
                ns.netns,
                d.req_qfull_do_cookies,
                cx.secs()
            ),
            counters(&[("TCPReqQFullDoCookies", d.req_qfull_do_cookies)]),
            vec!["run `qtrace watch` in this namespace to see which port overflows".into()],
        );
    }
    let accept_here = cx.out.iter().any(|f| f.id == "accept_queue_overflow" && f.netns == ns.netns);
    if accept_here {
        let resets: u64 = listeners.iter().filter_map(|l| l.kinds.map(|k| k[Kind::AckOverflowReset.index()])).sum();
        let mut ev = counters(&[("OutRsts", d.out_rsts), ("TCPSynRetrans", d.syn_retrans)]);
        ev.insert("tcp_abort_on_overflow".into(), json!(ns.settings.tcp_abort_on_overflow));
        if listeners.iter().any(|l| l.kinds.is_some()) {
            ev.insert("ack_overflow_reset".into(), resets.into());
        }
        let (summary, remedy) = match ns.settings.tcp_abort_on_overflow {
            Some(1) => (
                format!(
                    "tcp_abort_on_overflow=1 in network namespace {}: a client whose final ACK found the accept queue full was reset and saw \"Connection reset by peer\" ({} resets sent in {})",
                    ns.netns,
                    if resets > 0 { resets } else { d.out_rsts },
                    cx.secs()
                ),
                vec![
                    "keep it if clients should fail fast and retry elsewhere; the overflow itself is fixed above".to_owned(),
                    format!("to let short bursts pass instead (the kernel then waits for the client's retransmitted ACK): {}sysctl -w net.ipv4.tcp_abort_on_overflow=0", ns.enter),
                ],
            ),
            _ => (
                format!(
                    "tcp_abort_on_overflow=0 in network namespace {}: overflowing handshake packets are dropped silently and retransmitted (TCPSynRetrans, SYN and SYN-ACK retransmissions: +{} in {}); a client whose final ACK was dropped believes it is connected, so its first request stalls or times out instead of failing",
                    ns.netns,
                    d.syn_retrans,
                    cx.secs()
                ),
                vec![
                    "the default rides out short bursts; fix the overflow itself (above)".to_owned(),
                    format!("if clients should get an immediate error instead: {}sysctl -w net.ipv4.tcp_abort_on_overflow=1", ns.enter),
                ],
            ),
        };
        cx.push("abort_on_overflow", Severity::Info, (ns, None), summary, ev, remedy);
    }
}

/// The evidence of a finding in one line for people: `key value, ...`.
pub fn evidence_line(ev: &Map<String, Value>) -> String {
    ev.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k} {s}"),
            v => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock_diag::Listener;

    fn ns(settings: Settings, delta: NetCounters) -> NsSample {
        NsSample { netns: 7, settings, delta, enter: "ip netns exec t ".into() }
    }

    fn settings(cookies: u32, abort: u32) -> Settings {
        Settings {
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(256),
            tcp_syncookies: Some(cookies),
            tcp_abort_on_overflow: Some(abort),
        }
    }

    fn listener(port: u16, q: (u32, u32), drops: u64, clamp: Clamp, requested: Option<i32>) -> ListenerSample {
        ListenerSample {
            row: ListenerRow {
                netns: 7,
                listener: Listener::example(port, q, drops as u32),
                syn_queue: Some(0),
                owners: vec![Owner { pid: 42, comm: "server".into() }],
                somaxconn: Some(64),
                requested_backlog: requested,
                clamp,
            },
            drops_delta: drops,
            peak_accept_queue: q.0,
            kinds: None,
        }
    }

    fn input(n: NsSample, listeners: Vec<ListenerSample>) -> Input {
        Input { seconds: 5.0, namespaces: vec![n], listeners, all_ports: true }
    }

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_seen_clamp_is_proven_with_the_sysctl_to_run() {
        let f = diagnose(&input(ns(settings(1, 0), NetCounters::default()), vec![listener(8080, (0, 64), 0, Clamp::Proven, Some(4096))]));
        assert_eq!(ids(&f), ["backlog_clamped"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].summary.contains("backlog of 4096") && f[0].summary.contains("clamped it to 64"), "{}", f[0].summary);
        assert_eq!(f[0].remedy[0], "ip netns exec t sysctl -w net.core.somaxconn=4096");
        assert_eq!(f[0].evidence["proof"], "listen() call seen");
    }

    #[test]
    fn dropping_listener_with_listen_overflows_is_an_accept_queue_overflow() {
        let delta = NetCounters { listen_overflows: 94, listen_drops: 188, syn_retrans: 30, ..Default::default() };
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![listener(8080, (5, 5), 188, Clamp::No, None)]));
        assert_eq!(ids(&f), ["accept_queue_overflow", "abort_on_overflow"]);
        assert_eq!(f[0].local_port, Some(8080));
        assert_eq!(f[0].processes[0].comm, "server");
        assert_eq!(f[0].evidence["ListenOverflows"], 94);
        assert!(f[0].summary.contains("(5/5) overflowed: 188 handshake packets"), "{}", f[0].summary);
        assert!(f[1].summary.contains("SYN-ACK retransmissions: +30 in 5.0 s"), "{}", f[1].summary);
    }

    #[test]
    fn syn_queue_overflow_without_syncookies_says_turn_them_on() {
        let delta = NetCounters { req_qfull_drop: 12, listen_drops: 12, ..Default::default() };
        let f = diagnose(&input(ns(settings(0, 0), delta), vec![listener(8080, (0, 4), 12, Clamp::No, None)]));
        assert_eq!(ids(&f), ["syn_queue_overflow"]);
        assert_eq!(f[0].remedy[0], "ip netns exec t sysctl -w net.ipv4.tcp_syncookies=1");
        assert!(f[0].remedy.iter().any(|r| r.contains("tcp_max_syn_backlog (256)")));
    }

    #[test]
    fn abort_on_overflow_one_is_explained_with_the_resets() {
        let delta = NetCounters { listen_overflows: 3, listen_drops: 6, out_rsts: 3, ..Default::default() };
        let mut l = listener(8080, (2, 2), 6, Clamp::No, None);
        let mut kinds = [0; Kind::ALL.len()];
        kinds[Kind::AckOverflowReset.index()] = 3;
        l.kinds = Some(kinds);
        let f = diagnose(&input(ns(settings(1, 1), delta), vec![l]));
        assert_eq!(ids(&f), ["accept_queue_overflow", "abort_on_overflow"]);
        assert!(f[1].summary.contains("Connection reset by peer") && f[1].summary.contains("3 resets"), "{}", f[1].summary);
        assert_eq!(f[1].evidence["ack_overflow_reset"], 3);
    }

    #[test]
    fn hooked_kinds_single_out_the_listener_that_overflowed() {
        let delta = NetCounters { listen_overflows: 10, listen_drops: 10, ..Default::default() };
        let mut a = listener(8080, (0, 128), 10, Clamp::No, None);
        let mut kinds = [0; Kind::ALL.len()];
        kinds[Kind::AcceptQueueFull.index()] = 10;
        a.kinds = Some(kinds);
        let mut b = listener(9090, (0, 128), 0, Clamp::No, None);
        b.kinds = Some([0; Kind::ALL.len()]);
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![a, b]));
        assert_eq!(ids(&f), ["accept_queue_overflow", "abort_on_overflow"]);
        assert_eq!(f[0].local_port, Some(8080));
    }

    #[test]
    fn quiet_namespaces_say_so_and_likely_clamps_stay_informational() {
        let f = diagnose(&input(ns(settings(1, 0), NetCounters::default()), vec![listener(8080, (0, 64), 0, Clamp::Likely, None)]));
        assert_eq!(ids(&f), ["backlog_clamped", "no_overflow"]);
        assert!(f.iter().all(|f| f.severity == Severity::Info));
        let f = diagnose(&input(ns(settings(1, 0), NetCounters { listen_overflows: 2, ..Default::default() }), vec![]));
        assert_eq!(ids(&f), ["accept_queue_overflow", "abort_on_overflow"]);
        assert_eq!(f[0].local_port, None);
    }
}
