//! mend's domain, with no I/O: the events stages exchange (and their Avro
//! contracts under `schemas/`), the enums of their closed vocabularies, the
//! warehouse's value types and the topic names. Every other mend crate
//! stands on this one.

pub mod api;
pub mod audit;
pub mod digest;
pub mod events;
pub mod next;
pub mod protocol;
pub mod secret;
pub mod table;
pub mod topics;

pub use next::{Classify, Next};
pub use protocol::{
    AgentOutcome, ApplicationOutcome, ChangeKind, Channel, CostClass, DetectionSource, Impact, IncidentStatus,
    MAX_RECORD_BYTES, Policy, QuarantineKind, RenameProof, StepKind, Verdict,
};
pub use secret::Secret;
pub use table::{Column, Contract, Dialect, Position, Row, SqlValue};
