//! supervisor — Claude drafts fixes for what the rules cannot.
//!
//! - input topic: `mend.proposals` (its own consumer group): each proposal
//!   mend's rules blocked (a type change the table cannot hold, …);
//! - outputs: a drafted plan handed over through the control API (as the
//!   MCP tool `propose_plan` does), which passes the guardrails and waits
//!   for a person's approval whatever the dataset's policy; and one
//!   `mend.agent_runs` event per run (the tools called, the model's
//!   reasoning, the plan, the verdict, tokens, outcome);
//! - key: the dataset name;
//! - delivery: its events exactly once (each batch's run event and offsets
//!   are one Kafka transaction); a proposal's draft at most once: the draft
//!   ids of a run are derived from the incident, so a re-delivered
//!   proposal, a restart or a kill mid-run hands nothing over twice, and an
//!   incident that already has the supervisor's draft is not run again (a
//!   run whose event a crash lost gets an event that says so).
//!
//! The model works with mend's MCP tools, called in process (same names,
//! schemas and functions as `/mcp`). With no `MEND_ANTHROPIC_API_KEY` the
//! supervisor reads its topic and does nothing: incidents stay for a person.

pub mod claude;
pub mod run;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use mend_mcp::remote::{Client, Remote};
use mend_mcp::server::{Auth, McpServer};
use mend_model::events::{AgentRun, Envelope, Event, Proposal};
use mend_model::{AgentOutcome, Policy, topics};
use mend_runtime::handler::{EventHandler, Outbound};
use mend_runtime::runner::{Runner, RunnerStatus};
use mend_runtime::{Context, HandleError, kafka};

use crate::claude::Claude;
use crate::run::{Budget, Outcome};

const SERVICE: &str = "supervisor";
/// Who the supervisor's drafts are by when the API has no tokens.
pub const BY: &str = "supervisor";
/// Namespace of the supervisor's draft ids.
const DRAFT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_6e64_6167_656e_7400_0000_0000_0001);

/// The id of the supervisor's `attempt`-th draft for `incident`.
pub fn draft_id(incident: &str, attempt: usize) -> String {
    uuid::Uuid::new_v5(&DRAFT_NAMESPACE, format!("{incident}/{attempt}").as_bytes()).to_string()
}

/// The supervisor's handler.
pub struct Supervisor {
    context: Arc<Context>,
    claude: Option<Claude>,
    api: Client,
    budget: Budget,
}

impl Supervisor {
    pub fn new(context: Arc<Context>, claude: Option<Claude>, api: Client) -> Self {
        let settings = &context.config.supervisor;
        let budget = Budget {
            max_tool_calls: settings.max_tool_calls,
            max_tokens: settings.max_tokens,
            deadline: settings.deadline,
        };
        Self { context, claude, api, budget }
    }

    /// Whether the supervisor should look at `proposal`.
    fn wants(&self, proposal: &Proposal) -> bool {
        self.claude.is_some()
            && proposal.policy == Policy::Block
            && !proposal.is_draft()
            && self.context.dataset(&proposal.envelope.dataset).is_some_and(|d| d.supervisor.unwrap_or(true))
    }

    /// Runs the supervisor on the incident of `proposal`, unless it has run
    /// before (its draft is on the incident); the run's event, if it ran.
    async fn supervise(&self, claude: &Claude, proposal: &Proposal) -> Result<Option<AgentRun>, HandleError> {
        let incident_id = proposal.envelope.incident_id.0.clone();
        let incident = self.api.incident(&incident_id).await.map_err(|e| HandleError::retry("the control API", e))?;
        let mine: Vec<String> = (0..=self.budget.max_tool_calls).map(|n| draft_id(&incident_id, n)).collect();
        if let Some(draft) = incident.accepted_draft(&mine).map(|d| d.proposal_id.clone()) {
            tracing::info!(incident = %incident_id, "the supervisor's draft is there already: not run again");
            return self.recorded(claude, proposal, draft).await;
        }
        let control = Arc::new(Remote {
            api: self.api.clone(),
            by: BY.into(),
            may_decide: false,
            draft_id: Some(draft_id),
            attempts: AtomicUsize::new(0),
        });
        let server = McpServer::new(self.context.clone(), control, Auth::Open);
        tracing::info!(incident = %incident_id, model = %claude.model, "supervisor run");
        let report = run::run(claude, &server, &incident, self.budget).await;
        let tools: Vec<&str> = report.tool_calls.iter().map(|call| call.name.as_str()).collect();
        match &report.outcome {
            Outcome::Proposed { proposal_id } => tracing::info!(
                incident = %incident_id, proposal = %proposal_id, ?tools, input_tokens = report.input_tokens,
                output_tokens = report.output_tokens, seconds = report.duration.as_secs_f64(),
                "supervisor proposed a plan; it waits for a person"
            ),
            Outcome::Escalated { reason } | Outcome::Failed { reason } => {
                tracing::warn!(
                    incident = %incident_id, %reason, ?tools, seconds = report.duration.as_secs_f64(),
                    "supervisor gave up: escalated to a person"
                );
                if let Some(url) = &self.context.integrations.slack_webhook_url {
                    let text = format!("mend could not draft a fix for incident {incident_id}: {reason}");
                    let message = serde_json::json!({"text": text});
                    if let Err(error) = mend_integrations::slack::post(&reqwest::Client::new(), url, &message).await {
                        tracing::warn!(%error, "Slack escalation failed");
                    }
                }
            }
        }
        let (outcome, reason, proposal_id) = match report.outcome {
            Outcome::Proposed { proposal_id } => (AgentOutcome::Proposed, None, Some(proposal_id)),
            Outcome::Failed { reason } => (AgentOutcome::Failed, Some(reason), None),
            Outcome::Escalated { reason } if report.refused > 0 => (AgentOutcome::Refused, Some(reason), None),
            Outcome::Escalated { reason } => (AgentOutcome::Escalated, Some(reason), None),
        };
        let mut run = AgentRun {
            envelope: Envelope::answering(SERVICE, &proposal.envelope),
            model: claude.model.clone(),
            outcome,
            reason,
            proposal_id,
            plan: report.plan,
            tool_calls: report.tool_calls,
            text: report.text,
            stop_reason: report.stop_reason,
            input_tokens: i64::try_from(report.input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(report.output_tokens).unwrap_or(i64::MAX),
            duration_ms: i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX),
        };
        run.seal();
        Ok(Some(run))
    }
}

impl EventHandler for Supervisor {
    type Event = Proposal;

    fn context(&self) -> &Context {
        &self.context
    }

    async fn answer(&self, proposal: Proposal) -> Result<Vec<Outbound>, HandleError> {
        let mut outputs = Vec::new();
        if let Some(claude) = &self.claude
            && self.wants(&proposal)
            && let Some(run) = self.supervise(claude, &proposal).await?
        {
            outputs.push(Outbound::event(&self.context.codec, &run).await?);
        }
        Ok(outputs)
    }
}

impl Supervisor {
    /// The record of a run whose draft is on the incident but whose event
    /// is not on `mend.agent_runs` (the supervisor stopped after handing
    /// the draft over and before its transaction committed): a run event
    /// that says so, so that every run has one. None when it has one.
    async fn recorded(
        &self,
        claude: &Claude,
        proposal: &Proposal,
        draft: String,
    ) -> Result<Option<AgentRun>, HandleError> {
        let runs = kafka::read_to_end(&self.context.connections.brokers, topics::AGENT_RUNS)
            .await
            .map_err(|e| HandleError::retry("reading mend.agent_runs", e))?;
        for message in runs {
            let payload = rdkafka::message::Message::payload(&message).unwrap_or_default();
            // An unreadable record is not this run's.
            let Ok(run) = self.context.codec.decode_event::<AgentRun>(payload).await else { continue };
            if run.envelope.causation_id.as_deref() == Some(&proposal.envelope.event_id) {
                return Ok(None);
            }
        }
        let mut run = AgentRun {
            envelope: Envelope::answering(SERVICE, &proposal.envelope),
            model: claude.model.clone(),
            outcome: AgentOutcome::Proposed,
            reason: Some(
                "the supervisor stopped after handing its draft over and before recording the run: \
                 the draft stands; its tool calls, reasoning and tokens were not recorded"
                    .into(),
            ),
            proposal_id: Some(draft),
            plan: None,
            tool_calls: Vec::new(),
            text: Vec::new(),
            stop_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            duration_ms: 0,
        };
        run.seal();
        Ok(Some(run))
    }
}

/// The supervisor's runner on `mend.proposals`.
pub fn runner(
    context: &Arc<Context>,
    claude: Option<Claude>,
    api: Client,
) -> anyhow::Result<(Runner<Supervisor>, Arc<RunnerStatus>)> {
    if claude.is_none() {
        tracing::info!("no MEND_ANTHROPIC_API_KEY: the supervisor leaves blocked incidents to people");
    }
    let supervisor = Supervisor::new(context.clone(), claude, api);
    let mut config = mend_runtime::runner::RunnerConfig::new(
        SERVICE,
        &context.connections.brokers,
        &context.group(SERVICE),
        vec![topics::PROPOSALS.to_owned()],
    );
    // One proposal at a time: a run takes the model's time, not the broker's;
    // in group mode the group must wait for a whole run.
    config.max_batch = 1;
    config.exactly_once = true;
    config.max_poll_interval = context.config.supervisor.deadline + std::time::Duration::from_secs(60);
    Ok(context.runner_with(config, supervisor)?)
}
