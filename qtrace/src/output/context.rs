//! The lines above the table and the live view: each shown namespace's
//! listen-queue settings and the backlogs qtrace saw `somaxconn` cut.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::ns_state::Settings;
use crate::model::backlog::{self, Clamp};
use crate::tracer::Tracer;

/// The settings of the namespaces `which`, read inside each.
pub(crate) fn settings_of(tracer: &Tracer, which: &[u32]) -> BTreeMap<u32, Settings> {
    tracer.host.read_each(|| Ok(Settings::read()), |ino| which.contains(&ino))
}

/// Settings and clamp lines for the namespaces with a shown port.
pub(crate) fn lines(tracer: &Tracer, show_quiet: bool) -> Vec<String> {
    let shown: BTreeSet<u32> =
        tracer.agg.ports().iter().filter(|(_, st)| show_quiet || st.kinds.is_active()).map(|(k, _)| k.netns).collect();
    // Nothing to show yet: the one watched namespace (`--netns`), else
    // qtrace's own.
    let shown: Vec<u32> =
        if shown.is_empty() { vec![tracer.host.only().unwrap_or(tracer.host.own())] } else { shown.into_iter().collect() };
    let mut out: Vec<String> = settings_of(tracer, &shown).into_iter().map(|(netns, s)| format!("netns {netns}: {}", s.line())).collect();
    for ns in tracer.listeners.iter().filter(|ns| shown.contains(&ns.netns)) {
        for l in &ns.listeners {
            let Some(req) = tracer.backlogs.get(u64::from(l.inode)) else {
                continue;
            };
            if backlog::clamp(Some(req.backlog), l.accept_queue_max, None) == Clamp::Proven {
                out.push(format!(
                    "port {}: {} asked listen() for a backlog of {}, net.core.somaxconn cut it to {}",
                    l.port,
                    req.owner.short(),
                    req.backlog,
                    l.accept_queue_max
                ));
            }
        }
    }
    out
}
