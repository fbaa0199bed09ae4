//! What the host tells without eBPF: listeners in every network namespace
//! (`netns`, `sock_diag`), each namespace's sysctls and counters
//! (`ns_state`), and which processes hold a socket (`procs`).
pub mod netns;
pub(crate) mod ns_state;
pub(crate) mod procs;
pub(crate) mod sock_diag;
pub(crate) mod system;

use crate::host::netns::{Namespaces, NsListeners};
use crate::host::procs::Owner;

/// What the tracer reads from the host, so it runs against fakes in tests.
pub trait HostInputs {
    /// Finds new namespaces and forgets vanished ones.
    fn refresh(&mut self);
    /// Listeners of every watched namespace, now.
    fn listeners(&mut self) -> Vec<NsListeners>;
    /// The socket inode that process `pid`'s descriptor `fd` refers to,
    /// with the process.
    fn socket_of(&self, pid: u32, fd: u32) -> Option<(u64, Owner)>;
}

impl HostInputs for Namespaces {
    fn refresh(&mut self) {
        Namespaces::refresh(self);
    }
    fn listeners(&mut self) -> Vec<NsListeners> {
        Namespaces::listeners(self)
    }
    fn socket_of(&self, pid: u32, fd: u32) -> Option<(u64, Owner)> {
        procs::socket_of(pid, fd)
    }
}
