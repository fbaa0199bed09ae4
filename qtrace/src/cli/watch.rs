//! `qtrace watch`: attach, then feed one sink (NDJSON, plain table or the
//! live view) until Ctrl-C, SIGTERM, `--duration` or a closed stdout; then
//! the final accounting and a summary.

use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::tui::Tui;
use super::{Resolved, UsageError, WatchArgs};
use crate::kernel::limits::Limit;
use crate::metrics::{self, Snapshot};
use crate::model::ports::PortSet;
use crate::model::record::Start;
use crate::output::live::Action;
use crate::output::ndjson::NdjsonSink;
use crate::output::style::Style;
use crate::output::table::{Banner, TableSink};
use crate::output::writer::Out;
use crate::output::WatchSink;
use crate::tracer::Tracer;

/// What `qtrace demo` adds to a watch: lines above the view that its
/// scenario keeps current, and a call once the hooks are in (its traffic
/// starts then).
pub struct Demo {
    pub banner: Banner,
    pub attached: Box<dyn FnOnce()>,
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

/// `--web-config-file`, read before anything is attached: a file that
/// cannot be used is a usage error.
fn load_web_config(args: &WatchArgs) -> Result<Option<metrics::WebConfigFile>> {
    let Some(path) = &args.web_config_file else { return Ok(None) };
    if args.metrics_addr.is_none() {
        return Err(UsageError("--web-config-file configures the metrics endpoint: it needs --metrics-addr".into()).into());
    }
    let file = metrics::WebConfigFile::load(path).map_err(|e| UsageError(format!("--web-config-file {}: {e}", path.display())))?;
    Ok(Some(file))
}

/// The scrape endpoint, while `watch` runs.
struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
    shared: metrics::Shared,
    addr: Option<std::net::SocketAddr>,
    /// Where scrapers go, and whether they need a password.
    url: Option<String>,
    basic_auth: bool,
}

impl MetricsServer {
    fn serve(listener: tokio::net::TcpListener, web: Option<metrics::WebConfigFile>, tier: &str) -> Self {
        let shared = metrics::Shared::new(Snapshot { tier: tier.to_owned(), ..Snapshot::default() }.into());
        let addr = listener.local_addr().ok();
        let (tls, basic_auth) = web.as_ref().map_or((false, false), |w| w.describe());
        let task = tokio::spawn(metrics::server::serve(listener, std::sync::Arc::new(metrics::registry(shared.clone())), web));
        let url = addr.map(|a| format!("{}://{a}/metrics", if tls { "https" } else { "http" }));
        eprintln!(
            "qtrace: serving Prometheus metrics on {}{}",
            url.as_deref().unwrap_or_default(),
            if basic_auth { " (basic auth)" } else { "" }
        );
        Self { task, shared, addr, url, basic_auth }
    }

    fn update(&self, tracer: &Tracer) {
        let snap = Snapshot::from_aggregator(&tracer.agg, &tracer.attachment.tier.to_string(), tracer.host.count());
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }
}

/// What people read on stderr once the hooks are in.
fn announce(start: &Start, what: &str) {
    for r in &start.refused {
        eprintln!("qtrace: {r}");
    }
    for l in &start.limits {
        eprintln!("qtrace: {}", l.text);
    }
    let n = start.namespaces;
    let tier = start.tier.map(|t| t.to_string()).unwrap_or_default();
    eprintln!("qtrace: watching {what} ({n} namespace{}) with the {tier} tier; Ctrl-C to stop", if n == 1 { "" } else { "s" });
    for u in &start.unreachable_namespaces {
        eprintln!("qtrace: network namespace {} cannot be entered ({}); its SYN-stage totals are missing", u.netns, u.reason);
    }
}

pub async fn run(args: WatchArgs) -> Result<()> {
    run_with(args, None).await
}

/// `watch`, with the demo's additions when it runs one.
pub async fn run_with(args: WatchArgs, demo: Option<Demo>) -> Result<()> {
    let Resolved { ports, netns, namespaces } = args.scope.resolve()?;
    let out = Out::new(args.output.clone())?;
    let web_config = load_web_config(&args)?;
    let metrics_listener = args.metrics_addr.map(bind_metrics).transpose()?;
    let mut tracer = Tracer::start(
        args.hooks,
        &crate::kernel::probe::Filter { netns, ports: ports.clone(), max_event_rate: args.max_event_rate.0 },
        namespaces,
        !args.no_owner,
    )?;
    tracer.expire_after = args.expire.0;
    let metrics = metrics_listener.map(|l| MetricsServer::serve(l, web_config, &tracer.attachment.tier.to_string()));
    let mut start = Start {
        metrics_addr: metrics.as_ref().and_then(|m| m.addr).map(|a| a.to_string()),
        metrics_url: metrics.as_ref().and_then(|m| m.url.clone()),
        metrics_basic_auth: metrics.as_ref().is_some_and(|m| m.basic_auth),
        ..super::start_record(Some(&tracer.attachment), &tracer.host)
    };
    if args.no_owner {
        // Nothing is partial of what is not done.
        let partial = Limit::OwnersPartial(String::new()).id();
        start.limits.retain(|l| l.id != partial);
        start.limits.push((&Limit::OwnersOff).into());
    }
    let what = describe(&ports, &args);
    let (banner, attached) = demo.map(|d| (d.banner, d.attached)).unzip();
    if let Some(attached) = attached {
        attached();
    }
    announce(&start, &what);
    // On a terminal, unless told otherwise: the full-screen live view.
    let live = !args.json && !args.plain && args.output.is_none() && io::stdout().is_terminal();
    let run = Run { args: &args, start: &start, metrics: metrics.as_ref() };
    let result = if args.json {
        run.drive(tracer, NdjsonSink::new(out)).await
    } else if live {
        run.drive(tracer, Tui::start(Style::for_stdout().on, what, banner, args.all)?).await
    } else {
        run.drive(tracer, TableSink::new(out, args.all, banner)).await
    };
    if let Some(m) = metrics {
        m.task.abort();
    }
    result
}

/// How long a wake-up waits before reading the ring buffer: the latency
/// an event may gain, against a wake-up per record under a storm.
const BATCH_DELAY: Duration = Duration::from_millis(2);

/// The signals and timers that end or pace a run.
struct Clock {
    ticker: tokio::time::Interval,
    deadline: tokio::time::Instant,
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
}

impl Clock {
    async fn new(args: &WatchArgs) -> Result<Self> {
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let deadline = tokio::time::Instant::now() + args.duration.unwrap_or(Duration::from_secs(u32::MAX.into()));
        let sig = |k| signal(k).context("installing a signal handler");
        Ok(Self {
            ticker,
            deadline,
            sigint: sig(SignalKind::interrupt())?,
            sigterm: sig(SignalKind::terminate())?,
            sighup: sig(SignalKind::hangup())?,
        })
    }
}

/// One run of `watch` feeding one sink.
struct Run<'a> {
    args: &'a WatchArgs,
    start: &'a Start,
    metrics: Option<&'a MetricsServer>,
}

impl Run<'_> {
    async fn drive<S: WatchSink>(&self, mut tracer: Tracer, mut sink: S) -> Result<()> {
        let started = std::time::Instant::now();
        // Signals are caught before the start record goes out: a reader
        // that stops qtrace as soon as it sees it still gets the summary.
        let mut clock = Clock::new(self.args).await?;
        sink.started(&tracer, self.start);
        self.run_loop(&mut tracer, &mut sink, &mut clock).await?;
        let mut finished = tracer.finish(&mut sink).await?;
        // The summary's DROPS/S: over the whole run, not the last 100 ms.
        finished.agg.average_rates(started.elapsed().as_secs_f64());
        sink.summary(&finished.agg, self.args.expire.0.map_or(0, |d| d.as_secs()));
        Ok(())
    }

    async fn run_loop<S: WatchSink>(&self, tracer: &mut Tracer, sink: &mut S, clock: &mut Clock) -> Result<()> {
        // Readiness only: the ring buffer itself stays with the tracer.
        // SAFETY: the tracer keeps the descriptor open and the same for
        // longer than this AsyncFd lives (both end with this function).
        let ring =
            unsafe { AsyncFd::register_with_interest(tracer.events_fd(), Interest::READABLE) }.context("watching the ring buffer")?;
        loop {
            tokio::select! {
                guard = ring.readable() => {
                    let mut guard = guard.context("waiting for events")?;
                    // A moment's wait lets a burst gather: the kernel only
                    // wakes a consumer that had read everything
                    // (`bpf_ringbuf_commit`), so under a storm this is one
                    // wake-up and one write per batch instead of per record.
                    tokio::time::sleep(BATCH_DELAY).await;
                    // Cleared before reading: a record committed while we
                    // read wakes us again rather than waiting for the tick.
                    guard.clear_ready();
                    tracer.drain(|ev| sink.event(ev));
                    sink.drained();
                }
                _ = clock.ticker.tick() => {
                    // Once per tick, not per ring-buffer wake-up.
                    if sink.is_closed() {
                        break;
                    }
                    tracer.drain(|ev| sink.event(ev));
                    let report = tracer.poll()?;
                    sink.polled(tracer, &report)?;
                    if let Some(m) = self.metrics {
                        m.update(tracer);
                    }
                    sink.tick(tracer)?;
                }
                action = sink.action() => match action {
                    Action::Quit => break,
                    Action::Redraw => sink.redraw(tracer)?,
                    Action::None => {}
                },
                _ = clock.sighup.recv() => sink.reopen()?,
                _ = clock.sigint.recv() => break,
                _ = clock.sigterm.recv() => break,
                _ = tokio::time::sleep_until(clock.deadline) => break,
            }
            if sink.is_closed() {
                break;
            }
        }
        Ok(())
    }
}
