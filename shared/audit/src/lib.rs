//! The audit log checked. mend's event topics are its audit log: every
//! event carries a hash over its content chained to the event it answers,
//! and the sealer ([`seal`]) writes signed digests over ranges of them to
//! `mend.audit.digests`. Here the log is read (from the live topics, or
//! from an export an auditor was handed, [`export`]) and checked
//! ([`verify`]); each finding names the topic, partition and offset and
//! what is wrong.

pub mod export;
pub mod keys;
pub mod log;
pub mod rebuild;
pub mod seal;
pub mod sealed;
pub mod timeline;
pub mod verify;

pub use export::{ExportHeader, Selection, export_csv, export_lines, format_time, read_export};
pub use log::{AuditError, Entry, LogPosition, Record, raw_hash, read_digests, read_record, read_topics};
pub use mend_model::audit::AuditEvent;
pub use sealed::{Cut, Sealing, as_of, cut, event_ends, sealed_log, unsealed_partitions};
pub use verify::{Finding, Options, Report, verify};

#[cfg(test)]
mod tests;
