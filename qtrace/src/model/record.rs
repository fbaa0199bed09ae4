//! Every NDJSON record qtrace writes, as one serde-tagged type: the `type`
//! field is the variant's name. Field names are a stable schema
//! (docs/events.md); the snapshot tests in `output::ndjson` pin them.

use serde::Serialize;

use crate::host::ns_state::{NetCounters, Settings};
use crate::host::sock_diag::Listener;
use crate::kernel::limits::{LimitRecord, Refusal};
use crate::kernel::probe::Tier;
use crate::model::aggregate::{CountedDelta, Losses, PortKey, PortStats};
use crate::model::backlog::{self, Clamp, Requested};
use crate::model::diagnose::Finding;
use crate::model::event::{rfc3339, Decoded, Kind};

/// One NDJSON line.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record<'a> {
    /// First of every `watch --json` and `doctor --json` run.
    Start(&'a Start),
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
}

impl<'a> From<&'a Decoded> for EventRecord<'a> {
    fn from(ev: &'a Decoded) -> Self {
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
}

impl CountedRecord {
    pub(crate) fn new(d: &CountedDelta, now_ns: i128) -> Self {
        Self {
            time: rfc3339(now_ns),
            kind: Kind::ListenerDropCounted,
            netns: d.key.netns,
            local_port: d.key.port,
            count: d.count,
            total: d.total,
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
}

impl PortRecord {
    pub(crate) fn new(key: &PortKey, st: &PortStats, now_ns: Option<i128>) -> Self {
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
