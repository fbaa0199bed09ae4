//! `qtrace doctor`: samples every namespace's settings and counters, the
//! listeners and (when permitted) an eBPF capture for `--duration`, then
//! explains what overflowed, why, and what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{DoctorArgs, Resolved};
use crate::host;
use crate::host::netns::{self, Namespaces};
use crate::host::ns_state::NsState;
use crate::kernel::probe::Filter;
use crate::model::aggregate::{Aggregator, PortKey};
use crate::model::counts::Counts;
use crate::model::diagnose::{self, Input, ListenerSample, NsSample};
use crate::model::inventory::{self, ListenerRow};
use crate::model::ports::PortSet;
use crate::model::record::{Record, Start};
use crate::output::doctor as render;
use crate::output::style::Style;
use crate::tracer::{PollReport, Sink, Tracer};

/// With an eBPF capture, or from the counters and listeners alone.
enum Sampling {
    Traced(Box<Tracer>),
    Plain(Namespaces),
}

/// How often the accept queues are sampled for their peak.
const SAMPLE: Duration = Duration::from_millis(250);

fn states(namespaces: &Namespaces) -> BTreeMap<u32, NsState> {
    namespaces.read_each(NsState::read, |_| true)
}

/// Doctor's sink: only the accept queues' peaks.
struct Peaks<'a>(&'a mut BTreeMap<u64, u32>);

impl Sink for Peaks<'_> {
    fn event(&mut self, _ev: &crate::model::event::Decoded) {}
    fn polled(&mut self, tracer: &Tracer, _report: &PollReport) -> Result<()> {
        track_peaks(self.0, &tracer.listeners);
        Ok(())
    }
}

/// Longest accept queue per listener (by socket cookie).
fn track_peaks(peaks: &mut BTreeMap<u64, u32>, snapshot: &[netns::NsListeners]) {
    for l in snapshot.iter().flat_map(|ns| &ns.listeners) {
        let p = peaks.entry(l.cookie).or_default();
        *p = (*p).max(l.accept_queue);
    }
}

/// Attaches unless told not to; a failure to attach leaves counters only.
/// The tracer owns the namespaces while it runs and gives them back.
fn begin(args: &DoctorArgs, netns: Option<u32>, ports: &PortSet, namespaces: Namespaces) -> Result<(Sampling, Start)> {
    if args.no_capture {
        let start = Start { capture_error: Some("--no-capture".into()), ..super::start_record(None, &namespaces) };
        return Ok((Sampling::Plain(namespaces), start));
    }
    match Tracer::start(
        args.hooks,
        &Filter { netns, ports: ports.clone(), max_event_rate: Some(super::DEFAULT_MAX_EVENT_RATE) },
        namespaces,
        true,
    ) {
        Ok(tracer) => {
            let start = super::start_record(Some(&tracer.attachment), &tracer.host);
            Ok((Sampling::Traced(Box::new(tracer)), start))
        }
        Err(e) => {
            let namespaces = Namespaces::new(netns)?;
            let start = Start { capture_error: Some(format!("{e:#}")), ..super::start_record(None, &namespaces) };
            Ok((Sampling::Plain(namespaces), start))
        }
    }
}

/// Samples the accept queues for their peak until `duration` or a signal;
/// returns the seconds sampled.
async fn sample(sampling: &mut Sampling, peaks: &mut BTreeMap<u64, u32>, duration: Duration, stop: &mut Stop) -> Result<f64> {
    let started = tokio::time::Instant::now();
    let deadline = started + duration;
    let Stop { sigint, sigterm } = stop;
    for tick in 1u32.. {
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE) => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        match sampling {
            Sampling::Traced(tracer) => {
                tracer.drain(|_| {});
                if tick.is_multiple_of(4) {
                    tracer.poll()?;
                }
                track_peaks(peaks, &tracer.listeners);
            }
            Sampling::Plain(ns) => track_peaks(peaks, &ns.listeners()),
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// SIGINT and SIGTERM, caught before the start record goes out: a reader
/// that stops doctor as soon as it sees it still gets the report.
struct Stop {
    sigint: Signal,
    sigterm: Signal,
}

impl Stop {
    fn new() -> Result<Self> {
        Ok(Self { sigint: signal(SignalKind::interrupt())?, sigterm: signal(SignalKind::terminate())? })
    }
}

/// What the window saw, for the diagnosis.
struct Window {
    before: BTreeMap<u32, NsState>,
    /// Each listener's drop counter when sampling began, by cookie.
    baseline: BTreeMap<u64, u32>,
    peaks: BTreeMap<u64, u32>,
    agg: Option<Aggregator>,
}

impl Window {
    /// The namespaces' samples: settings now, counters' growth.
    fn namespaces(&self, namespaces: &Namespaces, after: &BTreeMap<u32, NsState>) -> Vec<NsSample> {
        after
            .iter()
            .map(|(ino, s)| NsSample {
                netns: *ino,
                settings: s.settings,
                delta: self.before.get(ino).map_or(s.counters, |b| s.counters.since(&b.counters)),
                enter: namespaces.enter_command(*ino),
            })
            .collect()
    }

    /// The listeners' samples: state now, drop-counter growth, peak queue,
    /// and the capture's counts on their port.
    fn listeners(&self, rows: Vec<ListenerRow>) -> Vec<ListenerSample> {
        rows.into_iter()
            .map(|row| {
                let l = &row.listener;
                let drops_delta = u64::from(l.drops.unwrap_or(0).wrapping_sub(self.baseline.get(&l.cookie).copied().unwrap_or(0)));
                let key = PortKey { netns: row.netns, port: l.port };
                let kinds = self.agg.as_ref().map(|a| a.ports().get(&key).map_or_else(Counts::default, |st| st.kinds));
                let peak_accept_queue = self.peaks.get(&l.cookie).copied().unwrap_or(l.accept_queue);
                let port = self.agg.as_ref().and_then(|a| a.ports().get(&key)).filter(|st| st.accepts_traced);
                let flow = port.and_then(|st| st.listeners.get(&l.cookie).cloned());
                let wait = port.map(|st| st.accept_wait.clone());
                let outcomes = self.agg.as_ref().map(|a| a.ports().get(&key).map(|st| st.outcomes.clone()).unwrap_or_default());
                ListenerSample { peak_accept_queue, drops_delta, kinds, row, flow, wait, outcomes }
            })
            .collect()
    }
}

pub async fn run(args: DoctorArgs) -> Result<()> {
    let Resolved { ports, netns, mut namespaces } = args.scope.resolve()?;
    let before = states(&namespaces);
    let first = namespaces.listeners();
    let baseline = first.iter().flat_map(|ns| &ns.listeners).filter_map(|l| Some((l.cookie, l.drops?))).collect();
    let mut peaks = BTreeMap::new();
    track_peaks(&mut peaks, &first);
    let (mut sampling, start) = begin(&args, netns, &ports, namespaces)?;
    let mut stop = Stop::new()?;
    if args.json {
        // Flushed now: a reader knows sampling has begun.
        print_now(&Record::Start(&start).line());
    }
    announce(&start, &args);
    let seconds = sample(&mut sampling, &mut peaks, args.duration, &mut stop).await?;
    // Final accounting as in `watch`.
    let (agg, mut namespaces, backlogs) = match sampling {
        Sampling::Traced(tracer) => {
            let f = tracer.finish(&mut Peaks(&mut peaks)).await?;
            (Some(f.agg), f.namespaces, Some(f.backlogs))
        }
        Sampling::Plain(namespaces) => (None, namespaces, None),
    };
    let window = Window { before, baseline, peaks, agg };
    let after = states(&namespaces);
    let settings = after.iter().map(|(ino, s)| (*ino, s.settings)).collect();
    let rows = inventory::rows(host::survey(&mut namespaces).0, &ports, &settings, backlogs.as_ref());
    let samples = window.namespaces(&namespaces, &after);
    let listeners = window.listeners(rows);
    let listener_netns: BTreeSet<u32> = listeners.iter().map(|l| l.row.netns).collect();
    let findings = diagnose::diagnose(&Input { seconds, namespaces: samples.clone(), listeners, all_ports: ports.is_all() });
    let text = if args.json {
        render::ndjson(&samples, &findings, seconds)
    } else {
        // People get the namespaces that matter: with a listener on a
        // diagnosed port or a finding (a host may have hundreds).
        let relevant: BTreeSet<u32> = listener_netns.into_iter().chain(findings.iter().map(|f| f.netns)).collect();
        let shown: Vec<NsSample> = samples.into_iter().filter(|s| relevant.contains(&s.netns)).collect();
        render::report(&start, seconds, &shown, &findings, Style::for_stdout())
    };
    print_now(&text);
    Ok(())
}

/// What people read on stderr as sampling begins.
fn announce(start: &Start, args: &DoctorArgs) {
    let n = start.namespaces;
    let how = start.tier.map_or_else(|| "counters only, no capture".to_owned(), |t| format!("capture with the {t} tier"));
    eprintln!(
        "qtrace: doctor: sampling {n} namespace{} for {:.1} s ({how}); Ctrl-C to stop early",
        if n == 1 { "" } else { "s" },
        args.duration.as_secs_f64(),
    );
}

/// Writes to stdout and flushes; a reader that went away is no error.
fn print_now(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
