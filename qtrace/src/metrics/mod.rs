//! Prometheus metrics: a snapshot of the aggregation taken at each poll,
//! encoded on each scrape with `prometheus-client` (OpenMetrics), or in the
//! classic text format 0.0.4 for clients that do not ask for OpenMetrics.
//!
//! Series are the tracked ports: every watched listener's port, plus ports
//! that dropped while their listener was gone, until `--expire` takes them
//! out. Label cardinality therefore follows the listeners that exist. Who
//! owns a port is one info series per distinct owner, to join on
//! `netns, port`, rather than more labels on every series; only the
//! Kubernetes pod and namespace, which a port's network namespace already
//! determines, label the per-port series too (see [`port_labels`]).

pub(crate) mod access;
mod basic_auth;
pub(crate) mod server;
mod tls;
pub mod web_config;

pub use access::WebConfigFile;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::model::outcome::{Fate, Outcomes};
use crate::host::identity::Identity;
use crate::model::accept_wait::AcceptWait;
use crate::model::aggregate::{Aggregator, Expired, Losses, PortStats};
use crate::model::counts::Counts;

/// One tracked port, as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortRow {
    pub netns: u32,
    pub port: u16,
    pub kinds: Counts,
    /// Per kind: events over the port's budget, not sent.
    pub suppressed: Counts,
    pub drops: u64,
    pub listener_drops: u64,
    /// Accept queue now and its bound, while a listener exists.
    pub accept_queue: Option<(u32, u32)>,
    /// The distinct owners of its listeners (the last known once gone).
    pub owners: Vec<Arc<Identity>>,
    /// What became of its connections that had drops.
    pub outcomes: Outcomes,
}

/// What a scrape reports, as of the latest poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub tier: String,
    pub ports: Vec<PortRow>,
    pub losses: Losses,
    pub expired: Expired,
    pub namespaces: usize,
    /// Whether a poll has happened yet (before it, only the info metrics).
    pub polled: bool,
    /// The accept-queue waits of the ports in `ports` that have measured
    /// any, by `(netns, port)`. Beside `ports` rather than in each
    /// [`PortRow`], which the deploy suite builds field by field.
    pub accept_waits: BTreeMap<(u32, u16), AcceptWait>,
    /// Arrivals and accepts of the ports in `ports`, where accepts are
    /// traced, by `(netns, port)`.
    pub flows: BTreeMap<(u32, u16), PortFlow>,
}

/// A port's arrivals and accepts, and its open listeners' shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortFlow {
    pub arrivals: u64,
    pub accepts: u64,
    pub listeners: Vec<ListenerShare>,
}

/// One open listener's share of its port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerShare {
    /// Socket inode (`ss -e` ino:).
    pub inode: u32,
    pub pid: Option<u32>,
    pub arrivals: u64,
    pub accepts: u64,
    pub accept_queue: u32,
}

impl PortFlow {
    fn of(st: &PortStats) -> Self {
        let listeners = st
            .listeners
            .values()
            .filter(|l| l.open)
            .map(|l| ListenerShare {
                inode: l.inode,
                pid: l.owner.as_ref().and_then(|o| o.pid),
                arrivals: l.arrivals(),
                accepts: l.accepts,
                accept_queue: l.queue,
            })
            .collect();
        Self { arrivals: st.arrivals(), accepts: st.accepts(), listeners }
    }
}

impl Snapshot {
    pub fn from_aggregator(agg: &Aggregator, tier: &str, namespaces: usize) -> Self {
        let ports = agg
            .ports()
            .iter()
            .map(|(k, st)| PortRow {
                netns: k.netns,
                port: k.port,
                kinds: st.kinds,
                suppressed: st.suppressed,
                drops: st.drops(),
                listener_drops: st.listener_drops,
                accept_queue: st.accept_queue,
                owners: st.owners.clone(),
                outcomes: st.outcomes.clone(),
            })
            .collect();
        let accept_waits = agg
            .ports()
            .iter()
            .filter(|(_, st)| st.accept_wait.is_active())
            .map(|(k, st)| ((k.netns, k.port), st.accept_wait.clone()))
            .collect();
        let flows = agg.ports().iter().filter(|(_, st)| st.accepts_traced).map(|(k, st)| ((k.netns, k.port), PortFlow::of(st))).collect();
        Self { tier: tier.to_owned(), ports, losses: agg.losses, expired: agg.expired, namespaces, polled: true, accept_waits, flows }
    }
}

/// The snapshot the poll loop writes and the HTTP server reads.
pub type Shared = Arc<Mutex<Snapshot>>;

#[derive(Debug)]
struct SnapshotCollector(Shared);

type Labels = Vec<(&'static str, String)>;

/// The labels that say which port: `netns` and `port`.
fn port_key(r: &PortRow) -> Labels {
    vec![("netns", r.netns.to_string()), ("port", r.port.to_string())]
}

/// A port's series' labels: [`port_key`], and the Kubernetes `pod` and
/// `namespace` its listeners' owners all name. A pod has a network
/// namespace of its own, so they are a function of `netns` (in the host's
/// namespace, several pods with the host network each have their own
/// port): they never make a port two series at once. Only when all owners
/// agree, so a port of listeners of different pods, or of one whose owner
/// is unknown, has neither; and both or neither (two pods of one
/// namespace share only the namespace, pods of one name in two namespaces
/// only the name: neither is a pod).
fn port_labels(r: &PortRow) -> Labels {
    let mut labels = port_key(r);
    if let Some(common) = Identity::common(r.owners.iter().map(|o| &**o)) {
        if let (Some(pod), Some(namespace)) = (common.container.pod_name, common.container.pod_namespace) {
            labels.extend([("pod", pod), ("namespace", namespace)]);
        }
    }
    labels
}

/// Per port and kind, the counts `of` gives, only kinds that happened.
fn by_kind<'a>(rows: &'a [PortRow], of: impl Fn(&PortRow) -> &Counts + 'a) -> impl Iterator<Item = (Labels, ConstCounter<u64>)> + 'a {
    rows.iter().flat_map(move |r| {
        of(r).iter().filter(|(_, n)| *n > 0).map(move |(k, n)| {
            let mut l = port_labels(r);
            l.push(("kind", k.name().to_owned()));
            (l, counter(n))
        })
    })
}

/// One metric family: a descriptor and its samples.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = enc.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one unlabelled sample.
fn single<M: EncodeMetric>(enc: &mut DescriptorEncoder, name: &str, help: &str, m: M) -> Result<(), std::fmt::Error> {
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

/// The accept-wait histogram's finite `le` bounds: 2^k ns for these k,
/// 16 µs to 69 s. Every one is a bound of the kernel's buckets (four per
/// power of two), so the count below it is exact, not interpolated.
const WAIT_LE_POW2: std::ops::RangeInclusive<u32> = 14..=36;

/// A port's accept-queue waits as a Prometheus histogram, in seconds.
#[derive(Debug)]
struct WaitHistogram {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative: the encoder adds them up), `+Inf` last.
    buckets: Vec<(f64, u64)>,
}

impl WaitHistogram {
    fn of(w: &AcceptWait) -> Self {
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = WAIT_LE_POW2
            .map(|k| {
                let n = w.count_below(1 << k);
                let bucket = ((1u64 << k) as f64 / 1e9, n - below);
                below = n;
                bucket
            })
            .collect();
        buckets.push((f64::INFINITY, w.count() - below));
        Self { sum: w.sum_ns as f64 / 1e9, count: w.count(), buckets }
    }
}

impl EncodeMetric for WaitHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Polls and scrapes share one thread: the lock is never contended.
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).encode(enc.encode_descriptor(
            "qtrace_build",
            "qtrace's version.",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?)?;
        Info::new(vec![("tier", s.tier.clone())]).encode(enc.encode_descriptor(
            "qtrace_hook_tier",
            "The hook tier qtrace attached (fentry, tracepoint): what it can see per connection.",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?)?;
        if let Some(rss) = resident_bytes() {
            single(&mut enc, "process_resident_memory_bytes", "Resident memory size in bytes.", gauge(rss))?;
        }
        if !s.polled {
            return Ok(());
        }
        encode_ports(&mut enc, &s.ports)?;
        encode_accept_waits(&mut enc, &s.ports, &s.accept_waits)?;
        encode_outcomes(&mut enc, &s.ports)?;
        encode_flows(&mut enc, &s.ports, &s.flows)?;
        encode_owners(&mut enc, &s.ports)?;
        encode_totals(&mut enc, &s)
    }
}

/// Per-port series: drops, overflows by kind, listener drops, queues.
fn encode_ports(enc: &mut DescriptorEncoder, p: &[PortRow]) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "qtrace_drops",
        "Connection attempts the listen queues dropped or reset (all kinds but syncookie_sent and listener_discard); equals the namespace's ListenDrops share of this port.",
        p.iter().map(|r| (port_labels(r), counter(r.drops))),
    )?;
    family(
        enc,
        "qtrace_overflows",
        "Listen-queue events by kind (see docs/events.md); only kinds that happened on the port.",
        by_kind(p, |r| &r.kinds),
    )?;
    family(
        enc,
        "qtrace_listener_drops",
        "Growth of the port's listeners' own drop counter (sk_drops, ss -ltm d<N>) since qtrace started; closed listeners keep their share.",
        p.iter().map(|r| (port_labels(r), counter(r.listener_drops))),
    )?;
    let open = || p.iter().filter_map(|r| r.accept_queue.map(|q| (r, q)));
    family(
        enc,
        "qtrace_accept_queue",
        "Connections waiting in the port's accept queues now (summed over SO_REUSEPORT listeners).",
        open().map(|(r, q)| (port_labels(r), gauge(q.0.into()))),
    )?;
    family(
        enc,
        "qtrace_accept_queue_max",
        "Bound of the port's accept queues: min(listen backlog, net.core.somaxconn), summed over its listeners.",
        open().map(|(r, q)| (port_labels(r), gauge(q.1.into()))),
    )?;
    Ok(())
}

/// Per port: how long accepted connections waited in the accept queue
/// (only ports that accepted some), and the connections served for
/// nobody (every port, from 0, so that `increase()` sees the first).
fn encode_accept_waits(
    enc: &mut DescriptorEncoder,
    p: &[PortRow],
    waits: &BTreeMap<(u32, u16), AcceptWait>,
) -> Result<(), std::fmt::Error> {
    let waits_of = |r: &PortRow| waits.get(&(r.netns, r.port));
    family(
        enc,
        "qtrace_accept_wait_seconds",
        "How long accepted connections waited in the port's accept queues, from the handshake's completion to accept(); each bucket counts the waits shorter than its le, exactly.",
        p.iter().filter_map(|r| waits_of(r).filter(|w| w.count() > 0).map(|w| (port_labels(r), WaitHistogram::of(w)))),
    )?;
    family(
        enc,
        "qtrace_accepted_client_gone",
        "Connections accepted after their client had closed or reset them while they waited in the accept queue: work for nobody.",
        p.iter().map(|r| (port_labels(r), counter(waits_of(r).map_or(0, |w| w.client_gone)))),
    )?;
    family(
        enc,
        "qtrace_reset_listener_closed",
        "Connections reset while in the accept queue because their listener closed: never accepted.",
        p.iter().map(|r| (port_labels(r), counter(waits_of(r).map_or(0, |w| w.listener_closed)))),
    )
}

/// Per port and outcome, the connections that had drops (only outcomes
/// that happened), and the delay the overflow added to those that
/// recovered.
fn encode_outcomes(enc: &mut DescriptorEncoder, p: &[PortRow]) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "qtrace_connection_outcomes",
        "Connections that had a handshake packet dropped, by what became of them: recovered (a later copy got through), reset (tcp_abort_on_overflow), abandoned (the client stopped retrying), pending (undecided at exit). See docs/events.md.",
        p.iter().flat_map(|r| {
            Fate::ALL.into_iter().filter(|f| r.outcomes.count(*f) > 0).map(move |f| {
                let mut l = port_labels(r);
                l.push(("outcome", f.name().to_owned()));
                (l, counter(r.outcomes.count(f)))
            })
        }),
    )?;
    family(
        enc,
        "qtrace_overflow_delay_seconds",
        "Time the overflow added to the handshake of connections that recovered: from their first dropped packet to the handshake's end.",
        p.iter().filter(|r| r.outcomes.delay.count() > 0).map(|r| (port_labels(r), WaitHistogram::of(&r.outcomes.delay))),
    )
}

/// Per port, handshakes completed and connections accepted; per open
/// listener socket, the same and its queue (with `SO_REUSEPORT` each has
/// its own queue, and one stalled worker shows here).
fn encode_flows(enc: &mut DescriptorEncoder, p: &[PortRow], flows: &BTreeMap<(u32, u16), PortFlow>) -> Result<(), std::fmt::Error> {
    let traced = || p.iter().filter_map(|r| flows.get(&(r.netns, r.port)).map(|f| (r, f)));
    family(
        enc,
        "qtrace_arrivals",
        "Handshakes completed on the port since qtrace started (accepted, still queued, or reset in the queue by a listener's close).",
        traced().map(|(r, f)| (port_labels(r), counter(f.arrivals))),
    )?;
    family(
        enc,
        "qtrace_accepts",
        "Connections accept() returned on the port since qtrace started.",
        traced().map(|(r, f)| (port_labels(r), counter(f.accepts))),
    )?;
    let shares = || {
        traced().flat_map(|(r, f)| {
            f.listeners.iter().map(move |l| {
                let mut labels = port_labels(r);
                labels.push(("listener", l.inode.to_string()));
                labels.extend(l.pid.map(|pid| ("pid", pid.to_string())));
                (labels, l)
            })
        })
    };
    family(
        enc,
        "qtrace_listener_arrivals",
        "Handshakes completed on one listener socket (label listener: its inode, as ss -e shows it) since qtrace first saw it.",
        shares().map(|(labels, l)| (labels, counter(l.arrivals))),
    )?;
    family(
        enc,
        "qtrace_listener_accepts",
        "Connections accept() returned from one listener socket since qtrace first saw it.",
        shares().map(|(labels, l)| (labels, counter(l.accepts))),
    )?;
    family(
        enc,
        "qtrace_listener_accept_queue",
        "Connections waiting in one listener socket's accept queue now.",
        shares().map(|(labels, l)| (labels, gauge(l.accept_queue.into()))),
    )
}

/// `qtrace_listener_info`: one series per distinct owner of a port's
/// listeners that has a process, labelled with what is known of it (an
/// unknown value is no label).
fn encode_owners(enc: &mut DescriptorEncoder, p: &[PortRow]) -> Result<(), std::fmt::Error> {
    let mut series = BTreeSet::new();
    for r in p {
        for o in r.owners.iter().filter(|o| o.pid.is_some()) {
            let (w, c) = (&o.workload, &o.container);
            let known = [
                ("pid", o.pid.map(|p| p.to_string())),
                ("comm", o.comm.clone()),
                ("unit", w.unit.clone()),
                ("container", c.container_name.clone()),
                ("container_id", w.container_id.clone()),
                ("image", c.image.clone()),
                ("pod", c.pod_name.clone()),
                ("namespace", c.pod_namespace.clone()),
                ("pod_uid", w.pod_uid.clone()),
            ];
            let mut labels = port_key(r);
            labels.extend(known.into_iter().filter_map(|(name, v)| Some((name, v?))));
            series.insert(labels);
        }
    }
    // The labels go in the info itself: with them in the family instead,
    // the encoder writes `{,` before an info that has no labels of its own.
    family(
        enc,
        "qtrace_listener",
        "Who owns a port's listeners, one series per distinct process (value 1): join on netns and port. Unknown labels are left out.",
        series.into_iter().map(|labels| (Labels::new(), Info::new(labels))),
    )
}

/// What was lost, suppressed or expired, and what is tracked.
fn encode_totals(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    let p = &s.ports;
    single(
        enc,
        "qtrace_events_lost",
        "Per-connection events the ring buffer had no room for (totals stay exact: they come from in-kernel counters).",
        counter(s.losses.ringbuf_full),
    )?;
    family(
        enc,
        "qtrace_events_suppressed",
        "Per-connection events over the port's --max-event-rate budget, counted in qtrace_overflows but not sent; only kinds that had some.",
        by_kind(p, |r| &r.suppressed),
    )?;
    let l = &s.losses;
    family(
        enc,
        "qtrace_losses",
        "What could not be counted or attributed, by reason (counter_map_full: drops not in the totals; queued_map_full, wait_map_full, accept_unseen: accept-queue waits not measured).",
        [
            ("counter_map_full", l.counter_map_full),
            ("read_failed", l.read_failed),
            ("entry_missing", l.entry_missing),
            ("undecodable", l.undecodable),
            ("suppressed_map_full", l.suppressed_map_full),
            ("queued_map_full", l.queued_map_full),
            ("wait_map_full", l.wait_map_full),
            ("accept_unseen", l.accept_unseen),
            ("listener_accepts_lost", l.listener_accepts_lost),
            ("outcomes_lost", l.outcomes_lost),
        ]
        .into_iter()
        .map(|(why, v)| (vec![("reason", why.to_owned())], counter(v))),
    )?;
    single(
        enc,
        "qtrace_tracked_ports",
        "Ports with series now (each watched listener's port, and ports whose listener is gone but not yet expired).",
        gauge(p.len() as i64),
    )?;
    single(enc, "qtrace_expired_ports", "Ports taken out after their listeners had been gone for --expire.", counter(s.expired.ports))?;
    single(enc, "qtrace_expired_drops", "Drops of the expired ports, at expiry.", counter(s.expired.drops))?;
    single(enc, "qtrace_watched_namespaces", "Network namespaces whose listeners qtrace reads.", gauge(s.namespaces as i64))?;
    Ok(())
}

/// This process's resident set, from `/proc/self/statm`.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page)
}

/// A registry whose one collector reads `shared` on each scrape.
pub fn registry(shared: Shared) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(SnapshotCollector(shared)));
    r
}

/// The OpenMetrics text of `registry`.
pub fn openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Rewrites OpenMetrics text as the classic Prometheus text format 0.0.4:
/// a counter family `x` is announced as `x_total` (its samples' name), an
/// info family `x` as gauge `x_info`, and `# EOF` / `# UNIT` go.
pub fn to_classic(om: &str) -> String {
    let mut renamed: std::collections::HashMap<&str, (String, &str)> = std::collections::HashMap::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = rest.split_once(' ') {
                match ty {
                    "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                    "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                    _ => None,
                };
            }
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header.and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail))) {
            Some((p, name, tail)) if renamed.contains_key(name) => {
                let (new, ty) = &renamed[name];
                let tail = if p == "# TYPE " { ty } else { tail };
                out.push_str(&format!("{p}{new} {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::{Runtime, Workload};
    use crate::host::runtime::Container;
    use crate::model::event::Kind;
    use qtrace_common::wait;

    const CONTAINER: &str = "4c01db0b339c3b5f2e4b2d6c1a9b6f1f8b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0";

    fn nginx(pid: u32) -> Identity {
        let workload = Workload { unit: Some("nginx.service".into()), slice: Some("system.slice".into()), ..Workload::default() };
        Identity { pid: Some(pid), comm: Some("nginx".into()), workload, ..Identity::default() }
    }

    fn pod(pid: u32, exe: Option<&str>) -> Identity {
        let workload = Workload {
            container_runtime: Some(Runtime::Containerd),
            container_id: Some(CONTAINER.into()),
            pod_uid: Some("6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b".into()),
            ..Workload::default()
        };
        let container = Container {
            container_name: Some("app".into()),
            image: Some("registry.example/app:2".into()),
            pod_name: Some("web-0".into()),
            pod_namespace: Some("shop".into()),
        };
        Identity { pid: Some(pid), comm: Some("srv".into()), exe: exe.map(Into::into), workload, container, ..Identity::default() }
    }

    fn outcomes(of: &[(Fate, f64)]) -> Outcomes {
        let mut out = Outcomes::default();
        for &(fate, delay_ms) in of {
            let mut o = crate::model::outcome::tests::example();
            (o.outcome, o.delay_ms) = (fate, delay_ms);
            out.add(&o);
        }
        out
    }

    /// Connections with drops by outcome, only those that happened, and
    /// the recovered ones' delays as a histogram in seconds.
    #[test]
    fn outcomes_by_port_and_their_delays() {
        let text = openmetrics(&registry(shared()));
        let series = |name: &str, extra: &str| format!("{name}{{netns=\"4026531840\",port=\"8080\"{extra}}}");
        assert_eq!(sample(&text, &series("qtrace_connection_outcomes_total", ",outcome=\"recovered\"")), Some(2.0));
        assert_eq!(sample(&text, &series("qtrace_connection_outcomes_total", ",outcome=\"abandoned\"")), Some(1.0));
        assert!(!text.contains("outcome=\"reset\""), "outcomes that never happened have no series\n{text}");
        assert_eq!(sample(&text, &series("qtrace_overflow_delay_seconds_count", "")), Some(2.0));
        assert_eq!(sample(&text, &series("qtrace_overflow_delay_seconds_sum", "")), Some(4.1));
        // 1 s and 3.1 s: one below 2^31 ns (2.15 s), both below 2^32 ns.
        let bucket = |le: &str| sample(&text, &format!("qtrace_overflow_delay_seconds_bucket{{le=\"{le}\",netns=\"4026531840\",port=\"8080\"}}"));
        assert_eq!(bucket("2.147483648"), Some(1.0), "{text}");
        assert_eq!(bucket("4.294967296"), Some(2.0));
        assert!(!text.contains("qtrace_overflow_delay_seconds_count{netns=\"4026532999\""), "no histogram without recoveries");
    }

    fn shared() -> Shared {
        let mut kinds = Counts::default();
        kinds[Kind::AckOverflow] = 3;
        kinds[Kind::SyncookieSent] = 2;
        let mut suppressed = Counts::default();
        suppressed[Kind::AckOverflow] = 1;
        let rows = vec![
            PortRow {
                netns: 4026531840,
                port: 8080,
                kinds,
                suppressed,
                drops: 3,
                listener_drops: 6,
                accept_queue: Some((5, 4)),
                owners: vec![Arc::new(nginx(41)), Arc::new(nginx(42))],
                outcomes: outcomes(&[(Fate::Recovered, 1000.0), (Fate::Recovered, 3100.0), (Fate::Abandoned, 3000.0)]),
            },
            // Gone, not yet expired: counters but no queue gauges; its last
            // owner, in a container, without its exe (an unknown field
            // makes no second series).
            PortRow {
                netns: 4026531840,
                port: 9090,
                drops: 0,
                owners: vec![Arc::new(pod(7, Some("/bin/srv"))), Arc::new(pod(7, None)), Arc::new(Identity::unknown("no process"))],
                ..Default::default()
            },
            // A pod's two workers: every per-port series names the pod.
            PortRow {
                netns: 4026532999,
                port: 80,
                kinds,
                drops: 3,
                listener_drops: 3,
                accept_queue: Some((0, 128)),
                owners: vec![Arc::new(pod(8, None)), Arc::new(pod(9, None))],
                ..Default::default()
            },
        ];
        Arc::new(Mutex::new(Snapshot {
            tier: "tracepoint".into(),
            ports: rows,
            losses: Losses { ringbuf_full: 7, queued_map_full: 1, wait_map_full: 2, accept_unseen: 3, ..Default::default() },
            expired: Expired { ports: 1, drops: 9, suppressed: 0 },
            namespaces: 1,
            polled: true,
            accept_waits: BTreeMap::from([
                ((4026531840, 8080), waited(&[(50_000, 3), (3_000_000, 6), (1_500_000_000, 1)], 2, 0)),
                // Closed with connections queued, before it accepted any.
                ((4026531840, 9090), waited(&[], 0, 4)),
                ((4026532999, 80), waited(&[(1_000_000, 1)], 0, 0)),
            ]),
            // 8080: an SO_REUSEPORT pair, one of them stalled.
            flows: BTreeMap::from([(
                (4026531840, 8080),
                PortFlow {
                    arrivals: 20,
                    accepts: 15,
                    listeners: vec![
                        ListenerShare { inode: 501, pid: Some(7), arrivals: 15, accepts: 15, accept_queue: 0 },
                        ListenerShare { inode: 502, pid: None, arrivals: 5, accepts: 0, accept_queue: 5 },
                    ],
                },
            )]),
        }))
    }

    /// A port's waits as the kernel's slots give them: `n` accepts after
    /// `ns` for each `(ns, n)` (each in a bucket of its own), and the
    /// connections served for nobody.
    fn waited(waits: &[(u64, u64)], client_gone: u64, listener_closed: u64) -> AcceptWait {
        let mut w = AcceptWait::default();
        for &(ns, n) in waits {
            w.set(wait::bucket(ns), n);
        }
        w.set(wait::SUM_NS, waits.iter().map(|(ns, n)| ns * n).sum());
        w.set(wait::MAX_NS, waits.iter().map(|(ns, _)| *ns).max().unwrap_or(0));
        w.set(wait::CLIENT_GONE, client_gone);
        w.set(wait::LISTENER_CLOSED, listener_closed);
        w
    }

    #[test]
    fn openmetrics_has_every_family_with_port_labels() {
        let text = openmetrics(&registry(shared()));
        for want in [
            "qtrace_build_info{version=\"",
            "qtrace_hook_tier_info{tier=\"tracepoint\"} 1",
            "qtrace_drops_total{netns=\"4026531840\",port=\"8080\"} 3",
            "qtrace_drops_total{netns=\"4026531840\",port=\"9090\"} 0",
            "qtrace_arrivals_total{netns=\"4026531840\",port=\"8080\"} 20",
            "qtrace_accepts_total{netns=\"4026531840\",port=\"8080\"} 15",
            "qtrace_listener_accepts_total{netns=\"4026531840\",port=\"8080\",listener=\"501\",pid=\"7\"} 15",
            "qtrace_listener_arrivals_total{netns=\"4026531840\",port=\"8080\",listener=\"502\"} 5",
            "qtrace_listener_accept_queue{netns=\"4026531840\",port=\"8080\",listener=\"502\"} 5",
            "qtrace_overflows_total{netns=\"4026531840\",port=\"8080\",kind=\"ack_overflow\"} 3",
            "qtrace_overflows_total{netns=\"4026531840\",port=\"8080\",kind=\"syncookie_sent\"} 2",
            "qtrace_listener_drops_total{netns=\"4026531840\",port=\"8080\"} 6",
            "qtrace_accept_queue{netns=\"4026531840\",port=\"8080\"} 5",
            "qtrace_accept_queue_max{netns=\"4026531840\",port=\"8080\"} 4",
            "qtrace_events_lost_total 7",
            "qtrace_events_suppressed_total{netns=\"4026531840\",port=\"8080\",kind=\"ack_overflow\"} 1",
            "qtrace_losses_total{reason=\"counter_map_full\"} 0",
            "qtrace_tracked_ports 3",
            "# TYPE qtrace_listener info",
            "qtrace_listener_info{netns=\"4026531840\",port=\"8080\",pid=\"41\",comm=\"nginx\",unit=\"nginx.service\"} 1",
            "qtrace_listener_info{netns=\"4026531840\",port=\"8080\",pid=\"42\",comm=\"nginx\",unit=\"nginx.service\"} 1",
            "qtrace_expired_ports_total 1",
            "qtrace_expired_drops_total 9",
            "# TYPE qtrace_drops counter",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("port=\"9090\",kind"), "kinds that never happened have no series");
        let owner = |port: u16, pid: u32| {
            format!(
                "qtrace_listener_info{{netns=\"{}\",port=\"{port}\",pid=\"{pid}\",comm=\"srv\",container=\"app\",container_id=\"{CONTAINER}\",image=\"registry.example/app:2\",pod=\"web-0\",namespace=\"shop\",pod_uid=\"6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b\"}} 1",
                if port == 80 { 4026532999u32 } else { 4026531840 }
            )
        };
        assert_eq!(text.matches(&owner(9090, 7)).count(), 1, "one series for the gone port's last owner, none for the unknown one\n{text}");
        assert_eq!(text.matches("qtrace_listener_info{").count(), 5);
        // The pod's port: its labels on every per-port series, one series
        // each still; the info series keep theirs without repeating them.
        assert!(text.contains(&owner(80, 8)) && text.contains(&owner(80, 9)), "{text}");
        for series in [
            "qtrace_drops_total{netns=\"4026532999\",port=\"80\",pod=\"web-0\",namespace=\"shop\"} 3",
            "qtrace_listener_drops_total{netns=\"4026532999\",port=\"80\",pod=\"web-0\",namespace=\"shop\"} 3",
            "qtrace_overflows_total{netns=\"4026532999\",port=\"80\",pod=\"web-0\",namespace=\"shop\",kind=\"ack_overflow\"} 3",
            "qtrace_accept_queue_max{netns=\"4026532999\",port=\"80\",pod=\"web-0\",namespace=\"shop\"} 128",
        ] {
            assert_eq!(text.matches(series).count(), 1, "{series} in\n{text}");
        }
        assert_eq!(
            text.matches("port=\"80\"").count(),
            2 + 2 + 2 + 2 + 26 + 2,
            "two owners, drops and listener drops, two kinds, two queue gauges, the wait histogram's 24 buckets, sum and count, two served-for-nobody counters"
        );
        // Owners that do not all name the pod (one unknown): no pod label.
        assert!(text.contains("qtrace_drops_total{netns=\"4026531840\",port=\"9090\"} 0"));
        assert!(!text.contains("qtrace_accept_queue{netns=\"4026531840\",port=\"9090\"}"), "no queue gauge without a listener");
    }

    /// A pod's labels go on a port's series only when every owner is that
    /// one pod: two pods of a namespace (host network) share only the
    /// namespace, and pods named alike in two namespaces only the name.
    #[test]
    fn pod_labels_only_for_one_pod() {
        let row = |owners: Vec<Identity>| PortRow {
            netns: 4026531840,
            port: 80,
            kinds: Counts::default(),
            suppressed: Counts::default(),
            drops: 1,
            listener_drops: 1,
            accept_queue: None,
            owners: owners.into_iter().map(Arc::new).collect(),
            outcomes: Outcomes::default(),
        };
        let with = |pid, name: &str, ns: &str| {
            let mut p = pod(pid, None);
            (p.container.pod_name, p.container.pod_namespace) = (Some(name.into()), Some(ns.into()));
            p
        };
        let names = |r: &PortRow| port_labels(r).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(names(&row(vec![with(1, "a", "shop"), with(2, "a", "shop")])), ["netns", "port", "pod", "namespace"]);
        assert_eq!(names(&row(vec![with(1, "a", "shop"), with(2, "b", "shop")])), ["netns", "port"]);
        assert_eq!(names(&row(vec![with(1, "a", "shop"), with(2, "a", "blog")])), ["netns", "port"]);
        assert_eq!(names(&row(vec![with(1, "a", "shop"), nginx(3)])), ["netns", "port"]);
    }

    #[test]
    fn classic_text_names_families_after_their_samples() {
        let classic = to_classic(&openmetrics(&registry(shared())));
        assert!(classic.contains("# TYPE qtrace_drops_total counter\n"));
        assert!(classic.contains("# HELP qtrace_drops_total Connection"));
        assert!(classic.contains("# TYPE qtrace_build_info gauge\n"));
        assert!(classic.contains("# TYPE qtrace_accept_queue gauge\n"));
        assert!(classic.contains("# TYPE qtrace_accept_wait_seconds histogram\n"));
        assert!(!classic.contains("# EOF"));
        // Every sample's name is announced by a TYPE line before it: its
        // own, or a histogram's whose _bucket, _sum or _count it is.
        let mut typed = std::collections::HashMap::new();
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                typed.insert(name.to_owned(), ty.to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
                let histogram = family.is_some_and(|f| typed.get(f).is_some_and(|ty| ty == "histogram"));
                assert!(typed.contains_key(name) || histogram, "{name} has no TYPE line");
            }
        }
    }

    /// The histogram's buckets are cumulative at 2^k ns, in seconds, the
    /// last finite one 2^36 ns, then +Inf; a port that accepted nothing
    /// has none but still has its counters.
    #[test]
    fn accept_waits_are_a_histogram_in_seconds() {
        let text = openmetrics(&registry(shared()));
        let series = |name: &str, le: &str| format!("{name}{{{le}netns=\"4026531840\",port=\"8080\"}}");
        let bucket = |k: u32| sample(&text, &series("qtrace_accept_wait_seconds_bucket", &format!("le=\"{}\",", (1u64 << k) as f64 / 1e9)));
        // 3 waits of 50 µs, 6 of 3 ms, 1 of 1.5 s.
        assert_eq!(bucket(14), Some(0.0), "2^14 ns = 16 µs\n{text}");
        assert_eq!(bucket(15), Some(0.0));
        assert_eq!(bucket(16), Some(3.0), "2^16 ns = 66 µs");
        assert_eq!(bucket(21), Some(3.0), "2^21 ns = 2.1 ms");
        assert_eq!(bucket(22), Some(9.0), "2^22 ns = 4.2 ms");
        assert_eq!(bucket(30), Some(9.0), "2^30 ns = 1.07 s");
        assert_eq!(bucket(31), Some(10.0), "2^31 ns = 2.1 s");
        assert_eq!(bucket(36), Some(10.0), "2^36 ns = 69 s");
        assert_eq!(sample(&text, &series("qtrace_accept_wait_seconds_bucket", "le=\"+Inf\",")), Some(10.0));
        assert_eq!(sample(&text, &series("qtrace_accept_wait_seconds_count", "")), Some(10.0));
        assert_eq!(sample(&text, &series("qtrace_accept_wait_seconds_sum", "")), Some(1.518150));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("qtrace_accept_wait_seconds_bucket{") && l.contains("port=\"8080\"")).count(),
            23 + 1
        );
        // Bounds in plain decimals.
        assert!(text.contains("le=\"0.000016384\"") && text.contains("le=\"68.719476736\""), "{text}");
        assert_eq!(sample(&text, &series("qtrace_accepted_client_gone_total", "")), Some(2.0));
        // 9090 reset four queued connections as it closed, accepted none.
        let closed = |name: &str| format!("{name}{{netns=\"4026531840\",port=\"9090\"}}");
        assert!(!text.lines().any(|l| l.starts_with("qtrace_accept_wait_seconds") && l.contains("port=\"9090\"")), "{text}");
        assert_eq!(sample(&text, &closed("qtrace_reset_listener_closed_total")), Some(4.0));
        assert_eq!(sample(&text, &closed("qtrace_accepted_client_gone_total")), Some(0.0));
        // The pod's port: its labels on the histogram too.
        let pod = "{netns=\"4026532999\",port=\"80\",pod=\"web-0\",namespace=\"shop\"}";
        assert_eq!(sample(&text, &format!("qtrace_accept_wait_seconds_count{pod}")), Some(1.0));
        // The accept-wait losses are reasons like the others.
        for (reason, n) in [("queued_map_full", 1.0), ("wait_map_full", 2.0), ("accept_unseen", 3.0)] {
            assert_eq!(sample(&text, &format!("qtrace_losses_total{{reason=\"{reason}\"}}")), Some(n), "{reason}");
        }
    }

    /// The value of the sample `series` (its name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn before_the_first_poll_only_info_is_shown() {
        let s = Arc::new(Mutex::new(Snapshot { tier: "fentry".into(), ..Default::default() }));
        let text = openmetrics(&registry(s));
        assert!(text.contains("qtrace_hook_tier_info{tier=\"fentry\"} 1"));
        assert!(!text.contains("qtrace_drops"));
    }
}
