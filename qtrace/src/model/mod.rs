//! Pure logic: no I/O and no clock reads. Decoded events (`event`) and
//! their NDJSON lines written fast (`event_line`), the
//! per-port totals (`aggregate`), requested versus effective backlogs
//! (`backlog`), the listener inventory (`inventory`), doctor's findings
//! (`diagnose`) and port filters (`ports`).
pub(crate) mod aggregate;
pub(crate) mod backlog;
pub mod counts;
pub(crate) mod diagnose;
pub mod event;
pub(crate) mod event_line;
pub(crate) mod inventory;
pub mod ports;
pub(crate) mod record;
