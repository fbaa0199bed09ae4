//! qtrace: TCP listen-queue overflows per port, live, with eBPF.
//!
//! The flow: `probe` loads the programs and attaches one hook tier; `source`
//! reads what they produce; `netns` and `sock_diag` read every listener's
//! state, `kernel_state` each namespace's sysctls and counters, `procs` who
//! holds a socket; `aggregate` turns it all into per-port totals (pure) and
//! `tracer` runs that loop; `listeners`, `backlog` and `diagnose` explain
//! what the numbers mean; `output` renders; `cli` holds the subcommands.
pub mod aggregate;
pub mod backlog;
pub mod btf;
pub mod cli;
pub mod demo;
pub mod diagnose;
pub mod event;
pub mod kernel_state;
pub mod listeners;
pub mod metrics;
pub mod netns;
pub mod offsets;
pub mod output;
pub mod ports;
pub mod probe;
pub mod procs;
pub mod sock_diag;
pub mod source;
pub mod tracer;
