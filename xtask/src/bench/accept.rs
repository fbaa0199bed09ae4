//! The accept path: a minimal server that accepts, answers and closes, and
//! clients that open one connection per request, all on loopback in a
//! namespace. What is measured is connections completed per second.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::netns::Netns;

pub(super) const PORT: u16 = 9000;

/// Runs the server and `clients` client threads in `ns` for `duration`;
/// returns completed connections per second.
pub(super) fn run(ns: &Netns, clients: usize, duration: Duration) -> Result<f64> {
    let listener = ns.run(|| Ok(TcpListener::bind(("127.0.0.1", PORT))?))?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let done = std::thread::scope(|s| -> Result<u64> {
        let server = s.spawn(|| {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut c) = conn {
                    let _ = c.write_all(b"ok\n");
                }
            }
        });
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    ns.enter()?;
                    let mut n = 0u64;
                    let mut buf = [0u8; 16];
                    while start.elapsed() < duration {
                        let mut c = TcpStream::connect(("127.0.0.1", PORT))?;
                        while c.read(&mut buf)? > 0 {}
                        n += 1;
                    }
                    anyhow::Ok(n)
                })
            })
            .collect();
        let total = workers.into_iter().map(|w| w.join().expect("client panicked")).sum::<Result<u64>>();
        stop.store(true, Ordering::Relaxed);
        // Wake the server's accept().
        if let Ok(c) = ns.run(|| Ok(TcpStream::connect(("127.0.0.1", PORT))?)) {
            let _ = c.shutdown(Shutdown::Both);
        }
        server.join().expect("server panicked");
        total
    })?;
    Ok(done as f64 / duration.as_secs_f64())
}
