pub mod btf;
pub mod netns;
pub mod offsets;
pub mod ports;
pub mod probe;
pub mod sock_diag;
