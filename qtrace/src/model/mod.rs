//! Pure logic: no I/O and no clock reads. Decoded events (`event`) and
//! their NDJSON lines written fast (`event_line`), the
//! per-port totals (`aggregate`), accept-queue waits (`accept_wait`) and
//! arrivals and accepts per listener (`listener_flow`), requested versus effective backlogs
//! (`backlog`), connection outcomes (`outcome`), the listener inventory (`inventory`), doctor's findings
//! (`diagnose`), port filters (`ports`) and listeners' owners (`owners`).
pub mod accept_wait;
pub(crate) mod aggregate;
pub(crate) mod backlog;
pub mod counts;
pub(crate) mod diagnose;
pub mod event;
pub(crate) mod event_line;
pub(crate) mod inventory;
pub(crate) mod listener_flow;
pub mod outcome;
pub(crate) mod owners;
pub mod ports;
pub(crate) mod record;
