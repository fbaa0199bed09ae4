//! Fuzz target: `qtrace::fuzz::kallsyms` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qtrace::fuzz::kallsyms(data));
