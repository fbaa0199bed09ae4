//! `qtrace listeners` for people: an aligned table (its NDJSON record is
//! `Record::Listener`).

use std::fmt::Write as _;

use crate::host::procs::Owner;
use crate::model::backlog::Clamp;
use crate::model::inventory::ListenerRow;
use crate::output::style::Style;

/// Owners as `comm(pid)`, the first two and a count of the rest.
pub(crate) fn owners(list: &[Owner]) -> String {
    match list {
        [] => "-".into(),
        [a] => a.short(),
        [a, b] => format!("{} {}", a.short(), b.short()),
        [a, b, rest @ ..] => format!("{} {} +{}", a.short(), b.short(), rest.len()),
    }
}

pub(crate) fn table(rows: &[ListenerRow], style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        style.bold(&format!(
            "{:>10} {:<24} {:>5} {:>11} {:>5} {:>7}  {}",
            "NETNS", "ADDRESS", "PORT", "ACCEPT-Q", "SYN-Q", "DROPS", "PROCESS"
        ))
    );
    for r in rows {
        let l = &r.listener;
        let q = format!("{}/{}", l.accept_queue, l.accept_queue_max);
        let q = if l.accept_queue_max > 0 && l.accept_queue >= l.accept_queue_max {
            style.red(&format!("{q:>11}"))
        } else {
            format!("{q:>11}")
        };
        let syn = r.syn_queue.map_or_else(|| "?".into(), |n| n.to_string());
        let drops = l.drops.map_or_else(|| "?".into(), |n| n.to_string());
        let drops = if l.drops.unwrap_or(0) > 0 { style.red(&format!("{drops:>7}")) } else { format!("{drops:>7}") };
        let note = match r.clamp {
            Clamp::No => String::new(),
            Clamp::Likely => style.yellow(&format!("  bound = somaxconn {}: backlog probably clamped", l.accept_queue_max)),
            Clamp::Proven => style.yellow(&format!(
                "  listen({}) clamped to {} by somaxconn",
                r.requested_backlog.unwrap_or_default(),
                l.accept_queue_max
            )),
        };
        let _ = writeln!(out, "{:>10} {:<24} {:>5} {q} {syn:>5} {drops}  {}{note}", r.netns, l.addr.to_string(), l.port, owners(&r.owners));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock_diag::Listener;

    fn row(port: u16, q: (u32, u32), drops: u32, clamp: Clamp, owners: Vec<Owner>) -> ListenerRow {
        ListenerRow {
            netns: 4026531840,
            listener: Listener::example(port, q, drops),
            syn_queue: Some(0),
            owners,
            owner: None,
            somaxconn: Some(64),
            requested_backlog: (clamp == Clamp::Proven).then_some(4096),
            clamp,
        }
    }

    #[test]
    fn table_flags_clamps_and_lists_owners() {
        let o = |pid, comm: &str| Owner { pid, comm: comm.into() };
        let rows = [
            row(8080, (5, 5), 188, Clamp::No, vec![o(10, "server")]),
            row(9000, (0, 64), 0, Clamp::Proven, vec![o(1, "nginx"), o(2, "nginx"), o(3, "nginx")]),
            row(9001, (0, 64), 0, Clamp::Likely, vec![]),
        ];
        let text = table(&rows, Style::default());
        let expected = concat!(
            "     NETNS ADDRESS                   PORT    ACCEPT-Q SYN-Q   DROPS  PROCESS\n",
            "4026531840 127.0.0.1                 8080         5/5     0     188  server(10)\n",
            "4026531840 127.0.0.1                 9000        0/64     0       0  nginx(1) nginx(2) +1  listen(4096) clamped to 64 by somaxconn\n",
            "4026531840 127.0.0.1                 9001        0/64     0       0  -  bound = somaxconn 64: backlog probably clamped\n",
        );
        assert_eq!(text, expected);
        let j = serde_json::to_value(crate::model::record::Record::Listener((&rows[1]).into())).unwrap();
        assert_eq!(j["type"], "listener");
        assert_eq!(j["backlog_clamped"], "proven");
        assert_eq!(j["requested_backlog"], 4096);
        assert_eq!(j["processes"][0]["comm"], "nginx");
    }
}
