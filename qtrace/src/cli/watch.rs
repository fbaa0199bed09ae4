//! `qtrace watch`: attach, then print per-port overflows until Ctrl-C,
//! SIGTERM, `--duration` or a closed stdout; then a final summary.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use super::{UsageError, WatchArgs};
use crate::aggregate::Aggregator;
use crate::event::{self, Decoded, Kind};
use crate::netns::{self, Namespaces};
use crate::output::{ndjson, table};
use crate::ports::PortSet;
use crate::probe::{Filter, Maps, Probe, Tier};
use crate::source;

/// Stdout that notices when its reader went away (`| head -1`).
struct Out {
    w: io::BufWriter<io::Stdout>,
    closed: bool,
}

impl Out {
    fn write_str(&mut self, s: &str) {
        if !self.closed && self.w.write_all(s.as_bytes()).is_err() {
            self.closed = true;
        }
    }
    fn json<T: Serialize>(&mut self, v: &T) {
        if self.closed {
            return;
        }
        let mut line = serde_json::to_string(v).expect("plain structs serialize");
        line.push('\n');
        self.write_str(&line);
    }
    fn flush(&mut self) {
        if !self.closed && self.w.flush().is_err() {
            self.closed = true;
        }
    }
}

struct Watch {
    agg: Aggregator,
    namespaces: Namespaces,
    maps_counters: aya::maps::PerCpuHashMap<MapData, qtrace_common::CounterKey, u64>,
    maps_stats: aya::maps::PerCpuArray<MapData, u64>,
    json: bool,
    out: Out,
    boot_offset: i128,
    undecodable: u64,
    last_poll: Instant,
}

impl Watch {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match Decoded::decode(&item, self.boot_offset) {
                Ok(ev) => {
                    self.agg.on_event(&ev);
                    if self.json {
                        self.out.json(&ev.to_json());
                    }
                }
                Err(_) => self.undecodable += 1,
            }
        }
        if self.json {
            self.out.flush();
        }
    }

    /// Reads the kernel's counters and the listeners; reports what changed.
    fn poll(&mut self) -> Result<()> {
        let now = event::realtime_ns();
        self.agg.on_counters(source::counters(&self.maps_counters)?);
        let before = self.agg.losses.ringbuf_full;
        self.agg.losses = source::losses(&self.maps_stats, self.undecodable)?;
        let lost = self.agg.losses.ringbuf_full - before;
        self.namespaces.refresh();
        let counted = self.agg.on_listeners(&self.namespaces.listeners());
        let elapsed = self.last_poll.elapsed().as_secs_f64();
        self.last_poll = Instant::now();
        self.agg.tick(elapsed);
        self.agg.forget_idle();
        if self.json {
            if lost > 0 {
                self.out.json(&ndjson::lost(lost, self.agg.losses.ringbuf_full, now));
            }
            for d in &counted {
                self.out.json(&ndjson::counted(d, now));
            }
            self.out.flush();
        }
        Ok(())
    }
}

fn describe(ports: &PortSet, args: &WatchArgs) -> String {
    let what = if ports.is_all() {
        "every listening port".to_owned()
    } else {
        let list: Vec<String> = args.ports.iter().map(|r| if r.first == r.last { r.first.to_string() } else { format!("{}-{}", r.first, r.last) }).collect();
        format!("port {}", list.join(", "))
    };
    match &args.netns {
        Some(ns) => format!("{what} in network namespace {ns}"),
        None => format!("{what} in every network namespace"),
    }
}

pub async fn run(args: WatchArgs) -> Result<()> {
    let ports = PortSet::new(args.ports.clone());
    let netns = match &args.netns {
        Some(spec) => Some(netns::resolve(spec).map_err(|e| UsageError(format!("{e:#}")))?),
        None => None,
    };
    let mut namespaces = Namespaces::new(netns).map_err(|e| UsageError(format!("{e:#}")))?;
    let mut agg = Aggregator::new(netns, ports.clone());
    // Baseline of every listener's drop counter before the hooks go in.
    agg.on_listeners(&namespaces.listeners());

    let mut probe = Probe::attach(args.hooks, &Filter { netns, ports: ports.clone() })?;
    let Maps { events, counters, stats } = probe.take_maps()?;
    agg.set_derive_counted(probe.tier == Tier::Tracepoint);
    for (tier, why) in &probe.refused {
        eprintln!("qtrace: {tier} tier unavailable: {why}");
    }
    if probe.tier == Tier::Tracepoint {
        eprintln!("qtrace: SYN-stage drops and syncookie-ACK overflows have no hook on the tracepoint tier: they are counted from each listener's drop counter (kind listener_drop_counted), without per-connection detail");
        if let Some(why) = &probe.ack_detail_missing {
            eprintln!("qtrace: {why}: ACK-stage overflows are counted from the listeners too");
        }
        if probe.counted_is_upper_bound {
            eprintln!("qtrace: on this kernel a listener's drop counter also moves for request packets that are not listen drops (each overflowing final ACK a second time, TCP_DEFER_ACCEPT's bare ACKs): counted drops are an upper bound");
        }
    }
    eprintln!(
        "qtrace: watching {} ({} namespace{}) with the {} tier; Ctrl-C to stop",
        describe(&ports, &args),
        namespaces.count(),
        if namespaces.count() == 1 { "" } else { "s" },
        probe.tier
    );
    for (ino, why) in &namespaces.unreachable {
        eprintln!("qtrace: network namespace {ino} cannot be entered ({why}); its SYN-stage totals are missing");
    }

    let mut w = Watch {
        agg,
        namespaces,
        maps_counters: counters,
        maps_stats: stats,
        json: args.json,
        out: Out { w: io::BufWriter::new(io::stdout()), closed: false },
        boot_offset: event::boot_offset_ns(),
        undecodable: 0,
        last_poll: Instant::now(),
    };
    let live_table = !args.json && io::stdout().is_terminal();
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // until the AsyncFd (which owns the ring buffer) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = tokio::time::Instant::now() + args.duration.unwrap_or(Duration::from_secs(u32::MAX.into()));

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                w.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticker.tick() => {
                w.poll()?;
                if !args.json {
                    let mut text = String::new();
                    if live_table {
                        text.push_str("\x1b[H\x1b[J");
                    }
                    text.push_str(&format!("{}  tier {}\n", &event::rfc3339(event::realtime_ns())[..19], probe.tier));
                    text.push_str(&table::render(&w.agg, args.all));
                    text.push('\n');
                    w.out.write_str(&text);
                    w.out.flush();
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if w.out.closed {
            break;
        }
    }

    // Final accounting while the hooks still count: two polls a moment
    // apart let the listener-derived totals settle.
    w.drain(ring.get_mut());
    w.poll()?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.drain(ring.get_mut());
    w.poll()?;
    probe.detach();
    if args.json {
        for (key, st) in w.agg.ports() {
            if st.events > 0 || Kind::ALL.iter().any(|k| st.count(*k) > 0) {
                w.out.json(&ndjson::summary(key, st));
            }
        }
        w.out.json(&ndjson::losses(&w.agg.losses));
    } else {
        w.out.write_str("Summary\n");
        w.out.write_str(&table::render(&w.agg, args.all));
    }
    w.out.flush();
    Ok(())
}
