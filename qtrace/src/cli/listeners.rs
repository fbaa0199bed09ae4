//! `qtrace listeners`: every TCP listener with its queues, drop counter,
//! owning processes and whether `somaxconn` clamped its backlog. Needs no
//! eBPF; unprivileged it sees its own namespace and its own processes.

use std::io::Write as _;

use anyhow::Result;

use super::{ListenersArgs, Resolved};
use crate::host;
use crate::host::ns_state::Settings;
use crate::model::inventory;
use crate::model::record::Record;
use crate::output::listeners as render;
use crate::output::style::Style;

pub fn run(args: ListenersArgs) -> Result<()> {
    let Resolved { ports, mut namespaces, .. } = args.scope.resolve()?;
    let settings = namespaces.read_each(|| Ok(Settings::read()), |_| true);
    let (survey, unreadable) = host::survey(&mut namespaces);
    let rows = inventory::rows(survey, &ports, &settings, None);
    let text = if args.json {
        rows.iter().map(|r| Record::Listener(r.into()).line()).collect()
    } else {
        render::table(&rows, Style::for_stdout())
    };
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if !namespaces.unreachable.is_empty() {
        eprintln!(
            "qtrace: {} network namespace{} could not be entered (entering another namespace needs CAP_SYS_ADMIN); their listeners are not shown",
            namespaces.unreachable.len(),
            if namespaces.unreachable.len() == 1 { "" } else { "s" }
        );
    }
    if unreadable > 0 && rows.iter().any(|r| r.owners.is_empty()) {
        eprintln!(
            "qtrace: the descriptors of {unreadable} process{} could not be read (other users' /proc/PID/fd needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); listeners they hold show no process",
            if unreadable == 1 { "" } else { "es" }
        );
    }
    Ok(())
}
