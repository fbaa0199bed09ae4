//! Filters, exact counting and event delivery, shared by every hook.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::maps::PerCpuHashMap;
use qtrace_common::{stat, Config, CounterKey, Event};

use crate::kmem::{self, Identity, Packet, QueueState};
use crate::maps::{BUDGETS, COUNTERS, EVENTS, PORTS, STATS, SUPPRESSED};
use crate::outcome;

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
    tally(&COUNTERS, stat::COUNTER_MAP_FULL, kind, id);
}

/// Adds one to the listener's `kind` in `map`; `full` is the stat a full
/// map bumps instead.
#[inline(always)]
fn tally(map: &PerCpuHashMap<CounterKey, u64>, full: u32, kind: u8, id: &Identity) {
    let key = CounterKey { netns: id.netns, port: id.port, kind, _pad: 0 };
    match map.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        Some(v) => unsafe { *v += 1 },
        None => {
            if map.insert(key, 1, 0).is_err() {
                bump(full);
            }
        }
    }
}

/// Whether the listener's port may send one more event now (the token
/// bucket of [`Config::budget_interval_ns`]), taking it if so. Two CPUs
/// that read the same due time both send: under a flood spread over CPUs
/// the budget can be exceeded by up to one event per CPU per interval,
/// which bounds the cost as well; the counts stay exact either way.
#[inline(always)]
fn within_budget(cfg: &Config, id: &Identity, now: u64) -> bool {
    if cfg.budget_interval_ns == 0 {
        return true;
    }
    let interval = u64::from(cfg.budget_interval_ns);
    let key = (u64::from(id.netns) << 16) | u64::from(id.port);
    let Some(due) = BUDGETS.get_ptr_mut(key) else {
        // A full map evicts the least recently used port's budget.
        let _ = BUDGETS.insert(key, now + interval, 0);
        return true;
    };
    // SAFETY: a value of the map, live while this program runs; a racing
    // writer on another CPU only makes the budget approximate (above).
    let next = unsafe { *due }.max(now);
    if next - now > u64::from(cfg.budget_burst_ns) {
        return false;
    }
    // SAFETY: as above.
    unsafe { *due = next + interval };
    true
}

/// Counts one `kind` for the listener, adds a lost packet to its
/// connection's outcome (whatever the budget), then sends the event if the
/// port's budget allows (tallied as suppressed if not) and the ring buffer
/// has room (counted as lost if not).
#[inline(always)]
pub(crate) fn emit(cfg: &Config, kind: u8, hook: u8, id: &Identity, sk: u64, skb: u64, q: &QueueState) {
    count(kind, id);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tracked = outcome::tracked(kind);
    let mut p = Packet::NONE;
    if tracked {
        p = kmem::packet(cfg, skb);
        outcome::dropped(cfg, id, kind, &p, now);
    }
    if !within_budget(cfg, id, now) {
        tally(&SUPPRESSED, stat::SUPPRESSED_MAP_FULL, kind, id);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(stat::RINGBUF_FULL);
        return;
    };
    let mut ev = Event {
        ts_ns: now,
        netns: id.netns,
        ack_backlog: q.ack_backlog,
        max_ack_backlog: q.max_ack_backlog,
        syn_qlen: q.syn_qlen,
        lport: id.port,
        kind,
        hook,
        ..Event::default()
    };
    if !tracked {
        p = kmem::packet(cfg, skb);
    }
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
