//! Fuzz target: `qtrace::fuzz::proc_identity` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::proc_identity(data));
