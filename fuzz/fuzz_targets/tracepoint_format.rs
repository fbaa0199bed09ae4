//! Fuzz target: `qtrace::fuzz::tracepoint_format` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::tracepoint_format(data));
