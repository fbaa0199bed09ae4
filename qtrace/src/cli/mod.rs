//! Command-line interface: argument definitions (one file per subcommand
//! for the logic) and the one-line error contract.

pub mod demo;
pub mod doctor;
pub mod generate;
pub mod listeners;
pub(crate) mod tui;
pub mod watch;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::host::netns::{self, Namespaces};
use crate::host::system;
use crate::host::system::realtime_ns;
use crate::kernel::limits::LimitRecord;
use crate::kernel::probe::HookChoice;
use crate::model::ports::{PortRange, PortSet};
use crate::model::record::{Start, Unreachable};
use crate::tracer::Attachment;

/// Trace TCP listen-queue overflows live, per port.
///
/// When a listener's accept queue or SYN queue overflows, the kernel drops
/// the SYN or the final ACK (or resets the connection with
/// tcp_abort_on_overflow=1) and only bumps namespace-wide counters. qtrace
/// shows each dropped or reset handshake packet as it happens, with the
/// listener's backlog state, aggregated per port.
#[derive(Debug, Parser)]
#[command(name = "qtrace", version, long_version = LONG_VERSION, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print debugging detail on stderr, such as the kernel verifier's log
    /// when it refuses a hook tier's programs.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// `--version`: which build this is, from `build.rs` (a bug report needs
/// the commit, and the object's digest tells the programs apart).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("QTRACE_GIT_COMMIT"),
    "\nbuilt: ",
    env!("QTRACE_BUILD_DATE"),
    "\ntarget: ",
    env!("QTRACE_TARGET"),
    "\neBPF object sha256: ",
    env!("QTRACE_EBPF_SHA256"),
);

/// `--verbose`: qtrace's debug records (and the libraries' warnings) on stderr.
pub fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.target().starts_with("qtrace") || m.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record<'_>) {
            if !self.enabled(record.metadata()) {
                return;
            }
            eprintln!("qtrace: {}: {}", record.level().as_str().to_lowercase(), record.args());
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

pub const EXAMPLES: &str = "\
Examples:
  First time, see it work: sudo qtrace demo
  During an incident:     sudo qtrace watch --port 8080
  Why, and what to change: sudo qtrace doctor --port 8080
  Every listener:         qtrace listeners
  Every listener, 60 s:   sudo qtrace watch --duration 60
  Machine-readable:       sudo qtrace watch --json | jq 'select(.kind==\"accept_queue_full\")'
  Staging, for days:      sudo qtrace watch --metrics-addr 127.0.0.1:9810 --json --output /var/log/qtrace.ndjson

Environment:
  QTRACE_BTF=FILE   BTF for a kernel without /sys/kernel/btf/vmlinux
  NO_COLOR          no colour in tables";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch overflows live: a per-port table every interval, or NDJSON events.
    Watch(WatchArgs),
    /// List every TCP listener: queues, drop counter, owning process, clamped backlogs.
    Listeners(ListenersArgs),
    /// Sample a few seconds and explain what overflows, why, and what to change.
    Doctor(DoctorArgs),
    /// Show every kind of overflow, live, in a throwaway network namespace (root).
    Demo(DemoArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write every page to a directory.
    Manpage(ManpageArgs),
    /// The demo's server and clients, inside the namespace `demo` made for them.
    #[command(name = "demo-scenario", hide = true)]
    DemoScenario(DemoScenarioArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds each kind of overflow is shown before the next.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub phase: Duration,

    /// Stop after this many seconds (default: until q or Ctrl-C).
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Plain periodic tables even on a terminal.
    #[arg(long)]
    pub plain: bool,

    /// Hook tier: `auto` picks the most detailed one this kernel allows.
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub hooks: HookChoice,
}

#[derive(Debug, Args)]
pub struct DemoScenarioArgs {
    #[arg(long, value_parser = parse_seconds)]
    pub phase: Duration,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write qtrace.1 and a page per subcommand (qtrace-watch.1, ...) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Which listeners a subcommand looks at.
#[derive(Debug, Args)]
pub struct Scope {
    /// Port or inclusive range; repeat for more (default: every listener).
    #[arg(short, long = "port", value_name = "PORT[-PORT]")]
    pub ports: Vec<PortRange>,

    /// Only this network namespace: inode number, `ip netns` name or a path
    /// such as /proc/PID/ns/net (default: every namespace qtrace can enter).
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
}

/// A [`Scope`] checked against the system.
pub struct Resolved {
    pub ports: PortSet,
    pub netns: Option<u32>,
    pub namespaces: Namespaces,
}

impl Scope {
    /// Resolves `--netns` and opens the namespaces; a namespace that does
    /// not exist or cannot be entered is a usage error (exit 2).
    pub fn resolve(&self) -> Result<Resolved, UsageError> {
        let usage = |e: anyhow::Error| UsageError(format!("{e:#}"));
        let netns = self.netns.as_deref().map(netns::resolve).transpose().map_err(usage)?;
        let namespaces = Namespaces::new(netns).map_err(usage)?;
        Ok(Resolved { ports: PortSet::new(self.ports.clone()), netns, namespaces })
    }
}

#[derive(Debug, Args)]
pub struct ListenersArgs {
    #[command(flatten)]
    pub scope: Scope,

    /// Print one JSON object per listener and line (see docs/events.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub scope: Scope,

    /// Seconds to sample counters (and trace, when permitted) before concluding.
    #[arg(short, long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,

    /// Print the report as NDJSON: capabilities, settings, then one finding per line.
    #[arg(long)]
    pub json: bool,

    /// Hook tier for the capture: `auto` picks the most detailed one this kernel allows.
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub hooks: HookChoice,

    /// Counters and listeners only: no eBPF capture.
    #[arg(long)]
    pub no_capture: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub scope: Scope,

    /// Seconds between refreshes of the table and of the kernel's counters.
    #[arg(short, long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Print one JSON object per line on stdout instead of the table (see docs/events.md).
    #[arg(long)]
    pub json: bool,

    /// Hook tier: `auto` picks the most detailed one this kernel allows.
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub hooks: HookChoice,

    /// Also list watched listeners that have no drops.
    #[arg(long)]
    pub all: bool,

    /// Do not name listeners' owners: no `owner` in records, no
    /// `qtrace_listener_info`, no reading other processes' /proc.
    #[arg(long)]
    pub no_owner: bool,

    /// Plain periodic tables even on a terminal (the default there is the
    /// full-screen live view).
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,

    /// Append the output (table or NDJSON) to FILE instead of stdout;
    /// SIGHUP reopens it, for log rotation.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics on ADDR (host:port) at /metrics, for
    /// long-running use; see docs/metrics.md.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// TLS and basic authentication for --metrics-addr, from a web
    /// configuration file in the format Prometheus exporters share
    /// (`tls_server_config`, `basic_auth_users`); read again when it or a
    /// file it names changes. See docs/metrics.md.
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,

    /// Forget a port (its table row, its metric series, its kernel counters)
    /// once no listener has been on it for this many seconds; `never` keeps
    /// every port that dropped until the end.
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_expire)]
    pub expire: Expire,

    /// Events each port may send per second (a token bucket in the kernel
    /// that lets a second's worth through at once). Beyond it events are
    /// counted in the totals and shown as suppressed, but not sent, so a
    /// flood costs little; `unlimited` sends every one.
    #[arg(long, value_name = "N|unlimited", default_value_t = EventRate(Some(DEFAULT_MAX_EVENT_RATE)), value_parser = parse_event_rate)]
    pub max_event_rate: EventRate,
}

/// Events per second each port may send by default: enough to see every
/// connection of an ordinary overload, a small cost in a flood.
pub(crate) const DEFAULT_MAX_EVENT_RATE: u32 = 5000;

/// `--max-event-rate`: events per second per port, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRate(pub Option<u32>);

impl std::fmt::Display for EventRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unlimited"),
        }
    }
}

fn parse_event_rate(s: &str) -> Result<EventRate, String> {
    if s.trim() == "unlimited" {
        return Ok(EventRate(None));
    }
    match s.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(EventRate(Some(n))),
        _ => Err(format!("{s:?} is not a positive number of events per second or `unlimited`")),
    }
}

/// `--expire`: seconds, or never.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expire(pub Option<Duration>);

fn parse_expire(s: &str) -> Result<Expire, String> {
    if s.trim() == "never" {
        return Ok(Expire(None));
    }
    parse_seconds(s).map(|d| Expire(Some(d)))
}

/// `host:port` for the metrics endpoint; a bare port means every address.
fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port));
    }
    s.parse().map_err(|_| format!("{s:?} is not an address and port (for example 127.0.0.1:9810 or [::1]:9810)"))
}

/// A positive number of seconds (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    if v > 365.0 * 86_400.0 {
        return Err(format!("{s:?} is more than a year"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Bad input found after parsing (for example an unknown namespace): exit 2
/// like a clap usage error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The `start` record of `watch` and `doctor`: this system, what attached
/// (nothing without a capture), and the namespaces.
pub(crate) fn start_record(attachment: Option<&Attachment>, namespaces: &Namespaces) -> Start {
    Start {
        tier: attachment.map(|a| a.tier),
        refused: attachment.map(|a| a.refused.clone()).unwrap_or_default(),
        limits: attachment.map(|a| a.limits.iter()).into_iter().flatten().chain(&system::owner_limit()).map(LimitRecord::from).collect(),
        max_event_rate: attachment.and_then(|a| a.max_event_rate),
        namespaces: namespaces.count(),
        unreachable_namespaces: namespaces
            .unreachable
            .iter()
            .map(|(netns, reason)| Unreachable { netns: *netns, reason: reason.clone() })
            .collect(),
        ..Start::new(system::kernel_release(), system::has_btf(), system::is_root(), realtime_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qtrace").chain(args.iter().copied()))
    }

    #[test]
    fn verbose_goes_anywhere() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        assert!(parse(&["watch", "-v", "--json"]).unwrap().verbose);
        assert!(parse(&["--verbose", "doctor"]).unwrap().verbose);
        assert!(!parse(&["listeners"]).unwrap().verbose);
    }

    #[test]
    fn parses_watch() {
        let Command::Watch(w) = parse(&["watch", "-p", "8080", "--port", "9000-9002", "--json", "-i", "0.5"]).unwrap().command else {
            panic!("not watch")
        };
        assert_eq!(w.scope.ports.len(), 2);
        assert!(w.json);
        assert_eq!(w.interval, Duration::from_millis(500));
        assert_eq!(w.hooks, HookChoice::Auto);
        assert_eq!(w.duration, None);
        assert_eq!((w.metrics_addr, w.expire), (None, Expire(Some(Duration::from_secs(600)))));
        let Command::Watch(w) = parse(&["watch", "--metrics-addr", "127.0.0.1:9810", "--expire", "never"]).unwrap().command else {
            panic!("not watch")
        };
        assert_eq!((w.metrics_addr, w.expire), (Some("127.0.0.1:9810".parse().unwrap()), Expire(None)));
        let Command::Watch(w) = parse(&["watch", "--metrics-addr", "9810"]).unwrap().command else { panic!("not watch") };
        assert_eq!(w.metrics_addr, Some("[::]:9810".parse().unwrap()));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for bad in [
            &["watch", "--port", "0"][..],
            &["watch", "--port", "65536"],
            &["watch", "--port", "abc"],
            &["watch", "--port", "9-1"],
            &["watch", "--interval", "0"],
            &["watch", "--interval=-1"],
            &["watch", "--duration", "nan"],
            &["watch", "--hooks", "magic"],
            &["watch", "--metrics-addr", "localhost"],
            &["watch", "--metrics-addr", "1.2.3.4:99999"],
            &["watch", "--expire", "0"],
            &["watch", "--expire", "soon"],
            &["watch", "--max-event-rate", "0"],
            &["watch", "--max-event-rate=-5"],
            &["watch", "--max-event-rate", "lots"],
            &["listeners", "--port", "0"],
            &["doctor", "--duration", "0"],
            &["doctor", "-p", "70000"],
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue), "{bad:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn help_mentions_the_three_uses() {
        let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
        assert!(help.contains("--port 8080") && help.contains("--json | jq"), "{help}");
    }
}
