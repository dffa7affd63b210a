//! Topic names, in one place.

pub const DETECTIONS: &str = "mend.detections";
pub const DIAGNOSES: &str = "mend.diagnoses";
pub const PROPOSALS: &str = "mend.proposals";
pub const DECISIONS: &str = "mend.decisions";
pub const APPLICATIONS: &str = "mend.applications";
pub const QUARANTINE: &str = "mend.quarantine";
/// One event per supervisor run (Claude drafting a fix).
pub const AGENT_RUNS: &str = "mend.agent_runs";
/// Signed digests over ranges of the event topics (see `digest`).
pub const DIGESTS: &str = "mend.audit.digests";
/// The schema registry's compacted log.
pub const SCHEMAS: &str = "_schemas";

/// mend's own event topics, created at start-up.
pub const EVENT_TOPICS: [&str; 7] = [DETECTIONS, DIAGNOSES, PROPOSALS, DECISIONS, APPLICATIONS, QUARANTINE, AGENT_RUNS];

/// The registry subject of a topic's values (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}
