//! The kernel side as userspace sees it: the running kernel's BTF and
//! tracepoint formats (`btf`, `offsets`), loading and attaching one hook
//! tier (`probe`), and the maps the programs fill (`maps`).
pub(crate) mod btf;
pub(crate) mod limits;
pub mod maps;
pub(crate) mod offsets;
pub mod probe;
