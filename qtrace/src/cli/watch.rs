//! `qtrace watch`: attach, then print per-port overflows until Ctrl-C,
//! SIGTERM, `--duration` or a closed stdout; then a final summary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use super::tui::Tui;
use super::{Resolved, UsageError, WatchArgs};
use crate::host::ns_state::Settings;
use crate::kernel::probe::Filter;
use crate::metrics::{self, Snapshot};
use crate::model::backlog::{self, Clamp};
use crate::model::event::{self, Kind};
use crate::model::ports::PortSet;
use crate::output::live::Action;
use crate::output::style::Style;
use crate::output::{ndjson, table};
use crate::tracer::Tracer;

/// Where `watch` writes: stdout, or `--output FILE` (reopened on SIGHUP so
/// logrotate can move it away). Notices when a pipe's reader went away
/// (`| head -1`) and stops writing instead of failing.
struct Out {
    w: io::BufWriter<Box<dyn Write>>,
    path: Option<PathBuf>,
    closed: bool,
}

fn open_output(path: &Path) -> io::Result<Box<dyn Write>> {
    Ok(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
}

impl Out {
    fn new(path: Option<PathBuf>) -> Result<Self> {
        let w: Box<dyn Write> = match &path {
            Some(p) => open_output(p).map_err(|e| UsageError(format!("cannot write --output {}: {e}", p.display())))?,
            None => Box::new(io::stdout()),
        };
        Ok(Self { w: io::BufWriter::new(w), path, closed: false })
    }
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
    /// SIGHUP: start a new file at `--output`'s path.
    fn reopen(&mut self) -> Result<()> {
        self.flush();
        if let Some(p) = &self.path {
            let w = open_output(p).with_context(|| format!("reopening --output {}", p.display()))?;
            self.w = io::BufWriter::new(w);
            self.closed = false;
        }
        Ok(())
    }
    /// Whether stdout is a pipe whose reader is gone, checked without
    /// writing: `watch --json | head -1` must end even when nothing drops.
    fn reader_gone(&self) -> bool {
        if self.path.is_some() {
            return false;
        }
        let mut pfd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 1 && pfd.revents & libc::POLLERR != 0
    }
}

struct Watch {
    tracer: Tracer,
    json: bool,
    out: Out,
    /// Namespaces whose settings were printed (NDJSON).
    settings_shown: BTreeSet<u32>,
    /// What the metrics endpoint serves, when there is one.
    metrics: Option<metrics::Shared>,
    /// Lines about expired ports, for the next plain table.
    expired_lines: Vec<String>,
}

impl Watch {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let (json, out) = (self.json, &mut self.out);
        self.tracer.drain(ring, |ev| {
            if json {
                out.json(&ev.to_json());
            }
        });
        if self.json {
            self.out.flush();
        }
    }

    /// Reads the kernel's counters and the listeners; reports what changed.
    fn poll(&mut self) -> Result<()> {
        let now = event::realtime_ns();
        let report = self.tracer.poll()?;
        if let Some(shared) = &self.metrics {
            let snap = Snapshot::from_aggregator(&self.tracer.agg, &self.tracer.probe.tier.to_string(), self.tracer.namespaces.count());
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = snap;
        }
        if !self.json {
            for (key, st) in &report.expired {
                self.expired_lines.push(format!(
                    "port {} (netns {}) expired: no listener for {:.0} s; {} drops in all\n",
                    key.port,
                    key.netns,
                    st.gone_for,
                    st.drops()
                ));
            }
        }
        if self.json {
            for (key, st) in &report.expired {
                self.out.json(&ndjson::expired(key, st, now));
            }
            // Namespaces that went away are forgotten (a long run sees many).
            let live: BTreeSet<u32> = self.tracer.listeners.iter().map(|ns| ns.netns).collect();
            self.settings_shown.retain(|n| live.contains(n));
            let new: Vec<u32> = live.iter().copied().filter(|n| !self.settings_shown.contains(n)).collect();
            for (netns, settings) in self.settings_of(&new) {
                self.out.json(&ndjson::settings(netns, settings, now));
                self.settings_shown.insert(netns);
            }
            if report.lost > 0 {
                self.out.json(&ndjson::lost(report.lost, self.tracer.agg.losses.ringbuf_full, now));
            }
            for d in &report.counted {
                self.out.json(&ndjson::counted(d, now));
            }
            for seen in &report.listens {
                self.out.json(&ndjson::listen(seen, now));
            }
            self.out.flush();
        }
        Ok(())
    }

    /// One plain table: time, explanation lines, context, expiries, rows.
    fn print_table(&mut self, stamp: &str, banner: &[String], all: bool) {
        let mut text = format!("{stamp}\n");
        for line in banner {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&self.context(all));
        text.extend(self.expired_lines.drain(..));
        text.push_str(&table::render(&self.tracer.agg, all));
        text.push('\n');
        self.out.write_str(&text);
        self.out.flush();
    }

    /// The settings of the namespaces `which`, read inside each.
    fn settings_of(&self, which: &[u32]) -> BTreeMap<u32, Settings> {
        self.tracer.namespaces.read_each(|| Ok(Settings::read()), |ino| which.contains(&ino))
    }

    /// The header lines of the table: each shown namespace's settings and
    /// the backlogs qtrace saw clamped.
    fn context(&self, show_quiet: bool) -> String {
        let shown: BTreeSet<u32> = self
            .tracer
            .agg
            .ports()
            .iter()
            .filter(|(_, st)| show_quiet || st.kinds.is_active())
            .map(|(k, _)| k.netns)
            .collect();
        // Nothing to show yet: the one watched namespace (`--netns`), else
        // qtrace's own.
        let shown: Vec<u32> = match (shown.is_empty(), &self.tracer.listeners[..]) {
            (false, _) => shown.into_iter().collect(),
            (true, [only]) => vec![only.netns],
            (true, _) => vec![self.tracer.namespaces.own()],
        };
        let mut text = String::new();
        for (netns, settings) in self.settings_of(&shown) {
            text.push_str(&format!("netns {netns}: {}\n", settings.line()));
        }
        for ns in &self.tracer.listeners {
            for l in &ns.listeners {
                let Some(req) = self.tracer.backlogs.get(u64::from(l.inode)) else {
                    continue;
                };
                if backlog::clamp(Some(req.backlog), l.accept_queue_max, None) == Clamp::Proven && shown.contains(&ns.netns) {
                    text.push_str(&format!(
                        "port {}: {} asked listen() for a backlog of {}, net.core.somaxconn cut it to {}\n",
                        l.port,
                        req.owner.short(),
                        req.backlog,
                        l.accept_queue_max
                    ));
                }
            }
        }
        text
    }
}

fn describe(ports: &PortSet, args: &WatchArgs) -> String {
    let what = if ports.is_all() {
        "every listening port".to_owned()
    } else {
        let list: Vec<String> = args
            .scope
            .ports
            .iter()
            .map(|r| if r.first == r.last { r.first.to_string() } else { format!("{}-{}", r.first, r.last) })
            .collect();
        format!("port {}", list.join(", "))
    };
    match &args.scope.netns {
        Some(ns) => format!("{what} in network namespace {ns}"),
        None => format!("{what} in every network namespace"),
    }
}

/// Binds `--metrics-addr` before anything is attached: a taken port is a
/// usage error, not a late surprise.
fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| UsageError(format!("cannot serve metrics on {addr}: {e}")))?;
    Ok(l)
}

/// Starts the scrape endpoint; returns its task and the snapshot each poll
/// refreshes.
fn serve_metrics(listener: tokio::net::TcpListener, tier: &str) -> (tokio::task::JoinHandle<()>, metrics::Shared) {
    let shared = metrics::Shared::new(Snapshot { tier: tier.to_owned(), ..Snapshot::default() }.into());
    let url = listener.local_addr().map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    let task = tokio::spawn(metrics::server::serve(listener, std::sync::Arc::new(metrics::registry(shared.clone()))));
    eprintln!("qtrace: serving Prometheus metrics on {url}");
    (task, shared)
}

pub async fn run(args: WatchArgs) -> Result<()> {
    run_with(args, None, None).await
}

/// `watch`, with lines of explanation above the live view that `banner`
/// keeps current, and `attached` called once the hooks are in
/// (`qtrace demo` starts its traffic then).
pub async fn run_with(
    args: WatchArgs,
    banner: Option<tokio::sync::watch::Receiver<String>>,
    attached: Option<Box<dyn FnOnce()>>,
) -> Result<()> {
    let Resolved { ports, netns, namespaces } = args.scope.resolve()?;
    // Before attaching: a bad --output is a usage error, not a late surprise.
    let out = Out::new(args.output.clone())?;
    let metrics_listener = args.metrics_addr.map(bind_metrics).transpose()?;
    let (mut tracer, events) = Tracer::start(args.hooks, &Filter { netns, ports: ports.clone() }, namespaces)?;
    tracer.expire_after = args.expire.0;
    for line in tracer.limits() {
        eprintln!("qtrace: {line}");
    }
    let tier = tracer.probe.tier;
    let (server, metrics) = metrics_listener.map(|l| serve_metrics(l, &tier.to_string())).unzip();
    if let Some(attached) = attached {
        attached();
    }
    let count = tracer.namespaces.count();
    eprintln!(
        "qtrace: watching {} ({count} namespace{}) with the {} tier; Ctrl-C to stop",
        describe(&ports, &args),
        if count == 1 { "" } else { "s" },
        tracer.probe.tier
    );
    for (ino, why) in &tracer.namespaces.unreachable {
        eprintln!("qtrace: network namespace {ino} cannot be entered ({why}); its SYN-stage totals are missing");
    }
    let mut w = Watch { tracer, json: args.json, out, settings_shown: BTreeSet::new(), metrics, expired_lines: Vec::new() };
    if args.json {
        let all: Vec<u32> = w.tracer.listeners.iter().map(|ns| ns.netns).collect();
        let now = event::realtime_ns();
        for (netns, settings) in w.settings_of(&all) {
            w.out.json(&ndjson::settings(netns, settings, now));
            w.settings_shown.insert(netns);
        }
        w.out.flush();
    }
    // On a terminal, unless told otherwise: the full-screen live view.
    let mut tui = if !args.json && !args.plain && args.output.is_none() && io::stdout().is_terminal() {
        Some(Tui::start(Style::for_stdout().on)?)
    } else {
        None
    };
    let what = describe(&ports, &args);
    let mut header = Vec::new();
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // until the AsyncFd (which owns the ring buffer) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration.unwrap_or(Duration::from_secs(u32::MAX.into()));

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                w.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = ticker.tick() => {
                // Once per tick, not per ring-buffer wake-up.
                if w.out.reader_gone() {
                    break;
                }
                w.poll()?;
                let stamp = format!("{}  tier {tier}", &event::rfc3339(event::realtime_ns())[..19]);
                let banner_lines: Vec<String> =
                    banner.as_ref().map(|b| b.borrow().split('\t').filter(|l| !l.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
                if let Some(tui) = &mut tui {
                    header = vec![format!("qtrace: watching {what}  {stamp}")];
                    header.extend(banner_lines);
                    header.extend(w.context(true).lines().map(str::to_owned));
                    // The screen is redrawn each tick: the summary says it.
                    w.expired_lines.clear();
                    tui.tick(&w.tracer, &header)?;
                } else if !args.json {
                    w.print_table(&stamp, &banner_lines, args.all);
                }
            }
            action = async {
                match &mut tui {
                    Some(t) => t.next_key().await,
                    None => std::future::pending().await,
                }
            } => {
                match action {
                    Action::Quit => break,
                    Action::Redraw => {
                        if let Some(t) = &mut tui {
                            t.draw(&w.tracer, &header)?;
                        }
                    }
                    Action::None => {}
                }
            }
            _ = sighup.recv() => w.out.reopen()?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if w.out.closed {
            break;
        }
    }

    // Back to the normal screen for the summary.
    drop(tui);
    // Final accounting while the hooks still count: two polls a moment
    // apart let the listener-derived totals settle.
    w.drain(ring.get_mut());
    w.poll()?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.drain(ring.get_mut());
    w.poll()?;
    let Watch { tracer, mut out, json, .. } = w;
    let (mut agg, _, _) = tracer.detach();
    // The summary's DROPS/S: over the whole run, not the last 100 ms.
    agg.average_rates(started.elapsed().as_secs_f64());
    if let Some(server) = server {
        server.abort();
    }
    if json {
        for (key, st) in agg.ports() {
            if st.events > 0 || Kind::ALL.iter().any(|k| st.count(*k) > 0) {
                out.json(&ndjson::summary(key, st));
            }
        }
        out.json(&ndjson::losses(&agg.losses));
    } else {
        out.write_str("Summary\n");
        out.write_str(&table::render(&agg, args.all));
        if agg.expired.ports > 0 {
            out.write_str(&format!(
                "{} more port{} expired during the run (no listener for {} s): {} drops in all\n",
                agg.expired.ports,
                if agg.expired.ports == 1 { "" } else { "s" },
                args.expire.0.map_or(0, |d| d.as_secs()),
                agg.expired.drops
            ));
        }
    }
    out.flush();
    Ok(())
}
