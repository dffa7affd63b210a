//! The hash chain every event is part of: [`Event`] says an event type's
//! topic, its Avro contract and its envelope, and hashes the event chained
//! to the previous one of its incident.

use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{AgentRun, Application, Decision, Detection, Diagnosis, Envelope, Proposal, Quarantined};
use crate::topics;

/// What every event type provides: its topic, its Avro schema, its envelope.
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Topic the event is published on.
    const TOPIC: &'static str;
    /// The `.avsc` contract of the event.
    const SCHEMA: &'static str;

    fn envelope(&self) -> &Envelope;
    fn envelope_mut(&mut self) -> &mut Envelope;

    /// Computes and stores the hash of this event, chained to
    /// `envelope.prev_hash`.
    fn seal(&mut self) {
        let hash = self.compute_hash();
        self.envelope_mut().hash = hash;
    }

    /// The hash this event should carry: SHA-256 over the previous hash and
    /// the event serialised with an empty `hash`.
    fn compute_hash(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(self.envelope().prev_hash.as_deref().unwrap_or("").as_bytes());
        digest.update(b"\n");
        // The event serialised with an empty hash is the event serialised as
        // it is, less its hash's value: no copy of the event to blank it
        // (verifying is mostly this function).
        let json = canonical_json(self);
        match around_hash(&json, &self.envelope().hash) {
            Some((before, after)) => {
                digest.update(before);
                digest.update(after);
            }
            None => {
                let mut unsealed = self.clone();
                unsealed.envelope_mut().hash.clear();
                digest.update(canonical_json(&unsealed));
            }
        }
        hex::encode(digest.finalize())
    }

    /// Whether the stored hash matches the content.
    fn verify_hash(&self) -> bool {
        self.compute_hash() == self.envelope().hash
    }
}

/// Serialisation used for hashing: serde_json of typed structs is
/// deterministic (struct fields in declaration order, maps are `BTreeMap`s).
pub(crate) fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Most events are under 1 KiB: one allocation instead of a doubling series.
    let mut json = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut json, value) {
        Ok(()) => json,
        Err(_) => Vec::new(),
    }
}

/// An event's JSON before and after the value of its envelope's `hash`.
/// Every event starts with its envelope, whose fields before `hash` are
/// scalars (a string's quotes are escaped inside it), so the first
/// `"hash":"` of the text is the envelope's. None when the text is not so
/// (the caller then blanks a copy instead).
fn around_hash<'a>(json: &'a [u8], hash: &str) -> Option<(&'a [u8], &'a [u8])> {
    const KEY: &[u8] = b"\"hash\":\"";
    if !json.starts_with(b"{\"envelope\":{") {
        return None;
    }
    let value = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = value + hash.len();
    (json.get(value..end)? == hash.as_bytes() && json.get(end) == Some(&b'"')).then(|| (&json[..value], &json[end..]))
}

macro_rules! event {
    ($ty:ty, $topic:expr, $file:literal) => {
        impl Event for $ty {
            const TOPIC: &'static str = $topic;
            const SCHEMA: &'static str = include_str!(concat!("../../../../schemas/", $file));
            fn envelope(&self) -> &Envelope {
                &self.envelope
            }
            fn envelope_mut(&mut self) -> &mut Envelope {
                &mut self.envelope
            }
        }
    };
}

event!(Quarantined, topics::QUARANTINE, "quarantine.avsc");
event!(Detection, topics::DETECTIONS, "detection.avsc");
event!(Diagnosis, topics::DIAGNOSES, "diagnosis.avsc");
event!(Proposal, topics::PROPOSALS, "proposal.avsc");
event!(Decision, topics::DECISIONS, "decision.avsc");
event!(Application, topics::APPLICATIONS, "application.avsc");
event!(AgentRun, topics::AGENT_RUNS, "agent_run.avsc");
