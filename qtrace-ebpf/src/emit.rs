//! Filters, exact counting and event delivery, shared by every hook.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use qtrace_common::{stat, Config, CounterKey, Event};

use crate::kmem::{self, Identity, QueueState};
use crate::maps::{COUNTERS, EVENTS, PORTS, STATS};

/// Applies `--netns` and `--port` in the kernel: a listener nobody watches
/// costs one map lookup and produces no ring-buffer traffic.
#[inline(always)]
pub(crate) fn watched(cfg: &Config, id: &Identity) -> bool {
    if cfg.filter_netns != 0 && cfg.filter_netns != id.netns {
        return false;
    }
    if cfg.filter_ports != 0 {
        return matches!(PORTS.get(u32::from(id.port)), Some(v) if *v != 0);
    }
    true
}

#[inline(always)]
pub(crate) fn bump(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Counts one `kind` for the listener in the per-CPU counters.
#[inline(always)]
pub(crate) fn count(kind: u8, id: &Identity) {
    let key = CounterKey { netns: id.netns, port: id.port, kind, _pad: 0 };
    match COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        Some(v) => unsafe { *v += 1 },
        None => {
            if COUNTERS.insert(key, 1, 0).is_err() {
                bump(stat::COUNTER_MAP_FULL);
            }
        }
    }
}

/// Counts one `kind` for the listener, then sends the event if the ring
/// buffer has room (and counts it as lost if not).
#[inline(always)]
pub(crate) fn emit(cfg: &Config, kind: u8, hook: u8, id: &Identity, sk: u64, skb: u64, q: &QueueState) {
    count(kind, id);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(stat::RINGBUF_FULL);
        return;
    };
    let mut ev = Event {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        netns: id.netns,
        ack_backlog: q.ack_backlog,
        max_ack_backlog: q.max_ack_backlog,
        syn_qlen: q.syn_qlen,
        lport: id.port,
        kind,
        hook,
        ..Event::default()
    };
    let p = kmem::packet(cfg, skb);
    if p.family != 0 {
        ev.family = p.family;
        ev.laddr = p.laddr;
        ev.raddr = p.raddr;
        ev.rport = p.rport;
    } else {
        // No packet headers: fall back to the listener's bound address.
        ev.family = kmem::read::<u16>(sk, cfg.sk_family) as u8;
        let a: [u8; 4] = kmem::read(sk, cfg.sk_rcv_saddr);
        ev.laddr[..4].copy_from_slice(&a);
    }
    entry.write(ev);
    entry.submit(0);
}
