//! qtrace: TCP listen-queue overflows per port, live, with eBPF.
//!
//! The flow, top-down: `kernel` loads the programs, attaches one hook tier
//! and owns the maps they fill; `host` reads what the rest of the system
//! says (listeners in every namespace, sysctls and counters, socket
//! owners); `model` turns both into per-port totals, backlogs and findings
//! without any I/O; `tracer` runs that loop; `output` and `metrics` render
//! it; `cli` holds the subcommands.
pub mod cli;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod kernel;
pub mod metrics;
pub mod model;
pub(crate) mod output;
pub(crate) mod tracer;
