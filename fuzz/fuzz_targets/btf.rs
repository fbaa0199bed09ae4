//! Fuzz target: `qtrace::fuzz::btf` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::btf(data));
