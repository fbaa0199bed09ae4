//! The NDJSON sink of `watch --json`: one [`Record`] per line, flushed
//! as it happens. Field names are stable; see docs/events.md.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Result;

use crate::host::identity::Identity;
use crate::host::system;
use crate::model::aggregate::{Aggregator, PortKey};
use crate::model::event::{self, Decoded};
use crate::model::event_line::EventLines;
use crate::model::owners::EventOwners;
use crate::model::record::{CountedRecord, ListenRecord, LostRecord, PortRecord, Record, SettingsRecord, Start};
use crate::output::context::settings_of;
use crate::output::writer::Out;
use crate::output::WatchSink;
use crate::tracer::{PollReport, Sink, Tracer};

pub(crate) struct NdjsonSink {
    out: Out,
    /// Event lines since the last write: one write per ring-buffer batch.
    events: String,
    lines: EventLines,
    /// Namespaces whose settings were written.
    settings_shown: BTreeSet<u32>,
    /// The owner each event names, as JSON text: rendered once per
    /// listener, not per event.
    event_owners: HashMap<PortKey, EventOwners<Arc<str>>>,
    /// The listeners' owners `event_owners` was rendered from.
    owners_generation: Option<u64>,
}

impl NdjsonSink {
    pub(crate) fn new(out: Out) -> Self {
        Self {
            out,
            events: String::with_capacity(1 << 16),
            lines: EventLines::new(),
            settings_shown: BTreeSet::new(),
            event_owners: HashMap::new(),
            owners_generation: None,
        }
    }

    /// Renders the owners events name again, when the listeners' owners
    /// changed.
    fn render_owners(&mut self, tracer: &Tracer) {
        let generation = tracer.owners.generation();
        if self.owners_generation == Some(generation) {
            return;
        }
        self.owners_generation = Some(generation);
        // Events are many: they name the owner; the rest is in the
        // port's summary (`Identity::naming`).
        let render = |id: Identity| Arc::<str>::from(serde_json::to_string(&id.naming()).expect("an identity is plain data"));
        self.event_owners = tracer.owners.for_events(&tracer.listeners).into_iter().map(|(k, e)| (k, e.map(render))).collect();
    }

    /// Writes the event lines gathered so far, before anything after them.
    fn write_events(&mut self) {
        if !self.events.is_empty() {
            self.out.write_str(&self.events);
            self.events.clear();
        }
    }

    fn write(&mut self, r: &Record<'_>) {
        self.write_events();
        self.out.write_str(&r.line());
    }

    /// Settings of namespaces not written yet; forgets those gone (a long
    /// run sees many).
    fn new_settings(&mut self, tracer: &Tracer, now: i128) {
        // Once per namespace while qtrace knows it: a namespace without
        // listeners is read only now and then, not at every poll.
        self.settings_shown.retain(|n| tracer.host.knows(*n));
        let new: Vec<u32> = tracer.listeners.iter().map(|ns| ns.netns).filter(|n| !self.settings_shown.contains(n)).collect();
        for (netns, settings) in settings_of(tracer, &new) {
            self.write(&Record::Settings(SettingsRecord::new(netns, settings, now)));
            self.settings_shown.insert(netns);
        }
    }
}

impl Sink for NdjsonSink {
    fn event(&mut self, ev: &Decoded) {
        let owners = self.event_owners.get(&PortKey { netns: ev.netns, port: ev.local.port() });
        let owner = owners.and_then(|o| o.get(ev.local.ip()));
        self.lines.write(&mut self.events, ev, owner.map(|o| &**o));
    }

    fn polled(&mut self, tracer: &Tracer, report: &PollReport) -> Result<()> {
        let now = system::realtime_ns();
        self.write_events();
        self.render_owners(tracer);
        for (key, st) in &report.expired {
            self.write(&Record::Expired(PortRecord::new(key, st, Some(now))));
        }
        self.new_settings(tracer, now);
        if report.lost > 0 {
            let total = tracer.agg.losses.ringbuf_full;
            self.write(&Record::Lost(LostRecord { time: event::rfc3339(now), count: report.lost, total }));
        }
        for d in &report.counted {
            self.write(&Record::Counted(CountedRecord::new(d, tracer.agg.ports().get(&d.key), now)));
        }
        for seen in &report.listens {
            self.write(&Record::Listen(ListenRecord::new(seen.netns, &seen.listener, &seen.requested, now)));
        }
        for o in &report.outcomes {
            self.write(&Record::Outcome(o));
        }
        self.out.flush();
        Ok(())
    }
}

impl WatchSink for NdjsonSink {
    fn started(&mut self, tracer: &Tracer, start: &Start) {
        self.write(&Record::Start(start));
        self.render_owners(tracer);
        self.new_settings(tracer, system::realtime_ns());
        self.out.flush();
    }
    fn drained(&mut self) {
        self.write_events();
        self.out.flush();
    }
    fn tick(&mut self, _tracer: &Tracer) -> Result<()> {
        Ok(())
    }
    fn reopen(&mut self) -> Result<()> {
        self.out.reopen()
    }
    fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
    fn summary(&mut self, agg: &Aggregator, _expire_secs: u64) {
        for (key, st) in agg.ports() {
            if st.events > 0 || st.kinds.iter().any(|(_, n)| n > 0) || st.accept_wait.is_active() {
                self.write(&Record::Summary(PortRecord::new(key, st, None)));
            }
        }
        self.write(&Record::Losses(agg.losses));
        self.out.flush();
    }
}
