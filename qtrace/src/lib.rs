//! qtrace: TCP listen-queue overflows per port, live, with eBPF.
//!
//! The flow: `probe` loads the programs and attaches one hook tier; `source`
//! reads what they produce; `netns` and `sock_diag` read every listener's
//! state; `aggregate` turns it all into per-port totals (pure); `output`
//! renders them; `cli` holds the subcommands.
pub mod aggregate;
pub mod btf;
pub mod cli;
pub mod event;
pub mod netns;
pub mod offsets;
pub mod output;
pub mod ports;
pub mod probe;
pub mod sock_diag;
pub mod source;
