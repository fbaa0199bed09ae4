//! The plain-table sink: the per-port table `watch` prints every interval
//! and at exit, with the settings and clamp lines above it.

use std::fmt::Write as _;

use anyhow::Result;

use crate::host::system;
use crate::model::event::{self, Decoded};
use crate::model::record::Start;
use crate::output::writer::Out;
use crate::output::{context, WatchSink};
use crate::tracer::{PollReport, Sink, Tracer};

use crate::model::aggregate::{Aggregator, PortKey, PortStats};
use crate::model::counts::Counts;
use crate::model::event::{rfc3339, Kind};

fn last_event(st: &PortStats) -> String {
    match &st.last {
        Some(ev) => {
            let t = rfc3339(ev.time_ns);
            // HH:MM:SS of the RFC 3339 stamp.
            format!("{} {} from {}", &t[11..19], ev.kind.name(), ev.remote)
        }
        None => "-".into(),
    }
}

/// Characters of the OWNER column; longer names keep their end (a pod's
/// container, a unit's suffix), after an ellipsis.
const OWNER_WIDTH: usize = 28;

/// `name` in at most `width` characters, its end kept (see [`OWNER_WIDTH`]).
pub(crate) fn fit(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_owned();
    }
    let tail: String = name.chars().skip(n + 1 - width).collect();
    format!("…{tail}")
}

/// A wait in at most three figures and a unit: `700ns`, `85us`, `1.5ms`,
/// `340ms`, `2.0s`. The percentiles it shows are read at a bucket's middle,
/// within 12.5% of the truth, so more figures would be noise.
pub(crate) fn duration(ns: u64) -> String {
    let mut v = ns as f64;
    for unit in ["ns", "us", "ms"] {
        // 999.5 would print as 1000: that is the next unit's 1.0.
        if v < 999.5 {
            return figures(v, unit);
        }
        v /= 1000.0;
    }
    figures(v, "s")
}

/// `v` with one decimal below 10 (`1.5ms`), none above (`12ms`), and
/// none for nanoseconds, which are whole.
fn figures(v: f64, unit: &str) -> String {
    if v < 9.95 && unit != "ns" {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// The table's optional columns, from the rows it shows: kinds that
/// happened, accept-queue waits once a port has accepted, and connections
/// served for nobody once there are some (a column of dashes or zeros
/// would only push the owner off the screen).
struct Columns {
    kinds: Vec<Kind>,
    waits: bool,
    nobody: bool,
}

impl Columns {
    fn of(rows: &[(&PortKey, &PortStats)]) -> Self {
        Self {
            kinds: Counts::shown_kinds(rows.iter().map(|(_, st)| &st.kinds)),
            waits: rows.iter().any(|(_, st)| st.accept_wait.count() > 0),
            nobody: rows.iter().any(|(_, st)| st.accept_wait.client_gone + st.accept_wait.listener_closed > 0),
        }
    }

    fn header(&self) -> String {
        let mut out = format!("{:>10} {:>5} {:>9}", "NETNS", "PORT", "ACCEPT-Q");
        if self.waits {
            let _ = write!(out, " {:>8} {:>8} {:>8}", "WAIT-P50", "WAIT-P99", "WAIT-MAX");
        }
        if self.nobody {
            let _ = write!(out, " {:>11} {:>9}", "CLIENT-GONE", "CLOSE-RST");
        }
        for k in &self.kinds {
            let _ = write!(out, " {:>10}", k.column());
        }
        let _ = writeln!(out, " {:>7} {:>7} {:>6}  {:<OWNER_WIDTH$}  LAST EVENT", "DROPS", "DROPS/S", "CONNS", "OWNER");
        out
    }

    fn row(&self, key: &PortKey, st: &PortStats) -> String {
        let q = match st.accept_queue {
            Some((now, max)) => format!("{now}/{max}"),
            None => "closed".into(),
        };
        let mut out = format!("{:>10} {:>5} {:>9}", key.netns, key.port, q);
        let w = &st.accept_wait;
        if self.waits {
            let [p50, p99] = [0.5, 0.99].map(|q| w.quantile_ns(q).map_or_else(|| "-".to_owned(), duration));
            let max = if w.count() > 0 { duration(w.max_ns) } else { "-".to_owned() };
            let _ = write!(out, " {p50:>8} {p99:>8} {max:>8}");
        }
        if self.nobody {
            let _ = write!(out, " {:>11} {:>9}", w.client_gone, w.listener_closed);
        }
        for k in &self.kinds {
            let _ = write!(out, " {:>10}", st.count(*k));
        }
        let conns = format!("{}{}", st.connections(), if st.connections_capped { "+" } else { "" });
        let owner = fit(&st.owner_name(), OWNER_WIDTH);
        let _ = writeln!(out, " {:>7} {:>7.1} {:>6}  {owner:<OWNER_WIDTH$}  {}", st.drops(), st.rate, conns, last_event(st));
        out
    }
}

/// Renders the table. Ports with drops come first (most first); quiet
/// listeners are summarised in one line unless `show_quiet`.
pub(crate) fn render(agg: &Aggregator, show_quiet: bool) -> String {
    let mut rows: Vec<(&PortKey, &PortStats)> = agg.ports().iter().collect();
    rows.sort_by(|a, b| b.1.drops().cmp(&a.1.drops()).then(a.0.cmp(b.0)));
    let quiet = rows.iter().filter(|(_, st)| !st.kinds.is_active()).count();
    rows.retain(|(_, st)| show_quiet || st.kinds.is_active());
    let columns = Columns::of(&rows);
    let mut out = columns.header();
    for (key, st) in &rows {
        out.push_str(&columns.row(key, st));
    }
    if !show_quiet && quiet > 0 {
        let _ = writeln!(out, "({quiet} watched listener{} without drops)", if quiet == 1 { "" } else { "s" });
    }
    let l = &agg.losses;
    if l.ringbuf_full + l.counter_map_full + l.read_failed + l.undecodable > 0 {
        let _ = writeln!(
            out,
            "lost: {} events not delivered (ring buffer full; counts above stay exact), {} not counted (counter map full), {} unreadable, {} undecodable",
            l.ringbuf_full, l.counter_map_full, l.read_failed, l.undecodable
        );
    }
    if l.suppressed > 0 {
        let _ = writeln!(out, "suppressed: {} events over the ports' --max-event-rate (counted above, not shown one by one)", l.suppressed);
    }
    out
}

/// Lines the demo keeps current above the table: what its scenario does now.
pub(crate) type Banner = tokio::sync::watch::Receiver<Vec<String>>;

pub(crate) struct TableSink {
    out: Out,
    /// `--all`: quiet listeners get rows too.
    all: bool,
    banner: Option<Banner>,
    /// Lines about expired ports, for the next table.
    expired: Vec<String>,
    tier: String,
}

impl TableSink {
    pub(crate) fn new(out: Out, all: bool, banner: Option<Banner>) -> Self {
        Self { out, all, banner, expired: Vec::new(), tier: String::new() }
    }
}

impl Sink for TableSink {
    fn event(&mut self, _ev: &Decoded) {}

    fn polled(&mut self, _tracer: &Tracer, report: &PollReport) -> Result<()> {
        for (key, st) in &report.expired {
            self.expired.push(format!(
                "port {} (netns {}) expired: no listener for {:.0} s; {} drops in all\n",
                key.port,
                key.netns,
                st.gone_for,
                st.drops()
            ));
        }
        Ok(())
    }
}

impl WatchSink for TableSink {
    fn started(&mut self, _tracer: &Tracer, start: &Start) {
        self.tier = start.tier.map(|t| t.to_string()).unwrap_or_default();
    }

    /// One table: time, the demo's lines, context, expiries, rows.
    fn tick(&mut self, tracer: &Tracer) -> Result<()> {
        let mut text = format!("{}  tier {}\n", &event::rfc3339(system::realtime_ns())[..19], self.tier);
        let banner = self.banner.as_ref().map(|b| b.borrow().clone()).unwrap_or_default();
        for line in banner.iter().chain(&context::lines(tracer, self.all)) {
            text.push_str(line);
            text.push('\n');
        }
        text.extend(self.expired.drain(..));
        text.push_str(&render(&tracer.agg, self.all));
        text.push('\n');
        self.out.write_str(&text);
        self.out.flush();
        Ok(())
    }
    fn reopen(&mut self) -> Result<()> {
        self.out.reopen()
    }
    fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
    fn summary(&mut self, agg: &Aggregator, expire_secs: u64) {
        self.out.write_str(&summary(agg, self.all, expire_secs));
        self.out.flush();
    }
}

/// The table over the whole run, and what expiry took out of it.
pub(crate) fn summary(agg: &Aggregator, all: bool, expire_secs: u64) -> String {
    let mut text = format!("Summary\n{}", render(agg, all));
    if agg.expired.ports > 0 {
        let _ = writeln!(
            text,
            "{} more port{} expired during the run (no listener for {expire_secs} s): {} drops in all",
            agg.expired.ports,
            if agg.expired.ports == 1 { "" } else { "s" },
            agg.expired.drops
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::netns::NsListeners;
    use crate::host::sock_diag::Listener;
    use crate::model::event::Decoded;
    use crate::model::event::Kind;
    use crate::model::ports::PortSet;
    use qtrace_common::{kind, wait, CounterKey, WaitKey};

    #[test]
    fn durations_in_three_figures() {
        let cases = [
            (0, "0ns"),
            (700, "700ns"),
            (999, "999ns"),
            // Rounds up into the next unit rather than to 1000ns.
            (999_600, "1.0ms"),
            (85_000, "85us"),
            (1_540_000, "1.5ms"),
            (9_960_000, "10ms"),
            (12_300_000, "12ms"),
            (340_000_000, "340ms"),
            (2_000_000_000, "2.0s"),
            (68_000_000_000, "68s"),
            (4_000_000_000_000, "4000s"),
        ];
        for (ns, want) in cases {
            assert_eq!(duration(ns), want, "{ns} ns");
        }
    }

    #[test]
    fn renders_active_ports_first_and_summarises_quiet_ones() {
        let mut agg = Aggregator::new(None, PortSet::default());
        let key = |port, kind| CounterKey { netns: 4026531840, port, kind, _pad: 0 };
        agg.on_counters([(key(8080, kind::ACCEPT_QUEUE_FULL), 40), (key(8080, kind::ACK_OVERFLOW), 2), (key(22, kind::SYNCOOKIE_SENT), 0)]);
        agg.on_event(&Decoded {
            time_ns: 1_795_219_200_000_000_000 + 3_723_000_000_000,
            ..Decoded::example(Kind::AckOverflow, 4026531840, "127.0.0.1:8080", "127.0.0.1:40000")
        });
        agg.tick(1.0);
        let text = render(&agg, false);
        let expected = concat!(
            "     NETNS  PORT  ACCEPT-Q   SYN:ACCQ   ACK:DROP   DROPS DROPS/S  CONNS  OWNER                         LAST EVENT\n",
            "4026531840  8080    closed         40          2      42    42.0      1  -                             01:02:03 ack_overflow from 127.0.0.1:40000\n",
            "(1 watched listener without drops)\n"
        );
        assert_eq!(text, expected);
    }

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::host::identity::{Identity, Workload};
    use crate::host::runtime::Container;

    const NS_A: u32 = 4026531840;
    const NS_B: u32 = 4026532500;

    fn listener(port: u16, cookie: u64, q: (u32, u32), drops: u32) -> Listener {
        Listener { cookie, ..Listener::example(port, q, drops) }
    }

    fn snapshot(a: Vec<Listener>, b: Vec<Listener>) -> Vec<NsListeners> {
        vec![NsListeners { netns: NS_A, listeners: a }, NsListeners { netns: NS_B, listeners: b }]
    }

    /// The kernel's wait slots of a port: accepts that waited `ns`, `n`
    /// times each, and the connections served for nobody.
    fn waits(agg: &mut Aggregator, (netns, port): (u32, u16), waits: &[(u64, u64)], client_gone: u64, listener_closed: u64) {
        let key = |slot| WaitKey { netns, port, slot, _pad: 0 };
        let mut slots: Vec<(WaitKey, u64)> = waits.iter().map(|&(ns, n)| (key(wait::bucket(ns)), n)).collect();
        slots.extend([
            (key(wait::SUM_NS), waits.iter().map(|(ns, n)| ns * n).sum()),
            (key(wait::MAX_NS), waits.iter().map(|(ns, _)| *ns).max().unwrap_or(0)),
            (key(wait::CLIENT_GONE), client_gone),
            (key(wait::LISTENER_CLOSED), listener_closed),
        ]);
        agg.on_accept_waits(slots);
    }

    /// Two namespaces: 8080 overflows every way (and 2 drops only its
    /// counter saw), 9090 filled its SYN queue and closed, 443 only sent
    /// syncookies, 22 and 5432 are quiet; some events were lost. 8080's
    /// accepts waited 2 ms, two of them over a second, and three clients
    /// had left before theirs; 9090 reset two queued connections as it
    /// closed; 443 and 22 accept at once; 5432 accepted nothing.
    fn busy() -> Aggregator {
        let mut agg = Aggregator::new(None, PortSet::default());
        let open = |drops_8080| {
            snapshot(
                vec![listener(8080, 1, (12, 128), drops_8080), listener(9090, 2, (0, 64), 3), listener(22, 3, (0, 4096), 0)],
                vec![listener(443, 4, (1, 511), 0), listener(5432, 5, (0, 244), 0)],
            )
        };
        agg.on_listeners(&open(0));
        agg.on_owners(owners());
        let key = |netns, port, kind| CounterKey { netns, port, kind, _pad: 0 };
        agg.on_counters([
            (key(NS_A, 8080, kind::ACCEPT_QUEUE_FULL), 40),
            (key(NS_A, 8080, kind::ACK_OVERFLOW), 6),
            (key(NS_A, 8080, kind::ACK_OVERFLOW_RESET), 1),
            (key(NS_A, 9090, kind::SYN_QUEUE_FULL), 3),
            (key(NS_B, 443, kind::SYNCOOKIE_SENT), 12),
        ]);
        let t = 1_795_219_200_000_000_000 + 3_723_000_000_000;
        let ev = Decoded {
            time_ns: t,
            accept_queue: 129,
            accept_queue_max: 128,
            ..Decoded::example(Kind::AckOverflow, NS_A, "127.0.0.1:8080", "10.0.0.1:40000")
        };
        agg.on_event(&ev);
        agg.on_event(&Decoded { time_ns: t + 1_000_000_000, remote: "10.0.0.2:40001".parse().unwrap(), ..ev.clone() });
        agg.on_event(&Decoded {
            time_ns: t + 2_000_000_000,
            kind: Kind::SyncookieSent,
            netns: NS_B,
            local: "[2001:db8::1]:443".parse().unwrap(),
            remote: "[2001:db8::2]:51000".parse().unwrap(),
            ..ev
        });
        // 40 + 2 × (6 + 1) hooked and 2 more; 9090 has closed.
        let later = || {
            snapshot(
                vec![listener(8080, 1, (12, 128), 56), listener(22, 3, (0, 4096), 0)],
                vec![listener(443, 4, (1, 511), 0), listener(5432, 5, (0, 244), 0)],
            )
        };
        agg.on_listeners(&later());
        agg.on_listeners(&later());
        waits(&mut agg, (NS_A, 8080), &[(2_000_000, 60), (1_200_000_000, 1), (1_300_000_000, 1)], 3, 0);
        waits(&mut agg, (NS_A, 9090), &[], 0, 2);
        waits(&mut agg, (NS_B, 443), &[(50_000, 12)], 0, 0);
        waits(&mut agg, (NS_A, 22), &[(30_000, 4)], 0, 0);
        agg.tick(2.0);
        agg.losses.ringbuf_full = 17;
        agg.losses.undecodable = 1;
        agg.losses.suppressed = 250;
        agg
    }

    /// 8080 is a service's, 9090 a process's, 443 a pod's container (a
    /// long name, cut to its end).
    fn owners() -> BTreeMap<PortKey, Vec<Arc<Identity>>> {
        let process = Identity { pid: Some(812), comm: Some("nginx".into()), ..Identity::default() };
        let unit = Workload { unit: Some("nginx.service".into()), ..Workload::default() };
        let pod = Container {
            pod_name: Some("checkout-7d9c5b-x2x4z".into()),
            pod_namespace: Some("shop".into()),
            container_name: Some("web".into()),
            ..Container::default()
        };
        let port = |netns, port| PortKey { netns, port };
        BTreeMap::from([
            (port(NS_A, 8080), vec![Arc::new(Identity { workload: unit, ..process.clone() })]),
            (port(NS_A, 9090), vec![Arc::new(Identity { pid: Some(4242), comm: Some("slowsrv".into()), ..Identity::default() })]),
            (port(NS_B, 443), vec![Arc::new(Identity { container: pod, ..process })]),
        ])
    }

    #[test]
    fn table_of_several_ports() {
        let agg = busy();
        insta::assert_snapshot!("table_without_quiet", render(&agg, false));
        insta::assert_snapshot!("table_with_quiet", render(&agg, true));
    }

    #[test]
    fn summary_after_an_expiry() {
        let mut agg = busy();
        // 9090 has had no listener for 2 s; 8 more and it expires.
        for _ in 0..8 {
            agg.tick(1.0);
        }
        assert_eq!(agg.expire(10.0).len(), 1);
        agg.average_rates(60.0);
        insta::assert_snapshot!("summary_with_an_expired_port", summary(&agg, false, 10));
    }
}
