//! What `watch` prints: a per-port table for people, NDJSON for machines.
pub mod ndjson;
pub mod table;
