//! The full-screen live view of `watch` on a terminal: one row per watched
//! port with its drop rate per kind, a sparkline of the last minute, its
//! accept queue as a bar and its owner; a status line with the tier and
//! lost events. The state here (rates, history, sort, filter, pause) is
//! pure; `cli::tui` owns the terminal and the keys.

use std::collections::{HashMap, VecDeque};

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use crate::model::aggregate::{Aggregator, PortKey};
use crate::model::counts::Counts;
use crate::model::event::Kind;
use crate::output::table::duration;

/// Samples kept for the sparkline: a minute at the default 1 s interval.
const HISTORY: usize = 60;
/// Characters of the sparkline: two samples each.
const SPARK_WIDTH: usize = HISTORY / 2;
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sort {
    /// Most drops per second first.
    #[default]
    Rate,
    /// Most drops since start first.
    Total,
    /// By port number.
    Port,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Rate => Sort::Total,
            Sort::Total => Sort::Port,
            Sort::Port => Sort::Rate,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Sort::Rate => "drops/s",
            Sort::Total => "drops",
            Sort::Port => "port",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct History {
    prev: Counts,
    /// Per kind, per second, over the last update.
    rates: [f64; Kind::ALL.len()],
    /// Drops per update, newest last.
    drops: VecDeque<u64>,
}

/// A key the view understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
}

/// What a key asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    None,
    Redraw,
    Quit,
}

/// Characters of the OWNER column.
const OWNER_WIDTH: usize = 20;
/// The wait column's title, as wide as its widest usual cell
/// (`999us/999ms`). The column comes after DROPS: every title word before
/// DROPS lines up with a word of the rows' cells (the bar and `n/m` under
/// ACCEPT QUEUE), which a reader of the screen by words relies on, and
/// this title's two words sit over one.
const WAIT_TITLE: &str = "WAIT p50/p99";

/// One row as drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LiveRow {
    pub key: PortKey,
    pub owner: String,
    pub queue: Option<(u32, u32)>,
    /// Accept-queue wait p50 and p99 in nanoseconds; none before the
    /// first accept.
    pub wait: Option<(u64, u64)>,
    pub rate: f64,
    pub kind_rates: Vec<f64>,
    pub drops: u64,
    pub spark: String,
    /// Its listener sockets, when the view shows them (`l`).
    pub listeners: Vec<ListenerLine>,
}

/// One listener socket under its port's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerLine {
    pub owner: String,
    pub queue: (u32, u32),
    pub drops: u64,
    /// Arrivals and accepts per second over the last interval.
    pub rates: (f64, f64),
}

#[derive(Debug, Default)]
pub(crate) struct LiveView {
    pub sort: Sort,
    /// Only this port.
    pub filter: Option<u16>,
    /// The port being typed after `/`.
    pub editing: Option<String>,
    pub paused: bool,
    /// Also listeners without drops.
    pub show_quiet: bool,
    /// Colour (off with `NO_COLOR`).
    pub color: bool,
    /// Each port's listener sockets under it (several with SO_REUSEPORT).
    pub expand: bool,
    history: HashMap<PortKey, History>,
}

impl LiveView {
    pub(crate) fn new(color: bool) -> Self {
        Self { color, show_quiet: true, ..Self::default() }
    }

    /// Takes the aggregation after `seconds`: per-kind rates and the
    /// sparkline sample. Nothing changes while paused.
    pub(crate) fn update(&mut self, agg: &Aggregator, seconds: f64) {
        if self.paused {
            return;
        }
        self.history.retain(|k, _| agg.ports().contains_key(k));
        for (key, st) in agg.ports() {
            let h = self.history.entry(*key).or_insert_with(|| History { prev: st.kinds, ..History::default() });
            let mut drops = 0;
            for k in Kind::ALL {
                let d = st.kinds[k].saturating_sub(h.prev[k]);
                h.rates[k.index()] = if seconds > 0.0 { d as f64 / seconds } else { 0.0 };
                if k.is_drop() {
                    drops += d;
                }
            }
            h.prev = st.kinds;
            h.drops.push_back(drops);
            while h.drops.len() > HISTORY {
                h.drops.pop_front();
            }
        }
    }

    /// Applies a key.
    pub(crate) fn key(&mut self, key: Key) -> Action {
        if let Some(typed) = &mut self.editing {
            match key {
                Key::Char(c) if c.is_ascii_digit() && typed.len() < 5 => typed.push(c),
                Key::Backspace => {
                    typed.pop();
                }
                Key::Enter => {
                    self.filter = typed.parse().ok().filter(|p| *p != 0);
                    self.editing = None;
                }
                Key::Esc => self.editing = None,
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match key {
            Key::Char('q') | Key::Esc => return Action::Quit,
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('/') | Key::Char('f') => self.editing = Some(String::new()),
            Key::Char('c') => self.filter = None,
            // The screen freezes; counting goes on.
            Key::Char('p') | Key::Char(' ') => self.paused = !self.paused,
            Key::Char('a') => self.show_quiet = !self.show_quiet,
            Key::Char('l') => self.expand = !self.expand,
            _ => return Action::None,
        }
        Action::Redraw
    }

    /// The kinds with a column (those that happened on any port, see
    /// [`Counts::shown_kinds`]), and the rows to draw, filtered and sorted.
    /// `owner` names a port's owner ([`PortStats::owner_name`]).
    pub(crate) fn rows(&self, agg: &Aggregator, owner: impl Fn(&PortKey) -> Option<String>) -> (Vec<Kind>, Vec<LiveRow>) {
        let kinds = Counts::shown_kinds(agg.ports().values().map(|st| &st.kinds));
        let mut rows: Vec<LiveRow> = agg
            .ports()
            .iter()
            .filter(|(k, _)| self.filter.is_none_or(|p| p == k.port))
            .filter(|(_, st)| self.show_quiet || st.kinds.is_active())
            .map(|(key, st)| {
                let h = self.history.get(key);
                let rate = |k: Kind| h.map_or(0.0, |h| h.rates[k.index()]);
                LiveRow {
                    key: *key,
                    // Cut as the plain table cuts it: a pod's container,
                    // a unit's suffix, are at the end.
                    owner: owner(key).map_or_else(|| "-".into(), |o| crate::output::table::fit(&o, OWNER_WIDTH)),
                    queue: st.accept_queue,
                    wait: st.accept_wait.quantile_ns(0.5).zip(st.accept_wait.quantile_ns(0.99)),
                    rate: Kind::ALL.iter().filter(|k| k.is_drop()).map(|k| rate(*k)).sum(),
                    kind_rates: kinds.iter().map(|k| rate(*k)).collect(),
                    drops: st.drops(),
                    spark: h.map(|h| sparkline(&h.drops)).unwrap_or_default(),
                    listeners: if self.expand { listener_lines(st) } else { Vec::new() },
                }
            })
            .collect();
        match self.sort {
            Sort::Rate => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(b.drops.cmp(&a.drops)).then(a.key.cmp(&b.key))),
            Sort::Total => rows.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.key.cmp(&b.key))),
            Sort::Port => rows.sort_by_key(|r| (r.key.port, r.key.netns)),
        }
        (kinds, rows)
    }

    fn style(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    /// One port's row, every column (the caller leaves out NETNS when one
    /// namespace is on screen).
    fn cells(&self, r: &LiveRow) -> Vec<Cell<'static>> {
        let queue_color = match r.queue {
            Some((now, max)) if now > max => Color::Red,
            Some((now, max)) if now > 0 && now * 4 >= max * 3 => Color::Yellow,
            _ => Color::Reset,
        };
        let rate_style = if r.rate > 0.0 { self.style(Color::Red).add_modifier(Modifier::BOLD) } else { Style::default() };
        let mut cells = vec![
            Cell::from(r.key.netns.to_string()),
            Cell::from(r.key.port.to_string()),
            Cell::from(r.owner.clone()),
            Cell::from(queue_cell(r.queue)).style(self.style(queue_color)),
            Cell::from(format!("{:.1}", r.rate)).style(rate_style),
        ];
        cells.extend(r.kind_rates.iter().map(|v| Cell::from(format!("{v:.1}"))));
        cells.push(Cell::from(r.drops.to_string()));
        cells.push(Cell::from(wait_cell(r.wait)));
        // Right-aligned: cut short, it keeps its newest samples.
        cells.push(Cell::from(Line::from(r.spark.clone()).right_aligned()).style(self.style(Color::Red)));
        cells
    }

    /// Draws the whole screen: `header` lines (time, settings, clamps,
    /// the demo's explanation), the table, and the status line.
    pub(crate) fn draw(&self, frame: &mut Frame, kinds: &[Kind], rows: &[LiveRow], header: &[String], status: &str) {
        let [top, table, bottom] =
            Layout::vertical([Constraint::Length(header.len() as u16), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        let head: Vec<Line> = header.iter().map(|l| Line::from(l.as_str())).collect();
        frame.render_widget(Paragraph::new(head), top);

        let bold = Style::default().add_modifier(Modifier::BOLD);
        // One namespace on screen: no column for it.
        let skip = usize::from(!rows.iter().any(|r| r.key.netns != rows[0].key.netns));
        let mut titles = vec!["NETNS".to_owned(), "PORT".into(), "OWNER".into(), "ACCEPT QUEUE".into(), "DROPS/S".into()];
        titles.extend(kinds.iter().map(|k| format!("{}/s", k.column())));
        titles.extend(["DROPS".into(), WAIT_TITLE.into(), "LAST MINUTE".into()]);
        let header_row = Row::new(titles.into_iter().skip(skip).map(Cell::from)).style(bold);
        let lines: Vec<Row> = rows
            .iter()
            .flat_map(|r| {
                let port = std::iter::once(Row::new(self.cells(r).into_iter().skip(skip)));
                port.chain(r.listeners.iter().map(move |l| Row::new(listener_cells(l, kinds.len()).into_iter().skip(skip))))
            })
            .collect();
        let mut widths = vec![
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(OWNER_WIDTH as u16),
            Constraint::Length(16),
            Constraint::Length(7),
        ];
        widths.extend(kinds.iter().map(|k| Constraint::Length(k.column().len() as u16 + 2)));
        // At most its width, so the sparkline gives way before any number
        // does on a narrow terminal (Max yields to Length).
        widths.extend([Constraint::Length(8), Constraint::Length(WAIT_TITLE.len() as u16), Constraint::Max(SPARK_WIDTH as u16)]);
        let widths: Vec<Constraint> = widths.into_iter().skip(skip).collect();
        frame.render_widget(Table::new(lines, widths).header(header_row).column_spacing(1), table);
        if rows.is_empty() {
            let note = match self.filter {
                Some(p) => format!("no watched listener on port {p} (c clears the filter)"),
                None => "no watched listener yet".to_owned(),
            };
            let [_, msg] = Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(table);
            frame.render_widget(Paragraph::new(note), msg);
        }
        let status_style =
            if self.color { Style::default().bg(Color::Blue).fg(Color::White) } else { Style::default().add_modifier(Modifier::REVERSED) };
        frame.render_widget(Paragraph::new(Line::from(Span::styled(status.to_owned(), status_style))), bottom);
    }

    /// The status line: tier, losses, view settings, keys.
    pub(crate) fn status(&self, tier: &str, agg: &Aggregator) -> String {
        let l = &agg.losses;
        let mut s = format!(" tier {tier} | lost events {} | sort {}", l.ringbuf_full, self.sort.name());
        if l.suppressed > 0 {
            s.push_str(&format!(" | suppressed {}", l.suppressed));
        }
        if l.counter_map_full + l.read_failed + l.undecodable > 0 {
            s.push_str(&format!(" | uncounted {} unreadable {} undecodable {}", l.counter_map_full, l.read_failed, l.undecodable));
        }
        if let Some(p) = self.filter {
            s.push_str(&format!(" | port {p}"));
        }
        if self.paused {
            s.push_str(" | PAUSED");
        }
        match &self.editing {
            Some(typed) => s.push_str(&format!(" | port to show: {typed}_ (Enter, Esc)")),
            None if self.expand => s.push_str(" | listeners: drops, arrived→accepted/s | l hide  q quit  s sort  / port"),
            None => s.push_str(" | q quit  s sort  / port  c clear  p pause  a quiet  l listeners"),
        }
        s
    }
}

/// A port's open listener sockets, as lines under its row.
fn listener_lines(st: &crate::model::aggregate::PortStats) -> Vec<ListenerLine> {
    st.listeners
        .values()
        .filter(|l| l.open)
        .map(|l| ListenerLine {
            owner: l.owner.as_ref().map_or_else(|| format!("ino {}", l.inode), |o| o.name()),
            queue: (l.queue, l.queue_max),
            drops: l.drops,
            rates: (l.arrival_rate, l.accept_rate),
        })
        .collect()
}

/// A listener's line: its owner under OWNER, its own queue, its drops, and
/// its arrivals against its accepts per second under the wait column (the
/// status line says so).
fn listener_cells(l: &ListenerLine, kinds: usize) -> Vec<Cell<'static>> {
    let mut cells = vec![
        Cell::from(""),
        Cell::from(""),
        Cell::from(format!("└ {}", crate::output::table::fit(&l.owner, OWNER_WIDTH - 2))),
        Cell::from(queue_bar(l.queue)),
        Cell::from(""),
    ];
    cells.extend((0..kinds).map(|_| Cell::from("")));
    cells.push(Cell::from(l.drops.to_string()));
    cells.push(Cell::from(format!("{:.0}→{:.0}/s", l.rates.0, l.rates.1)));
    cells
}

/// `████░░░░ 5/8`: the accept queue against its bound.
fn queue_bar((now, max): (u32, u32)) -> String {
    const W: u32 = 8;
    let filled = if max == 0 { 0 } else { (now.min(max) * W).div_ceil(max) };
    let bar: String = (0..W).map(|i| if i < filled { '█' } else { '░' }).collect();
    format!("{bar} {now}/{max}")
}

/// The bar, or `closed` when the port has no listener now.
fn queue_cell(q: Option<(u32, u32)>) -> String {
    q.map_or_else(|| "closed".to_owned(), queue_bar)
}

/// `12ms/340ms`: accept-queue wait p50/p99, `-` before the first accept.
fn wait_cell(wait: Option<(u64, u64)>) -> String {
    wait.map_or_else(|| "-".to_owned(), |(p50, p99)| format!("{}/{}", duration(p50), duration(p99)))
}

/// The last minute, two samples per character (their sum), newest right.
fn sparkline(samples: &VecDeque<u64>) -> String {
    let v: Vec<u64> = samples.iter().copied().collect();
    // Pairs end at the newest sample; an odd oldest one stands alone.
    let mut sums: Vec<u64> = v.rchunks(2).map(|c| c.iter().sum()).collect();
    sums.reverse();
    let max = sums.iter().copied().max().unwrap_or(0);
    sums.iter()
        .map(|&v| match v {
            0 => ' ',
            _ => SPARK[((v * (SPARK.len() as u64 - 1)).div_ceil(max.max(1)) as usize).min(SPARK.len() - 1)],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::netns::NsListeners;
    use crate::host::sock_diag::Listener;
    use crate::model::ports::PortSet;
    use qtrace_common::{kind, wait, CounterKey, WaitKey};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn counters(agg: &mut Aggregator, port: u16, acc: u64, ack: u64) {
        let key = |kind| CounterKey { netns: 7, port, kind, _pad: 0 };
        agg.on_counters([(key(kind::ACCEPT_QUEUE_FULL), acc), (key(kind::ACK_OVERFLOW), ack)]);
    }

    /// The kernel's slots for `port` in netns 7 after accepts that waited
    /// `ns`, `n` times each, for each `(ns, n)`.
    fn waits(agg: &mut Aggregator, port: u16, waits: &[(u64, u64)]) {
        let key = |slot| WaitKey { netns: 7, port, slot, _pad: 0 };
        let mut slots: Vec<(WaitKey, u64)> = waits.iter().map(|&(ns, n)| (key(wait::bucket(ns)), n)).collect();
        slots.push((key(wait::SUM_NS), waits.iter().map(|(ns, n)| ns * n).sum()));
        slots.push((key(wait::MAX_NS), waits.iter().map(|(ns, _)| *ns).max().unwrap_or(0)));
        agg.on_accept_waits(slots);
    }

    #[test]
    fn rates_sort_filter_and_pause() {
        let mut agg = Aggregator::new(None, PortSet::default());
        let mut v = LiveView::new(false);
        counters(&mut agg, 8080, 0, 0);
        counters(&mut agg, 9090, 0, 0);
        v.update(&agg, 1.0);
        counters(&mut agg, 8080, 10, 2);
        counters(&mut agg, 9090, 40, 0);
        v.update(&agg, 2.0);
        let (_, rows) = v.rows(&agg, |k| Some(format!("srv{}", k.port)));
        assert_eq!(rows.iter().map(|r| (r.key.port, r.rate)).collect::<Vec<_>>(), vec![(9090, 20.0), (8080, 6.0)]);
        assert_eq!(rows[1].kind_rates, vec![5.0, 1.0], "accept_queue_full and ack_overflow columns");
        assert_eq!(rows[1].owner, "srv8080");
        assert_eq!(v.key(Key::Char('s')), Action::Redraw);
        v.key(Key::Char('s'));
        assert_eq!(v.rows(&agg, |_| None).1[0].key.port, 8080, "sorted by port");
        // Filter: `/`, digits, Enter.
        for k in [Key::Char('/'), Key::Char('9'), Key::Char('0'), Key::Char('9'), Key::Char('0'), Key::Enter] {
            v.key(k);
        }
        assert_eq!(v.rows(&agg, |_| None).1.iter().map(|r| r.key.port).collect::<Vec<_>>(), vec![9090]);
        v.key(Key::Char('c'));
        assert_eq!(v.rows(&agg, |_| None).1.len(), 2);
        // Paused: the numbers stay as they were.
        v.key(Key::Char('p'));
        counters(&mut agg, 9090, 100, 0);
        v.update(&agg, 1.0);
        assert_eq!(v.rows(&agg, |_| None).1.iter().find(|r| r.key.port == 9090).unwrap().rate, 20.0);
        assert!(v.status("tracepoint", &agg).contains("PAUSED"));
        assert_eq!(v.key(Key::Char('q')), Action::Quit);
    }

    #[test]
    fn bars_and_sparklines() {
        assert_eq!(queue_bar((0, 8)), "░░░░░░░░ 0/8");
        assert_eq!(queue_bar((5, 8)), "█████░░░ 5/8");
        assert_eq!(queue_bar((9, 8)), "████████ 9/8");
        assert_eq!(queue_cell(None), "closed");
        assert_eq!(wait_cell(None), "-");
        assert_eq!(wait_cell(Some((12_000_000, 340_000_000))), "12ms/340ms");
        assert_eq!(sparkline(&VecDeque::from(vec![0, 0, 1, 0, 6, 1])), " ▂█");
        assert_eq!(sparkline(&VecDeque::from(vec![3, 0, 0])), "█ ");
    }

    #[test]
    fn draws_rows_and_status() {
        let mut agg = Aggregator::new(None, PortSet::default());
        let mut v = LiveView::new(false);
        counters(&mut agg, 8080, 0, 0);
        v.update(&agg, 1.0);
        counters(&mut agg, 8080, 3, 0);
        v.update(&agg, 1.0);
        let (kinds, rows) = v.rows(&agg, |_| Some("slowsrv(42)".into()));
        let mut term = Terminal::new(TestBackend::new(140, 8)).unwrap();
        term.draw(|f| v.draw(f, &kinds, &rows, &["netns 7: somaxconn 4096".into()], &v.status("fentry", &agg))).unwrap();
        let screen: Vec<String> =
            term.backend().buffer().content.chunks(140).map(|line| line.iter().map(|c| c.symbol()).collect::<String>()).collect();
        let text = screen.join("\n");
        assert!(screen[0].starts_with("netns 7: somaxconn 4096"), "{text}");
        assert!(text.contains("SYN:ACCQ/s"), "{text}");
        let row = screen.iter().find(|l| l.contains("8080")).unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains("slowsrv(42)") && row.contains("3.0"), "{row}");
        assert!(screen[7].contains("tier fentry"), "{text}");
    }

    /// The drawn screen as text, one line per row of cells, without
    /// trailing blanks.
    fn screen(v: &LiveView, agg: &Aggregator, header: &[String], (w, h): (u16, u16)) -> String {
        let (kinds, rows) = v.rows(agg, |k| (k.port == 8080).then(|| "slowsrv(42)".to_owned()));
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| v.draw(f, &kinds, &rows, header, &v.status("kprobe", agg))).unwrap();
        let lines: Vec<String> = term
            .backend()
            .buffer()
            .content
            .chunks(usize::from(w))
            .map(|line| line.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_owned())
            .collect();
        lines.join("\n")
    }

    const SIZE: (u16, u16) = (120, 12);

    /// Eight updates in netns 7: 8080's accept queue overflows harder
    /// each second (SYN and ACK stage), 9090 sends 5 syncookies a second,
    /// 22 listens quietly and has accepted nothing; 8080's queue is full
    /// now. 8080's accepts waited 12 ms, one in ten 340 ms; 9090's 85 µs,
    /// one in fifty 1.5 ms.
    fn busy() -> (LiveView, Aggregator, Vec<String>) {
        let mut agg = Aggregator::new(None, PortSet::default());
        let listener = |port, cookie, q| Listener { cookie, ..Listener::example(port, q, 0) };
        let listeners = vec![listener(8080, 1, (128, 128)), listener(9090, 2, (3, 64)), listener(22, 3, (0, 4096))];
        agg.on_listeners(&[NsListeners { netns: 7, listeners }]);
        let mut v = LiveView::new(false);
        let (mut acc, mut ack, mut cookies) = (0, 0, 0);
        for second in 0..8u64 {
            acc += second * second;
            ack += second;
            cookies += 5;
            counters(&mut agg, 8080, acc, ack);
            agg.on_counters([(CounterKey { netns: 7, port: 9090, kind: kind::SYNCOOKIE_SENT, _pad: 0 }, cookies)]);
            v.update(&agg, 1.0);
        }
        waits(&mut agg, 8080, &[(12_000_000, 90), (340_000_000, 10)]);
        waits(&mut agg, 9090, &[(85_000, 980), (1_500_000, 20)]);
        agg.losses.suppressed = 12;
        let header = vec!["2026-11-21 00:00:08  tier kprobe".to_owned(), "netns 7: somaxconn 128, tcp_syncookies 1".to_owned()];
        (v, agg, header)
    }

    /// `l`: each port's listener sockets under it, with their own queue,
    /// drops and arrivals against accepts.
    #[test]
    fn screen_with_listeners() {
        let (mut v, mut agg, header) = busy();
        // 8080 becomes an SO_REUSEPORT pair: one full and stalled, one idle.
        let pair = vec![
            Listener { cookie: 1, inode: 11, ..Listener::example(8080, (128, 128), 40) },
            Listener { cookie: 4, inode: 14, ..Listener::example(8080, (0, 128), 0) },
        ];
        agg.on_listener_accepts(&[qtrace_common::ListenerAccepts { accepts: 300, inode: 14, netns: 7, port: 8080, _pad: [0; 2] }]);
        agg.on_listeners(&[NsListeners { netns: 7, listeners: pair }]);
        agg.tick(1.0);
        v.key(Key::Char('l'));
        insta::assert_snapshot!("screen_with_listeners", screen(&v, &agg, &header, SIZE));
    }

    #[test]
    fn screen_with_rows_and_history() {
        let (v, agg, header) = busy();
        insta::assert_snapshot!("screen_with_rows", screen(&v, &agg, &header, SIZE));
    }

    /// An 80-column terminal: the sparkline goes first, then every other
    /// column is narrowed; none of them is dropped.
    #[test]
    fn screen_narrow() {
        let (v, agg, header) = busy();
        insta::assert_snapshot!("screen_narrow", screen(&v, &agg, &header, (80, 8)));
    }

    #[test]
    fn screen_paused() {
        let (mut v, agg, header) = busy();
        v.key(Key::Char('p'));
        // A quiet second would zero the rates and add a blank sample; paused,
        // the rates and the sparkline stay. (The terminal loop also keeps
        // the rows it drew, so the totals stay too.)
        v.update(&agg, 1.0);
        insta::assert_snapshot!("screen_paused", screen(&v, &agg, &header, SIZE));
    }

    #[test]
    fn screen_while_typing_a_port() {
        let (mut v, agg, header) = busy();
        for k in [Key::Char('/'), Key::Char('9'), Key::Char('0'), Key::Char('x'), Key::Char('9'), Key::Char('0')] {
            v.key(k);
        }
        insta::assert_snapshot!("screen_typing_a_port", screen(&v, &agg, &header, SIZE));
        // Enter applies it.
        v.key(Key::Enter);
        insta::assert_snapshot!("screen_filtered", screen(&v, &agg, &header, SIZE));
    }

    #[test]
    fn screen_filtered_to_nothing_and_empty() {
        let (mut v, agg, header) = busy();
        for k in [Key::Char('f'), Key::Char('5'), Key::Char('3'), Key::Enter] {
            v.key(k);
        }
        insta::assert_snapshot!("screen_filtered_to_nothing", screen(&v, &agg, &header, SIZE));
        let empty = Aggregator::new(None, PortSet::default());
        insta::assert_snapshot!("screen_empty", screen(&LiveView::new(false), &empty, &[], SIZE));
    }
}
