//! `qtrace demo`: the live view on port 8080 of a throwaway network
//! namespace where a slow server and bursty clients make each kind of
//! overflow happen in turn (`crate::cli::demo::scenario`). Needs root and nothing else:
//! the namespace is made with unshare(2), not `ip netns`, and ends with
//! the child process that lives in it.

pub mod scenario;

use std::io::{BufRead, BufReader, Lines, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::{watch, DemoArgs, EventRate, Expire, Scope, UsageError, WatchArgs, DEFAULT_MAX_EVENT_RATE};
use crate::model::ports::PortRange;
use crate::output::table::Banner;
use scenario::PORT;

/// The scenario's process: killed and reaped on drop, and killed by the
/// kernel if qtrace dies first (PR_SET_PDEATHSIG).
struct Scenario(Child);

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the scenario in a new network namespace and waits until its
/// server listens.
fn spawn_scenario(args: &DemoArgs) -> Result<(Scenario, Lines<BufReader<ChildStdout>>)> {
    let exe = std::env::current_exe().context("finding qtrace's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["demo-scenario", "--phase", &args.phase.as_secs_f64().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: prctl and unshare are async-signal-safe; they run in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Scenario(cmd.spawn().context("starting the demo's server in a new network namespace")?);
    let mut lines = BufReader::new(child.0.stdout.take().context("the scenario's output")?).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => Ok((child, lines)),
        Some(Ok(l)) => bail!("the demo's scenario failed: {l}"),
        _ => bail!("the demo's scenario ended before it was ready"),
    }
}

/// The scenario's lines for the view, each update a JSON array of lines.
fn follow(lines: Lines<BufReader<ChildStdout>>) -> Banner {
    let (tx, banner) = tokio::sync::watch::channel(Vec::new());
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let Ok(update) = serde_json::from_str::<Vec<String>>(&line) else {
                continue;
            };
            if tx.send(update).is_err() {
                break;
            }
        }
    });
    banner
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if !crate::host::system::is_root() {
        return Err(UsageError("qtrace demo needs root: it creates a network namespace and loads eBPF programs".into()).into());
    }
    let (mut child, lines) = spawn_scenario(&args)?;
    let pid = child.0.id();
    let banner = follow(lines);
    eprintln!(
        "qtrace: demo: a slow server on port {PORT} with bursty clients, in a throwaway network namespace (process {pid}); each kind of overflow in turn, {} s each; q or Ctrl-C ends it and removes everything",
        args.phase.as_secs()
    );
    let watch_args = WatchArgs {
        scope: Scope { ports: vec![PortRange { first: PORT, last: PORT }], netns: Some(format!("/proc/{pid}/ns/net")) },
        interval: Duration::from_secs(1),
        duration: args.duration,
        json: false,
        hooks: args.hooks,
        all: true,
        no_owner: false,
        plain: args.plain,
        output: None,
        metrics_addr: None,
        web_config_file: None,
        expire: Expire(None),
        max_event_rate: EventRate(Some(DEFAULT_MAX_EVENT_RATE)),
    };
    let mut go = child.0.stdin.take().context("the scenario's input")?;
    let attached: Box<dyn FnOnce()> = Box::new(move || {
        // A scenario that already died shows as a quiet port; its exit is
        // reported when the demo ends.
        let _ = go.write_all(b"start\n");
    });
    let result = watch::run_with(watch_args, Some(watch::Demo { banner, attached })).await;
    drop(child);
    result
}
