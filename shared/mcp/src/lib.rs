//! mend as an MCP server: the evidence a person (or a model) looks at when
//! a pipeline drifts, the dry comparison of a schema with a table, and
//! decisions on proposals, as MCP tools ([`server::McpServer`], built on
//! rmcp). It serves both protocol generations (2026-07-28, stateless;
//! 2025-11-25, with initialize) over stdio (`mend mcp`) and streamable HTTP
//! (`/mcp` on the control API).
//!
//! The read tools ([`read`]) work on the process's [`mend_runtime::Context`]:
//! the registry, the warehouse and the broker, as the diagnoser sees them.
//! Incidents and decisions go through a [`Control`]: the control API's read
//! model in process (`mend up`), or the control API over HTTP (`mend mcp`),
//! so authorization and the recorded identity are those of every channel.

pub mod args;
mod handler;
pub mod read;
pub mod remote;
pub mod server;

pub use handler::diagnose_prompt;

use futures::future::BoxFuture;
use mend_config::Caller;
use mend_model::Verdict;
use mend_model::api::{DecisionRecorded, DraftOutcome, Incident};
use mend_model::events::PlanStep;

/// Why a tool could not answer: a sentence saying what to do about it
/// (returned to the client as a tool result with `isError: true`).
pub type ToolFailure = String;

/// Where incidents are read and decisions recorded.
pub trait Control: Send + Sync + 'static {
    /// Every incident, as `mend incidents --json` prints them.
    fn incidents(&self) -> BoxFuture<'_, Result<Vec<Incident>, ToolFailure>>;
    /// One incident; Err when there is none with that id.
    fn incident<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Incident, ToolFailure>>;
    /// Records a decision on a proposal as `caller` (None: no
    /// authentication configured) through channel `mcp`.
    fn decide<'a>(
        &'a self,
        caller: Option<&'a Caller>,
        proposal_id: &'a str,
        verdict: Verdict,
        reason: Option<String>,
    ) -> BoxFuture<'a, Result<DecisionRecorded, ToolFailure>>;
    /// Hands over a drafted plan for an incident: checked against the
    /// guardrails, recorded accepted (waiting for approval) or refused
    /// (with every reason).
    fn propose<'a>(
        &'a self,
        caller: Option<&'a Caller>,
        incident_id: &'a str,
        steps: Vec<PlanStep>,
        rationale: String,
    ) -> BoxFuture<'a, Result<DraftOutcome, ToolFailure>>;
}

/// The largest tool output, in bytes of JSON: a model reads every byte.
pub const MAX_OUTPUT: usize = 64 << 10;
