//! Reading kernel memory at offsets resolved from the running kernel's BTF
//! (handed over in [`Config`]): the listener's identity and queue state and
//! the packet's addresses. Nothing here assumes one kernel's struct layout.
//!
//! Reads return plain values, zero when the read fails (the helper zeroes
//! its destination on a fault), never `Result<T, _>`: an `Err` leaves the
//! payload undefined, LLVM then spills an uninitialised register, and the
//! verifier rightly refuses the program. Failure is seen as zero where it
//! matters (a netns inode or a port of 0 does not exist).

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use qtrace_common::{Config, AF_INET, AF_INET6, OFFSET_NONE};

/// Reads a `T` at `base + off`; zero for [`OFFSET_NONE`] or a bad address.
#[inline(always)]
pub(crate) fn read<T: Default>(base: u64, off: u32) -> T {
    let mut v = T::default();
    if off != OFFSET_NONE && base != 0 {
        // SAFETY: bpf_probe_read_kernel copes with any source address and
        // writes exactly size_of::<T>() bytes into `v` (zeroes on a fault).
        unsafe {
            bpf_probe_read_kernel(
                (&mut v as *mut T).cast(),
                core::mem::size_of::<T>() as u32,
                (base + u64::from(off)) as *const core::ffi::c_void,
            )
        };
    }
    v
}

/// A `net.ipv4` sysctl of `struct netns_ipv4` read per event:
/// `sysctl_tcp_syncookies` or `sysctl_tcp_abort_on_overflow`. Both became
/// `u8` in the same commit, 4ecc1baf362c ("tcp: convert elligible sysctls to
/// u8", Linux 5.13), which 5.10 stable also took in April 2023 as a dependency
/// of another fix; before, and on older 5.10.y, they are `int`. Hence the size
/// from BTF (`net_sysctl_size`) rather than from the version.
#[inline(always)]
pub(crate) fn sysctl(cfg: &Config, net: u64, off: u32) -> u32 {
    if cfg.net_sysctl_size == 1 {
        u32::from(read::<u8>(net, off))
    } else {
        read::<u32>(net, off)
    }
}

/// Who a listener is: enough to apply the filters.
#[derive(Clone, Copy)]
pub(crate) struct Identity {
    pub net: u64,
    pub netns: u32,
    pub port: u16,
}

impl Identity {
    /// False when the listener could not be read.
    #[inline(always)]
    pub(crate) fn valid(&self) -> bool {
        self.netns != 0 && self.port != 0
    }
}

#[inline(always)]
pub(crate) fn identity(cfg: &Config, sk: u64) -> Identity {
    let net: u64 = read(sk, cfg.sk_net);
    Identity { net, netns: read(net, cfg.net_inum), port: read(sk, cfg.sk_num) }
}

/// A listener's two queues as the kernel keeps them: `sk_ack_backlog`,
/// `sk_max_ack_backlog` and `icsk_accept_queue.qlen`. Not the backlog an
/// application passed to `listen()` (that is [`qtrace_common::ListenCall`]):
/// the kernel stores only its clamped value, the bound here.
#[derive(Clone, Copy)]
pub(crate) struct QueueState {
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    pub syn_qlen: u32,
}

impl QueueState {
    /// `sk_acceptq_is_full()`: strictly greater, as the kernel tests it on
    /// every supported kernel since 64a146513f8f ("[NET]: Revert incorrect
    /// accept queue backlog changes.", 2.6.21): a backlog of N admits N + 1.
    #[inline(always)]
    pub(crate) fn accept_queue_full(&self) -> bool {
        self.ack_backlog > self.max_ack_backlog
    }
    /// `inet_csk_reqsk_queue_is_full()` as kernels before 3479c7549fb1
    /// ("tcp/dccp: allow a connection when sk_max_ack_backlog is zero",
    /// Linux 6.13, backported to the 5.4, 5.15, 6.1, 6.6 and 6.12 stable
    /// series) test it: `>=`. Since then it is `>`, like the accept queue;
    /// `syn_stage` tells the two apart by whether the queue grew.
    #[inline(always)]
    pub(crate) fn syn_queue_full(&self) -> bool {
        self.syn_qlen >= self.max_ack_backlog
    }
}

/// The queue state of listener `sk` now.
#[inline(always)]
pub(crate) fn queues(cfg: &Config, sk: u64) -> QueueState {
    QueueState {
        ack_backlog: read(sk, cfg.sk_ack_backlog),
        max_ack_backlog: read(sk, cfg.sk_max_ack_backlog),
        syn_qlen: read(sk, cfg.icsk_qlen),
    }
}

/// Family and addresses of a received packet (network byte order);
/// `family` is 0 when the headers could not be read.
pub(crate) struct Packet {
    pub family: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub rport: u16,
}

impl Packet {
    /// No packet read (yet).
    pub(crate) const NONE: Packet = Packet { family: 0, laddr: [0; 16], raddr: [0; 16], rport: 0 };
}

/// Parses the IP and TCP headers of `skb` (set by the time TCP sees it).
#[inline(always)]
pub(crate) fn packet(cfg: &Config, skb: u64) -> Packet {
    let mut p = Packet::NONE;
    let head: u64 = read(skb, cfg.skb_head);
    if head == 0 {
        return p;
    }
    let ip = head + u64::from(read::<u16>(skb, cfg.skb_network_header));
    let tcp = head + u64::from(read::<u16>(skb, cfg.skb_transport_header));
    match read::<u8>(ip, 0) >> 4 {
        4 => {
            p.family = AF_INET;
            let src: [u8; 4] = read(ip, 12);
            let dst: [u8; 4] = read(ip, 16);
            p.raddr[..4].copy_from_slice(&src);
            p.laddr[..4].copy_from_slice(&dst);
        }
        6 => {
            p.family = AF_INET6;
            p.raddr = read(ip, 8);
            p.laddr = read(ip, 24);
        }
        _ => return p,
    }
    p.rport = u16::from_be(read::<u16>(tcp, 0));
    p
}

/// `skb->protocol == htons(ETH_P_IP)`.
#[inline(always)]
pub(crate) fn is_ipv4_skb(cfg: &Config, skb: u64) -> bool {
    u16::from_be(read::<u16>(skb, cfg.skb_protocol)) == 0x0800
}
