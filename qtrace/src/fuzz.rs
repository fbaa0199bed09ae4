//! Entry points for the fuzz targets in `fuzz/`: every parser of input
//! that comes from outside qtrace, each fed arbitrary bytes. They must
//! answer (or refuse) and never panic, loop or read out of bounds; the
//! targets run under libFuzzer with AddressSanitizer (`cargo xtask test`).

use std::collections::BTreeMap;

use qtrace_common::Config;

use crate::host::identity::{cgroup_path, user_name, Workload};
use crate::host::ns_state::parse_snmp;
use crate::host::runtime;
use crate::host::sock_diag::parse_reply;
use crate::kernel::btf::Btf;
use crate::kernel::offsets::{self, TpFormat};
use crate::model::event::Decoded;
use crate::model::event_line::EventLines;

/// A BTF file (`QTRACE_BTF` may name any file): parsed, then asked for
/// everything qtrace asks a kernel's BTF.
pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data) else { return };
    let mut cfg = Config::empty();
    let _ = offsets::from_btf(&btf, &mut cfg);
    let _ = offsets::arg_slots(&btf, &mut cfg);
    let _ = btf.func_params(["tcp_conn_request", "tcp_v4_syn_recv_sock"]);
    let _ = btf.field("sock", "__sk_common.skc_net.net");
}

/// One sock_diag reply datagram.
pub fn sock_diag(data: &[u8]) {
    let _ = parse_reply(data);
}

/// A tracepoint's `format` file, read as every tracepoint qtrace uses.
pub fn tracepoint_format(data: &[u8]) {
    let fmt = TpFormat::parse(&String::from_utf8_lossy(data));
    let mut cfg = Config::empty();
    let _ = offsets::from_kfree_skb_format(&fmt, &mut cfg);
    let _ = offsets::from_listen_formats(&fmt, &fmt, &mut cfg);
}

/// `/proc/net/netstat` or `/proc/net/snmp`.
pub fn netstat(data: &[u8]) {
    let mut out = BTreeMap::new();
    parse_snmp(&String::from_utf8_lossy(data), &mut out);
}

/// `/proc/kallsyms`.
pub fn kallsyms(data: &[u8]) {
    let _ = offsets::kallsyms_ranges(data);
}

/// What a listener's owner is read from: a `/proc/PID/cgroup` text and
/// the path it gives, the same bytes as a workload's `/etc/passwd` (a
/// container image's file) looked up for the uid the first byte says, and
/// as each container runtime's state file (an OCI bundle's `config.json`
/// read as containerd's and CRI-O's, c/storage's `containers.json`,
/// Docker's `config.v2.json`), whose values a workload chooses.
pub fn proc_identity(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(path) = cgroup_path(&text) {
        let _ = Workload::from_cgroup(&path);
    }
    let _ = Workload::from_cgroup(&text);
    let _ = user_name(&text, data.first().map_or(0, |b| u32::from(*b)));
    if let Ok(annotations) = runtime::parse_annotations(data) {
        let _ = runtime::from_containerd(&annotations);
        let _ = runtime::from_crio(&annotations);
    }
    let _ = runtime::parse_podman(data, "4c01db0b339c3b5f2e4b2d6c1a9b6f1f8b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0");
    let _ = runtime::parse_docker(data);
}

/// A ring-buffer record, decoded and written as its NDJSON line.
pub fn ring_record(data: &[u8]) {
    if let Ok(ev) = Decoded::decode(data, 0) {
        let mut line = String::new();
        EventLines::new().write(&mut line, &ev, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target).join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The hand-made seeds are valid inputs, so fuzzing starts on the
    /// paths that matter rather than at the first length check.
    #[test]
    fn seeds_parse() {
        let btf = Btf::parse(seed("btf", "small")).expect("BTF seed");
        let [params] = btf.func_params(["tcp_conn_request"]);
        assert_eq!(params.expect("a prototype"), vec!["sk", "skb"]);
        let reply = parse_reply(&seed("sock_diag", "listener_request_done")).expect("sock_diag seed");
        assert!(reply.done && reply.listeners.len() == 1 && reply.requests.len() == 1, "{reply:?}");
        assert_eq!(reply.listeners[0].drops, Some(8));
        for name in ["ack_overflow_v4", "accept_queue_full_v6"] {
            Decoded::decode(&seed("ring_record", name), 0).expect("record seed");
        }
        let cgroup = String::from_utf8(seed("proc_identity", "kubepods_cgroup")).unwrap();
        let pod = Workload::from_cgroup(&cgroup_path(&cgroup).expect("a cgroup path"));
        assert!(pod.container_id.is_some() && pod.pod_uid.is_some(), "{pod:?}");
        let annotations = runtime::parse_annotations(&seed("proc_identity", "bundle_config")).expect("bundle seed");
        assert!(runtime::from_containerd(&annotations).0.pod_name.is_some() && runtime::from_crio(&annotations).0.image.is_some());
        let id = "4c01db0b339c3b5f2e4b2d6c1a9b6f1f8b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0";
        let podman = runtime::parse_podman(&seed("proc_identity", "podman_containers_json"), id).expect("store seed").expect("listed");
        assert!(podman.container.image.is_some(), "{podman:?}");
        assert!(runtime::parse_docker(&seed("proc_identity", "docker_config_v2")).expect("Docker seed").container.pod_name.is_some());
        let k = offsets::kallsyms_ranges(&seed("kallsyms", "kallsyms")[..]);
        assert!(!k.missing.contains(&"tcp_v4_rcv"), "kallsyms seed has tcp_v4_rcv");
    }
}
