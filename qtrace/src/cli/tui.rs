//! The terminal side of the live view: raw mode and the alternate screen
//! (ratatui on crossterm), keys read on their own thread, and the owning
//! process of each port. What is shown is decided in `output::live`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::host::netns::NsListeners;
use crate::host::procs;
use crate::model::aggregate::PortKey;
use crate::model::event::Kind;
use crate::output::live::{Action, Key, LiveRow, LiveView};
use crate::tracer::Tracer;

/// What the input thread reports.
enum TermInput {
    Key(Key),
    /// Ctrl-C or Ctrl-D: in raw mode the terminal sends no SIGINT.
    Quit,
    Resize,
}

/// Owning processes by socket inode, looked up once per new listener (a
/// scan of every process's descriptors is too slow to repeat each tick).
#[derive(Default)]
struct OwnerNames {
    names: HashMap<u32, String>,
    scanned: Option<Instant>,
}

impl OwnerNames {
    fn by_port(&mut self, listeners: &[NsListeners]) -> HashMap<PortKey, String> {
        let live: BTreeSet<u32> = listeners.iter().flat_map(|ns| ns.listeners.iter().map(|l| l.inode)).collect();
        self.names.retain(|ino, _| live.contains(ino));
        let unknown: BTreeSet<u64> = live.iter().filter(|i| !self.names.contains_key(i)).map(|i| u64::from(*i)).collect();
        if !unknown.is_empty() && self.scanned.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            self.scanned = Some(Instant::now());
            let found = procs::owners(&unknown);
            for ino in unknown {
                // Not found (another user's process without the privilege
                // to look): remembered as unknown, not looked up again.
                let name = found.by_inode.get(&ino).and_then(|o| o.first()).map(|o| o.short()).unwrap_or_else(|| "-".into());
                self.names.insert(ino as u32, name);
            }
        }
        let mut out = HashMap::new();
        for ns in listeners {
            for l in &ns.listeners {
                if let Some(name) = self.names.get(&l.inode) {
                    out.entry(PortKey { netns: ns.netns, port: l.port }).or_insert_with(|| name.clone());
                }
            }
        }
        out
    }
}

pub struct Tui {
    terminal: DefaultTerminal,
    pub view: LiveView,
    owners: OwnerNames,
    owner_of: HashMap<PortKey, String>,
    /// What is on screen: the kinds with a column and the rows.
    shown: Option<(Vec<Kind>, Vec<LiveRow>)>,
    input: mpsc::UnboundedReceiver<TermInput>,
    stop: Arc<AtomicBool>,
    last_update: Instant,
}

impl Tui {
    /// Takes over the terminal (restored on drop, and on a panic by
    /// ratatui's hook).
    pub fn start(color: bool) -> Result<Self> {
        let terminal = ratatui::try_init().context("setting up the terminal")?;
        let (tx, input) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                        KeyCode::Char('c' | 'd') if k.modifiers.contains(KeyModifiers::CONTROL) => TermInput::Quit,
                        KeyCode::Char(c) => TermInput::Key(Key::Char(c)),
                        KeyCode::Enter => TermInput::Key(Key::Enter),
                        KeyCode::Esc => TermInput::Key(Key::Esc),
                        KeyCode::Backspace => TermInput::Key(Key::Backspace),
                        _ => continue,
                    },
                    Ok(Event::Resize(..)) => TermInput::Resize,
                    Ok(_) => continue,
                    Err(_) => TermInput::Quit,
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            terminal,
            view: LiveView::new(color),
            owners: OwnerNames::default(),
            owner_of: HashMap::new(),
            shown: None,
            input,
            stop,
            last_update: Instant::now(),
        })
    }

    /// Waits for a key and applies it to the view.
    pub async fn next_key(&mut self) -> Action {
        match self.input.recv().await {
            None | Some(TermInput::Quit) => Action::Quit,
            Some(TermInput::Resize) => Action::Redraw,
            Some(TermInput::Key(k)) => self.view.key(k),
        }
    }

    /// After a poll: new rates, owners, and a redraw.
    pub fn tick(&mut self, tracer: &Tracer, header: &[String]) -> Result<()> {
        let seconds = self.last_update.elapsed().as_secs_f64();
        if !self.view.paused {
            self.last_update = Instant::now();
            self.view.update(&tracer.agg, seconds);
            self.owner_of = self.owners.by_port(&tracer.listeners);
        }
        self.draw(tracer, header)
    }

    pub fn draw(&mut self, tracer: &Tracer, header: &[String]) -> Result<()> {
        // Paused: the rows as they were when the pause began.
        if !self.view.paused || self.shown.is_none() {
            self.shown = Some(self.view.rows(&tracer.agg, |k| self.owner_of.get(k).cloned()));
        }
        let status = self.view.status(&tracer.probe.tier.to_string(), &tracer.agg);
        let (view, (kinds, rows)) = (&self.view, self.shown.as_ref().expect("set above"));
        self.terminal.draw(|f| view.draw(f, kinds, rows, header, &status)).context("drawing")?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        ratatui::restore();
    }
}
