//! The terminal side of the live view: raw mode and the alternate screen
//! (ratatui on crossterm) and keys read on their own thread. What is shown
//! is decided in `output::live`; each port's owner is the tracer's.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::host::system::realtime_ns;
use crate::model::aggregate::Aggregator;
use crate::model::event::Kind;
use crate::model::event::{rfc3339, Decoded};
use crate::model::record::Start;
use crate::output::live::{Action, Key, LiveRow, LiveView};
use crate::output::table::{self, Banner};
use crate::output::{context, WatchSink};
use crate::tracer::{PollReport, Sink, Tracer};

/// What the input thread reports.
enum TermInput {
    Key(Key),
    /// Ctrl-C or Ctrl-D: in raw mode the terminal sends no SIGINT.
    Quit,
    Resize,
}

/// The live view's sink: owns the terminal while `watch` runs.
pub(crate) struct Tui {
    terminal: DefaultTerminal,
    /// What is watched, for the first header line.
    what: String,
    banner: Option<Banner>,
    header: Vec<String>,
    tier: String,
    /// `--all` for the summary printed after the screen is restored.
    all: bool,
    restored: bool,
    pub view: LiveView,
    /// What is on screen: the kinds with a column and the rows.
    shown: Option<(Vec<Kind>, Vec<LiveRow>)>,
    input: mpsc::UnboundedReceiver<TermInput>,
    stop: Arc<AtomicBool>,
    last_update: Instant,
}

impl Tui {
    /// Takes over the terminal (restored on drop, and on a panic by
    /// ratatui's hook).
    pub(crate) fn start(color: bool, what: String, banner: Option<Banner>, all: bool) -> Result<Self> {
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
            what,
            banner,
            header: Vec::new(),
            tier: String::new(),
            all,
            restored: false,
            view: LiveView::new(color),
            shown: None,
            input,
            stop,
            last_update: Instant::now(),
        })
    }

    fn draw(&mut self, tracer: &Tracer) -> Result<()> {
        // Paused: the rows as they were when the pause began.
        if !self.view.paused || self.shown.is_none() {
            // The most specific name its listeners' owners share, resolved
            // once per listener by the tracer.
            let owner = |k: &_| tracer.agg.ports().get(k).map(|st| st.owner_name());
            self.shown = Some(self.view.rows(&tracer.agg, owner));
        }
        let status = self.view.status(&self.tier, &tracer.agg);
        let (view, header, (kinds, rows)) = (&self.view, &self.header, self.shown.as_ref().expect("set above"));
        self.terminal.draw(|f| view.draw(f, kinds, rows, header, &status)).context("drawing")?;
        Ok(())
    }

    /// Back to the normal screen.
    fn restore(&mut self) {
        if !self.restored {
            self.restored = true;
            self.stop.store(true, Ordering::Relaxed);
            ratatui::restore();
        }
    }
}

impl Sink for Tui {
    fn event(&mut self, _ev: &Decoded) {}
    /// Expiries need no line: the screen is redrawn each tick.
    fn polled(&mut self, _tracer: &Tracer, _report: &PollReport) -> Result<()> {
        Ok(())
    }
}

impl WatchSink for Tui {
    fn started(&mut self, _tracer: &Tracer, start: &Start) {
        self.tier = start.tier.map(|t| t.to_string()).unwrap_or_default();
    }

    /// After a poll: new rates, header, and a redraw.
    fn tick(&mut self, tracer: &Tracer) -> Result<()> {
        let seconds = self.last_update.elapsed().as_secs_f64();
        if !self.view.paused {
            self.last_update = Instant::now();
            self.view.update(&tracer.agg, seconds);
        }
        let stamp = format!("{}  tier {}", &rfc3339(realtime_ns())[..19], self.tier);
        self.header = vec![format!("qtrace: watching {}  {stamp}", self.what)];
        self.header.extend(self.banner.as_ref().map(|b| b.borrow().clone()).unwrap_or_default());
        self.header.extend(context::lines(tracer, true));
        self.draw(tracer)
    }

    /// Waits for a key and applies it to the view.
    async fn action(&mut self) -> Action {
        match self.input.recv().await {
            None | Some(TermInput::Quit) => Action::Quit,
            Some(TermInput::Resize) => Action::Redraw,
            Some(TermInput::Key(k)) => self.view.key(k),
        }
    }

    fn redraw(&mut self, tracer: &Tracer) -> Result<()> {
        self.draw(tracer)
    }

    fn summary(&mut self, agg: &Aggregator, expire_secs: u64) {
        self.restore();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(table::summary(agg, self.all, expire_secs).as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.restore();
    }
}
