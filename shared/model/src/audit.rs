//! The audit log's events, typed by their topics: what the verifier, the
//! read model and the timeline read (decoded by
//! `mend_avro::Codec::decode_audit`, or parsed from an export's lines).

use serde_json::Value;

use crate::events::{AgentRun, Application, Decision, Detection, Diagnosis, Envelope, Event, Proposal, Quarantined};
use crate::topics;

/// One audit event, typed by its topic.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    Quarantined(Quarantined),
    Detection(Detection),
    Diagnosis(Diagnosis),
    Proposal(Proposal),
    Decision(Decision),
    Application(Application),
    AgentRun(AgentRun),
}

macro_rules! each {
    ($event:expr, $e:ident => $body:expr) => {
        match $event {
            AuditEvent::Quarantined($e) => $body,
            AuditEvent::Detection($e) => $body,
            AuditEvent::Diagnosis($e) => $body,
            AuditEvent::Proposal($e) => $body,
            AuditEvent::Decision($e) => $body,
            AuditEvent::Application($e) => $body,
            AuditEvent::AgentRun($e) => $body,
        }
    };
}

impl AuditEvent {
    pub fn envelope(&self) -> &Envelope {
        each!(self, e => e.envelope())
    }

    /// What the event is the one answer of, for its service and kind: the
    /// record a quarantine event holds, the incident a detection opens, the
    /// event a diagnosis, a proposal or a supervisor's run answers. Two
    /// events of one service with the same answer are a retried copy (a
    /// stage that handled its input twice). None for decisions and
    /// applications: people decide again, and the applier records each try.
    pub fn answer_of(&self) -> Option<String> {
        match self {
            Self::Quarantined(q) => Some(format!("{}:{}@{}", q.topic, q.partition, q.offset)),
            Self::Detection(d) => Some(d.envelope.incident_id.0.clone()),
            Self::Diagnosis(_) | Self::Proposal(_) | Self::AgentRun(_) => self.envelope().causation_id.clone(),
            Self::Decision(_) | Self::Application(_) => None,
        }
    }

    /// Whether its stored hash is the hash of its content.
    pub fn hash_holds(&self) -> bool {
        each!(self, e => e.verify_hash())
    }

    /// The event as JSON (what an export holds).
    pub fn to_json(&self) -> Value {
        each!(self, e => serde_json::to_value(e).unwrap_or_default())
    }

    /// The event of `topic` in `json` (an export's line), parsed straight
    /// into its type.
    pub fn from_json(topic: &str, json: &str) -> Result<Self, String> {
        fn parse<E: serde::de::DeserializeOwned>(topic: &str, json: &str) -> Result<E, String> {
            serde_json::from_str(json).map_err(|e| format!("not a {topic} event: {e}"))
        }
        Ok(match topic {
            topics::QUARANTINE => Self::Quarantined(parse(topic, json)?),
            topics::DETECTIONS => Self::Detection(parse(topic, json)?),
            topics::DIAGNOSES => Self::Diagnosis(parse(topic, json)?),
            topics::PROPOSALS => Self::Proposal(parse(topic, json)?),
            topics::DECISIONS => Self::Decision(parse(topic, json)?),
            topics::APPLICATIONS => Self::Application(parse(topic, json)?),
            topics::AGENT_RUNS => Self::AgentRun(parse(topic, json)?),
            other => return Err(format!("{other} is not an audit topic")),
        })
    }
}
