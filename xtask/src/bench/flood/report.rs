//! Section 7's tables: costs per setting (median over the runs) and every
//! flood's counters next to qtrace's.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::super::stats::Spread;
use super::{Outcome, BACKLOG, COUNTERS, FLOOD_TIME, MAX_SYN_BACKLOG, SENDERS, SYNCOOKIES, WATCHERS};
use crate::bench::{Options, Section};

/// Why the tracepoint tier's per-event columns are 0 and its cookie
/// totals are not the kernel's.
const TRACEPOINT_NOTE: &str = " On the tracepoint tier no hook sees a SYN-stage drop or a cookie per connection (a dropped SYN ends in \
`tcp_listendrop()` and `consume_skb()`, a cookie leaves `tcp_conn_request()` past no tracepoint): drops are counted from the listener's drop \
counter, cookies sent are not seen at all, and per-event figures are 0.";

fn per_syn_ns(o: &Outcome) -> f64 {
    o.softirq.as_nanos() as f64 / o.sent.max(1) as f64
}

fn rate(o: &Outcome) -> f64 {
    o.sent as f64 / o.elapsed.as_secs_f64()
}

/// Softirq time per SYN over the untraced flood of the same round and
/// setting: drift between rounds cancels out.
fn ratio(all: &[Outcome], o: &Outcome) -> Option<f64> {
    let base = all.iter().find(|b| b.round == o.round && b.syncookies == o.syncookies && WATCHERS[b.watcher].qtrace_args.is_none())?;
    Some(per_syn_ns(o) / per_syn_ns(base))
}

fn show(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        "–".to_owned()
    } else {
        Spread::of(v).show(digits)
    }
}

fn spread_json(v: &[f64]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Spread::of(v).json()
    }
}

/// The costs table: one row per syncookies setting and watcher.
fn costs(all: &[Outcome], md: &mut String) -> Vec<Value> {
    md.push_str("| syncookies | watched by | SYNs sent/s | softirq ns per SYN | ratio to untraced | qtrace CPU (% of a core) |\n|---|---|---|---|---|---|\n");
    let mut json = vec![];
    for syncookies in SYNCOOKIES {
        for (w, watcher) in WATCHERS.iter().enumerate() {
            let these: Vec<&Outcome> = all.iter().filter(|o| o.syncookies == syncookies && o.watcher == w).collect();
            let rates: Vec<f64> = these.iter().map(|o| rate(o)).collect();
            let ns: Vec<f64> = these.iter().map(|o| per_syn_ns(o)).collect();
            let ratios: Vec<f64> = these.iter().filter_map(|o| ratio(all, o)).collect();
            let cpu: Vec<f64> =
                these.iter().filter_map(|o| o.qtrace.as_ref().map(|q| 100.0 * q.cpu.as_secs_f64() / o.elapsed.as_secs_f64())).collect();
            let _ = writeln!(
                md,
                "| {syncookies} | {} | {} | {} | {} | {} |",
                watcher.name,
                show(&rates, 0),
                show(&ns, 0),
                show(&ratios, 3),
                show(&cpu, 1)
            );
            json.push(json!({
                "syncookies": syncookies, "watcher": watcher.name, "syns_per_s": spread_json(&rates),
                "softirq_ns_per_syn": spread_json(&ns), "ratio": spread_json(&ratios), "qtrace_cpu_percent": spread_json(&cpu),
            }));
        }
    }
    json
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

/// One row per flood: the kernel's counters and qtrace's account.
fn floods(all: &[Outcome], md: &mut String) -> Vec<Value> {
    md.push_str("| run | syncookies | watched by | SYNs sent | reached TCP | ");
    md.push_str(&COUNTERS.map(|c| format!("{c} Δ")).join(" | "));
    md.push_str(" | qtrace drops | drops equal | qtrace cookies sent | cookies equal | events delivered | events lost |\n");
    md.push_str(&"|---".repeat(11 + COUNTERS.len()));
    md.push_str("|\n");
    let mut json = vec![];
    for o in all {
        let k = |c: &str| o.kernel[c];
        let kernel = COUNTERS.map(|c| k(c).to_string()).join(" | ");
        let qtrace = o.qtrace.as_ref().map_or_else(
            || "– | – | – | – | – | –".to_owned(),
            |q| {
                let lost = q.suppressed.map_or(q.lost.to_string(), |s| format!("{} (suppressed {s})", q.lost));
                let (de, ce) = (yes_no(q.drops == k("ListenDrops")), yes_no(q.cookies == k("SyncookiesSent")));
                format!("{} | {de} | {} | {ce} | {} | {lost}", q.drops, q.cookies, q.events)
            },
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {kernel} | {qtrace} |",
            o.round + 1,
            o.syncookies,
            WATCHERS[o.watcher].name,
            o.sent,
            o.in_segs
        );
        json.push(json!({
            "run": o.round + 1, "syncookies": o.syncookies, "watcher": WATCHERS[o.watcher].name, "sent": o.sent,
            "seconds": o.elapsed.as_secs_f64(), "reached_tcp": o.in_segs, "kernel": o.kernel,
            "host_tasks": o.host_tasks, "host_named_netns": o.host_netns,
            "qtrace": o.qtrace.as_ref().map(|q| json!({
                "drops": q.drops, "syncookies_sent": q.cookies, "events": q.events, "lost": q.lost,
                "suppressed": q.suppressed, "cpu_s": q.cpu.as_secs_f64(), "tier": q.tier, "limits": q.limits,
            })),
        }));
    }
    json
}

pub(super) fn render(opts: &Options, all: &[Outcome]) -> Section {
    let mut md = format!(
        "## 7. SYN flood\n\nRaw SYNs from {SENDERS} threads, as fast as they go for {} s (at most {} SYNs), from every address of 10.98.0.0/16 to a listener (backlog {BACKLOG}, never accepting, \
`tcp_max_syn_backlog` {MAX_SYN_BACKLOG}) in a fresh namespace; its SYN-ACKs go to a phantom peer on a veth and vanish. A fresh listener per flood, {} runs, the watchers' order rotating. \
qtrace runs `watch --json --netns NS --port P`. Softirq time is the softirq column of `/proc/stat` (all CPUs; NET_RX is nearly all of it here) over the flood, divided by the SYNs sent; \
this kernel samples it with the scheduler tick (no `CONFIG_IRQ_TIME_ACCOUNTING`). qtrace's CPU is its process CPU clock (user + system).\n\n",
        FLOOD_TIME.as_secs(),
        super::MAX_SYNS,
        opts.runs,
    );
    let cost_json = costs(all, &mut md);
    md.push('\n');
    let flood_json = floods(all, &mut md);
    let traced: Vec<_> = all.iter().filter_map(|o| o.qtrace.as_ref().map(|q| (o, q))).collect();
    let drops_equal = traced.iter().all(|(o, q)| q.drops == o.kernel["ListenDrops"]);
    let cookies_equal = traced.iter().all(|(o, q)| q.cookies == o.kernel["SyncookiesSent"]);
    let host = |f: fn(&Outcome) -> u64| Spread::of(&all.iter().map(|o| f(o) as f64).collect::<Vec<_>>()).show(0);
    let _ = writeln!(
        md,
        "\n- on the host at the end of each flood: {} tasks, {} named network namespaces (other work on the machine)",
        host(|o| o.host_tasks),
        host(|o| o.host_netns)
    );
    let (tier, limits) = traced.first().map_or(("?".to_owned(), String::new()), |(_, q)| (q.tier.clone(), q.limits.join(", ")));
    let _ = write!(
        md,
        "- qtrace's drop totals equal `ListenDrops` in every flood: **{}**; its cookies-sent totals equal `SyncookiesSent` in every flood: **{}**\n\
- qtrace's tier: {tier}; limits its start record declared: {}.{}\n",
        if drops_equal { "yes" } else { "no" },
        if cookies_equal { "yes" } else { "no" },
        if limits.is_empty() { "none" } else { &limits },
        if tier == "tracepoint" { TRACEPOINT_NOTE } else { "" },
    );
    let json = json!({
        "seconds": FLOOD_TIME.as_secs(), "senders": SENDERS, "backlog": BACKLOG, "tcp_max_syn_backlog": MAX_SYN_BACKLOG,
        "costs": cost_json, "floods": flood_json, "drops_equal": drops_equal, "cookies_equal": cookies_equal,
    });
    Section { key: "syn_flood", json, md }
}
