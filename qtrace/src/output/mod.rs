//! What the subcommands print: tables for people, NDJSON for machines.
pub mod doctor;
pub mod listeners;
pub mod live;
pub mod ndjson;
pub mod style;
pub mod table;
