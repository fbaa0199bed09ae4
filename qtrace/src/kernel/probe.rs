//! Loading qtrace's programs and attaching one hook tier.
//!
//! Tiers, best first:
//! - `fentry`: fentry/fexit on `tcp_conn_request` and fexit on
//!   `tcp_v4_syn_recv_sock` / `tcp_v6_syn_recv_sock` (BTF trampolines);
//! - `kprobe`: kprobe/kretprobe on the same functions;
//! - `tracepoint`: `skb:kfree_skb` with `TCP_LISTEN_OVERFLOW` (6.15+); the
//!   drops it cannot see are counted from each listener's drop counter.
//!
//! `auto` tries them in that order and keeps the reason each better one was
//! refused, so `watch` can say why it runs with less detail.

use std::fmt;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::Array;
use aya::programs::{FEntry, FExit, KProbe, Program, ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use qtrace_common::*;

use crate::kernel::btf::Btf;
use crate::kernel::limits::{self, Limit, Refusal};
use crate::kernel::maps::KernelMaps;
use crate::kernel::offsets::{self, TpFormat};
use crate::model::ports::PortSet;

/// The eBPF object built by `build.rs` from `qtrace-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/qtrace"));

/// A hook tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Fentry => "fentry",
            Tier::Kprobe => "kprobe",
            Tier::Tracepoint => "tracepoint",
        })
    }
}

/// `--hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HookChoice {
    #[default]
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl HookChoice {
    /// The tiers to try, best first.
    fn tiers(self) -> &'static [Tier] {
        match self {
            HookChoice::Auto => &[Tier::Fentry, Tier::Kprobe, Tier::Tracepoint],
            HookChoice::Fentry => &[Tier::Fentry],
            HookChoice::Kprobe => &[Tier::Kprobe],
            HookChoice::Tracepoint => &[Tier::Tracepoint],
        }
    }
}

/// What to watch, applied in the kernel.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub netns: Option<u32>,
    pub ports: PortSet,
    /// Events per second each port may send (`None`: every one).
    pub max_event_rate: Option<u32>,
}

impl Filter {
    /// The kernel's form of `max_event_rate`: (interval, burst) in ns, a
    /// burst of one second's worth (see `Config::budget_interval_ns`).
    fn budget_ns(&self) -> (u32, u32) {
        const SECOND: u32 = 1_000_000_000;
        match self.max_event_rate {
            None | Some(0) => (0, 0),
            Some(rate) => {
                let interval = (SECOND / rate).max(1);
                (interval, SECOND - interval)
            }
        }
    }
}

/// Programs of each tier: (program name, kernel function) pairs.
const FENTRY_PROGRAMS: &[(&str, &str, bool)] = &[
    (PROG_FENTRY_TCP_CONN_REQUEST, "tcp_conn_request", false),
    (PROG_FEXIT_TCP_CONN_REQUEST, "tcp_conn_request", true),
    (PROG_FEXIT_TCP_V4_SYN_RECV_SOCK, "tcp_v4_syn_recv_sock", true),
    (PROG_FEXIT_TCP_V6_SYN_RECV_SOCK, "tcp_v6_syn_recv_sock", true),
];
const KPROBE_PROGRAMS: &[(&str, &str)] = &[
    (PROG_KPROBE_TCP_CONN_REQUEST, "tcp_conn_request"),
    (PROG_KRETPROBE_TCP_CONN_REQUEST, "tcp_conn_request"),
    (PROG_KPROBE_TCP_V4_SYN_RECV_SOCK, "tcp_v4_syn_recv_sock"),
    (PROG_KRETPROBE_TCP_V4_SYN_RECV_SOCK, "tcp_v4_syn_recv_sock"),
    (PROG_KPROBE_TCP_V6_SYN_RECV_SOCK, "tcp_v6_syn_recv_sock"),
    (PROG_KRETPROBE_TCP_V6_SYN_RECV_SOCK, "tcp_v6_syn_recv_sock"),
];

/// Loaded and attached programs. Dropping it detaches and unloads them all.
pub struct Probe {
    ebpf: Ebpf,
    pub tier: Tier,
    /// Why each better tier is not in use, best first.
    pub refused: Vec<Refusal>,
    /// What the tier and the recorders beside it cannot see.
    pub limits: Vec<Limit>,
}

/// Mounts tracefs if nothing provides it yet (tracepoint ids and formats
/// live there; it is not mounted at boot on every system).
fn ensure_tracefs() -> Result<&'static Path> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Path::new(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: mount(2) with static NUL-terminated strings.
    let rc = unsafe { libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {e}");
    }
    Ok(Path::new("/sys/kernel/tracing"))
}

/// What qtrace lacks to load its programs, from `/proc/self/status`'s
/// `CapEff`: CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON (Linux 5.8+). `None`
/// when it has enough (or the line is unreadable: the kernel then decides).
pub fn missing_capabilities(status: &str) -> Option<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let missing: Vec<&str> =
        [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")].iter().filter(|(c, _)| !has(*c)).map(|(_, n)| *n).collect();
    Some(format!("CAP_BPF and CAP_PERFMON (missing: {})", missing.join(", ")))
}

/// A short reason for a failed load or attach, in the terms an operator knows.
fn explain(tier: Tier, name: &str, err: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, verifier_log } = err {
        let log = verifier_log.to_string();
        if !log.trim().is_empty() {
            return format!("the kernel's verifier refused {name} ({io_error}: {}; --verbose shows its log)", verifier_verdict(&log));
        }
    }
    let text = format!("{err:#}");
    let io = match err {
        ProgramError::LoadError { io_error, .. } => Some(io_error.raw_os_error()),
        ProgramError::SyscallError(e) => Some(e.io_error.raw_os_error()),
        _ => None,
    }
    .flatten();
    match (tier, io) {
        (Tier::Fentry, Some(libc::EPERM)) => "fentry/fexit refused by the kernel (EPERM: a security policy forbids BPF trampolines)".into(),
        (Tier::Fentry, Some(libc::EOPNOTSUPP | 524 /* ENOTSUPP */)) => "fentry/fexit not supported by this kernel or architecture".into(),
        (Tier::Kprobe, _) if text.contains("kprobe/type") || text.contains("kprobe_events") => {
            "kprobes are not built into this kernel (CONFIG_KPROBES is not set)".into()
        }
        _ => chain(err),
    }
}

/// The verifier's own last word: the line that says why, not the
/// statistics it prints after it.
fn verifier_verdict(log: &str) -> &str {
    let stats = ["processed ", "verification time", "stack depth", "mark_precise", "max_states_per_insn"];
    log.lines().rev().map(str::trim).find(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s))).unwrap_or("no reason given")
}

/// An error with its causes, one line.
fn chain(err: &dyn std::error::Error) -> String {
    let all: Vec<String> = std::iter::successors(Some(err), |e| e.source()).map(|e| e.to_string()).collect();
    all.join(": ")
}

/// The kernel's BTF: `/sys/kernel/btf/vmlinux`, or the file `QTRACE_BTF`
/// names for a kernel that does not publish its own (one extracted from
/// the kernel's debug package, or from BTFHub).
fn kernel_btf() -> Result<Btf> {
    let (path, given) = match std::env::var_os("QTRACE_BTF") {
        Some(p) => (std::path::PathBuf::from(p), true),
        None => (std::path::PathBuf::from("/sys/kernel/btf/vmlinux"), false),
    };
    Btf::from_file(&path).map_err(|e| {
        let what = if given {
            format!("reading the BTF file QTRACE_BTF names ({}): {e}", path.display())
        } else {
            format!(
                "reading the kernel's BTF ({}): {e}; this kernel was built without CONFIG_DEBUG_INFO_BTF: point QTRACE_BTF at a BTF file for it",
                path.display()
            )
        };
        anyhow!("{what}. Without BTF no tier can attach; `qtrace listeners` and `qtrace doctor --no-capture` still work")
    })
}

impl Probe {
    /// Resolves offsets, loads the object, applies the filter and attaches
    /// the first tier that works (or exactly the one asked for).
    pub fn attach(choice: HookChoice, filter: &Filter) -> Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(missing) = missing_capabilities(&status) {
            bail!("loading eBPF programs needs root, CAP_SYS_ADMIN, or {missing}");
        }
        // The kernel takes ~30 ms to format /proc/kallsyms: read it while
        // the BTF is parsed and the object loaded.
        let hidden = || offsets::Kallsyms { ranges: [0; 2 * range::LEN], missing: range::NAMES.to_vec(), per_cpu_offset: 0 };
        let kallsyms = std::thread::spawn(move || match std::fs::File::open("/proc/kallsyms") {
            Ok(f) => offsets::kallsyms_ranges(std::io::BufReader::with_capacity(1 << 16, f)),
            Err(_) => hidden(),
        });
        let order = choice.tiers();
        let Resolved { mut cfg, known_refusals, mut ack_detail_missing, listen_layout, state_layout, accept_layout } = resolve(order)?;
        let mut ebpf = load_object()?;
        let offsets::Kallsyms { ranges, missing, per_cpu_offset } = kallsyms.join().unwrap_or_else(|_| hidden());
        cfg.ranges = ranges;
        cfg.per_cpu_offset = per_cpu_offset;
        if missing.contains(&"tcp_v4_rcv") && ack_detail_missing.is_none() {
            ack_detail_missing =
                Some("kernel addresses are hidden (/proc/kallsyms shows them only to CAP_SYSLOG, see kernel.kptr_restrict)".into());
        }
        cfg.filter_netns = filter.netns.unwrap_or(0);
        cfg.filter_ports = u32::from(!filter.ports.is_all());
        (cfg.budget_interval_ns, cfg.budget_burst_ns) = filter.budget_ns();
        write_ports(&mut ebpf, &filter.ports)?;
        write_config(&mut ebpf, cfg)?;

        let mut refused = Vec::new();
        for (&tier, known) in order.iter().zip(known_refusals) {
            match known.map_or_else(|| attach_tier(&mut ebpf, tier), Err) {
                Ok(()) => {
                    let counted_upper_bound = cfg.tp_kfree_skb_rx_sk == qtrace_common::OFFSET_NONE;
                    let listen_calls = listen_layout.and_then(|()| attach_listen_calls(&mut ebpf)).err();
                    let closed = state_layout.clone().and_then(|()| attach_closed_listeners(&mut ebpf)).err();
                    // Children are born and end in the state recorder.
                    let accept_wait = match (&closed, accept_layout) {
                        (Some(why), _) => Some(why.clone()),
                        (None, layout) => layout.and_then(|exits| attach_accepts(&mut ebpf, &exits)).err(),
                    };
                    let limits = limits::of_attachment(tier, ack_detail_missing, counted_upper_bound, closed, listen_calls, accept_wait);
                    return Ok(Self { ebpf, tier, refused, limits });
                }
                Err(reason) => refused.push(Refusal { tier, reason }),
            }
        }
        let reasons: Vec<String> = refused.iter().map(|r| format!("{}: {}", r.tier, r.reason)).collect();
        bail!("no hook tier could attach ({})", reasons.join("; "))
    }

    /// Hands the programs over to the maps they fill, which keep them
    /// attached until [`KernelMaps::detach`] or drop.
    pub fn into_maps(self) -> Result<KernelMaps> {
        let missing = |l: fn(&Limit) -> bool| self.limits.iter().any(l);
        let listen_calls = !missing(|l| matches!(l, Limit::ListenCallsMissing(_)));
        let closed = !missing(|l| matches!(l, Limit::ClosedListenersMissing(_)));
        let accept_wait = !missing(|l| matches!(l, Limit::AcceptWaitMissing(_)));
        KernelMaps::take(self.ebpf, listen_calls, closed, accept_wait)
    }
}

type AttachError = (&'static str, ProgramError);

/// What the running kernel tells before anything loads: the programs'
/// configuration (struct offsets and argument slots from BTF, tracepoint
/// layouts from tracefs) and what each tier or recorder will lack.
struct Resolved {
    cfg: Config,
    /// For each tier of the order asked for: why it is refused already.
    known_refusals: Vec<Option<String>>,
    ack_detail_missing: Option<String>,
    listen_layout: Result<(), String>,
    state_layout: Result<(), String>,
    /// The `accept()` tracepoints this kernel has, by name.
    accept_layout: Result<Vec<&'static str>, String>,
}

fn resolve(order: &[Tier]) -> Result<Resolved> {
    let btf = kernel_btf()?;
    let mut cfg = Config::empty();
    offsets::from_btf(&btf, &mut cfg)?;
    // Where each hooked function keeps the arguments the fentry and kprobe
    // programs read; without them both tiers are refused.
    let slots = offsets::arg_slots(&btf, &mut cfg).map_err(|e| e.to_string());
    let tracefs = ensure_tracefs()?;
    let fmt_path = tracefs.join("events/skb/kfree_skb/format");
    let kfree_fmt = std::fs::read_to_string(&fmt_path).with_context(|| format!("reading {}", fmt_path.display()))?;
    let ack_detail_missing = offsets::from_kfree_skb_format(&TpFormat::parse(&kfree_fmt), &mut cfg);
    let listen_layout = listen_formats(tracefs, &mut cfg);
    let state_layout = state_format(tracefs, &btf, &mut cfg);
    let accept_layout = accept_formats(tracefs, &btf, &mut cfg);
    let unavailable = |tier: Tier| match tier {
        Tier::Fentry => slots.clone().err().or_else(|| fentry_refused(&btf).map(|e| explain(tier, FENTRY_PROGRAMS[0].0, &e))),
        Tier::Kprobe => slots.clone().err().or_else(|| offsets::kprobe_reads(&cfg).err().map(|e| e.to_string())),
        Tier::Tracepoint => None,
    };
    let known_refusals: Vec<Option<String>> = order.iter().map(|&t| unavailable(t)).collect();
    for (tier, why) in order.iter().zip(&known_refusals) {
        if let Some(why) = why {
            log::debug!("{tier} tier refused before loading: {why}");
        }
    }
    Ok(Resolved { cfg, known_refusals, ack_detail_missing, listen_layout, state_layout, accept_layout })
}

/// Creates the maps (the programs load per tier, after the configuration
/// is written). The patched loader reads no kernel BTF
/// (vendor/aya/QTRACE-PATCH.md).
fn load_object() -> Result<Ebpf> {
    EbpfLoader::new().load(OBJECT).map_err(|e| match &e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) if io_error.raw_os_error() == Some(libc::EPERM) => {
            anyhow!("creating BPF maps was refused (EPERM): run qtrace as root or with CAP_BPF and CAP_PERFMON")
        }
        // BPF_MAP_TYPE_RINGBUF arrived in Linux 5.8; older kernels reject the type.
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error })
            if name == MAP_EVENTS && io_error.raw_os_error() == Some(libc::EINVAL) =>
        {
            anyhow!("this kernel has no BPF ring buffer (creating {MAP_EVENTS} failed with EINVAL): qtrace needs Linux 5.8 or later")
        }
        _ => anyhow::Error::new(e).context("loading qtrace's eBPF object"),
    })
}

/// Marks the watched ports for the in-kernel filter.
fn write_ports(ebpf: &mut Ebpf, ports: &PortSet) -> Result<()> {
    if !ports.is_all() {
        let mut map: Array<_, u8> = Array::try_from(ebpf.map_mut(MAP_PORTS).context("PORTS map")?)?;
        for port in ports.iter() {
            map.set(u32::from(port), 1u8, 0).context("writing the port filter")?;
        }
    }
    Ok(())
}

/// Writes the programs' configuration, then freezes it: programs loaded
/// after this see it as constants (see `qtrace_common::MAP_CONFIG`), which
/// the argument slots rely on.
fn write_config(ebpf: &mut Ebpf, cfg: Config) -> Result<()> {
    let map = ebpf.map_mut(MAP_CONFIG).context("CONFIG map")?;
    let mut config: Array<_, Config> = Array::try_from(&mut *map)?;
    config.set(0, cfg, 0).context("writing the programs' configuration")?;
    let aya::maps::Map::Array(data) = map else { bail!("CONFIG is not an array map") };
    // union bpf_attr for BPF_MAP_FREEZE (Linux 5.2): map_fd at 0.
    let mut attr = [0u8; 8];
    attr[0..4].copy_from_slice(&(data.fd().as_fd().as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: attr is a valid BPF_MAP_FREEZE attribute of the size given.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, 22 /* BPF_MAP_FREEZE */, attr.as_ptr(), attr.len() as u32)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("freezing the programs' configuration (BPF_MAP_FREEZE, Linux 5.2)");
    }
    Ok(())
}

/// Attaches one tier; on failure unloads what it loaded and says why in
/// one sentence (the whole error, verifier log included, at debug level:
/// `--verbose`).
fn attach_tier(ebpf: &mut Ebpf, tier: Tier) -> Result<(), String> {
    let result = match tier {
        Tier::Fentry => attach_fentry(ebpf),
        Tier::Kprobe => attach_kprobe(ebpf),
        Tier::Tracepoint => attach_tracepoint(ebpf),
    };
    result.map_err(|(name, err)| {
        log::debug!("{tier} tier: {name}: {}", chain(&err));
        unload_all(ebpf);
        explain(tier, name, &err)
    })
}

/// Loads a two-instruction fentry program on `tcp_conn_request`, with the
/// attach target's id from qtrace's own BTF reader. Where the kernel refuses
/// it, the fentry tier is refused without aya parsing the whole BTF (its
/// `FEntry::load` needs an `aya::Btf`) only to hear the same answer.
fn fentry_refused(btf: &Btf) -> Option<ProgramError> {
    let id = btf.func_id(FENTRY_PROGRAMS[0].1)?;
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD (include/uapi/linux/bpf.h): prog_type
    // at 0, insn_cnt 4, insns 8, license 16, expected_attach_type 68,
    // attach_btf_id 108; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&26u32.to_ne_bytes()); // BPF_PROG_TYPE_TRACING
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[68..72].copy_from_slice(&24u32.to_ne_bytes()); // BPF_TRACE_FENTRY
    attr[108..112].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: attr is a valid BPF_PROG_LOAD attribute of the size given; the
    // pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, 5 /* BPF_PROG_LOAD */, attr.as_ptr(), attr.len() as u32)
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned to us.
        unsafe { libc::close(fd as i32) };
        return None;
    }
    let io_error = std::io::Error::last_os_error();
    // Only a refusal aya's own load would meet too; anything else, let aya try.
    matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP | 524))
        .then(|| ProgramError::SyscallError(aya::sys::SyscallError { call: "bpf_prog_load", io_error }))
}

fn attach_fentry(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| (FENTRY_PROGRAMS[0].0, ProgramError::Btf(e)))?;
    let btf = &btf;
    for &(name, func, exit) in FENTRY_PROGRAMS {
        let prog = ebpf.program_mut(name).ok_or((name, ProgramError::NotLoaded))?;
        let r = if exit {
            let p: &mut FExit = prog.try_into().map_err(|e| (name, e))?;
            p.load(func, btf).and_then(|()| p.attach().map(drop))
        } else {
            let p: &mut FEntry = prog.try_into().map_err(|e| (name, e))?;
            p.load(func, btf).and_then(|()| p.attach().map(drop))
        };
        r.map_err(|e| (name, e))?;
    }
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    for &(name, func) in KPROBE_PROGRAMS {
        let prog = ebpf.program_mut(name).ok_or((name, ProgramError::NotLoaded))?;
        let p: &mut KProbe = prog.try_into().map_err(|e| (name, e))?;
        p.load().and_then(|()| p.attach(func, 0).map(drop)).map_err(|e| (name, e))?;
    }
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let name = PROG_KFREE_SKB;
    let prog = ebpf.program_mut(name).ok_or((name, ProgramError::NotLoaded))?;
    let p: &mut TracePoint = prog.try_into().map_err(|e| (name, e))?;
    p.load().and_then(|()| p.attach("skb", "kfree_skb").map(drop)).map_err(|e| (name, e))
}

/// Reads the listen syscall tracepoints' layout into `cfg`.
fn listen_formats(tracefs: &Path, cfg: &mut Config) -> Result<(), String> {
    let read = |name: &str| {
        let path = tracefs.join("events/syscalls").join(name).join("format");
        std::fs::read_to_string(&path).map(|t| TpFormat::parse(&t)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS is not set)".to_owned()
            } else {
                format!("reading {}: {e}", path.display())
            }
        })
    };
    offsets::from_listen_formats(&read("sys_enter_listen")?, &read("sys_exit_listen")?, cfg).map_err(|e| format!("{e:#}"))
}

/// Reads the `accept()` tracepoints' layout and the descriptor walk into
/// `cfg`; returns the programs to attach. arm64 has no `accept` (only
/// `accept4`), hence each call is optional but one.
fn accept_formats(tracefs: &Path, btf: &Btf, cfg: &mut Config) -> Result<Vec<&'static str>, String> {
    let read = |name: &str| {
        let path = tracefs.join("events").join(name).join("format");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(TpFormat::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    };
    // The thread-exit cleaner first: a thread that accepts and exits
    // while the others attach leaves nothing behind.
    let mut names = vec![PROG_SCHED_PROCESS_EXIT];
    let mut formats = Vec::new();
    for (enter, exit) in [(PROG_SYS_ENTER_ACCEPT4, PROG_SYS_EXIT_ACCEPT4), (PROG_SYS_ENTER_ACCEPT, PROG_SYS_EXIT_ACCEPT)] {
        if let (Some(e), Some(x)) = (read(&format!("syscalls/{enter}"))?, read(&format!("syscalls/{exit}"))?) {
            names.extend([enter, exit]);
            formats.push((e, x));
        }
    }
    if formats.is_empty() {
        return Err("this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS is not set)".into());
    }
    let destroy = read("tcp/tcp_destroy_sock")?.ok_or("this kernel has no tcp:tcp_destroy_sock tracepoint (added in 4.15)")?;
    offsets::from_accept_formats(&formats, &destroy, btf, cfg).map_err(|e| format!("{e:#}"))?;
    names.push(PROG_TCP_DESTROY_SOCK);
    Ok(names)
}

/// Attaches the accept recorders (beside any tier), then arms the
/// recording of queued children (`MAP_ARMED`): with one missing, nothing
/// would take their entries out again.
fn attach_accepts(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), String> {
    for &name in names {
        let category = match name {
            PROG_TCP_DESTROY_SOCK => "tcp",
            PROG_SCHED_PROCESS_EXIT => "sched",
            _ => "syscalls",
        };
        let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing"))?;
        let p: &mut TracePoint = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
        p.load().and_then(|()| p.attach(category, name).map(drop)).map_err(|e| format!("attaching {name}: {}", chain(&e)))?;
    }
    arm(ebpf, 0).map_err(|e| format!("arming the accept recorders: {e}"))
}

/// Sets slot `slot` of `MAP_ARMED`: 0 once the accept recorders are
/// attached, 1 once the state recorder is (outcomes are followed from then).
fn arm(ebpf: &mut Ebpf, slot: u32) -> Result<(), String> {
    let map = ebpf.map_mut(MAP_ARMED).ok_or("map ARMED missing")?;
    let mut armed: Array<_, u32> = Array::try_from(map).map_err(|e| e.to_string())?;
    armed.set(slot, 1, 0).map_err(|e| e.to_string())
}

/// Reads `sock:inet_sock_set_state`'s layout and `sk_cookie` into `cfg`.
fn state_format(tracefs: &Path, btf: &Btf, cfg: &mut Config) -> Result<(), String> {
    let path = tracefs.join("events/sock/inet_sock_set_state/format");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    offsets::from_state_format(&TpFormat::parse(&text), btf, cfg).map_err(|e| format!("{e:#}"))
}

/// Attaches the listener-close recorder (beside any tier).
fn attach_closed_listeners(ebpf: &mut Ebpf) -> Result<(), String> {
    let name = PROG_INET_SOCK_SET_STATE;
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing"))?;
    let p: &mut TracePoint = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
    p.load().and_then(|()| p.attach("sock", name).map(drop)).map_err(|e| format!("attaching {name}: {}", chain(&e)))?;
    // It decides outcomes too: drops are followed from now on.
    arm(ebpf, 1).map_err(|e| format!("arming connection outcomes: {e}"))
}

/// Attaches the `listen(2)` recorders (beside any tier).
fn attach_listen_calls(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [PROG_SYS_ENTER_LISTEN, PROG_SYS_EXIT_LISTEN] {
        let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing"))?;
        let p: &mut TracePoint = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
        p.load().and_then(|()| p.attach("syscalls", name).map(drop)).map_err(|e| format!("attaching {name}: {}", chain(&e)))?;
    }
    Ok(())
}

/// Unloads every loaded program; unloading detaches its links.
pub(crate) fn unload_all(ebpf: &mut Ebpf) {
    for (_, prog) in ebpf.programs_mut() {
        let _ = match prog {
            Program::FEntry(p) => p.unload(),
            Program::FExit(p) => p.unload(),
            Program::KProbe(p) => p.unload(),
            Program::TracePoint(p) => p.unload(),
            _ => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let status = |eff: &str| format!("Name:\tqtrace\nCapInh:\t0000000000000000\nCapEff:\t{eff}\n");
        assert_eq!(missing_capabilities(&status("000001ffffffffff")), None, "root");
        assert_eq!(missing_capabilities(&status("000000c000000000")), None, "CAP_BPF + CAP_PERFMON");
        assert_eq!(missing_capabilities(&status("0000000000200000")), None, "CAP_SYS_ADMIN");
        assert_eq!(missing_capabilities(&status("0000000000000000")).unwrap(), "CAP_BPF and CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)");
        assert_eq!(missing_capabilities(&status("0000008000000000")).unwrap(), "CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)");
        assert_eq!(missing_capabilities("garbage"), None);
    }

    /// The programs let `burst / interval + 1` events through at once
    /// (`emit::within_budget`): a second's worth of the rate asked for.
    #[test]
    fn an_event_budget_is_a_seconds_worth_at_once_then_the_rate() {
        for (rate, interval) in [(1, 1_000_000_000), (3, 333_333_333), (5000, 200_000), (2_000_000_000, 1)] {
            let (i, burst) = Filter { max_event_rate: Some(rate), ..Filter::default() }.budget_ns();
            assert_eq!(i, interval, "rate {rate}");
            assert_eq!(u64::from(burst / i) + 1, u64::from(rate.min(1_000_000_000)), "burst of rate {rate}");
        }
        assert_eq!(Filter::default().budget_ns(), (0, 0), "unlimited");
    }
}
