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

use std::fmt;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::host::ns_state::{NetCounters, Settings};
use crate::host::procs::Owner;
use crate::model::accept_wait::AcceptWait;
use crate::model::backlog::Clamp;
use crate::model::counts::Counts;
use crate::model::event::Kind;
use crate::model::inventory::ListenerRow;
use crate::model::listener_flow::ListenerFlow;
use crate::model::outcome::{Fate, Outcomes};

/// One namespace's sample.
#[derive(Debug, Clone)]
pub(crate) struct NsSample {
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
pub(crate) struct ListenerSample {
    /// State at the end of the window.
    pub row: ListenerRow,
    /// Growth of its drop counter over the window.
    pub drops_delta: u64,
    /// Longest accept queue seen while sampling.
    pub peak_accept_queue: u32,
    /// Per-kind counts from the capture, indexed by [`Kind::index`]; `None`
    /// without a capture.
    pub kinds: Option<Counts>,
    /// Its arrivals and accepts over the window; `None` where accepts are
    /// not traced (no capture, or the recorders could not attach).
    pub flow: Option<ListenerFlow>,
    /// Its port's accept-queue waits over the window (same condition).
    pub wait: Option<AcceptWait>,
    /// Its port's connection outcomes over the window; `None` without a
    /// capture.
    pub outcomes: Option<Outcomes>,
}

#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub seconds: f64,
    pub namespaces: Vec<NsSample>,
    pub listeners: Vec<ListenerSample>,
    /// Whether every listener was sampled (no `--port` filter): then
    /// namespace overflows that no listener explains are reported too.
    pub all_ports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// What a finding is about. The names are stable: they are the `id` of
/// `"type": "finding"` lines (docs/events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FindingId {
    AcceptQueueOverflow,
    SynQueueOverflow,
    SyncookiesSent,
    BacklogClamped,
    AcceptQueueFull,
    AbortOnOverflow,
    AcceptWaitHigh,
    AcceptImbalance,
    ClientsDelayed,
    ClientsFailed,
    NoOverflow,
}

impl FindingId {
    #[cfg(test)]
    pub(crate) const ALL: [FindingId; 11] = [
        FindingId::AcceptQueueOverflow,
        FindingId::SynQueueOverflow,
        FindingId::SyncookiesSent,
        FindingId::BacklogClamped,
        FindingId::AcceptQueueFull,
        FindingId::AbortOnOverflow,
        FindingId::AcceptWaitHigh,
        FindingId::AcceptImbalance,
        FindingId::ClientsDelayed,
        FindingId::ClientsFailed,
        FindingId::NoOverflow,
    ];

    /// The stable name, as JSON spells it.
    pub(crate) fn id(self) -> &'static str {
        match self {
            FindingId::AcceptQueueOverflow => "accept_queue_overflow",
            FindingId::SynQueueOverflow => "syn_queue_overflow",
            FindingId::SyncookiesSent => "syncookies_sent",
            FindingId::BacklogClamped => "backlog_clamped",
            FindingId::AcceptQueueFull => "accept_queue_full",
            FindingId::AbortOnOverflow => "abort_on_overflow",
            FindingId::AcceptWaitHigh => "accept_wait_high",
            FindingId::AcceptImbalance => "accept_imbalance",
            FindingId::ClientsDelayed => "clients_delayed",
            FindingId::ClientsFailed => "clients_failed",
            FindingId::NoOverflow => "no_overflow",
        }
    }
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One conclusion.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub id: FindingId,
    pub severity: Severity,
    pub netns: u32,
    pub local_addr: Option<String>,
    pub local_port: Option<u16>,
    pub processes: Vec<Owner>,
    pub summary: String,
    pub evidence: Map<String, Value>,
    pub remedy: Vec<String>,
}

/// The remedy when only a namespace's counters show an overflow.
const WATCH: &str = "run `qtrace watch` in this namespace to see which port overflows";

/// The backlog that would have held the window's burst: the queue's peak
/// (at least its bound) plus what the listener dropped beyond it (packets, an upper bound on
/// connections: a client's retransmitted SYN counts again), as a power of
/// two. `None` where arrivals were not measured.
fn measured_target(l: &ListenerSample) -> Option<u32> {
    let flow = l.flow.as_ref()?;
    // The queue is sampled once a poll and may have peaked unseen: never
    // less than its bound.
    let peak = l.peak_accept_queue.max(flow.queue).max(l.row.listener.accept_queue_max);
    let need = u64::from(peak) + l.drops_delta + 1;
    Some(u32::try_from(need).unwrap_or(u32::MAX).checked_next_power_of_two().unwrap_or(u32::MAX).clamp(128, 65_535))
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

/// Turning syncookies on, when they are off: the first remedy for SYN drops.
fn syncookies_on(ns: &NsSample) -> Vec<String> {
    if ns.settings.tcp_syncookies == Some(0) {
        set_sysctl(ns, "net.ipv4.tcp_syncookies", 1).to_vec()
    } else {
        Vec::new()
    }
}

fn describe(l: &ListenerSample) -> String {
    let r = &l.row.listener;
    let addr = if r.addr.is_ipv6() { format!("[{}]:{}", r.addr, r.port) } else { format!("{}:{}", r.addr, r.port) };
    match l.row.owners.first() {
        Some(o) => format!("{addr} ({})", o.short()),
        None => addr,
    }
}

/// The listener's program by name, for remedies.
fn app(l: &ListenerSample) -> &str {
    l.row.owners.first().map_or("the application", |o| o.comm.as_str())
}

/// What the capture counted of `kind` on the listener's port; 0 without a capture.
fn count(l: &ListenerSample, kind: Kind) -> u64 {
    l.kinds.map_or(0, |k| k[kind])
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
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
        id: FindingId,
        severity: Severity,
        at: (u32, Option<&ListenerSample>),
        summary: String,
        evidence: Map<String, Value>,
        remedy: Vec<String>,
    ) {
        let (netns, l) = at;
        self.out.push(Finding {
            id,
            severity,
            netns,
            local_addr: l.map(|l| l.row.listener.addr.to_string()),
            local_port: l.map(|l| l.row.listener.port),
            processes: l.map(|l| l.row.owners.clone()).unwrap_or_default(),
            summary,
            evidence,
            remedy,
        });
    }

    /// Whether a finding `id` about namespace `netns` was made already.
    fn found(&self, id: FindingId, netns: u32) -> bool {
        self.out.iter().any(|f| f.id == id && f.netns == netns)
    }

    /// Evidence from numbers, then the window's length.
    fn numbers(&self, pairs: &[(&str, u64)]) -> Map<String, Value> {
        let mut m: Map<String, Value> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        m.insert("seconds".into(), self.seconds());
        m
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
pub(crate) fn diagnose(input: &Input) -> Vec<Finding> {
    let mut cx = Ctx { input, out: Vec::new() };
    for ns in &input.namespaces {
        let listeners: Vec<&ListenerSample> = input.listeners.iter().filter(|l| l.row.netns == ns.netns).collect();
        let mut seen = Seen::default();
        for l in &listeners {
            let shared = listeners.iter().filter(|o| same_socket_address(o, l)).count() > 1;
            let facts = Facts::new(&cx, ns, l, (listeners.len(), shared));
            seen.accept_overflow |= facts.accept;
            seen.syn_overflow |= facts.syn;
            listener_findings(&mut cx, &facts);
        }
        namespace_findings(&mut cx, ns, &listeners, &seen);
    }
    if !cx.out.iter().any(|f| f.severity != Severity::Info || f.id == FindingId::AbortOnOverflow) {
        no_overflow(&mut cx);
    }
    cx.out.sort_by_key(|f| f.severity);
    cx.out
}

/// What one listener's sample shows, worked out once for its findings.
struct Facts<'a> {
    ns: &'a NsSample,
    l: &'a ListenerSample,
    /// `addr:port (comm(pid))`, how summaries name it.
    name: String,
    /// Its accept queue overflowed: a hook saw it, or its drop counter grew
    /// with the namespace's ListenOverflows.
    accept: bool,
    /// Its SYN queue overflowed, seen the same way.
    syn: bool,
    /// SYNs it answered with syncookies.
    cookies: u64,
    /// Handshake packets it dropped.
    dropped: u64,
    /// The backlog to suggest.
    target: u32,
    /// The evidence every finding about it starts from.
    base: Map<String, Value>,
}

impl<'a> Facts<'a> {
    /// `in_ns`: how many listeners were sampled in `ns`; `shared`: whether
    /// another one has the same port (then the capture's per-port counts
    /// are the group's, and only the listener's own drop counter is its).
    fn new(cx: &Ctx, ns: &'a NsSample, l: &'a ListenerSample, (in_ns, shared): (usize, bool)) -> Self {
        let k = |kind: Kind| count(l, kind);
        let d = &ns.delta;
        let r = &l.row.listener;
        let accept_hooked = k(Kind::AcceptQueueFull) + k(Kind::AckOverflow) + k(Kind::AckOverflowReset) + k(Kind::CookieAckOverflow);
        // Drops this listener had that no hook classified.
        let unclassified = if l.kinds.is_some() { k(Kind::ListenerDropCounted) } else { l.drops_delta };
        // Every listen drop moves the listener's own counter
        // (`tcp_listendrop()`, 9caad864151e, 4.7): one whose counter stood
        // still did not overflow, whatever its port's group did.
        let own_drops = l.row.listener.drops.is_none() || l.drops_delta > 0;
        let accept = own_drops && (accept_hooked > 0 || (unclassified > 0 && d.listen_overflows > 0));
        let mut base = cx.numbers(&[
            ("listener_drops", l.drops_delta),
            ("accept_queue", r.accept_queue.into()),
            ("accept_queue_max", r.accept_queue_max.into()),
            ("peak_accept_queue", l.peak_accept_queue.into()),
        ]);
        // The capture counts per port: with siblings on the port, they are
        // the group's, not this listener's.
        for kind in Kind::ALL.into_iter().filter(|&kind| k(kind) > 0 && !shared) {
            base.insert(kind.name().into(), k(kind).into());
        }
        if let Some(w) = l.wait.as_ref().and_then(AcceptWait::summary) {
            // The port's waits, whatever else is said of the listener.
            base.insert("accept_wait_p50_ms".into(), json!(w.p50));
            base.insert("accept_wait_p99_ms".into(), json!(w.p99));
            base.insert("accept_wait_max_ms".into(), json!(w.max));
        }
        if let Some(flow) = &l.flow {
            base.insert("arrivals".into(), flow.arrivals().into());
            base.insert("accepts".into(), flow.accepts.into());
            base.insert("peak_arrivals_per_s".into(), json!((flow.peak.0 * 10.0).round() / 10.0));
            base.insert("peak_accepts_per_s".into(), json!((flow.peak.1 * 10.0).round() / 10.0));
        }
        Facts {
            ns,
            l,
            name: describe(l),
            accept,
            syn: own_drops && (k(Kind::SynQueueFull) > 0 || (unclassified > 0 && d.req_qfull_drop > 0)),
            cookies: k(Kind::SyncookieSent) + if l.kinds.is_none() && in_ns == 1 { d.req_qfull_do_cookies } else { 0 },
            dropped: match l.kinds {
                Some(kinds) if !shared => kinds.drops(),
                _ => l.drops_delta,
            },
            target: measured_target(l).filter(|_| accept).unwrap_or_else(|| suggest(l.peak_accept_queue.max(r.accept_queue_max))),
            base,
        }
    }

    /// Where its findings are: its namespace and itself.
    fn at(&self) -> (u32, Option<&'a ListenerSample>) {
        (self.ns.netns, Some(self.l))
    }

    /// The base evidence and `more`.
    fn evidence<'k>(&self, more: impl IntoIterator<Item = (&'k str, Value)>) -> Map<String, Value> {
        let mut ev = self.base.clone();
        ev.extend(more.into_iter().map(|(k, v)| (k.to_owned(), v)));
        ev
    }

    /// Raising the backlog the application asks for.
    fn raise_backlog(&self) -> String {
        format!(
            "raise the backlog {} passes to listen() (nginx: `listen {} backlog={};`, Redis: tcp-backlog, Tomcat: acceptCount, Java: the ServerSocket backlog argument), then restart it: the bound is fixed at listen()",
            app(self.l),
            self.l.row.listener.port,
            self.target
        )
    }
}

fn listener_findings(cx: &mut Ctx, f: &Facts) {
    let r = &f.l.row.listener;
    if f.accept {
        accept_queue_overflow(cx, f);
    }
    if f.syn {
        syn_queue_overflow(cx, f);
    }
    if f.cookies > 0 {
        syncookies_sent(cx, f);
    }
    if f.l.row.clamp != Clamp::No {
        backlog_clamped(cx, f);
    }
    if !f.accept && r.accept_queue_max > 0 && r.accept_queue >= r.accept_queue_max {
        accept_queue_full(cx, f);
    }
    if !f.accept {
        accept_wait_high(cx, f);
    }
    if let Some(o) = &f.l.outcomes {
        clients_failed(cx, f, o);
        clients_delayed(cx, f, o);
    }
}

/// Whether a finding `id` about `f`'s port was made already (outcomes
/// and waits are the port's, not one listener's).
fn port_found(cx: &Ctx, id: FindingId, f: &Facts) -> bool {
    cx.out.iter().any(|x| x.id == id && x.netns == f.ns.netns && x.local_port == Some(f.l.row.listener.port))
}

/// Clients the overflow failed: reset by the kernel, or gone after their
/// packets were dropped (the `outcome` records).
fn clients_failed(cx: &mut Ctx, f: &Facts, o: &Outcomes) {
    let (reset, abandoned) = (o.count(Fate::Reset), o.count(Fate::Abandoned));
    if reset + abandoned == 0 || port_found(cx, FindingId::ClientsFailed, f) {
        return;
    }
    let ev = f.evidence([("clients_reset", reset.into()), ("clients_abandoned", abandoned.into())]);
    let summary = format!(
        "{}: {} client{} failed in {}: {reset} reset by the kernel as their final ACK overflowed (tcp_abort_on_overflow=1), {abandoned} never came back after their handshake packets were dropped (they gave up, or were never there: spoofed SYNs look the same)",
        f.name,
        reset + abandoned,
        plural((reset + abandoned) as usize),
        cx.secs()
    );
    let remedy = vec![f.raise_backlog(), format!("accept faster: more worker processes or threads in {}", app(f.l))];
    // Resets are failures for certain; clients that did not come back may
    // have been a flood's spoofed addresses.
    let severity = if reset > 0 { Severity::Critical } else { Severity::Warning };
    cx.push(FindingId::ClientsFailed, severity, f.at(), summary, ev, remedy);
}

/// Clients the overflow delayed: connections that got through only after
/// some of their handshake packets were dropped, and by how much (the
/// retransmission timeouts their `connect()` paid).
fn clients_delayed(cx: &mut Ctx, f: &Facts, o: &Outcomes) {
    let Some(d) = o.delay.summary() else { return };
    if port_found(cx, FindingId::ClientsDelayed, f) {
        return;
    }
    let ev = f.evidence([
        ("clients_delayed", d.count.into()),
        ("delay_p50_ms", json!(d.p50)),
        ("delay_p99_ms", json!(d.p99)),
        ("delay_max_ms", json!(d.max)),
    ]);
    let summary = format!(
        "{}: {} client{} got through only after their handshake packets were dropped, delayed p50 {} ms, p99 {} ms, longest {} ms: the retransmission timeouts (1 s, then 3 s, 7 s ...) that become a service's tail latency",
        f.name,
        d.count,
        plural(d.count as usize),
        ms(d.p50),
        ms(d.p99),
        ms(d.max)
    );
    let remedy = vec![f.raise_backlog(), format!("accept faster: more worker processes or threads in {}", app(f.l))];
    cx.push(FindingId::ClientsDelayed, Severity::Warning, f.at(), summary, ev, remedy);
}

fn accept_queue_overflow(cx: &mut Ctx, f: &Facts) {
    let (d, l, r) = (&f.ns.delta, f.l, &f.l.row.listener);
    let mut ev = f.evidence([("ListenOverflows", d.listen_overflows.into()), ("ListenDrops", d.listen_drops.into())]);
    if l.kinds.is_none() || count(l, Kind::ListenerDropCounted) > 0 {
        ev.insert("namespace_counters".into(), "namespace-wide".into());
    }
    let mut remedy = vec![
        format!("accept faster: more worker processes or threads in {}, and no slow work between accept() calls", app(l)),
        f.raise_backlog(),
    ];
    if let Some(flow) = l.flow.as_ref().filter(|f| f.accepts == 0) {
        remedy.insert(
            0,
            format!(
                "it accepted nothing in {} while {} connections arrived: {} is stuck or not calling accept() on this socket, and no backlog helps",
                cx.secs(),
                flow.arrivals(),
                app(l)
            ),
        );
    } else if let Some(flow) = &l.flow {
        remedy.push(format!(
            "in {} {} connections arrived and {} were accepted (at the peak {:.0}/s arriving against {:.0}/s accepted); the queue peaked at {} and {} more were dropped: a backlog of {} holds a burst like this one, but a sustained excess overflows any backlog",
            cx.secs(),
            flow.arrivals(),
            flow.accepts,
            flow.peak.0,
            flow.peak.1,
            l.peak_accept_queue.max(r.accept_queue),
            l.drops_delta,
            f.target
        ));
    }
    if l.row.somaxconn.is_some_and(|s| s < f.target) {
        remedy.extend(set_sysctl(f.ns, "net.core.somaxconn", f.target));
    }
    let summary = format!(
        "{}: the accept queue ({}/{}) overflowed: {} handshake packets dropped in {}; the application accepts connections more slowly than they arrive",
        f.name,
        l.peak_accept_queue.max(r.accept_queue),
        r.accept_queue_max,
        f.dropped,
        cx.secs()
    );
    cx.push(FindingId::AcceptQueueOverflow, Severity::Critical, f.at(), summary, ev, remedy);
}

fn syn_queue_overflow(cx: &mut Ctx, f: &Facts) {
    let (s, drops) = (&f.ns.settings, f.ns.delta.req_qfull_drop);
    let ev = f.evidence([
        ("TCPReqQFullDrop", drops.into()),
        ("tcp_syncookies", json!(s.tcp_syncookies)),
        ("tcp_max_syn_backlog", json!(s.tcp_max_syn_backlog)),
    ]);
    let mut remedy = syncookies_on(f.ns);
    remedy.push(format!("{} (the SYN queue is bounded by the same backlog)", f.raise_backlog()));
    if let (Some(0), Some(max)) = (s.tcp_syncookies, s.tcp_max_syn_backlog) {
        let [now, keep] = set_sysctl(f.ns, "net.ipv4.tcp_max_syn_backlog", suggest(max));
        remedy.push(format!(
            "with syncookies off, SYNs are also dropped once fewer than a quarter of tcp_max_syn_backlog ({max}) is free: {now}; {keep}"
        ));
    }
    let hooked = count(f.l, Kind::SynQueueFull);
    let summary = format!(
        "{}: the SYN queue overflowed with tcp_syncookies={}: {} SYNs dropped in {} (TCPReqQFullDrop +{drops}); clients retry after 1, 3, 7 s and see slow or timed-out connects",
        f.name,
        s.tcp_syncookies.map_or("?".into(), |v| v.to_string()),
        if hooked > 0 { hooked } else { drops },
        cx.secs()
    );
    cx.push(FindingId::SynQueueOverflow, Severity::Critical, f.at(), summary, ev, remedy);
}

fn syncookies_sent(cx: &mut Ctx, f: &Facts) {
    let ev = f.evidence([("syncookies_sent", f.cookies.into()), ("TCPReqQFullDoCookies", f.ns.delta.req_qfull_do_cookies.into())]);
    let summary = format!(
        "{}: the SYN queue overflowed and {} SYNs were answered with syncookies in {}: connections still succeed, but lose TCP options (window scaling, SACK) unless TCP timestamps are on",
        f.name,
        f.cookies,
        cx.secs()
    );
    cx.push(FindingId::SyncookiesSent, Severity::Warning, f.at(), summary, ev, vec![f.raise_backlog()]);
}

fn backlog_clamped(cx: &mut Ctx, f: &Facts) {
    let (row, r) = (&f.l.row, &f.l.row.listener);
    let proven = row.clamp == Clamp::Proven;
    let mut ev = Map::new();
    ev.insert("requested_backlog".into(), json!(row.requested_backlog));
    ev.insert("accept_queue_max".into(), r.accept_queue_max.into());
    ev.insert("somaxconn".into(), json!(row.somaxconn));
    ev.insert("proof".into(), (if proven { "listen() call seen" } else { "bound equals somaxconn" }).into());
    let somax = row.somaxconn.unwrap_or(r.accept_queue_max);
    let target = match row.requested_backlog {
        Some(req) if req > 0 => req as u32,
        _ => suggest(somax),
    };
    let mut remedy = set_sysctl(f.ns, "net.core.somaxconn", target).to_vec();
    remedy.push(format!("then restart {}: the accept-queue bound is fixed when it calls listen()", app(f.l)));
    let (severity, summary) = clamp_summary(f, proven, somax);
    cx.push(FindingId::BacklogClamped, severity, f.at(), summary, ev, remedy);
}

/// How sure the clamp is and what it did: seen at `listen()`, or only
/// likely because the bound equals somaxconn.
fn clamp_summary(f: &Facts, proven: bool, somax: u32) -> (Severity, String) {
    let r = &f.l.row.listener;
    if proven {
        let asked = f.l.row.requested_backlog.unwrap_or_default();
        let summary =
            format!("{}: listen() asked for a backlog of {asked}, net.core.somaxconn={somax} clamped it to {}", f.name, r.accept_queue_max);
        (Severity::Warning, summary)
    } else {
        let summary = format!(
            "{}: the accept-queue bound ({}) equals net.core.somaxconn: the backlog asked for was probably larger and clamped (qtrace did not see the listen() call; run doctor while the service starts to prove it)",
            f.name, r.accept_queue_max
        );
        (if f.accept { Severity::Warning } else { Severity::Info }, summary)
    }
}

fn accept_queue_full(cx: &mut Ctx, f: &Facts) {
    let r = &f.l.row.listener;
    let mut ev = f.base.clone();
    ev.remove("seconds");
    let summary = format!(
        "{}: the accept queue is full right now ({}/{}): the next connection overflows; the application is not accepting",
        f.name, r.accept_queue, r.accept_queue_max
    );
    let remedy = vec![format!("check that {} still calls accept(): it may be stuck or overloaded", app(f.l))];
    cx.push(FindingId::AcceptQueueFull, Severity::Warning, f.at(), summary, ev, remedy);
}

/// Whether two listeners share address and port: an `SO_REUSEPORT` group
/// (`0.0.0.0:80` and `[::]:80` are two groups, each with its own traffic).
fn same_socket_address(a: &ListenerSample, b: &ListenerSample) -> bool {
    (a.row.listener.addr, a.row.listener.port) == (b.row.listener.addr, b.row.listener.port)
}

/// Milliseconds for a sentence: whole from 10 ms, else to a tenth.
fn ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A p99 accept-queue wait that already adds this much to requests is
/// worth a warning before anything overflows (a server keeping up accepts
/// within microseconds).
const WAIT_HIGH_MS: f64 = 100.0;

/// Saturation before overflow: connections wait long to be accepted, or
/// the queue came within a quarter of its bound, with nothing dropped yet.
/// Once per port (the waits are the port's).
fn accept_wait_high(cx: &mut Ctx, f: &Facts) {
    let r = &f.l.row.listener;
    let Some(w) = f.l.wait.as_ref().and_then(AcceptWait::summary) else { return };
    let near_full = r.accept_queue_max > 0 && u64::from(f.l.peak_accept_queue) * 4 >= u64::from(r.accept_queue_max) * 3;
    let port_done = cx.out.iter().any(|x| x.id == FindingId::AcceptWaitHigh && x.netns == f.ns.netns && x.local_port == Some(r.port));
    // The waits are the port's: not "nothing dropped" while a listener of
    // the port drops.
    let port_drops = cx.input.listeners.iter().any(|o| o.row.netns == f.ns.netns && o.row.listener.port == r.port && o.drops_delta > 0);
    if port_done || port_drops || !(w.p99 >= WAIT_HIGH_MS || near_full) {
        return;
    }
    let ev = f.evidence([("accepted", w.count.into())]);
    let summary = format!(
        "{}: connections wait to be accepted (p50 {} ms, p99 {} ms, longest {} ms over {} accepted in {}) and the queue peaked at {}/{}: nothing dropped yet, but every request waits that long first, and a burst overflows next",
        f.name,
        ms(w.p50),
        ms(w.p99),
        ms(w.max),
        w.count,
        cx.secs(),
        f.l.peak_accept_queue,
        r.accept_queue_max
    );
    let remedy = vec![
        format!("accept faster: more worker processes or threads in {}, and no slow work between accept() calls", app(f.l)),
        f.raise_backlog(),
    ];
    cx.push(FindingId::AcceptWaitHigh, Severity::Warning, f.at(), summary, ev, remedy);
}

/// `SO_REUSEPORT` listeners of one port where some drop while others have
/// room:
/// the kernel hashes each connection to one listener and never hands it to
/// an idle sibling, so one stalled worker refuses its share.
fn accept_imbalance(cx: &mut Ctx, ns: &NsSample, listeners: &[&ListenerSample]) {
    let mut groups: Vec<(std::net::IpAddr, u16)> = listeners.iter().map(|l| (l.row.listener.addr, l.row.listener.port)).collect();
    groups.sort_unstable();
    groups.dedup();
    for (addr, port) in groups {
        let group: Vec<&ListenerSample> =
            listeners.iter().copied().filter(|l| l.row.listener.addr == addr && l.row.listener.port == port && l.flow.is_some()).collect();
        // Siblings that dropped nothing and had room left.
        let room = |l: &&ListenerSample| l.drops_delta == 0 && l.peak_accept_queue < l.row.listener.accept_queue_max;
        let idlers: Vec<&ListenerSample> = group.iter().copied().filter(room).collect();
        if group.len() < 2 || idlers.is_empty() {
            continue;
        }
        for l in group.iter().filter(|l| l.drops_delta > 0) {
            imbalanced(cx, ns, l, &idlers);
        }
    }
}

fn imbalanced(cx: &mut Ctx, ns: &NsSample, l: &ListenerSample, idlers: &[&ListenerSample]) {
    let flow = l.flow.as_ref().expect("grouped listeners have flows");
    let r = &l.row.listener;
    let siblings: Vec<Value> = idlers
        .iter()
        .map(|s| {
            let f = s.flow.as_ref().expect("grouped listeners have flows");
            json!({"listener": describe(s), "accepts": f.accepts, "arrivals": f.arrivals(), "peak_accept_queue": s.peak_accept_queue})
        })
        .collect();
    let mut ev = cx.numbers(&[("listener_drops", l.drops_delta), ("arrivals", flow.arrivals()), ("accepts", flow.accepts)]);
    ev.insert("peak_accept_queue".into(), l.peak_accept_queue.into());
    ev.insert("accept_queue_max".into(), r.accept_queue_max.into());
    ev.insert("siblings".into(), siblings.into());
    let summary = format!(
        "{}: one of {} SO_REUSEPORT listeners on port {} dropped {} handshake packets ({} accepted of {} arrived) while {} sibling{} dropped nothing and had room: connections are hashed to one listener and never moved, so this worker's stall refuses its share",
        describe(l),
        idlers.len() + 1,
        r.port,
        l.drops_delta,
        flow.accepts,
        flow.arrivals(),
        idlers.len(),
        plural(idlers.len())
    );
    let remedy = vec![
        format!("find why {} stopped accepting (a blocked event loop, a long request) and fix or restart it", app(l)),
        "or let idle workers take the load: one shared listener with every worker accepting from it (EPOLLEXCLUSIVE), instead of one SO_REUSEPORT listener per worker".to_owned(),
    ];
    cx.push(FindingId::AcceptImbalance, Severity::Warning, (ns.netns, Some(l)), summary, ev, remedy);
}

/// What the namespace's counters show beyond its listeners' findings.
fn namespace_findings(cx: &mut Ctx, ns: &NsSample, listeners: &[&ListenerSample], seen: &Seen) {
    accept_imbalance(cx, ns, listeners);
    let d = &ns.delta;
    // With a port filter, listeners not sampled may account for the counters.
    if cx.input.all_ports {
        if !seen.accept_overflow && d.listen_overflows > 0 {
            ns_accept_queue_overflow(cx, ns);
        }
        if !seen.syn_overflow && d.req_qfull_drop > 0 {
            ns_syn_queue_overflow(cx, ns);
        }
        if !cx.found(FindingId::SyncookiesSent, ns.netns) && d.req_qfull_do_cookies > 0 {
            ns_syncookies_sent(cx, ns);
        }
    }
    if cx.found(FindingId::AcceptQueueOverflow, ns.netns) {
        abort_on_overflow(cx, ns, listeners);
    }
}

/// A finding that only namespace counters show: "network namespace N: `what`",
/// with `counters` as evidence.
fn ns_finding(cx: &mut Ctx, ns: &NsSample, kind: (FindingId, Severity), what: String, counters: &[(&str, u64)], remedy: Vec<String>) {
    let ev = cx.numbers(counters);
    cx.push(kind.0, kind.1, (ns.netns, None), format!("network namespace {}: {what}", ns.netns), ev, remedy);
}

fn ns_accept_queue_overflow(cx: &mut Ctx, ns: &NsSample) {
    let d = &ns.delta;
    let what = format!(
        "accept queues overflowed {} times in {} (ListenOverflows), on listeners qtrace could not single out (closed, or without a drop counter)",
        d.listen_overflows,
        cx.secs()
    );
    let counters = [("ListenOverflows", d.listen_overflows), ("ListenDrops", d.listen_drops)];
    ns_finding(cx, ns, (FindingId::AcceptQueueOverflow, Severity::Critical), what, &counters, vec![WATCH.into()]);
}

fn ns_syn_queue_overflow(cx: &mut Ctx, ns: &NsSample) {
    let drops = ns.delta.req_qfull_drop;
    let what = format!("SYN queues overflowed and {drops} SYNs were dropped in {} (TCPReqQFullDrop)", cx.secs());
    let mut remedy = syncookies_on(ns);
    remedy.push(WATCH.into());
    ns_finding(cx, ns, (FindingId::SynQueueOverflow, Severity::Critical), what, &[("TCPReqQFullDrop", drops)], remedy);
}

fn ns_syncookies_sent(cx: &mut Ctx, ns: &NsSample) {
    let cookies = ns.delta.req_qfull_do_cookies;
    let what = format!("SYN queues overflowed and {cookies} SYNs were answered with syncookies in {}", cx.secs());
    let counters = [("TCPReqQFullDoCookies", cookies)];
    ns_finding(cx, ns, (FindingId::SyncookiesSent, Severity::Warning), what, &counters, vec![WATCH.into()]);
}

/// What the namespace's `tcp_abort_on_overflow` did to the clients of its
/// accept-queue overflows.
fn abort_on_overflow(cx: &mut Ctx, ns: &NsSample, listeners: &[&ListenerSample]) {
    let d = &ns.delta;
    let resets: u64 = listeners.iter().map(|l| count(l, Kind::AckOverflowReset)).sum();
    let mut ev = cx.numbers(&[("OutRsts", d.out_rsts), ("TCPSynRetrans", d.syn_retrans)]);
    ev.insert("tcp_abort_on_overflow".into(), json!(ns.settings.tcp_abort_on_overflow));
    if listeners.iter().any(|l| l.kinds.is_some()) {
        ev.insert("ack_overflow_reset".into(), resets.into());
    }
    let (summary, remedy) = if ns.settings.tcp_abort_on_overflow == Some(1) {
        abort_resets(ns, if resets > 0 { resets } else { d.out_rsts }, &cx.secs())
    } else {
        abort_drops(ns, &cx.secs())
    };
    cx.push(FindingId::AbortOnOverflow, Severity::Info, (ns.netns, None), summary, ev, remedy);
}

/// `tcp_abort_on_overflow=1`: `resets` clients were reset in `secs`.
fn abort_resets(ns: &NsSample, resets: u64, secs: &str) -> (String, Vec<String>) {
    let summary = format!(
        "tcp_abort_on_overflow=1 in network namespace {}: a client whose final ACK found the accept queue full was reset and saw \"Connection reset by peer\" ({resets} resets sent in {secs})",
        ns.netns
    );
    let remedy = vec![
        "keep it if clients should fail fast and retry elsewhere; the overflow itself is fixed above".to_owned(),
        format!("to let short bursts pass instead (the kernel then waits for the client's retransmitted ACK): {}sysctl -w net.ipv4.tcp_abort_on_overflow=0", ns.enter),
    ];
    (summary, remedy)
}

/// `tcp_abort_on_overflow=0` (or unread): packets were dropped and retransmitted.
fn abort_drops(ns: &NsSample, secs: &str) -> (String, Vec<String>) {
    let summary = format!(
        "tcp_abort_on_overflow=0 in network namespace {}: overflowing handshake packets are dropped silently and retransmitted (TCPSynRetrans, SYN and SYN-ACK retransmissions: +{} in {secs}); a client whose final ACK was dropped believes it is connected, so its first request stalls or times out instead of failing",
        ns.netns, ns.delta.syn_retrans
    );
    let remedy = vec![
        "the default rides out short bursts; fix the overflow itself (above)".to_owned(),
        format!("if clients should get an immediate error instead: {}sysctl -w net.ipv4.tcp_abort_on_overflow=1", ns.enter),
    ];
    (summary, remedy)
}

/// The all-clear, when nothing above is worse than informational.
fn no_overflow(cx: &mut Ctx) {
    let (n, spaces) = (cx.input.listeners.len(), cx.input.namespaces.len());
    let ev = cx.numbers(&[("listeners", n as u64), ("namespaces", spaces as u64)]);
    let summary =
        format!("no listen-queue overflow in {} across {n} listener{} in {spaces} namespace{}", cx.secs(), plural(n), plural(spaces));
    let netns = cx.input.namespaces.first().map_or(0, |n| n.netns);
    let remedy = vec!["if clients still fail, run `qtrace watch` during the next incident: overflows come in bursts".into()];
    cx.push(FindingId::NoOverflow, Severity::Info, (netns, None), summary, ev, remedy);
}

/// The evidence of a finding in one line for people: `key value, ...`.
pub(crate) fn evidence_line(ev: &Map<String, Value>) -> String {
    ev.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k} {s}"),
            v => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inputs for the crate's tests: one namespace (7, entered with
/// `ip netns exec t `) whose listeners `server(42)` holds.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;
    use crate::host::sock_diag::Listener;

    pub(crate) fn ns(settings: Settings, delta: NetCounters) -> NsSample {
        NsSample { netns: 7, settings, delta, enter: "ip netns exec t ".into() }
    }

    pub(crate) fn settings(cookies: u32, abort: u32) -> Settings {
        Settings {
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(256),
            tcp_syncookies: Some(cookies),
            tcp_abort_on_overflow: Some(abort),
        }
    }

    pub(crate) fn listener(port: u16, q: (u32, u32), drops: u64, clamp: Clamp, requested: Option<i32>) -> ListenerSample {
        ListenerSample {
            row: ListenerRow {
                netns: 7,
                listener: Listener::example(port, q, drops as u32),
                syn_queue: Some(0),
                owners: vec![Owner { pid: 42, comm: "server".into() }],
                owner: None,
                somaxconn: Some(64),
                requested_backlog: requested,
                clamp,
            },
            drops_delta: drops,
            peak_accept_queue: q.0,
            kinds: None,
            flow: None,
            wait: None,
            outcomes: None,
        }
    }

    /// The same with accepts traced: its own `flow` and its port's `waits`
    /// (ns).
    pub(crate) fn traced(mut l: ListenerSample, accepts: u64, cookie: u64, waits: &[u64]) -> ListenerSample {
        let mut flow = ListenerFlow::new(cookie, cookie as u32, 0, l.row.listener.accept_queue_max, true);
        flow.accepts = accepts;
        flow.queue = l.row.listener.accept_queue;
        l.row.listener.cookie = cookie;
        l.flow = Some(flow);
        let mut w = AcceptWait::default();
        for &ns in waits {
            let b = qtrace_common::wait::bucket(ns);
            w.set(b, w.count_in(b) + 1);
            w.max_ns = w.max_ns.max(ns);
        }
        l.wait = Some(w);
        l
    }

    pub(crate) fn input(n: NsSample, listeners: Vec<ListenerSample>) -> Input {
        Input { seconds: 5.0, namespaces: vec![n], listeners, all_ports: true }
    }
}

#[cfg(test)]
mod tests {
    use super::sample::*;
    use super::*;

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id.id()).collect()
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
        let mut kinds = Counts::default();
        kinds[Kind::AckOverflowReset] = 3;
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
        let mut kinds = Counts::default();
        kinds[Kind::AcceptQueueFull] = 10;
        a.kinds = Some(kinds);
        let mut b = listener(9090, (0, 128), 0, Clamp::No, None);
        b.kinds = Some(Counts::default());
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

    #[test]
    fn finding_ids_serialize_as_their_stable_names() {
        for id in FindingId::ALL {
            assert_eq!(serde_json::to_value(id).unwrap(), id.id());
            assert_eq!(id.to_string(), id.id());
        }
        let f = diagnose(&input(ns(settings(1, 0), NetCounters::default()), vec![]));
        assert_eq!(serde_json::to_value(&f[0]).unwrap()["id"], "no_overflow");
    }

    #[test]
    fn slow_accepts_warn_before_any_drop() {
        // Three accepted after 150 to 450 ms; nothing dropped.
        let l = traced(listener(8080, (2, 64), 0, Clamp::No, None), 3, 1, &[150_000_000, 300_000_000, 450_000_000]);
        let f = diagnose(&input(ns(settings(1, 0), NetCounters::default()), vec![l]));
        assert_eq!(ids(&f), ["accept_wait_high"]);
        assert_eq!(f[0].evidence["accepted"], 3);
        assert_eq!(f[0].evidence["accept_wait_max_ms"], 450.0);
        // Fast accepts with room to spare: nothing to say.
        let quick = traced(listener(8080, (2, 64), 0, Clamp::No, None), 3, 1, &[50_000, 60_000, 70_000]);
        assert_eq!(ids(&diagnose(&input(ns(settings(1, 0), NetCounters::default()), vec![quick]))), ["no_overflow"]);
    }

    #[test]
    fn clients_the_overflow_delayed_or_failed_are_counted_once_per_port() {
        let delta = NetCounters { listen_overflows: 6, listen_drops: 6, ..Default::default() };
        let mut outcomes = Outcomes::default();
        for (fate, delay_ms) in
            [(Fate::Recovered, 1000.0), (Fate::Recovered, 3000.0), (Fate::Reset, 0.0), (Fate::Abandoned, 1.0), (Fate::Abandoned, 2.0)]
        {
            let mut o = crate::model::outcome::tests::example();
            (o.outcome, o.delay_ms) = (fate, delay_ms);
            outcomes.add(&o);
        }
        let mut kinds = Counts::default();
        kinds[Kind::AcceptQueueFull] = 6;
        let mut l = listener(8080, (65, 64), 6, Clamp::No, None);
        (l.kinds, l.outcomes) = (Some(kinds), Some(outcomes));
        // A second listener of the port (SO_REUSEPORT) shares its outcomes.
        let mut sibling = l.clone();
        sibling.row.listener.cookie += 1;
        let f = diagnose(&input(ns(settings(0, 0), delta), vec![l, sibling]));
        let failed: Vec<&Finding> = f.iter().filter(|x| x.id == FindingId::ClientsFailed).collect();
        assert_eq!(failed.len(), 1, "{:?}", ids(&f));
        assert_eq!(
            (failed[0].severity, &failed[0].evidence["clients_reset"], &failed[0].evidence["clients_abandoned"]),
            (Severity::Critical, &1.into(), &2.into())
        );
        let delayed: Vec<&Finding> = f.iter().filter(|x| x.id == FindingId::ClientsDelayed).collect();
        assert_eq!(delayed.len(), 1, "{:?}", ids(&f));
        assert_eq!(delayed[0].evidence["clients_delayed"], 2);
        assert_eq!(delayed[0].evidence["delay_max_ms"], 3000.0);
        assert!(delayed[0].summary.contains("2 clients got through only after"), "{}", delayed[0].summary);
        // Without outcomes (no capture), neither.
        let plain = listener(8080, (65, 64), 6, Clamp::No, None);
        let f = diagnose(&input(ns(settings(0, 0), delta), vec![plain]));
        assert!(!ids(&f).iter().any(|id| id.starts_with("clients_")), "{:?}", ids(&f));
    }

    #[test]
    fn a_stalled_reuseport_listener_beside_siblings_with_room_is_named() {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 40, ..Default::default() };
        let stalled = traced(listener(8080, (5, 4), 40, Clamp::No, None), 0, 1, &[1_000]);
        let idle = traced(listener(8080, (0, 4), 0, Clamp::No, None), 25, 2, &[1_000]);
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![stalled, idle]));
        let imbalance = f.iter().find(|f| f.id == FindingId::AcceptImbalance).expect("accept_imbalance");
        assert_eq!(imbalance.evidence["listener_drops"], 40);
        assert_eq!(imbalance.evidence["siblings"][0]["accepts"], 25);
        // Only the stalled one overflowed (its sibling's counter stood
        // still), and no backlog helps a listener that accepts nothing.
        let overflows: Vec<&Finding> = f.iter().filter(|f| f.id == FindingId::AcceptQueueOverflow).collect();
        assert_eq!(overflows.len(), 1, "{f:#?}");
        assert!(overflows[0].remedy[0].contains("accepted nothing") && overflows[0].remedy[0].contains("5 connections arrived"));
    }

    #[test]
    fn a_slow_listener_s_backlog_is_sized_from_its_burst() {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 40, ..Default::default() };
        let slow = traced(listener(8080, (5, 4), 40, Clamp::No, None), 30, 1, &[1_000]);
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![slow]));
        // A peak of 5 plus 40 dropped, to the next power of two above, and
        // never below 128.
        let overflow = f.iter().find(|f| f.id == FindingId::AcceptQueueOverflow).expect("accept_queue_overflow");
        assert!(overflow.remedy[1].contains("backlog=128"), "{:?}", overflow.remedy);
        assert!(overflow.remedy.iter().any(|r| r.contains("35 connections arrived and 30 were accepted")), "{:?}", overflow.remedy);
    }

    #[test]
    fn measured_bursts_size_the_backlog() {
        let big = traced(listener(8080, (300, 256), 700, Clamp::No, None), 0, 1, &[]);
        assert_eq!(measured_target(&big), Some(1024));
        assert_eq!(measured_target(&listener(8080, (300, 256), 700, Clamp::No, None)), None);
        // A queue sampled far below its bound still gets more than it has.
        let unseen = traced(listener(8080, (10, 4096), 30, Clamp::No, None), 5, 1, &[]);
        assert!(measured_target(&unseen) > Some(4096));
    }

    #[test]
    fn dual_stack_listeners_are_not_a_reuseport_group() {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 40, ..Default::default() };
        let mut v6 = traced(listener(8080, (0, 4), 0, Clamp::No, None), 25, 2, &[1_000]);
        v6.row.listener.addr = "::".parse().unwrap();
        let v4 = traced(listener(8080, (5, 4), 40, Clamp::No, None), 0, 1, &[1_000]);
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![v4, v6]));
        assert!(f.iter().all(|f| f.id != FindingId::AcceptImbalance), "{f:#?}");
    }

    #[test]
    fn slow_accepts_beside_a_dropping_sibling_are_not_called_drop_free() {
        let delta = NetCounters { listen_overflows: 40, listen_drops: 40, ..Default::default() };
        let stalled = traced(listener(8080, (5, 4), 40, Clamp::No, None), 0, 1, &[300_000_000]);
        let slow = traced(listener(8080, (2, 64), 0, Clamp::No, None), 25, 2, &[300_000_000]);
        let f = diagnose(&input(ns(settings(1, 0), delta), vec![stalled, slow]));
        assert!(f.iter().all(|f| f.id != FindingId::AcceptWaitHigh), "{f:#?}");
    }

    #[test]
    fn every_id_is_in_the_documented_table() {
        let doc = include_str!("../../../docs/events.md");
        for id in FindingId::ALL {
            assert!(doc.contains(&format!("| `{id}` |")), "docs/events.md lacks {id}");
        }
    }
}
