//! What the host tells without eBPF: listeners in every network namespace
//! (`netns`, `sock_diag`), each namespace's sysctls and counters
//! (`ns_state`), and which processes hold a socket (`procs`).
pub mod netns;
pub mod ns_state;
pub mod procs;
pub mod sock_diag;
