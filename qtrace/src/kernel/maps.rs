//! Readers of what the kernel side produced: ring-buffer records, the
//! per-CPU counters and the stats slots.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use qtrace_common::{stat, CounterKey};

use crate::model::aggregate::Losses;

/// Sums the per-CPU counters: exact per-(netns, port, kind) totals.
pub fn counters(map: &PerCpuHashMap<MapData, CounterKey, u64>) -> Result<BTreeMap<CounterKey, u64>> {
    let mut out = BTreeMap::new();
    for item in map.iter() {
        // Nothing deletes keys, so any error here is a real map failure.
        let (key, values) = item.context("reading the counters map")?;
        out.insert(key, values.iter().sum());
    }
    Ok(out)
}

/// Sums the per-CPU stats slots into the kernel's part of [`Losses`].
pub fn losses(map: &PerCpuArray<MapData, u64>, undecodable: u64) -> Result<Losses> {
    let get = |i: u32| -> Result<u64> { Ok(map.get(&i, 0).context("reading the stats map")?.iter().sum()) };
    Ok(Losses {
        ringbuf_full: get(stat::RINGBUF_FULL)?,
        counter_map_full: get(stat::COUNTER_MAP_FULL)?,
        read_failed: get(stat::READ_FAILED)?,
        entry_missing: get(stat::ENTRY_MISSING)?,
        undecodable,
    })
}
