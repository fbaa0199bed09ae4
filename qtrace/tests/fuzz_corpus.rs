//! Every seed (and every crash once found) in `fuzz/corpus` through its
//! parser under plain `cargo test`: the inputs that once broke a parser
//! keep it honest without a fuzzer. A panic fails the test.

use std::path::Path;

/// A parser the fuzz targets feed.
type Parse = fn(&[u8]);

#[test]
fn every_corpus_input_is_answered_without_a_panic() {
    let targets: [(&str, Parse); 7] = [
        ("btf", qtrace::fuzz::btf),
        ("sock_diag", qtrace::fuzz::sock_diag),
        ("tracepoint_format", qtrace::fuzz::tracepoint_format),
        ("netstat", qtrace::fuzz::netstat),
        ("kallsyms", qtrace::fuzz::kallsyms),
        ("ring_record", qtrace::fuzz::ring_record),
        ("proc_identity", qtrace::fuzz::proc_identity),
    ];
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, parse) in targets {
        let dir = corpus.join(target);
        let inputs: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).collect();
        assert!(!inputs.is_empty(), "{target} has seeds");
        for entry in inputs {
            let path = entry.expect("a corpus entry").path();
            parse(&std::fs::read(&path).expect("readable"));
        }
    }
}
