//! Rendering, one sink per `watch` output mode (`ndjson`, `table`, the
//! live view in `live` with its terminal in `cli::tui`), plus the reports
//! of `doctor` and `listeners`. `writer` is where text goes; `context` the
//! lines above a table.
pub(crate) mod context;
pub(crate) mod doctor;
pub(crate) mod listeners;
pub(crate) mod live;
pub(crate) mod ndjson;
pub(crate) mod style;
pub(crate) mod table;
pub(crate) mod writer;

use anyhow::Result;

use crate::model::aggregate::Aggregator;
use crate::model::record::Start;
use crate::output::live::Action;
use crate::tracer::{Sink, Tracer};

/// A `watch` output mode: the trace's [`Sink`] plus the loop's moments.
#[allow(async_fn_in_trait)] // used generically, never as `dyn`
pub(crate) trait WatchSink: Sink {
    /// The hooks are in.
    fn started(&mut self, tracer: &Tracer, start: &Start);
    /// After a ring-buffer wake-up's events.
    fn drained(&mut self) {}
    /// Once per interval, after the poll: time to show the state.
    fn tick(&mut self, tracer: &Tracer) -> Result<()>;
    /// The next key press's effect; never, without a terminal.
    async fn action(&mut self) -> Action {
        std::future::pending().await
    }
    fn redraw(&mut self, _tracer: &Tracer) -> Result<()> {
        Ok(())
    }
    /// SIGHUP.
    fn reopen(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether nobody reads any more (`| head -1`, a failed write).
    fn is_closed(&self) -> bool {
        false
    }
    /// The end: per-port totals over the run.
    fn summary(&mut self, agg: &Aggregator, expire_secs: u64);
}
