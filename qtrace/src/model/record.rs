//! Every NDJSON record qtrace writes, as one serde-tagged type: the `type`
//! field is the variant's name. Field names are a stable schema
//! (docs/events.md); the snapshot test below pins them.

use serde::Serialize;

use crate::host::identity::Identity;
use crate::host::ns_state::{NetCounters, Settings};
use crate::host::procs::Owner;
use crate::host::sock_diag::Listener;
use crate::kernel::limits::{LimitRecord, Refusal};
use crate::kernel::probe::Tier;
use crate::model::accept_wait::WaitSummary;
use crate::model::aggregate::{CountedDelta, Losses, PortKey, PortStats};
use crate::model::backlog::{self, Clamp, Requested};
use crate::model::diagnose::Finding;
use crate::model::event::{rfc3339, Decoded, Kind};
use crate::model::inventory::ListenerRow;
use crate::model::listener_flow::ListenerFlow;
use crate::model::outcome::Outcome;

/// One NDJSON line.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record<'a> {
    /// First of every `watch --json` and `doctor --json` run.
    Start(&'a Start),
    /// The schema of an event line; `EventLines` writes it without
    /// allocating, and a test holds the two to the same bytes.
    #[cfg_attr(not(test), expect(dead_code, reason = "written by EventLines"))]
    Event(EventRecord<'a>),
    Settings(SettingsRecord),
    Counted(CountedRecord),
    Lost(LostRecord),
    Listen(ListenRecord),
    Expired(PortRecord),
    Summary(PortRecord),
    Losses(Losses),
    /// `doctor`: a namespace's settings and its counters over the window.
    #[serde(rename = "settings")]
    Window(WindowRecord),
    /// `doctor`: one conclusion.
    Finding(&'a Finding),
    /// `listeners`: one listener with its context.
    Listener(ListenerRecord<'a>),
    /// What became of a connection that had a handshake packet dropped.
    Outcome(&'a Outcome),
}

/// One listener (`"type": "listener"`, `qtrace listeners --json`).
#[derive(Debug, Serialize)]
pub(crate) struct ListenerRecord<'a> {
    pub netns: u32,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    /// Connections waiting to be accepted (`ss` Recv-Q).
    pub accept_queue: u32,
    /// The accept queue's bound, min(backlog, somaxconn) (`ss` Send-Q).
    pub accept_queue_max: u32,
    /// Requests in the SYN queue; null when shared with another listener.
    pub syn_queue: Option<u32>,
    /// The listener's drop counter (`ss -m` d<N>); null if not reported.
    pub drops: Option<u32>,
    pub processes: &'a [Owner],
    pub somaxconn: Option<u32>,
    pub requested_backlog: Option<i32>,
    pub backlog_clamped: Clamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a Identity>,
}

impl<'a> From<&'a ListenerRow> for ListenerRecord<'a> {
    fn from(r: &'a ListenerRow) -> Self {
        let l = &r.listener;
        Self {
            netns: r.netns,
            family: family(l.addr.is_ipv4()),
            local_addr: l.addr.to_string(),
            local_port: l.port,
            accept_queue: l.accept_queue,
            accept_queue_max: l.accept_queue_max,
            syn_queue: r.syn_queue,
            drops: l.drops,
            processes: &r.owners,
            somaxconn: r.somaxconn,
            requested_backlog: r.requested_backlog,
            backlog_clamped: r.clamp,
            owner: r.owner.as_ref(),
        }
    }
}

/// `doctor`'s `"type": "settings"`: with the counters' growth over the
/// window of `seconds`.
#[derive(Debug, Serialize)]
pub(crate) struct WindowRecord {
    pub netns: u32,
    #[serde(flatten)]
    pub settings: Settings,
    pub counters_delta: NetCounters,
    pub seconds: f64,
}

/// What this run attached and what it cannot see (`"type": "start"`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Start {
    pub time: String,
    pub version: &'static str,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// Whether the kernel publishes its BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: bool,
    pub root: bool,
    /// The attached hook tier; `None` when doctor samples without capture.
    pub tier: Option<Tier>,
    /// Why there is no capture (doctor only).
    pub capture_error: Option<String>,
    /// Better tiers that were refused, best first.
    pub refused: Vec<Refusal>,
    pub limits: Vec<LimitRecord>,
    /// Network namespaces watched.
    pub namespaces: usize,
    pub unreachable_namespaces: Vec<Unreachable>,
    /// Where the metrics endpoint listens, port resolved.
    pub metrics_addr: Option<String>,
    /// Its URL: `https` when `--web-config-file` has TLS.
    pub metrics_url: Option<String>,
    /// Whether it asks for a password (`basic_auth_users`).
    pub metrics_basic_auth: bool,
    /// Events each port may send per second (`--max-event-rate`); null:
    /// unlimited, or nothing attached.
    pub max_event_rate: Option<u32>,
}

impl Start {
    /// A start record for this system, attached with nothing yet.
    pub(crate) fn new(kernel: String, btf: bool, root: bool, now_ns: i128) -> Self {
        Self {
            time: rfc3339(now_ns),
            version: env!("CARGO_PKG_VERSION"),
            kernel,
            btf,
            root,
            tier: None,
            capture_error: None,
            refused: Vec::new(),
            limits: Vec::new(),
            namespaces: 0,
            unreachable_namespaces: Vec::new(),
            metrics_addr: None,
            metrics_url: None,
            metrics_basic_auth: false,
            max_event_rate: None,
        }
    }
}

/// A namespace qtrace cannot enter.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Unreachable {
    pub netns: u32,
    pub reason: String,
}

/// One event (`"type": "event"`).
#[derive(Debug, Serialize)]
pub(crate) struct EventRecord<'a> {
    pub time: String,
    pub kind: Kind,
    pub stage: &'static str,
    pub action: &'static str,
    pub netns: u32,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
    pub accept_queue: u32,
    pub accept_queue_max: u32,
    pub syn_queue: u32,
    pub hook: &'a str,
    /// Who the listener that could have taken it belongs to
    /// (`ListenerOwners::for_events`), by the fields that name it
    /// ([`Identity::naming`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a Identity>,
}

impl<'a> From<&'a Decoded> for EventRecord<'a> {
    fn from(ev: &'a Decoded) -> Self {
        Self::new(ev, None)
    }
}

impl<'a> EventRecord<'a> {
    pub(crate) fn new(ev: &'a Decoded, owner: Option<&'a Identity>) -> Self {
        Self {
            time: rfc3339(ev.time_ns),
            kind: ev.kind,
            stage: ev.kind.stage(),
            action: ev.kind.action(),
            netns: ev.netns,
            family: family(ev.remote.is_ipv4()),
            local_addr: ev.local.ip().to_string(),
            local_port: ev.local.port(),
            remote_addr: ev.remote.ip().to_string(),
            remote_port: ev.remote.port(),
            accept_queue: ev.accept_queue,
            accept_queue_max: ev.accept_queue_max,
            syn_queue: ev.syn_queue,
            hook: ev.hook,
            owner,
        }
    }
}

fn family(ipv4: bool) -> &'static str {
    if ipv4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// A namespace's listen-queue settings (`"type": "settings"`), when
/// `watch` starts and when it first sees a namespace.
#[derive(Debug, Serialize)]
pub(crate) struct SettingsRecord {
    pub time: String,
    pub netns: u32,
    #[serde(flatten)]
    pub settings: Settings,
}

impl SettingsRecord {
    pub(crate) fn new(netns: u32, settings: Settings, now_ns: i128) -> Self {
        Self { time: rfc3339(now_ns), netns, settings }
    }
}

/// Drops known only from the listener's drop counter (`"type": "counted"`).
#[derive(Debug, Serialize)]
pub(crate) struct CountedRecord {
    pub time: String,
    pub kind: Kind,
    pub netns: u32,
    pub local_port: u16,
    pub count: u64,
    pub total: u64,
    /// What the port's listeners' owners share ([`Identity::common`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Identity>,
}

impl CountedRecord {
    /// `st` is the port's totals, for its owners.
    pub(crate) fn new(d: &CountedDelta, st: Option<&PortStats>, now_ns: i128) -> Self {
        Self {
            time: rfc3339(now_ns),
            kind: Kind::ListenerDropCounted,
            netns: d.key.netns,
            local_port: d.key.port,
            count: d.count,
            total: d.total,
            owner: st.and_then(|st| Identity::common(st.owners.iter().map(|o| &**o))),
        }
    }
}

/// Events the kernel counted but could not deliver (`"type": "lost"`).
#[derive(Debug, Serialize)]
pub(crate) struct LostRecord {
    pub time: String,
    pub count: u64,
    pub total: u64,
}

/// A `listen(2)` qtrace saw, with the backlog asked for and the bound the
/// kernel set (`"type": "listen"`).
#[derive(Debug, Serialize)]
pub(crate) struct ListenRecord {
    pub time: String,
    pub netns: u32,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub pid: u32,
    pub comm: String,
    pub requested_backlog: i32,
    pub accept_queue_max: u32,
    /// True when `net.core.somaxconn` cut the requested backlog.
    pub clamped: bool,
}

impl ListenRecord {
    pub(crate) fn new(netns: u32, l: &Listener, requested: &Requested, now_ns: i128) -> Self {
        Self {
            time: rfc3339(now_ns),
            netns,
            family: family(l.addr.is_ipv4()),
            local_addr: l.addr.to_string(),
            local_port: l.port,
            pid: requested.owner.pid,
            comm: requested.owner.comm.clone(),
            requested_backlog: requested.backlog,
            accept_queue_max: l.accept_queue_max,
            clamped: backlog::clamp(Some(requested.backlog), l.accept_queue_max, None) == Clamp::Proven,
        }
    }
}

/// One port's totals: at the end (`summary`), or when `--expire` takes it
/// out (`expired`, with the time).
#[derive(Debug, Serialize)]
pub(crate) struct PortRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub netns: u32,
    pub local_port: u16,
    /// Per kind name, kinds with a zero count included.
    pub counts: serde_json::Map<String, serde_json::Value>,
    pub drops: u64,
    pub listener_drop_counter: u64,
    pub connections: usize,
    pub connections_capped: bool,
    pub events: u64,
    /// Per kind name, events over the port's budget: in `counts`, not
    /// sent as events.
    pub suppressed: serde_json::Map<String, serde_json::Value>,
    /// What the owners below share ([`Identity::common`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Identity>,
    /// Each distinct owner of the port's listeners (the last known, once
    /// they are gone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Identity>,
    /// How long accepted connections waited in the accept queue, in ms
    /// (absent before the first accept, or where waits are not measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_wait_ms: Option<WaitSummary>,
    /// Connections accepted after their client had left while they waited
    /// (absent, not zero, where waits are not measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_client_gone: Option<u64>,
    /// Queued connections reset because their listener closed (same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_listener_closed: Option<u64>,
    /// Handshakes completed and connections accepted since qtrace started
    /// (absent where accepts are not traced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepts: Option<u64>,
    /// Each listener socket of the port now (several with SO_REUSEPORT).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerFlowRecord>,
    /// Connections with drops by outcome (`outcome` records), and the
    /// delay the overflow added to those that recovered (absent before
    /// the first outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<std::collections::BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_delay_ms: Option<WaitSummary>,
    /// Outcomes counted in `outcomes` but not written, over the port's
    /// `--max-event-rate` (absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcomes_suppressed: Option<u64>,
}

/// One listener socket's share of its port.
#[derive(Debug, Serialize)]
pub(crate) struct ListenerFlowRecord {
    pub cookie: u64,
    pub arrivals: u64,
    pub accepts: u64,
    pub accept_queue: u32,
    pub accept_queue_max: u32,
    pub drops: u64,
    /// The highest arrivals per second over one poll interval, and the
    /// accepts per second in that interval.
    pub peak_arrivals_per_s: f64,
    pub peak_accepts_per_s: f64,
    /// False for a listener that closed during the run.
    pub open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Identity>,
}

impl From<&ListenerFlow> for ListenerFlowRecord {
    fn from(f: &ListenerFlow) -> Self {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            cookie: f.cookie,
            arrivals: f.arrivals(),
            accepts: f.accepts,
            accept_queue: f.queue,
            accept_queue_max: f.queue_max,
            drops: f.drops,
            peak_arrivals_per_s: round(f.peak.0),
            peak_accepts_per_s: round(f.peak.1),
            open: f.open,
            owner: f.owner.as_deref().cloned(),
        }
    }
}

impl PortRecord {
    pub(crate) fn new(key: &PortKey, st: &PortStats, now_ns: Option<i128>) -> Self {
        let traced = st.accepts_traced;
        Self {
            time: now_ns.map(rfc3339),
            netns: key.netns,
            local_port: key.port,
            counts: st.kinds.iter().map(|(k, n)| (k.name().to_owned(), n.into())).collect(),
            drops: st.drops(),
            listener_drop_counter: st.listener_drops,
            connections: st.connections(),
            connections_capped: st.connections_capped,
            events: st.events,
            suppressed: st.suppressed.iter().map(|(k, n)| (k.name().to_owned(), n.into())).collect(),
            owner: Identity::common(st.owners.iter().map(|o| &**o)),
            owners: st.owners.iter().map(|o| (**o).clone()).collect(),
            accept_wait_ms: st.accept_wait.summary(),
            accepted_client_gone: traced.then_some(st.accept_wait.client_gone),
            reset_listener_closed: traced.then_some(st.accept_wait.listener_closed),
            arrivals: traced.then(|| st.arrivals()),
            accepts: traced.then(|| st.accepts()),
            listeners: if traced { st.listeners.values().map(Into::into).collect() } else { Vec::new() },
            outcomes: st.outcomes.any().then(|| st.outcomes.by_name()),
            overflow_delay_ms: st.outcomes.delay.summary(),
            outcomes_suppressed: (st.outcomes.suppressed > 0).then_some(st.outcomes.suppressed),
        }
    }
}

impl Record<'_> {
    /// One line of NDJSON, newline included.
    pub(crate) fn line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("records are plain data");
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::host::identity::{Runtime, Workload};
    use crate::host::netns::NsListeners;
    use crate::host::procs::Owner;
    use crate::host::runtime::Container;
    use crate::kernel::limits::Limit;
    use crate::model::aggregate::Aggregator;
    use crate::model::ports::PortSet;
    use qtrace_common::{kind, wait, CounterKey, WaitKey};
    use std::net::SocketAddr;

    /// 2026-11-21T00:00:00Z.
    const T0: i128 = 1_795_219_200_000_000_000;
    const NETNS: u32 = 4026531840;

    fn start() -> Start {
        let limits = [
            Limit::SynStageCounted,
            Limit::AckDetailMissing("no tracepoint for tcp_v4_syn_recv_sock".into()),
            Limit::CountedUpperBound,
            Limit::ClosedListenersMissing("inet_csk_listen_stop not found".into()),
            Limit::ListenCallsMissing("__sys_listen not found".into()),
        ];
        Start {
            tier: Some(Tier::Tracepoint),
            refused: vec![
                Refusal { tier: Tier::Fentry, reason: "no BPF trampoline on this kernel".into() },
                Refusal { tier: Tier::Kprobe, reason: "kprobe tcp_conn_request: not found".into() },
            ],
            limits: limits.iter().map(LimitRecord::from).collect(),
            namespaces: 3,
            unreachable_namespaces: vec![Unreachable { netns: 4026532999, reason: "setns: Operation not permitted".into() }],
            metrics_addr: Some("127.0.0.1:9464".into()),
            metrics_url: Some("http://127.0.0.1:9464/metrics".into()),
            max_event_rate: Some(5000),
            ..Start::new("6.8.0-test".into(), true, true, T0)
        }
    }

    fn events() -> [Decoded; 2] {
        let v4 = Decoded {
            time_ns: T0 + 1_000_000_123,
            hook: "tracepoint:skb:kfree_skb",
            accept_queue: 129,
            accept_queue_max: 128,
            syn_queue: 3,
            ..Decoded::example(Kind::AckOverflow, NETNS, "127.0.0.1:8080", "127.0.0.2:40000")
        };
        let v6 = Decoded {
            time_ns: T0 + 2_000_000_000,
            kind: Kind::SynQueueFull,
            hook: "fexit:tcp_conn_request",
            local: "[2001:db8::1]:443".parse().unwrap(),
            remote: "[2001:db8::2]:51000".parse().unwrap(),
            accept_queue: 0,
            syn_queue: 256,
            ..v4.clone()
        };
        [v4, v6]
    }

    /// A server in a systemd unit, and the same program in a Kubernetes pod
    /// whose user qtrace could not name.
    fn owners() -> [Identity; 2] {
        let unit = Identity {
            pid: Some(42),
            comm: Some("slowsrv".into()),
            exe: Some("/usr/local/bin/slowsrv".into()),
            uid: Some(33),
            user: Some("www-data".into()),
            cgroup: Some("/system.slice/slowsrv.service".into()),
            workload: Workload { unit: Some("slowsrv.service".into()), slice: Some("system.slice".into()), ..Workload::default() },
            container: Container::default(),
            netns_name: Some("shop".into()),
            unknown: None,
            start: Some(7),
        };
        let pod = Identity {
            pid: Some(4242),
            uid: Some(1000),
            cgroup: Some(format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1f9c3e_5d2a_4f0e_9c1b_2a3d4e5f6a7b.slice/cri-containerd-{}.scope", "ab".repeat(32))),
            workload: Workload {
                unit: None,
                slice: Some("kubepods-besteffort-pod6b1f9c3e_5d2a_4f0e_9c1b_2a3d4e5f6a7b.slice".into()),
                container_runtime: Some(Runtime::Containerd),
                container_id: Some("ab".repeat(32)),
                pod_uid: Some("6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b".into()),
            },
            container: Container {
                container_name: Some("slowsrv".into()),
                image: Some("registry.example/slowsrv:1.4".into()),
                pod_name: Some("slowsrv-6d5f8".into()),
                pod_namespace: Some("shop".into()),
            },
            unknown: Some("user: the process is in another user namespace".into()),
            user: None,
            ..unit.clone()
        };
        [unit, pod]
    }

    fn listener(port: u16, cookie: u64, q: (u32, u32), drops: u32) -> Listener {
        Listener { cookie, ..Listener::example(port, q, drops) }
    }

    fn snap(ls: Vec<Listener>) -> Vec<NsListeners> {
        vec![NsListeners { netns: NETNS, listeners: ls }]
    }

    /// 8080 overflows (accept queue, ACK stage, cookies, and drops only
    /// its drop counter saw), then closes and expires; 9090 fills its SYN
    /// queue and stays open. Returns the aggregation, the counted drops it
    /// reported and 8080's expired totals.
    fn aggregation() -> (Aggregator, CountedDelta, (PortKey, PortStats)) {
        let mut agg = Aggregator::new(None, PortSet::default());
        agg.set_accepts_traced(true);
        agg.on_listeners(&snap(vec![listener(8080, 1, (0, 128), 0), listener(9090, 2, (0, 64), 0)]));
        let key = |port, kind| CounterKey { netns: NETNS, port, kind, _pad: 0 };
        agg.on_counters([
            (key(8080, kind::ACCEPT_QUEUE_FULL), 5),
            (key(8080, kind::ACK_OVERFLOW), 3),
            (key(8080, kind::SYNCOOKIE_SENT), 2),
            (key(9090, kind::SYN_QUEUE_FULL), 7),
        ]);
        // Two of 8080's SYN drops were over its event budget.
        agg.on_suppressed([(key(8080, kind::ACCEPT_QUEUE_FULL), 2)]);
        // 9090 accepted three connections after 1, 2 and 300 ms, one of
        // them after its client had left, and reset one as it closed.
        let slot = |slot| WaitKey { netns: NETNS, port: 9090, slot, _pad: 0 };
        agg.on_accept_waits([
            (slot(wait::bucket(1_000_000)), 1),
            (slot(wait::bucket(2_000_000)), 1),
            (slot(wait::bucket(300_000_000)), 1),
            (slot(wait::SUM_NS), 303_000_000),
            (slot(wait::MAX_NS), 300_000_000),
            (slot(wait::CLIENT_GONE), 1),
            (slot(wait::LISTENER_CLOSED), 1),
        ]);
        let [ev, _] = events();
        for remote_port in [40000, 40001, 40001] {
            agg.on_event(&Decoded { remote: SocketAddr::new(ev.remote.ip(), remote_port), ..ev.clone() });
        }
        // 5 + 2 × 3 hooked, and 4 more only the counter saw.
        let open = || snap(vec![listener(8080, 1, (128, 128), 15), listener(9090, 2, (0, 64), 7)]);
        agg.on_listeners(&open());
        // 8080: an SO_REUSEPORT pair of two owners; 9090: one.
        let [unit, pod] = owners().map(std::sync::Arc::new);
        let port = |port| PortKey { netns: NETNS, port };
        agg.on_owners([(port(8080), vec![unit.clone(), pod]), (port(9090), vec![unit])].into());
        let counted = agg.on_listeners(&open()).pop().expect("8080's counted drops");
        agg.on_listeners(&snap(vec![listener(9090, 2, (0, 64), 7)]));
        agg.tick(30.0);
        let expired = agg.expire(30.0).pop().expect("8080 expired");
        (agg, counted, expired)
    }

    /// The schema contract of `watch --json`: one line per record type
    /// (two events: IPv4 with its owner and IPv6 without), every field
    /// present; an owner shared by two (8080) and one alone (9090).
    #[test]
    fn every_record_type() {
        let start = start();
        let [v4, v6] = events();
        let [unit, _] = owners();
        // An event names its owner (`Identity::naming`); the rest is in the summary.
        let unit = unit.naming();
        let (agg, counted, (gone, gone_stats)) = aggregation();
        let open = PortKey { netns: NETNS, port: 9090 };
        let settings =
            Settings { somaxconn: Some(4096), tcp_max_syn_backlog: Some(512), tcp_syncookies: Some(1), tcp_abort_on_overflow: Some(0) };
        let requested = Requested { backlog: 4096, owner: Owner { pid: 42, comm: "slowsrv".into() } };
        let losses = Losses {
            ringbuf_full: 11,
            counter_map_full: 1,
            read_failed: 2,
            entry_missing: 3,
            undecodable: 4,
            suppressed: 5,
            suppressed_map_full: 6,
            queued_map_full: 7,
            wait_map_full: 8,
            accept_unseen: 9,
            listener_accepts_lost: 10,
            outcomes_lost: 12,
        };
        let outcome = crate::model::outcome::Outcome {
            time: rfc3339(T0 + 8_000_000_000),
            netns: NETNS,
            family: "ipv4",
            local_addr: "10.0.0.1".into(),
            local_port: 8080,
            remote_addr: "10.0.0.2".into(),
            remote_port: 40000,
            outcome: crate::model::outcome::Fate::Recovered,
            syn_drops: 2,
            ack_drops: 0,
            kinds: vec![Kind::AcceptQueueFull],
            delay_ms: 3001.25,
        };
        let records = [
            Record::Start(&start),
            Record::Event(EventRecord::new(&v4, Some(&unit))),
            Record::Event((&v6).into()),
            Record::Settings(SettingsRecord::new(NETNS, settings, T0 + 3_000_000_000)),
            Record::Counted(CountedRecord::new(&counted, Some(&gone_stats), T0 + 4_000_000_000)),
            Record::Lost(LostRecord { time: rfc3339(T0 + 5_000_000_000), count: 7, total: 11 }),
            Record::Listen(ListenRecord::new(NETNS, &listener(8080, 1, (0, 128), 0), &requested, T0 + 6_000_000_000)),
            Record::Expired(PortRecord::new(&gone, &gone_stats, Some(T0 + 7_000_000_000))),
            Record::Summary(PortRecord::new(&open, &agg.ports()[&open], None)),
            Record::Losses(losses),
            Record::Outcome(&outcome),
        ];
        let lines: String = records.iter().map(Record::line).collect();
        insta::assert_snapshot!("every_record_type", lines);
    }
}
