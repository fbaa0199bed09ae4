//! The per-port table `watch` prints every interval and at exit.

use std::fmt::Write as _;

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

/// Renders the table. Ports with drops come first (most first); quiet
/// listeners are summarised in one line unless `show_quiet`.
pub fn render(agg: &Aggregator, show_quiet: bool) -> String {
    let mut rows: Vec<(&PortKey, &PortStats)> = agg.ports().iter().collect();
    rows.sort_by(|a, b| b.1.drops().cmp(&a.1.drops()).then(a.0.cmp(b.0)));
    let quiet = rows.iter().filter(|(_, st)| !st.kinds.is_active()).count();
    let columns = Counts::shown_kinds(rows.iter().map(|(_, st)| &st.kinds));
    let mut out = String::new();
    let _ = write!(out, "{:>10} {:>5} {:>9}", "NETNS", "PORT", "ACCEPT-Q");
    for k in &columns {
        let _ = write!(out, " {:>10}", k.column());
    }
    let _ = writeln!(out, " {:>7} {:>7} {:>6}  LAST EVENT", "DROPS", "DROPS/S", "CONNS");
    for (key, st) in rows.iter().filter(|(_, st)| show_quiet || st.kinds.is_active()) {
        let q = match st.accept_queue {
            Some((now, max)) => format!("{now}/{max}"),
            None => "closed".into(),
        };
        let _ = write!(out, "{:>10} {:>5} {:>9}", key.netns, key.port, q);
        for k in &columns {
            let _ = write!(out, " {:>10}", st.count(*k));
        }
        let conns = format!("{}{}", st.connections(), if st.connections_capped { "+" } else { "" });
        let _ = writeln!(out, " {:>7} {:>7.1} {:>6}  {}", st.drops(), st.rate, conns, last_event(st));
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Decoded;
    use crate::model::ports::PortSet;
    use qtrace_common::{kind, CounterKey};

    #[test]
    fn renders_active_ports_first_and_summarises_quiet_ones() {
        let mut agg = Aggregator::new(None, PortSet::default());
        let key = |port, kind| CounterKey { netns: 4026531840, port, kind, _pad: 0 };
        agg.on_counters([(key(8080, kind::ACCEPT_QUEUE_FULL), 40), (key(8080, kind::ACK_OVERFLOW), 2), (key(22, kind::SYNCOOKIE_SENT), 0)]);
        agg.on_event(&Decoded {
            time_ns: 1_795_219_200_000_000_000 + 3_723_000_000_000,
            kind: Kind::AckOverflow,
            hook: "t",
            netns: 4026531840,
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            accept_queue: 3,
            accept_queue_max: 2,
            syn_queue: 0,
        });
        agg.tick(1.0);
        let text = render(&agg, false);
        let expected = concat!(
            "     NETNS  PORT  ACCEPT-Q   SYN:ACCQ   ACK:DROP   DROPS DROPS/S  CONNS  LAST EVENT\n",
            "4026531840  8080    closed         40          2      42    42.0      1  01:02:03 ack_overflow from 127.0.0.1:40000\n",
            "(1 watched listener without drops)\n"
        );
        assert_eq!(text, expected);
    }
}
