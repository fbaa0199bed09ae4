//! Builds the programs' [`Config`]: kernel struct offsets from BTF and
//! tracepoint record layouts from tracefs, resolved on the running kernel.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use qtrace_common::{range, ArgSlots, Config, OFFSET_NONE, SLOT_NONE};

use crate::kernel::btf::{Btf, BtfError};

fn offset(btf: &Btf, root: &str, path: &str, size: &[u32]) -> Result<u32> {
    let f = btf.field(root, path).with_context(|| format!("reading {root}.{path} from the kernel's BTF"))?;
    if !size.contains(&f.size) {
        bail!("{root}.{path} is {} bytes on this kernel; qtrace expects {size:?}", f.size);
    }
    Ok(f.offset)
}

/// Fills the struct offsets of `cfg` from `btf`.
pub(crate) fn from_btf(btf: &Btf, cfg: &mut Config) -> Result<()> {
    cfg.sk_family = offset(btf, "sock", "__sk_common.skc_family", &[2])?;
    cfg.sk_num = offset(btf, "sock", "__sk_common.skc_num", &[2])?;
    cfg.sk_state = offset(btf, "sock", "__sk_common.skc_state", &[1])?;
    cfg.sk_rcv_saddr = offset(btf, "sock", "__sk_common.skc_rcv_saddr", &[4])?;
    // Absent on kernels built without IPv6.
    cfg.sk_v6_rcv_saddr = match btf.field("sock", "__sk_common.skc_v6_rcv_saddr") {
        Ok(f) => f.offset,
        Err(BtfError::NoMember { .. }) => OFFSET_NONE,
        Err(e) => return Err(e).context("reading sock.__sk_common.skc_v6_rcv_saddr"),
    };
    cfg.sk_net = offset(btf, "sock", "__sk_common.skc_net", &[8])?;
    cfg.sk_ack_backlog = offset(btf, "sock", "sk_ack_backlog", &[4])?;
    cfg.sk_max_ack_backlog = offset(btf, "sock", "sk_max_ack_backlog", &[4])?;
    cfg.sk_drops = offset(btf, "sock", "sk_drops", &[4])?;
    cfg.icsk_qlen = offset(btf, "inet_connection_sock", "icsk_accept_queue.qlen", &[4])?;
    cfg.net_inum = offset(btf, "net", "ns.inum", &[4])?;
    let abort = btf.field("net", "ipv4.sysctl_tcp_abort_on_overflow").context("reading net.ipv4.sysctl_tcp_abort_on_overflow")?;
    let cookies = btf.field("net", "ipv4.sysctl_tcp_syncookies").context("reading net.ipv4.sysctl_tcp_syncookies")?;
    // Both became u8 in the same commit, 4ecc1baf362c ("tcp: convert
    // elligible sysctls to u8", 5.13; also in 5.10 stable since April
    // 2023): sizes that differ mean a kernel qtrace does not know.
    if abort.size != cookies.size || !matches!(abort.size, 1 | 4) {
        bail!("unexpected sysctl sizes in struct netns_ipv4: {} and {} bytes", abort.size, cookies.size);
    }
    cfg.net_abort_on_overflow = abort.offset;
    cfg.net_syncookies = cookies.offset;
    cfg.net_sysctl_size = abort.size;
    cfg.net_max_syn_backlog = offset(btf, "net", "ipv4.sysctl_max_syn_backlog", &[4])?;
    cfg.skb_head = offset(btf, "sk_buff", "head", &[8])?;
    cfg.skb_network_header = offset(btf, "sk_buff", "network_header", &[2])?;
    cfg.skb_transport_header = offset(btf, "sk_buff", "transport_header", &[2])?;
    cfg.skb_protocol = offset(btf, "sk_buff", "protocol", &[2])?;
    per_cpu_listen_drops(btf, cfg);
    Ok(())
}

/// Where the namespace's per-CPU `ListenDrops` is: `tcp_listendrop()`
/// (include/net/tcp.h, 4.7+) moves it on the CPU that drops, and the SYN
/// stage compares this CPU's copy to tell its own drop from another CPU's.
/// Optional: without it the SYN stage falls back to the listener's counter.
fn per_cpu_listen_drops(btf: &Btf, cfg: &mut Config) {
    let stats = btf.field("net", "mib.net_statistics").ok().filter(|f| f.size == 8);
    let mibs = btf.field("linux_mib", "mibs").ok();
    let index = btf.enumerator("LINUX_MIB_LISTENDROPS").and_then(|i| u32::try_from(i).ok());
    if let (Some(stats), Some(mibs), Some(i)) = (stats, mibs, index) {
        if i.checked_mul(8).and_then(|b| b.checked_add(mibs.offset)).is_some_and(|at| at + 8 <= mibs.size + mibs.offset) {
            cfg.net_mib_net_statistics = stats.offset;
            cfg.mib_listen_drops = mibs.offset + 8 * i;
        }
    }
}

/// The functions the fentry and kprobe tiers hook, with the parameters their
/// programs read (by name: positions differ between kernels).
const HOOKED: [(&str, &[&str]); 3] = [
    ("tcp_conn_request", &["sk", "skb"]),
    ("tcp_v4_syn_recv_sock", &["sk", "skb", "req_unhash"]),
    ("tcp_v6_syn_recv_sock", &["sk", "skb", "req_unhash"]),
];

/// Why the fentry and kprobe tiers cannot read a hooked function's
/// arguments on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotError {
    #[error("{func}() is not in the kernel's BTF")]
    NoFunc { func: &'static str },
    #[error("reading {func}()'s prototype from the kernel's BTF: {error}")]
    Btf { func: &'static str, error: BtfError },
    #[error("{func}() has no parameter named {param} on this kernel (its parameters: {params})")]
    NoParam { func: &'static str, param: &'static str, params: String },
    #[error("{func}() takes {param} as parameter {n}, past the {regs} a kprobe reads from registers", n = *position + 1)]
    NotInRegister { func: &'static str, param: &'static str, position: u8, regs: u8 },
}

/// Fills `cfg`'s argument slots of every hooked function from `btf`: the
/// position of each parameter its program reads, by name, and the number of
/// parameters (where fexit finds the return value). An error is the reason
/// the fentry and kprobe tiers are refused; the tracepoint tier needs none.
pub(crate) fn arg_slots(btf: &Btf, cfg: &mut Config) -> Result<(), SlotError> {
    let mut resolved = [ArgSlots::NONE; 3];
    let prototypes = btf.func_params(HOOKED.map(|(func, _)| func));
    for (i, ((func, wanted), params)) in HOOKED.iter().zip(prototypes).enumerate() {
        let params = match params {
            Ok(p) => p,
            // With IPv6 built as a module its functions are in the
            // module's BTF, not vmlinux's. tcp_v6_syn_recv_sock implements
            // the same `inet_connection_sock_af_ops.syn_recv_sock` as
            // tcp_v4_syn_recv_sock (the entry before it in HOOKED), so C
            // guarantees it the same prototype.
            Err(BtfError::NoFunc(_)) if *func == "tcp_v6_syn_recv_sock" => {
                resolved[i] = resolved[i - 1];
                continue;
            }
            Err(BtfError::NoFunc(_)) => return Err(SlotError::NoFunc { func }),
            Err(error) => return Err(SlotError::Btf { func, error }),
        };
        let mut pos = [SLOT_NONE; 3];
        for (name, slot) in wanted.iter().zip(&mut pos) {
            let at = params.iter().position(|p| p == name);
            *slot =
                at.and_then(|i| u8::try_from(i).ok()).ok_or_else(|| SlotError::NoParam { func, param: name, params: params.join(", ") })?;
        }
        let ret = u8::try_from(params.len()).unwrap_or(SLOT_NONE);
        resolved[i] = ArgSlots { sk: pos[0], skb: pos[1], req_unhash: pos[2], ret };
    }
    [cfg.conn_request, cfg.syn_recv_v4, cfg.syn_recv_v6] = resolved;
    Ok(())
}

/// Arguments a kprobe reads from registers: `__PT_PARM1_REG` to
/// `__PT_PARM6_REG` on x86_64, eight on arm64 (libbpf's `bpf_tracing.h`).
const REGISTER_ARGS: u8 = if cfg!(target_arch = "aarch64") { 8 } else { 6 };

/// Whether the kprobe tier can read every argument `cfg` places: the rest
/// are on the stack, where its programs do not look.
pub(crate) fn kprobe_reads(cfg: &Config) -> Result<(), SlotError> {
    let slots = [cfg.conn_request, cfg.syn_recv_v4, cfg.syn_recv_v6];
    for ((func, wanted), at) in HOOKED.iter().zip(slots) {
        for (param, position) in wanted.iter().zip([at.sk, at.skb, at.req_unhash]) {
            if position != SLOT_NONE && position >= REGISTER_ARGS {
                return Err(SlotError::NotInRegister { func, param, position, regs: REGISTER_ARGS });
            }
        }
    }
    Ok(())
}

/// One field of a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TpField {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// A tracepoint's record layout and the symbolic values its print format
/// lists (`__print_symbolic(REC->reason, { 40, "TCP_LISTEN_OVERFLOW" }, ...)`).
#[derive(Debug, Default, Clone)]
pub(crate) struct TpFormat {
    pub fields: Vec<TpField>,
    pub symbols: Vec<(u64, String)>,
}

impl TpFormat {
    /// Parses the text of `events/<category>/<name>/format`.
    pub(crate) fn parse(text: &str) -> TpFormat {
        let mut out = TpFormat::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("field:") {
                let mut name = None;
                let (mut offset, mut size) = (None, None);
                for part in rest.split(';') {
                    let part = part.trim();
                    if let Some(v) = part.strip_prefix("offset:") {
                        offset = v.parse().ok();
                    } else if let Some(v) = part.strip_prefix("size:") {
                        size = v.parse().ok();
                    } else if !part.is_empty() && !part.contains(':') && name.is_none() {
                        // "void * skbaddr" or "__u8 saddr[28]": the last word, without brackets.
                        let last = part.rsplit([' ', '*']).next().unwrap_or(part);
                        name = Some(last.split('[').next().unwrap_or(last).to_owned());
                    }
                }
                if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
                    out.fields.push(TpField { name, offset, size });
                }
            } else if let Some(fmt) = line.strip_prefix("print fmt:") {
                // Pairs look like `{ 40, "TCP_LISTEN_OVERFLOW" }`.
                for chunk in fmt.split('{').skip(1) {
                    let Some((num, rest)) = chunk.split_once(',') else {
                        continue;
                    };
                    let Ok(value) = num.trim().parse::<u64>() else {
                        continue;
                    };
                    let mut quoted = rest.split('"');
                    if let (Some(_), Some(sym)) = (quoted.next(), quoted.next()) {
                        out.symbols.push((value, sym.to_owned()));
                    }
                }
            }
        }
        out
    }

    pub(crate) fn field(&self, name: &str) -> Option<&TpField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.iter().find(|(_, s)| s == name).map(|(v, _)| *v)
    }
}

/// Fills the `skb:kfree_skb` layout of `cfg` and returns why per-event ACK
/// overflow detail is missing on this kernel, if it is.
///
/// `rx_sk` (the listener) exists since Linux 6.11 (c53795d48ee8, "net: add
/// rx_sk to trace_kfree_skb"); `TCP_LISTEN_OVERFLOW` since 6.15
/// (a11a791ca81e, "tcp: add four drop reasons to tcp_check_req()": the ACK of
/// a request whose listener's accept queue is full is freed with it in
/// `tcp_v4_rcv`, via `tcp_check_req`). Without `rx_sk` the
/// tracepoint tier sees nothing per listener and every drop is counted from
/// the listener's own drop counter instead.
pub(crate) fn from_kfree_skb_format(fmt: &TpFormat, cfg: &mut Config) -> Option<String> {
    let field = |name: &str, size: u32| fmt.field(name).filter(|f| f.size == size).map(|f| f.offset);
    let Some(reason) = field("reason", 4) else {
        return Some("skb:kfree_skb has no drop reason on this kernel (added in 5.17)".into());
    };
    let (Some(rx_sk), Some(skbaddr), Some(location)) = (field("rx_sk", 8), field("skbaddr", 8), field("location", 8)) else {
        return Some("skb:kfree_skb does not name the receiving socket on this kernel (rx_sk, added in 6.11)".into());
    };
    cfg.tp_kfree_skb_reason = reason;
    cfg.tp_kfree_skb_rx_sk = rx_sk;
    cfg.tp_kfree_skb_skbaddr = skbaddr;
    cfg.tp_kfree_skb_location = location;
    if let Some(v) = fmt.symbol("NO_SOCKET") {
        cfg.reason_no_socket = v as u32;
    }
    match fmt.symbol("TCP_LISTEN_OVERFLOW") {
        Some(v) => {
            cfg.reason_listen_overflow = v as u32;
            None
        }
        None => Some("this kernel has no TCP_LISTEN_OVERFLOW drop reason (added in 6.15)".into()),
    }
}

/// Fills the `syscalls:sys_enter_listen` / `sys_exit_listen` layout of
/// `cfg`; an error says why the requested backlogs cannot be recorded.
pub(crate) fn from_listen_formats(enter: &TpFormat, exit: &TpFormat, cfg: &mut Config) -> Result<()> {
    let slot = |fmt: &TpFormat, name: &str| -> Result<u32> {
        match fmt.field(name) {
            Some(f) if f.size == 8 => Ok(f.offset),
            Some(f) => bail!("syscall tracepoint field {name} is {} bytes, expected 8", f.size),
            None => bail!("syscall tracepoint has no field {name}"),
        }
    };
    cfg.tp_listen_fd = slot(enter, "fd")?;
    cfg.tp_listen_backlog = slot(enter, "backlog")?;
    cfg.tp_listen_ret = slot(exit, "ret")?;
    Ok(())
}

/// Reads the layout of `sock:inet_sock_set_state` into `cfg`, and
/// `sk_cookie` from `btf`: what the listener-close recorder needs.
pub(crate) fn from_state_format(fmt: &TpFormat, btf: &Btf, cfg: &mut Config) -> Result<()> {
    let field = |name: &str, size: u32| -> Result<u32> {
        match fmt.field(name) {
            Some(f) if f.size == size => Ok(f.offset),
            Some(f) => bail!("sock:inet_sock_set_state field {name} is {} bytes, expected {size}", f.size),
            None => bail!("sock:inet_sock_set_state has no field {name}"),
        }
    };
    cfg.tp_state_skaddr = field("skaddr", 8)?;
    cfg.tp_state_oldstate = field("oldstate", 4)?;
    cfg.tp_state_newstate = field("newstate", 4)?;
    cfg.tp_state_protocol = field("protocol", 2).unwrap_or(OFFSET_NONE);
    cfg.tp_state_sport = field("sport", 2)?;
    // Outcomes only: without them, no connection is seen recover.
    cfg.tp_state_dport = field("dport", 2).unwrap_or(OFFSET_NONE);
    cfg.tp_state_saddr_v6 = field("saddr_v6", 16).unwrap_or(OFFSET_NONE);
    cfg.tp_state_daddr_v6 = field("daddr_v6", 16).unwrap_or(OFFSET_NONE);
    cfg.sk_cookie = offset(btf, "sock", "__sk_common.skc_cookie", &[8])?;
    Ok(())
}

/// Reads the `accept()` entry and exit records' layout, `tcp_destroy_sock`'s
/// `skaddr`, and the descriptor walk (`task_struct.files` to `socket.sk`)
/// plus `sock.sk_socket` into `cfg`: what the accept recorders need.
/// `calls` are the (enter, exit) formats of `accept4` and, where the
/// architecture has it, `accept`. Nothing is written unless all resolve.
pub(crate) fn from_accept_formats(calls: &[(TpFormat, TpFormat)], destroy: &TpFormat, btf: &Btf, cfg: &mut Config) -> Result<()> {
    let mut c = *cfg;
    c.tp_accept_fd = same_offset("fd", &mut calls.iter().map(|(enter, _)| enter))?;
    c.tp_accept_ret = same_offset("ret", &mut calls.iter().map(|(_, exit)| exit))?;
    c.tp_destroy_skaddr = match destroy.field("skaddr") {
        Some(f) if f.size == 8 => f.offset,
        _ => bail!("tcp:tcp_destroy_sock has no 8-byte field skaddr"),
    };
    c.tp_destroy_sport = match destroy.field("sport") {
        Some(f) if f.size == 2 => f.offset,
        _ => bail!("tcp:tcp_destroy_sock has no 2-byte field sport"),
    };
    c.task_files = offset(btf, "task_struct", "files", &[8])?;
    c.files_fdt = offset(btf, "files_struct", "fdt", &[8])?;
    c.fdt_max_fds = offset(btf, "fdtable", "max_fds", &[4])?;
    c.fdt_fd = offset(btf, "fdtable", "fd", &[8])?;
    // Read as one 16-byte pair, as they have been laid out since 2.6.14.
    if c.fdt_fd != c.fdt_max_fds + 8 {
        bail!("fdtable.max_fds at {} and fd at {}: qtrace expects fd 8 bytes after max_fds", c.fdt_max_fds, c.fdt_fd);
    }
    c.file_private_data = offset(btf, "file", "private_data", &[8])?;
    c.socket_sk = offset(btf, "socket", "sk", &[8])?;
    c.sk_socket = offset(btf, "sock", "sk_socket", &[8])?;
    let vfs_inode = btf.field("socket_alloc", "vfs_inode").context("reading socket_alloc.vfs_inode from the kernel's BTF")?;
    c.socket_i_ino = vfs_inode.offset + offset(btf, "inode", "i_ino", &[8])?;
    *cfg = c;
    Ok(())
}

/// The offset of 8-byte field `name` in every one of `formats` (one
/// program serves them all: they must agree).
fn same_offset(name: &str, formats: &mut dyn Iterator<Item = &TpFormat>) -> Result<u32> {
    let mut at = None;
    for fmt in formats {
        let off = match fmt.field(name) {
            Some(f) if f.size == 8 => f.offset,
            Some(f) => bail!("syscall tracepoint field {name} is {} bytes, expected 8", f.size),
            None => bail!("syscall tracepoint has no field {name}"),
        };
        if at.is_some_and(|a| a != off) {
            bail!("accept4 and accept keep {name} at different offsets");
        }
        at = Some(off);
    }
    at.context("no accept() tracepoints")
}

/// Start and end of each function in `range::NAMES`, as `Config::ranges` holds them.
pub(crate) type Ranges = [u64; 2 * range::LEN];

/// Reads `/proc/kallsyms`-formatted text: where each function in
/// `range::NAMES` starts, and where the next text symbol begins. Returns the
/// names it could not place (absent, or addresses hidden by kptr_restrict).
///
/// Streams line by line keeping only text addresses: the file is some 5 MB
/// on a 6.18 kernel and the kernel takes about 30 ms to format it, so this
/// runs on its own thread while the rest of the start-up goes on.
pub(crate) fn kallsyms_ranges(mut text: impl BufRead) -> Kallsyms {
    let mut addrs: Vec<u64> = Vec::with_capacity(1 << 17);
    let mut starts = [0u64; range::LEN];
    let mut per_cpu_offset = 0;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match text.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // "ffffffff820339c0 T tcp_v4_rcv" (module symbols add " [mod]").
        let mut it = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
        let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        let Some(addr) = std::str::from_utf8(addr).ok().and_then(|a| u64::from_str_radix(a, 16).ok()).filter(|a| *a != 0) else {
            continue;
        };
        if name == b"__per_cpu_offset" && matches!(ty, b"d" | b"D" | b"r" | b"R" | b"b" | b"B") {
            per_cpu_offset = addr;
        }
        if !matches!(ty, b"t" | b"T") {
            continue;
        }
        addrs.push(addr);
        if let Some(i) = range::NAMES.iter().position(|n| n.as_bytes() == name) {
            if starts[i] == 0 {
                starts[i] = addr;
            }
        }
    }
    addrs.sort_unstable();
    let mut ranges = [0u64; 2 * range::LEN];
    let mut missing = Vec::new();
    for (i, want) in range::NAMES.iter().enumerate() {
        let start = starts[i];
        let next = addrs.partition_point(|a| *a <= start);
        match addrs.get(next) {
            Some(end) if start != 0 => {
                ranges[2 * i] = start;
                ranges[2 * i + 1] = *end;
            }
            _ => missing.push(*want),
        }
    }
    Kallsyms { ranges, missing, per_cpu_offset }
}

/// What qtrace takes from `/proc/kallsyms`.
pub(crate) struct Kallsyms {
    pub ranges: Ranges,
    /// Names of `range::NAMES` that could not be placed.
    pub missing: Vec<&'static str>,
    /// Address of `__per_cpu_offset` (0: hidden or absent).
    pub per_cpu_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB_6_18: &str = r#"name: kfree_skb
ID: 2310
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:void * rx_sk;	offset:24;	size:8;	signed:0;
	field:unsigned short protocol;	offset:32;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:36;	size:4;	signed:0;

print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 39, "TCP_RFC7323_TSECR" }, { 40, "TCP_LISTEN_OVERFLOW" }, { 41, "TCP_OLD_SEQUENCE" })
"#;

    const KFREE_SKB_5_10: &str = r#"name: kfree_skb
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:unsigned short protocol;	offset:24;	size:2;	signed:0;

print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location
"#;

    #[test]
    fn parses_the_6_18_kfree_skb_layout() {
        let fmt = TpFormat::parse(KFREE_SKB_6_18);
        assert_eq!(fmt.field("rx_sk"), Some(&TpField { name: "rx_sk".into(), offset: 24, size: 8 }));
        assert_eq!(fmt.field("reason").map(|f| f.offset), Some(36));
        assert_eq!(fmt.symbol("TCP_LISTEN_OVERFLOW"), Some(40));
        assert_eq!(fmt.symbol("TCP_OLD_SEQUENCE"), Some(41));
        let mut cfg = Config::empty();
        assert_eq!(from_kfree_skb_format(&fmt, &mut cfg), None);
        assert_eq!((cfg.tp_kfree_skb_reason, cfg.tp_kfree_skb_rx_sk, cfg.reason_listen_overflow), (36, 24, 40));
        assert_eq!((cfg.tp_kfree_skb_location, cfg.reason_no_socket), (16, 3));
    }

    #[test]
    fn old_kernels_say_what_is_missing() {
        let fmt = TpFormat::parse(KFREE_SKB_5_10);
        assert_eq!(fmt.field("protocol").map(|f| f.offset), Some(24));
        let mut cfg = Config::empty();
        let why = from_kfree_skb_format(&fmt, &mut cfg).unwrap();
        assert!(why.contains("no drop reason"), "{why}");
        assert_eq!(cfg.reason_listen_overflow, OFFSET_NONE);
        // 6.11 to 6.14: rx_sk, but not this reason (the layout is still used).
        let fmt = TpFormat::parse(&KFREE_SKB_6_18.replace("TCP_LISTEN_OVERFLOW", "SOMETHING_ELSE"));
        assert!(from_kfree_skb_format(&fmt, &mut cfg).unwrap().contains("6.15"));
        assert_eq!((cfg.tp_kfree_skb_rx_sk, cfg.reason_listen_overflow), (24, OFFSET_NONE));
        // 5.17 to 6.10: a reason, no rx_sk.
        let fmt = TpFormat::parse(&KFREE_SKB_6_18.replace("rx_sk", "other"));
        let mut cfg = Config::empty();
        assert!(from_kfree_skb_format(&fmt, &mut cfg).unwrap().contains("6.11"));
        assert_eq!(cfg.tp_kfree_skb_rx_sk, OFFSET_NONE);
    }

    #[test]
    fn parses_the_listen_syscall_layout() {
        let enter = TpFormat::parse(
            "name: sys_enter_listen\nformat:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:int backlog;\toffset:24;\tsize:8;\tsigned:0;\n",
        );
        let exit = TpFormat::parse("format:\n\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n");
        let mut cfg = Config::empty();
        from_listen_formats(&enter, &exit, &mut cfg).unwrap();
        assert_eq!((cfg.tp_listen_fd, cfg.tp_listen_backlog, cfg.tp_listen_ret), (16, 24, 16));
        let err = from_listen_formats(&exit, &exit, &mut Config::empty()).unwrap_err();
        assert!(err.to_string().contains("no field fd"), "{err}");
    }

    #[test]
    fn kallsyms_ranges_end_at_the_next_symbol() {
        let text = "ffffffff82034db0 T __pfx_tcp4_proc_exit\nffffffff820339c0 T tcp_v4_rcv\nffffffff82089f40 T cookie_v4_check\nffffffff82089f00 d some_data\nffffffff8208a000 t next_fn\nffffffff83a1c2e0 R __per_cpu_offset\n";
        let k = kallsyms_ranges(text.as_bytes());
        assert_eq!(&k.ranges[0..2], &[0xffffffff820339c0, 0xffffffff82034db0]);
        assert_eq!(&k.ranges[4..6], &[0xffffffff82089f40, 0xffffffff8208a000]);
        assert_eq!(k.missing, vec!["tcp_v6_rcv", "cookie_v6_check"]);
        assert_eq!(k.per_cpu_offset, 0xffffffff83a1c2e0, "a data symbol, and not a text range's end");
        // kptr_restrict: every address is zero.
        let hidden = kallsyms_ranges("0000000000000000 T tcp_v4_rcv\n0000000000000000 D __per_cpu_offset\n".as_bytes());
        assert_eq!((hidden.missing.len(), hidden.per_cpu_offset), (4, 0));
        // Module symbols carry their module's name; garbage lines are skipped.
        let k = kallsyms_ranges("ffffffffc0001000 t cookie_v6_check\t[ipv6]\nnot a line\n\nffffffffc0001800 t x\t[ipv6]\n".as_bytes());
        assert_eq!(&k.ranges[6..8], &[0xffffffffc0001000, 0xffffffffc0001800]);
    }

    /// Hooked functions as a kernel's BTF declares them; `opt_child_init`
    /// says whether `tcp_v4/v6_syn_recv_sock` have the seventh parameter
    /// (Debian's 6.12.117 and 6.18.44 do, 5.10 to 6.12.107 do not).
    fn kernel(opt_child_init: bool) -> Btf {
        let mut recv = vec!["sk", "skb", "req", "dst", "req_unhash", "own_req"];
        if opt_child_init {
            recv.push("opt_child_init");
        }
        let b = crate::kernel::btf::testing::Builder::new()
            .func("tcp_conn_request", &["rsk_ops", "af_ops", "sk", "skb"])
            .func("tcp_v4_syn_recv_sock", &recv)
            .func("tcp_v6_syn_recv_sock", &recv);
        Btf::parse(b.build()).unwrap()
    }

    #[test]
    fn argument_slots_follow_the_prototype() {
        let conn_request = ArgSlots { sk: 2, skb: 3, req_unhash: SLOT_NONE, ret: 4 };
        for (seventh, ret) in [(false, 6), (true, 7)] {
            let mut cfg = Config::empty();
            arg_slots(&kernel(seventh), &mut cfg).unwrap();
            let recv = ArgSlots { sk: 0, skb: 1, req_unhash: 4, ret };
            assert_eq!((cfg.conn_request, cfg.syn_recv_v4, cfg.syn_recv_v6), (conn_request, recv, recv), "seventh parameter: {seventh}");
            assert_eq!(kprobe_reads(&cfg), Ok(()));
        }
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let recv = ["sk", "skb", "req", "dst", "unhash", "own_req"];
        let b = crate::kernel::btf::testing::Builder::new()
            .func("tcp_conn_request", &["rsk_ops", "af_ops", "sk", "skb"])
            .func("tcp_v4_syn_recv_sock", &recv)
            .func("tcp_v6_syn_recv_sock", &recv);
        let mut cfg = Config::empty();
        let err = arg_slots(&Btf::parse(b.build()).unwrap(), &mut cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp_v4_syn_recv_sock() has no parameter named req_unhash on this kernel (its parameters: sk, skb, req, dst, unhash, own_req)"
        );
        assert_eq!(cfg.syn_recv_v4, ArgSlots::NONE, "nothing half-resolved");
        let only_one = Btf::parse(crate::kernel::btf::testing::Builder::new().func("tcp_conn_request", &["sk", "skb"]).build()).unwrap();
        assert_eq!(arg_slots(&only_one, &mut cfg).unwrap_err(), SlotError::NoFunc { func: "tcp_v4_syn_recv_sock" });
    }

    #[test]
    fn ipv6_as_a_module_shares_the_ipv4_prototype() {
        let recv = ["sk", "skb", "req", "dst", "req_unhash", "own_req", "opt_child_init"];
        let b = crate::kernel::btf::testing::Builder::new()
            .func("tcp_conn_request", &["rsk_ops", "af_ops", "sk", "skb"])
            .func("tcp_v4_syn_recv_sock", &recv);
        let mut cfg = Config::empty();
        arg_slots(&Btf::parse(b.build()).unwrap(), &mut cfg).unwrap();
        assert_eq!(cfg.syn_recv_v6, ArgSlots { sk: 0, skb: 1, req_unhash: 4, ret: 7 });
    }

    #[test]
    fn kprobes_read_registers_only() {
        let mut cfg = Config::empty();
        arg_slots(&kernel(true), &mut cfg).unwrap();
        cfg.syn_recv_v6.req_unhash = REGISTER_ARGS;
        let err = kprobe_reads(&cfg).unwrap_err();
        let want = format!("tcp_v6_syn_recv_sock() takes req_unhash as parameter {}, past the {REGISTER_ARGS}", REGISTER_ARGS + 1);
        assert!(err.to_string().starts_with(&want), "{err}");
    }

    #[test]
    fn array_fields_keep_their_name() {
        let fmt = TpFormat::parse("\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;\n");
        assert_eq!(fmt.field("saddr"), Some(&TpField { name: "saddr".into(), offset: 32, size: 28 }));
    }
}
