//! Fuzz target: `qtrace::fuzz::netstat` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::netstat(data));
