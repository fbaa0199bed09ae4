//! NDJSON records other than events (`"type": "event"` lives in
//! `event.rs`). Field names are stable; see docs/events.md.

use serde::Serialize;

use crate::host::ns_state::Settings;
use crate::model::aggregate::{CountedDelta, Losses, PortKey, PortStats};
use crate::model::backlog::{self, Clamp};
use crate::model::event::{rfc3339, Kind};
use crate::tracer::ListenSeen;

/// Drops known only from the listener's drop counter (`"type": "counted"`).
#[derive(Serialize)]
pub struct CountedJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub time: String,
    pub kind: &'static str,
    pub netns: u32,
    pub local_port: u16,
    pub count: u64,
    pub total: u64,
}

pub fn counted(d: &CountedDelta, now_ns: i128) -> CountedJson {
    CountedJson {
        ty: "counted",
        time: rfc3339(now_ns),
        kind: Kind::ListenerDropCounted.name(),
        netns: d.key.netns,
        local_port: d.key.port,
        count: d.count,
        total: d.total,
    }
}

/// Events the kernel counted but could not deliver (`"type": "lost"`).
#[derive(Serialize)]
pub struct LostJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub time: String,
    pub count: u64,
    pub total: u64,
}

pub fn lost(count: u64, total: u64, now_ns: i128) -> LostJson {
    LostJson { ty: "lost", time: rfc3339(now_ns), count, total }
}

/// One port's totals when `watch` ends (`"type": "summary"`).
#[derive(Serialize)]
pub struct SummaryJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Only on `expired` records: when the port was taken out.
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

pub fn summary(key: &PortKey, st: &PortStats) -> SummaryJson {
    let counts = Kind::ALL.iter().map(|k| (k.name().to_owned(), st.count(*k).into())).collect();
    SummaryJson {
        ty: "summary",
        time: None,
        netns: key.netns,
        local_port: key.port,
        counts,
        drops: st.drops(),
        listener_drop_counter: st.listener_drops,
        connections: st.connections(),
        connections_capped: st.connections_capped,
        events: st.events,
    }
}

/// A port's final totals when `--expire` takes it out (`"type": "expired"`).
pub fn expired(key: &PortKey, st: &PortStats, now_ns: i128) -> SummaryJson {
    SummaryJson { ty: "expired", time: Some(rfc3339(now_ns)), ..summary(key, st) }
}

/// Totals of what could not be delivered or attributed (`"type": "losses"`).
#[derive(Serialize)]
pub struct LossesJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub ringbuf_full: u64,
    pub counter_map_full: u64,
    pub read_failed: u64,
    pub entry_missing: u64,
    pub undecodable: u64,
}

pub fn losses(l: &Losses) -> LossesJson {
    LossesJson {
        ty: "losses",
        ringbuf_full: l.ringbuf_full,
        counter_map_full: l.counter_map_full,
        read_failed: l.read_failed,
        entry_missing: l.entry_missing,
        undecodable: l.undecodable,
    }
}

/// A namespace's listen-queue settings (`"type": "settings"`), printed when
/// `watch` starts and when it first sees a namespace.
#[derive(Serialize)]
pub struct SettingsJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub time: String,
    pub netns: u32,
    #[serde(flatten)]
    pub settings: Settings,
}

pub fn settings(netns: u32, settings: Settings, now_ns: i128) -> SettingsJson {
    SettingsJson { ty: "settings", time: rfc3339(now_ns), netns, settings }
}

/// A `listen(2)` qtrace saw, with the backlog asked for and the bound the
/// kernel set (`"type": "listen"`).
#[derive(Serialize)]
pub struct ListenJson {
    #[serde(rename = "type")]
    pub ty: &'static str,
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

pub fn listen(seen: &ListenSeen, now_ns: i128) -> ListenJson {
    let l = &seen.listener;
    ListenJson {
        ty: "listen",
        time: rfc3339(now_ns),
        netns: seen.netns,
        family: if l.addr.is_ipv4() { "ipv4" } else { "ipv6" },
        local_addr: l.addr.to_string(),
        local_port: l.port,
        pid: seen.requested.owner.pid,
        comm: seen.requested.owner.comm.clone(),
        requested_backlog: seen.requested.backlog,
        accept_queue_max: l.accept_queue_max,
        clamped: backlog::clamp(Some(seen.requested.backlog), l.accept_queue_max, None) == Clamp::Proven,
    }
}
