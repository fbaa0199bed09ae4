//! The kernel side as userspace sees it: the running kernel's BTF and
//! tracepoint formats (`btf`, `offsets`), loading and attaching one hook
//! tier (`probe`), and the maps the programs fill (`maps`).
pub mod btf;
pub mod limits;
pub mod maps;
pub mod offsets;
pub mod probe;
