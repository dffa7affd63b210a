//! The control API's answers and requests: one model for every reader. The
//! API serves these types, its remote client reads them back, the MCP
//! tools' output schemas and the OpenAPI document (`/api/v1/openapi.json`)
//! are generated from them, and the CLI, the supervisor and the tests read
//! their fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::{ContractState, Decision, FieldChange, Held, LockWait, PlanStep, ToolCall};
use crate::{AgentOutcome, ApplicationOutcome, Channel, DetectionSource, IncidentStatus, Policy, Verdict};

/// One incident as the API shows it: what changed, the plan, who decided,
/// what was applied, and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Incident {
    pub id: String,
    pub dataset: String,
    pub status: IncidentStatus,
    pub writer_schema_id: Option<i32>,
    pub contract_schema_id: Option<i32>,
    /// What noticed it: a writer schema (`schema_id`) or a pipeline
    /// failure (`openlineage`).
    pub source: Option<DetectionSource>,
    /// Milliseconds since the Unix epoch.
    pub detected_at: i64,
    pub healed_at: Option<i64>,
    /// From detection to the healed table (MTTR's sample), once healed.
    pub time_to_heal_seconds: Option<f64>,
    /// How long its proposal waited for a person (None when policy decided).
    pub waiting_for_person_seconds: Option<f64>,
    pub changes: Vec<FieldChange>,
    pub evidence: BTreeMap<String, String>,
    pub proposal_id: Option<String>,
    pub policy: Option<Policy>,
    pub rules: Vec<String>,
    pub steps: Vec<PlanStep>,
    pub decision: Option<DecisionView>,
    pub application: Option<ApplicationView>,
    /// Records of its writer schema held in quarantine (from the warehouse).
    pub quarantined: u64,
    /// When the proposal was made (ms), and how often it was escalated.
    pub proposed_at: Option<i64>,
    pub escalations: u32,
    /// Plans drafted by people or models (`propose_plan`), accepted or
    /// refused, in order.
    pub drafts: Vec<DraftView>,
    /// The supervisor's last run on this incident, if it ran.
    pub supervisor: Option<SupervisorView>,
    /// What its proposal does downstream in the dataset's dbt project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<crate::events::BlastRadius>,
}

impl Incident {
    /// Whether the incident was detected (not only answered to): a writer
    /// schema or a pipeline failure opened it.
    pub fn is_known(&self) -> bool {
        self.writer_schema_id.is_some() || self.source.is_some()
    }

    /// The accepted draft among `ids`, if one is on the incident.
    pub fn accepted_draft<'a>(&'a self, ids: &[String]) -> Option<&'a DraftView> {
        self.drafts.iter().find(|d| d.accepted && ids.contains(&d.proposal_id))
    }
}

/// The `p`-quantile (nearest rank) of `sorted` (ascending): what `mend
/// stats` and the console say of times to heal.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * p).round() as usize).copied()
}

/// A supervisor run as the incident shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SupervisorView {
    pub outcome: AgentOutcome,
    pub reason: Option<String>,
    pub proposal_id: Option<String>,
    pub model: String,
    /// The tools it called, in order.
    pub tools: Vec<String>,
    /// Each call: its input, its output (the first 4 KiB, with the whole
    /// output's SHA-256), whether it failed, how long it took.
    #[serde(default)]
    pub calls: Vec<ToolCall>,
    /// What the model said between its calls: its reasoning.
    #[serde(default)]
    pub text: Vec<String>,
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    pub seconds: f64,
    /// From detection to the supervisor's proposal.
    pub detection_to_proposal_seconds: Option<f64>,
}

/// A drafted plan as the incident lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DraftView {
    pub proposal_id: String,
    /// Passed the guardrails and waits for approval (or was decided).
    pub accepted: bool,
    /// Who drafted it and why (None in drafts recorded before 0.1 kept it).
    pub by: Option<String>,
    pub rationale: Option<String>,
    /// Every reason the guardrails refused it (empty when accepted).
    pub refused: Vec<String>,
    /// The same for a person to read: who, why, each refusal, the policy.
    pub rules: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// The decision on an incident's proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionView {
    pub id: String,
    pub outcome: Verdict,
    pub by: String,
    pub channel: Channel,
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// What applying the plan did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationView {
    pub outcome: ApplicationOutcome,
    pub statements: i32,
    pub replayed: i64,
    pub loaded: i64,
    pub still_quarantined: i64,
    /// The records the replay could not load, with why.
    pub held: Vec<Held>,
    pub error: Option<String>,
    /// The attempts that waited the whole `lock_timeout` for the table's
    /// lock and were tried again.
    #[serde(default)]
    pub lock_waits: Vec<LockWait>,
    /// The contract the plan replaced (what `mend revert` restores), when
    /// the application recorded it.
    #[serde(default)]
    pub contract_before: Option<ContractState>,
    /// The decision whose plan was applied.
    #[serde(default)]
    pub decision_id: Option<String>,
}

/// Body of `POST /proposals/{id}/approve` and `/reject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRequest {
    /// Who decides, without authentication (with it, the token's name).
    pub by: Option<String>,
    pub reason: Option<String>,
    /// The channel it came through (default `api`).
    pub channel: Option<Channel>,
}

/// A decision recorded: acknowledged by the broker on `mend.decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRecorded {
    pub decision_id: String,
    pub proposal_id: String,
    pub outcome: Verdict,
    pub by: String,
    pub channel: Channel,
    /// The hash of the plan decided (the applier runs only that plan).
    pub plan_hash: String,
}

impl DecisionRecorded {
    pub fn of(decision: &Decision) -> Self {
        Self {
            decision_id: decision.envelope.event_id.clone(),
            proposal_id: decision.proposal_id.clone(),
            outcome: decision.outcome,
            by: decision.by.clone(),
            channel: decision.channel,
            plan_hash: decision.plan_hash.clone(),
        }
    }
}

/// Body of `POST /incidents/{id}/proposals`: a drafted plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DraftRequest {
    pub steps: Vec<PlanStep>,
    /// Why this plan fixes the incident: recorded with it.
    pub rationale: String,
    /// Who drafts it, without authentication (with it, the token's name).
    pub by: Option<String>,
    /// The draft's id, chosen by its author so handing it over again (a
    /// retry, a restart) records nothing twice; default: a new one.
    pub proposal_id: Option<String>,
}

/// Body of `POST /incidents/{id}/revert`: undo what the incident's plan
/// did to the contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevertRequest {
    /// Why (recorded with the plan).
    pub reason: String,
    /// Who asks, without authentication (with it, the token's name).
    pub by: Option<String>,
}

/// What became of a draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DraftOutcome {
    /// Accepted: it waits for a person's approval as `proposal_id`.
    pub accepted: bool,
    pub proposal_id: String,
    pub incident_id: String,
    /// Every reason it was refused (empty when accepted).
    pub refused: Vec<String>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Every stage consumes and the read model has caught up.
    pub healthy: bool,
    /// Per stage, whether its consumer has its partitions.
    pub consuming: BTreeMap<String, bool>,
    pub read_model_caught_up: bool,
    /// Whether the supervisor drafts fixes for incidents the rules block
    /// (an Anthropic API key is set).
    #[serde(default)]
    pub supervisor: bool,
}

/// Any answer that is not a success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
}

/// What mend would do if a schema arrived now (`mend plan --json`, MCP's
/// `compare_schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanReport {
    pub dataset: String,
    pub table: String,
    /// The schema compared against (the contract's), None without one.
    pub contract_schema_id: Option<u32>,
    /// Each change with the decision its rule made.
    pub changes: Vec<PlannedChange>,
    pub steps: Vec<PlanStep>,
    pub rules: Vec<String>,
    pub decision: Policy,
    /// Whether Avro's resolution lets the contract's schema read the new
    /// one (None without a contract).
    pub contract_can_read: Option<bool>,
    /// `mend plan`'s exit code: 0 auto, 2 approve, 3 block, 4 auto but the
    /// contract's readers cannot read the new schema.
    pub exit_code: u8,
    /// What the plan does downstream in the dataset's dbt project (when it
    /// names its manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<crate::events::BlastRadius>,
}

/// A change and what the policy decided for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedChange {
    #[serde(flatten)]
    pub change: FieldChange,
    pub decision: Policy,
    /// The rule that decided, for a person.
    pub rule: String,
}

/// What `mend demo --report FILE` writes: the story's end state, checked
/// record by record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DemoReport {
    pub produced: usize,
    /// Records in their columns with the values produced.
    pub loaded: usize,
    /// Records of the blocked type change, waiting in quarantine.
    pub quarantined: usize,
    pub lost: usize,
    /// Records in the table with a value in the wrong column (or loaded
    /// while their change was blocked).
    pub misplaced: usize,
    /// Rows the table holds twice.
    pub duplicates: usize,
    /// The registry ids of the story's four schema versions.
    pub schema_ids: Vec<u32>,
    /// Per schema version: seconds from its first drifted record produced
    /// to healed.
    pub healed_seconds: BTreeMap<String, f64>,
    pub incidents: Vec<Incident>,
}
