//! Fuzz target: `qtrace::fuzz::sock_diag` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::sock_diag(data));
