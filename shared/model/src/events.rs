//! Typed mend events. The `.avsc` files under `schemas/` are the contract; each
//! type here mirrors one of them and is registered under `<topic>-value`.
//!
//! Every event carries an [`Envelope`]: identity, causality, provenance and a
//! hash chained to the previous event of its incident, so an edited or missing
//! audit event is detectable by recomputing the chain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::protocol::{
    AgentOutcome, ApplicationOutcome, ChangeKind, Channel, DetectionSource, Policy, QuarantineKind, RenameProof,
    StepKind, Verdict,
};

/// Identifier of an incident: one per (dataset, writer schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct IncidentId(pub String);

impl IncidentId {
    /// The incident of `dataset` drifting to writer schema `schema_id`. Derived
    /// (UUIDv5), so every service that sees the same drift names the same
    /// incident without coordinating, and a redelivered record cannot open a
    /// second one.
    /// The incident of a pipeline failure reported through OpenLineage: one
    /// per dataset, job and error, so a repeated failure joins it.
    pub fn for_failure(dataset: &str, job: &str, error: &str) -> Self {
        let name = format!("{dataset}\u{0}openlineage\u{0}{job}\u{0}{error}");
        Self(Uuid::new_v5(&INCIDENT_NAMESPACE, name.as_bytes()).to_string())
    }

    pub fn for_drift(dataset: &str, schema_id: u32) -> Self {
        let name = format!("{dataset}\u{0}{schema_id}");
        Self(Uuid::new_v5(&INCIDENT_NAMESPACE, name.as_bytes()).to_string())
    }

    /// The incident that reverts what `decision` applied on `incident`:
    /// one per applied decision, so asking again names the same one.
    pub fn for_revert(incident: &IncidentId, decision: &str) -> Self {
        let name = format!("revert\u{0}{incident}\u{0}{decision}");
        Self(Uuid::new_v5(&INCIDENT_NAMESPACE, name.as_bytes()).to_string())
    }
}

impl std::fmt::Display for IncidentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Namespace of incident ids (a fixed random UUID).
const INCIDENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d656e64_8c1e_4f0a_9b7d_2a3c4e5f6071);

/// Fields every event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Envelope {
    pub event_id: String,
    pub incident_id: IncidentId,
    pub causation_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    pub service: String,
    pub service_version: String,
    pub dataset: String,
    pub prev_hash: Option<String>,
    pub hash: String,
}

impl Envelope {
    /// A fresh envelope for an event of `service` about `dataset`. The hash is
    /// filled by [`Event::seal`].
    pub fn new(service: &str, dataset: &str, incident_id: IncidentId) -> Self {
        Self {
            event_id: Uuid::now_v7().to_string(),
            incident_id,
            causation_id: None,
            time: now_millis(),
            service: service.to_owned(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            dataset: dataset.to_owned(),
            prev_hash: None,
            hash: String::new(),
        }
    }

    /// An envelope answering `cause`: same incident and dataset, chained to it.
    pub fn answering(service: &str, cause: &Envelope) -> Self {
        let mut envelope = Self::new(service, &cause.dataset, cause.incident_id.clone());
        envelope.causation_id = Some(cause.event_id.clone());
        envelope.prev_hash = Some(cause.hash.clone());
        envelope
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// One classified change of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldChange {
    pub kind: ChangeKind,
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub old_type: Option<String>,
    pub new_type: Option<String>,
    pub nullable: Option<bool>,
    pub has_default: Option<bool>,
    pub confidence: Option<f64>,
    /// What was found, for a person to read (the planner decides on the
    /// typed fields below, never on this).
    pub evidence: BTreeMap<String, String>,
    /// The new field's doc (additions): the dbt patch's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// How a rename was proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_proof: Option<RenameProof>,
    /// Of a type change: whether the column's type takes the new values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cast: Option<CastSample>,
    /// Every symbol of the new enum (enum symbols added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_symbols: Vec<String>,
    /// Why Avro's schema resolution refuses (an incompatible change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_error: Option<String>,
}

impl FieldChange {
    /// A change of `kind` to `field`, everything else unknown.
    pub fn new(kind: ChangeKind, field: &str) -> Self {
        Self {
            kind,
            field: field.to_owned(),
            from: None,
            to: None,
            old_type: None,
            new_type: None,
            nullable: None,
            has_default: None,
            confidence: None,
            evidence: BTreeMap::new(),
            doc: None,
            rename_proof: None,
            cast: None,
            all_symbols: Vec::new(),
            avro_error: None,
        }
    }
}

/// New values of a changed type, tried against the column's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CastSample {
    /// New values sampled.
    pub sampled: i64,
    /// Of them, how many the column's type takes.
    pub parsing: i64,
    /// What was checked, for a person.
    pub check: String,
}

impl CastSample {
    /// Whether every sampled value casts (and some were sampled).
    pub fn all_parse(&self) -> bool {
        self.sampled > 0 && self.parsing == self.sampled
    }
}

/// A record that could not be loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub envelope: Envelope,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub value: Option<Vec<u8>>,
    pub writer_schema_id: Option<i32>,
    pub reason_kind: QuarantineKind,
    pub reason: String,
}

/// Drift noticed on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub envelope: Envelope,
    pub source: DetectionSource,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub subject: String,
    pub writer_schema_id: Option<i32>,
    pub contract_schema_id: Option<i32>,
    pub changes: Vec<FieldChange>,
    /// What the source said (a pipeline failure's error message, job, run
    /// and datasets); empty for schema drift. Left out of the hashed JSON
    /// when empty, so detections written before the field existed keep
    /// their hashes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, String>,
}

/// Classified changes and their evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub envelope: Envelope,
    pub writer_schema_id: Option<i32>,
    pub contract_schema_id: Option<i32>,
    pub changes: Vec<FieldChange>,
    pub evidence: BTreeMap<String, String>,
}

/// One step of a remediation plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanStep {
    /// ddl (a statement on the dataset's table), mapping (a contract field
    /// onto a column), dbt_patch (the model's properties file), backfill
    /// (expand/contract's copy of `column` into the wider column beside
    /// it) or replay.
    pub kind: StepKind,
    /// What the step does, for the person who approves it.
    pub description: String,
    /// The statement of a ddl step, in the warehouse's dialect.
    pub sql: Option<String>,
    /// The contract field (dotted path) of a mapping step.
    pub field: Option<String>,
    /// The column of a mapping step; none with a field: the field's
    /// mapping is forgotten (its default column applies).
    pub column: Option<String>,
    /// The unified diff of a dbt_patch step.
    pub patch: Option<String>,
    /// What a ddl step costs the table, known before it runs. Left out of
    /// the hashed JSON when absent, so plans written before it keep their
    /// hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<StatementCost>,
}

/// An ordered remediation plan and the policy reached on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Proposal {
    pub envelope: Envelope,
    pub proposal_id: String,
    pub writer_schema_id: Option<i32>,
    pub changes: Vec<FieldChange>,
    pub steps: Vec<PlanStep>,
    pub plan_hash: String,
    pub policy: Policy,
    pub rules: Vec<String>,
    /// Where the plan came from; None in proposals written before it was
    /// recorded (then an id other than the rules' one marks a draft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ProposalOrigin>,
    /// Every reason the guardrails refused a drafted plan (empty when
    /// accepted, and for the rules' plans).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// What the plan does downstream in the dataset's dbt project (when it
    /// names its manifest); outside the plan's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<BlastRadius>,
}

/// Who made a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalOrigin {
    /// True: handed over by a person or a model (`propose_plan`); false:
    /// mend's rules.
    pub drafted: bool,
    /// Who drafted it.
    pub by: Option<String>,
    /// Why they say it fixes the incident.
    pub rationale: Option<String>,
}

impl ProposalOrigin {
    /// mend's rules.
    pub fn rules() -> Self {
        Self { drafted: false, by: None, rationale: None }
    }

    /// A draft by `by`, for `rationale`.
    pub fn draft(by: &str, rationale: &str) -> Self {
        Self { drafted: true, by: Some(by.to_owned()), rationale: Some(rationale.to_owned()) }
    }
}

/// Namespace of the rules' proposal ids (UUIDv5 of the incident id).
const PROPOSAL_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_6e64_7072_6f70_6f73_616c_0000_0001);

impl Proposal {
    /// The id of the proposal mend's rules make for `incident`: one per
    /// incident, derived, so a re-delivered diagnosis names the same one.
    /// Drafts handed over by a person or a model get ids of their own.
    pub fn rules_id(incident: &IncidentId) -> String {
        Uuid::new_v5(&PROPOSAL_NAMESPACE, incident.0.as_bytes()).to_string()
    }

    /// Whether this is a draft handed over through `propose_plan`, not the
    /// plan mend's rules made.
    pub fn is_draft(&self) -> bool {
        match &self.origin {
            Some(origin) => origin.drafted,
            None => self.proposal_id != Self::rules_id(&self.envelope.incident_id),
        }
    }

    /// SHA-256 (hex) of the plan steps: what an approval names, so a plan
    /// changed after approval is recognisable.
    pub fn hash_steps(steps: &[PlanStep]) -> String {
        hex::encode(Sha256::digest(canonical_json(&steps)))
    }
}

/// An approval or rejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub envelope: Envelope,
    pub proposal_id: String,
    pub plan_hash: String,
    /// The schema the contract moves to when the plan is applied.
    pub writer_schema_id: Option<i32>,
    /// The plan approved (its hash must equal `plan_hash`).
    pub steps: Vec<PlanStep>,
    pub outcome: Verdict,
    pub by: String,
    pub channel: Channel,
    pub reason: Option<String>,
}

impl Decision {
    /// A sealed decision on `proposal`, carrying exactly the plan it decides
    /// (steps, hash, target schema) and chained to the proposal.
    pub fn on(
        proposal: &Proposal,
        service: &str,
        outcome: Verdict,
        by: String,
        channel: Channel,
        reason: Option<String>,
    ) -> Self {
        let mut decision = Self {
            envelope: Envelope::answering(service, &proposal.envelope),
            proposal_id: proposal.proposal_id.clone(),
            plan_hash: proposal.plan_hash.clone(),
            writer_schema_id: proposal.writer_schema_id,
            steps: proposal.steps.clone(),
            outcome,
            by,
            channel,
            reason,
        };
        decision.seal();
        decision
    }
}

/// The result of applying a decided plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub envelope: Envelope,
    pub proposal_id: String,
    pub decision_id: String,
    pub outcome: ApplicationOutcome,
    pub contract_schema_id: Option<i32>,
    pub statements: i32,
    pub replayed: i64,
    pub loaded: i64,
    pub still_quarantined: i64,
    /// The records the replay could not load, each with why (up to
    /// [`Application::MAX_HELD`] of them; `still_quarantined` counts all).
    /// Left out of the hashed JSON when empty, so applications written
    /// before the field existed keep their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// When the plan's effect was committed (ms since the epoch); the
    /// replay ran from then until the event's time. Left out of the hashed
    /// JSON when absent, so applications written before the field existed
    /// keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<i64>,
    pub error: Option<String>,
    /// Each attempt to apply the plan that gave up waiting for its lock
    /// (`lock_timeout`) and was tried again. Left out of the hashed JSON
    /// when empty, so applications written before the field existed keep
    /// their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_waits: Vec<LockWait>,
    /// The contract the plan replaced, when the plan was applied by this
    /// event's attempt (a redelivered decision finds it moved already):
    /// what `mend revert` restores. Left out of the hashed JSON when absent,
    /// so applications written before the field existed keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_before: Option<ContractState>,
}

/// A dataset's contract as an event records it: the schema its records
/// are read with and where each of its fields is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContractState {
    pub schema_id: i32,
    /// Contract field (dotted path) → column.
    pub mapping: BTreeMap<String, String>,
}

/// One attempt to apply a plan that waited its whole `lock_timeout` for a
/// lock on the table and was rolled back (nothing of it applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LockWait {
    /// When the attempt began (ms since the epoch).
    pub at: i64,
    /// How long it waited before giving up, ms.
    pub waited_ms: i64,
    /// The database's error.
    pub error: String,
}

impl Application {
    /// How many held records an application names (the rest are counted).
    pub const MAX_HELD: usize = 200;

    /// Whether the plan applied and its replay loaded every record it was
    /// to take: only then is the incident healed.
    pub fn healed(&self) -> bool {
        self.outcome == ApplicationOutcome::Applied && self.still_quarantined == 0
    }
}

/// A quarantined record a replay could not load, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Held {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// One tool call of a supervisor run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolCall {
    pub name: String,
    /// The model's input, JSON.
    pub input: String,
    /// SHA-256 (hex) of the whole output.
    pub output_sha256: String,
    /// The output, cut at [`ToolCall::OUTPUT_KEPT`] bytes.
    pub output: String,
    pub is_error: bool,
    pub millis: i64,
}

impl ToolCall {
    /// Bytes of a tool's output kept in the event (the digest covers all).
    pub const OUTPUT_KEPT: usize = 4096;

    /// A call with its output kept (cut at a character boundary) and digested.
    pub fn new(name: &str, input: String, output: &str, is_error: bool, millis: i64) -> Self {
        let mut end = output.len().min(Self::OUTPUT_KEPT);
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            name: name.to_owned(),
            input,
            output_sha256: hex::encode(Sha256::digest(output.as_bytes())),
            output: output[..end].to_owned(),
            is_error,
            millis,
        }
    }
}

/// One supervisor run: what the model was asked, which tools it called,
/// its reasoning, the plan it handed over and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    pub envelope: Envelope,
    pub model: String,
    pub outcome: AgentOutcome,
    pub reason: Option<String>,
    pub proposal_id: Option<String>,
    pub plan: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub text: Vec<String>,
    pub stop_reason: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub duration_ms: i64,
}

mod blast;
mod chain;
mod cost;
pub use blast::{BlastRadius, Downstream};
pub use chain::Event;
use chain::canonical_json;
pub use cost::{LintFinding, StatementCost};

#[cfg(test)]
mod tests;
