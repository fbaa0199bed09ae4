//! Pure logic: no I/O and no clock reads. Decoded events (`event`), the
//! per-port totals (`aggregate`), requested versus effective backlogs
//! (`backlog`), the listener inventory (`inventory`), doctor's findings
//! (`diagnose`) and port filters (`ports`).
pub mod aggregate;
pub mod backlog;
pub mod counts;
pub mod diagnose;
pub mod event;
pub mod inventory;
pub mod ports;
pub mod record;
