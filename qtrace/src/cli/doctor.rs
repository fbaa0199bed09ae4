//! `qtrace doctor`: samples every namespace's settings and counters, the
//! listeners and (when permitted) an eBPF capture for `--duration`, then
//! explains what overflowed, why, and what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;

use super::{DoctorArgs, Resolved};
use crate::host::netns::{self, Namespaces};
use crate::host::ns_state::NsState;
use crate::kernel::probe::Filter;
use crate::model::diagnose::{self, Input, ListenerSample, NsSample};
use crate::model::event::Kind;
use crate::model::inventory;
use crate::output::doctor::{self as render, Capabilities};
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

pub async fn run(args: DoctorArgs) -> Result<()> {
    let Resolved { ports, netns, mut namespaces } = args.scope.resolve()?;
    let before = states(&namespaces);
    let first = namespaces.listeners();
    let baseline: BTreeMap<u64, u32> = first.iter().flat_map(|ns| &ns.listeners).filter_map(|l| Some((l.cookie, l.drops?))).collect();
    let mut peaks = BTreeMap::new();
    track_peaks(&mut peaks, &first);

    let mut caps = Capabilities::probe();
    let count = namespaces.count();
    // The tracer owns the namespaces while it runs and gives them back.
    let mut sampling = if args.no_capture {
        caps.capture_error = Some("--no-capture".into());
        Sampling::Plain(namespaces)
    } else {
        match Tracer::start(args.hooks, &Filter { netns, ports: ports.clone() }, namespaces) {
            Ok(tracer) => {
                let a = &tracer.attachment;
                caps.tier = Some(a.tier.to_string());
                caps.limits = a.refused.iter().map(ToString::to_string).chain(a.limits.iter().map(ToString::to_string)).collect();
                Sampling::Traced(Box::new(tracer))
            }
            Err(e) => {
                caps.capture_error = Some(format!("{e:#}"));
                Sampling::Plain(Namespaces::new(netns)?)
            }
        }
    };
    eprintln!(
        "qtrace: doctor: sampling {count} namespace{} for {:.1} s ({}); Ctrl-C to stop early",
        if count == 1 { "" } else { "s" },
        args.duration.as_secs_f64(),
        caps.tier.as_deref().map_or_else(|| "counters only, no capture".to_owned(), |t| format!("capture with the {t} tier"))
    );

    let started = tokio::time::Instant::now();
    let deadline = started + args.duration;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE) => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        ticks += 1;
        match &mut sampling {
            Sampling::Traced(tracer) => {
                tracer.drain(|_| {});
                if ticks.is_multiple_of(4) {
                    tracer.poll()?;
                }
                track_peaks(&mut peaks, &tracer.listeners);
            }
            Sampling::Plain(ns) => track_peaks(&mut peaks, &ns.listeners()),
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    // Final accounting as in `watch`: two polls a moment apart.
    let (agg, mut namespaces, backlogs) = match sampling {
        Sampling::Traced(tracer) => {
            let mut sampler = Peaks(&mut peaks);
            let f = tracer.finish(&mut sampler).await?;
            (Some(f.agg), f.namespaces, Some(f.backlogs))
        }
        Sampling::Plain(namespaces) => (None, namespaces, None),
    };
    let after = states(&namespaces);
    let settings = after.iter().map(|(ino, s)| (*ino, s.settings)).collect();
    let (rows, _) = inventory::snapshot(&mut namespaces, &ports, &settings, backlogs.as_ref());

    let samples: Vec<NsSample> = after
        .iter()
        .map(|(ino, s)| NsSample {
            netns: *ino,
            settings: s.settings,
            delta: before.get(ino).map_or(s.counters, |b| s.counters.since(&b.counters)),
            enter: namespaces.enter_command(*ino),
        })
        .collect();
    let listeners: Vec<ListenerSample> = rows
        .into_iter()
        .map(|row| {
            let l = &row.listener;
            let drops_delta = u64::from(l.drops.unwrap_or(0).wrapping_sub(baseline.get(&l.cookie).copied().unwrap_or(0)));
            let kinds = agg.as_ref().map(|a| {
                a.ports().get(&crate::model::aggregate::PortKey { netns: row.netns, port: l.port }).map_or([0; Kind::ALL.len()], |st| {
                    st.kinds.iter().map(|(_, n)| n).collect::<Vec<_>>().try_into().unwrap_or([0; Kind::ALL.len()])
                })
            });
            ListenerSample { peak_accept_queue: peaks.get(&l.cookie).copied().unwrap_or(l.accept_queue), drops_delta, kinds, row }
        })
        .collect();
    let listener_netns: Vec<u32> = listeners.iter().map(|l| l.row.netns).collect();
    let findings = diagnose::diagnose(&Input { seconds, namespaces: samples.clone(), listeners, all_ports: ports.is_all() });

    let mut text = String::new();
    if args.json {
        let mut line = |v: serde_json::Value| {
            text.push_str(&v.to_string());
            text.push('\n');
        };
        caps.seconds = seconds;
        line(serde_json::to_value(&caps)?);
        for s in &samples {
            line(render::settings_json(s));
        }
        for f in &findings {
            line(render::finding_json(f));
        }
    } else {
        caps.seconds = seconds;
        // People get the namespaces that matter: with a listener on a
        // diagnosed port or a finding (a host may have hundreds).
        let relevant: BTreeSet<u32> = listener_netns.into_iter().chain(findings.iter().map(|f| f.netns)).collect();
        let shown: Vec<NsSample> = samples.into_iter().filter(|s| relevant.contains(&s.netns)).collect();
        text = render::report(&caps, &shown, &findings, Style::for_stdout());
    }
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
