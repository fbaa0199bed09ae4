//! The smallest consumer of qtrace's ring buffer, for `cargo xtask bench`:
//! attaches the same programs the same way `qtrace watch` does, then only
//! counts records until SIGINT. Its loss-free rate is the ceiling any
//! consumer of this ring buffer can reach on the machine.
//!
//! `ringbuf_count [--netns NAME] [--port PORT]`; prints a `losses` record
//! like qtrace's on exit.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use qtrace::kernel::maps::KernelInputs as _;
use qtrace::kernel::probe::{Filter, HookChoice, Probe};
use qtrace::model::ports::{PortRange, PortSet};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter = Filter::default();
    for pair in args.chunks(2) {
        match pair {
            [flag, v] if flag == "--netns" => filter.netns = Some(qtrace::host::netns::resolve(v)?),
            [flag, v] if flag == "--port" => filter.ports = PortSet::new(vec![v.parse::<PortRange>().map_err(anyhow::Error::msg)?]),
            _ => anyhow::bail!("usage: ringbuf_count [--netns NAME] [--port PORT]"),
        }
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let probe = Probe::attach(HookChoice::Auto, &filter).context("attaching")?;
    let tier = probe.tier;
    let mut maps = probe.into_maps()?;
    // Attached: a start record like qtrace's, on stdout, flushed.
    println!(r#"{{"type":"start","tier":"{tier}"}}"#);
    std::io::stdout().flush()?;
    let mut records = 0u64;
    let mut pfd = libc::pollfd { fd: maps.events_fd(), events: libc::POLLIN, revents: 0 };
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
            // As `watch` does: a moment's wait lets a burst gather, so the
            // kernel wakes this reader once per batch, not per record.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        maps.drain_events(&mut |_| records += 1);
    }
    maps.drain_events(&mut |_| records += 1);
    let losses = maps.losses()?;
    println!(r#"{{"type":"losses","records":{records},"ringbuf_full":{}}}"#, losses.ringbuf_full);
    maps.detach();
    Ok(())
}
