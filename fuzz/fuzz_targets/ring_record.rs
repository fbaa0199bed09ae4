//! Fuzz target: `qtrace::fuzz::ring_record` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::ring_record(data));
