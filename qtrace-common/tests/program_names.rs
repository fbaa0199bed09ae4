//! The `PROG_*` constants against the programs qtrace-ebpf defines.
//!
//! The eBPF object exists only after the bpf-linker build, and aya-ebpf's
//! attribute macros name each program after its function (they accept no
//! constant), so the sources are the one place both sides can be compared:
//! every program function must have a constant, every constant must name a
//! program function, and [`PROGRAMS`] must list each constant once.

use std::collections::BTreeSet;
use std::path::Path;

use qtrace_common::PROGRAMS;

/// aya-ebpf-macros' attributes that turn a function into a program (all but
/// `map` and `btf_map`).
const PROGRAM_ATTRIBUTES: [&str; 28] = [
    "btf_tracepoint",
    "cgroup_device",
    "cgroup_skb",
    "cgroup_sock",
    "cgroup_sock_addr",
    "cgroup_sockopt",
    "cgroup_sysctl",
    "classifier",
    "fentry",
    "fexit",
    "flow_dissector",
    "kprobe",
    "kretprobe",
    "lsm",
    "lsm_cgroup",
    "perf_event",
    "raw_tracepoint",
    "sk_lookup",
    "sk_msg",
    "sk_reuseport",
    "sock_ops",
    "socket_filter",
    "stream_parser",
    "stream_verdict",
    "tracepoint",
    "uprobe",
    "uretprobe",
    "xdp",
];

/// The attribute's last path segment (`aya_ebpf::macros::kprobe` is
/// `kprobe`) when `line` opens an attribute.
fn attribute_name(line: &str) -> Option<&str> {
    let body = line.trim_start().strip_prefix("#[")?;
    let end = body.find(['(', ']']).unwrap_or(body.len());
    body[..end].trim().rsplit("::").next()
}

/// The function name on the first line from `lines` that declares one.
fn next_fn_name<'a>(lines: impl Iterator<Item = &'a str>) -> Option<String> {
    lines.filter_map(|l| l.split_once("fn ")).find_map(|(before, after)| {
        let before = before.trim();
        // Only declarations (`fn`, `pub fn`, `pub(crate) fn`, `unsafe fn`).
        let is_decl = before.is_empty() || before.split_whitespace().all(|w| w.starts_with("pub") || w == "unsafe" || w == "extern");
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        (is_decl && !name.is_empty()).then_some(name)
    })
}

/// Every program function in `src`, by name.
fn programs_in(src: &str) -> Vec<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if attribute_name(line).is_some_and(|a| PROGRAM_ATTRIBUTES.contains(&a)) {
            let name = next_fn_name(lines[i + 1..].iter().copied());
            found.push(name.unwrap_or_else(|| panic!("no function after `{}`", line.trim())));
        }
    }
    found
}

fn ebpf_programs() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qtrace-ebpf/src");
    let mut all = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            for name in programs_in(&std::fs::read_to_string(&path).unwrap()) {
                assert!(all.insert(name.clone()), "program {name} defined twice");
            }
        }
    }
    all
}

/// `(constant, value)` of every `pub const PROG_*: &str` in lib.rs, so a
/// constant left out of [`PROGRAMS`] is still checked.
fn prog_constants() -> Vec<(String, String)> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const PROG_"))
        .map(|rest| {
            let (name, value) = rest.split_once(": &str = ").unwrap_or_else(|| panic!("unexpected PROG_ line: {rest}"));
            (format!("PROG_{name}"), value.trim_end_matches(';').trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn every_program_has_a_constant_and_every_constant_a_program() {
    let programs = ebpf_programs();
    assert!(programs.len() >= PROGRAMS.len(), "found only {programs:?} in qtrace-ebpf/src");
    let listed: BTreeSet<String> = PROGRAMS.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed.len(), PROGRAMS.len(), "PROGRAMS lists a name twice");
    let missing: Vec<_> = programs.difference(&listed).collect();
    assert!(missing.is_empty(), "eBPF programs without a PROG_ constant in PROGRAMS: {missing:?}");
    let stale: Vec<_> = listed.difference(&programs).collect();
    assert!(stale.is_empty(), "PROGRAMS names no eBPF program: {stale:?}");
}

#[test]
fn every_prog_constant_is_listed() {
    let constants = prog_constants();
    assert_eq!(constants.len(), PROGRAMS.len(), "PROG_ constants and PROGRAMS differ: {constants:?}");
    for (name, value) in &constants {
        assert!(PROGRAMS.contains(&value.as_str()), "{name} = {value:?} is not in PROGRAMS");
    }
}

#[test]
fn the_parser_sees_attributes_and_names() {
    let src = "#[kprobe]\npub fn a(ctx: ProbeContext) -> u32 { 0 }\n\
               #[aya_ebpf::macros::tracepoint(name = \"x\", category = \"y\")]\n#[inline(never)]\nfn b() {}\n\
               #[map]\nstatic M: u32 = 0;\n#[inline(always)]\nfn helper() {}\n";
    assert_eq!(programs_in(src), ["a", "b"]);
}
