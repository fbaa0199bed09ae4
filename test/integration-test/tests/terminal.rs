//! The live view under a real pseudo-terminal (tmux), driven by
//! `qtrace demo`: the port's row appears, its drop count rises, the keys
//! work, and quitting leaves nothing behind. And the demo without a
//! terminal: plain tables. Root, host only.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, counters_of, require_root};

/// A tmux session running one command in a 150x20 terminal.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(cmd: &str) -> Self {
        require_root();
        let name = format!("qtrace-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "150", "-y", "20"])
            // Keep the pane after the command ends, to read its last screen.
            .arg(format!("{cmd}; echo \"exit status $?\"; sleep 60"))
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux runs");
        assert!(ok.success(), "tmux new-session");
        Self { name }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.name]).output().expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.name, keys]).status().unwrap().success());
    }

    /// Waits until `pred` holds for the screen; returns that screen.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "waited {timeout:?} for {what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).status();
    }
}

/// The DROPS value of port 8080's row: the column under the header's
/// `DROPS` (the bar and `n/m` of ACCEPT QUEUE line up with its two words).
fn drops_8080(screen: &str) -> Option<u64> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines.iter().position(|l| l.starts_with("PORT ") || l.contains(" PORT "))?;
    let col = lines[header].split_whitespace().position(|w| w == "DROPS")?;
    let row = lines[header + 1..].iter().find(|l| l.split_whitespace().next() == Some("8080"))?;
    row.split_whitespace().nth(col)?.parse().ok()
}

fn scenario_pid() -> Option<u32> {
    let out = Command::new("pgrep").args(["-x", "slow-server"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next()?.parse().ok()
}

fn scenario_alive() -> bool {
    scenario_pid().is_some()
}

#[test]
fn the_live_view_shows_the_demo_and_its_keys_work() {
    assert!(!scenario_alive(), "a demo from elsewhere is running");
    let t = Tmux::start(&format!("{} demo --phase 8", bin()));
    // Within a few seconds: the explanation, and port 8080's row with drops.
    let first = t.wait_for("port 8080's row with drops", Duration::from_secs(30), |s| drops_8080(s).is_some_and(|d| d > 0));
    assert!(first.contains("demo 1/5: accept queue full"), "{first}");
    assert!(first.contains("slow-server("), "the owning process: {first}");
    assert!(first.contains("tier "), "the status line: {first}");
    let d1 = drops_8080(&first).unwrap();
    // The count rises as the demo goes on.
    let later = t.wait_for("more drops", Duration::from_secs(30), |s| drops_8080(s).is_some_and(|d| d > d1));
    let d2 = drops_8080(&later).unwrap();
    assert!(d2 > d1);

    // Keys: sort, pause (numbers stop), filter another port, quit.
    t.keys("s");
    t.wait_for("sort by total", Duration::from_secs(5), |s| s.contains("sort drops |"));
    t.keys("p");
    let paused = t.wait_for("PAUSED", Duration::from_secs(5), |s| s.contains("PAUSED"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(drops_8080(&t.screen()), drops_8080(&paused), "paused: the numbers stay");
    t.keys("p");
    t.keys("/");
    t.keys("9999");
    t.keys("Enter");
    t.wait_for("an empty filter", Duration::from_secs(5), |s| s.contains("no watched listener on port 9999"));
    t.keys("c");
    t.wait_for("the row back", Duration::from_secs(5), |s| drops_8080(s).is_some());
    // The demo's namespace is fresh and only port 8080 listens in it: its
    // ListenDrops, read just before quitting, is a floor for the summary.
    let pid = scenario_pid().expect("the demo's server");
    let kernel = counters_of(&format!("/proc/{pid}")).get("ListenDrops");
    assert!(kernel > 0, "the kernel counted drops in the demo's namespace");
    t.keys("q");
    let end = t.wait_for("the summary", Duration::from_secs(15), |s| s.contains("exit status"));
    assert!(end.contains("Summary") && end.contains("exit status 0"), "{end}");
    // The summary's total is at least what the live view last showed.
    let total: u64 = end
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("8080"))
        .and_then(|l| {
            let header = end.lines().find(|h| h.contains("NETNS") && h.contains("DROPS"))?;
            let col = header.split_whitespace().position(|w| w == "DROPS")?;
            l.split_whitespace().nth(col)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary row for 8080: {end}"));
    assert!(total >= kernel, "summary {total} vs the namespace's ListenDrops {kernel} before quitting");
    assert!(total >= d2, "summary {total} vs live {d2}");
    // The scenario (and with it its namespace) is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while scenario_alive() {
        assert!(Instant::now() < deadline, "the demo's server outlived it");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_demo_without_a_terminal_prints_plain_tables() {
    require_root();
    let out = Command::new(bin()).args(["demo", "--phase", "3", "--duration", "8"]).output().expect("qtrace demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains('\x1b'), "no escape sequences in a pipe");
    assert!(stdout.contains("demo 1/5: accept queue full") && stdout.contains("demo 2/5: final ACK dropped"), "{stdout}");
    let summary = stdout.split("Summary\n").nth(1).unwrap_or_else(|| panic!("no summary: {stdout}"));
    let header = summary.lines().next().unwrap();
    let col = header.split_whitespace().position(|w| w == "DROPS").unwrap();
    let row = summary.lines().find(|l| l.split_whitespace().nth(1) == Some("8080")).unwrap_or_else(|| panic!("{summary}"));
    let drops: u64 = row.split_whitespace().nth(col).unwrap().parse().unwrap();
    assert!(drops > 0, "the demo overflowed: {summary}");
    // The phase lines carry the namespace's own ListenDrops growth per phase
    // (traffic starts only once qtrace is attached): their last values add
    // up to a floor for qtrace's total.
    let mut per_phase = std::collections::BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("demo ")) {
        let phase = line.split(':').next().unwrap().to_owned();
        let n = line.split("ListenDrops +").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok());
        per_phase.insert(phase, n.unwrap_or(0));
    }
    let kernel: u64 = per_phase.values().sum();
    assert!(kernel > 0 && drops >= kernel, "qtrace {drops} vs the namespace's ListenDrops {kernel} ({per_phase:?})");
    assert!(!scenario_alive(), "the demo's server outlived it");
}
