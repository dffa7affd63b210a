//! The tools' inputs and outputs: their JSON Schemas are what MCP clients
//! (and the supervisor's model) see.

use mend_model::IncidentStatus;
use mend_model::api::{DecisionRecorded, Incident};
use mend_model::events::{BlastRadius, PlanStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListIncidentsArgs {
    /// Only incidents in this status.
    pub status: Option<IncidentStatus>,
    /// Only this dataset's incidents.
    pub dataset: Option<String>,
    /// At most this many, newest first (default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Incidents {
    /// As `mend incidents --json` prints them, newest first.
    pub incidents: Vec<Incident>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IncidentArgs {
    /// The incident's id (from `list_incidents`).
    pub incident_id: String,
}

/// An incident's plan and what it does downstream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Downstream {
    pub incident_id: String,
    /// The plan weighed: the incident's current proposal.
    pub proposal_id: String,
    /// "2 breaking, 1 unknown, 3 partial, 4 unaffected of 10 dbt nodes downstream".
    pub summary: String,
    pub blast_radius: BlastRadius,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct IncidentDetail {
    /// Changes with their evidence, the plan's steps and rules, the
    /// decision and the application, with their times.
    pub incident: Incident,
    /// From detection to the healed table, when it is healed.
    pub time_to_heal_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DatasetArgs {
    /// The dataset's name (a `[[dataset]]` of mend.toml).
    pub dataset: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SampleArgs {
    pub dataset: String,
    /// How many records (default 50, at most 200).
    pub limit: Option<i64>,
    /// Only this partition of the source topic.
    pub partition: Option<i32>,
    /// Only records before this offset (to page back).
    pub before_offset: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QuarantineArgs {
    /// The incident whose records to show...
    pub incident_id: Option<String>,
    /// ...or every quarantined record of a dataset.
    pub dataset: Option<String>,
    /// How many records (default 50, at most 200).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct HistoryArgs {
    /// The dataset whose subject to read...
    pub dataset: Option<String>,
    /// ...or a registry subject by name.
    pub subject: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompareArgs {
    pub dataset: String,
    /// The Avro schema (JSON text) about to be deployed.
    pub schema: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProposeArgs {
    /// The incident the plan fixes.
    pub incident_id: String,
    /// The plan, in order: mend's plan steps.
    pub steps: Vec<PlanStep>,
    /// Why this plan fixes the incident; recorded with it for the person
    /// who approves.
    pub rationale: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DecideArgs {
    /// The proposal (from `get_incident`).
    pub proposal_id: String,
    /// Why; recorded in the audit log.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Decided {
    /// The decision event written to `mend.decisions`: its id, the
    /// proposal, the outcome, who decided and the plan hash.
    pub decision: DecisionRecorded,
}
