//! proposer — turns a diagnosis into an ordered remediation plan and applies
//! the dataset's policy to it.
//!
//! - input topic: `mend.diagnoses`;
//! - output topics: `mend.proposals`, and `mend.decisions` when policy
//!   approves automatically;
//! - key: the dataset name;
//! - delivery: at least once; the proposal id is derived from the incident,
//!   so a re-delivered diagnosis yields the same proposal, which the applier
//!   applies at most once; a diagnosis of an incident already healed yields
//!   nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use mend_avro::codec::CodecError;
use mend_model::events::{Decision, Diagnosis, Envelope, Event, Proposal, ProposalOrigin};
use mend_model::{Channel, Contract, Policy, StepKind, Verdict, topics};
use mend_runtime::handler::{EventHandler, Outbound};
use mend_runtime::runner::{Runner, RunnerStatus};
use mend_runtime::{Context, HandleError};

pub mod github;

pub use mend_planner::{DbtFile, Plan, Target, plan, plan_dataset};

const SERVICE: &str = "proposer";

pub struct Proposer {
    context: Arc<Context>,
    http: reqwest::Client,
}

impl Proposer {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context, http: reqwest::Client::new() }
    }

    /// Opens the pull request of a plan with a dbt patch, when the dataset
    /// names a GitHub repository and mend has a token. Failures are logged
    /// (the API and Slack still offer the decision).
    async fn pull_request(&self, proposal: &Proposal) {
        let integrations = &self.context.integrations;
        let (Some(dataset), Some(token)) =
            (self.context.dataset(&proposal.envelope.dataset), &integrations.github_token)
        else {
            return;
        };
        let (Some(repo), Some(dbt)) = (&dataset.github, &dataset.dbt) else { return };
        let Some(patch) = proposal.steps.iter().find(|s| s.kind == StepKind::DbtPatch).and_then(|s| s.patch.as_deref())
        else {
            return;
        };
        let schema = dbt.schema.to_string_lossy();
        let path = if repo.directory.is_empty() {
            schema.into_owned()
        } else {
            format!("{}/{schema}", repo.directory.trim_end_matches('/'))
        };
        let client = github::Client { http: &self.http, api: &integrations.github_api_url, token, repo };
        match client.open(proposal, &path, patch).await {
            Ok(url) => tracing::info!(proposal = %proposal.proposal_id, %url, "pull request opened"),
            Err(error) => tracing::warn!(proposal = %proposal.proposal_id, %error, "pull request failed"),
        }
    }

    /// Tells people a proposal waits for them (Slack). A notification that
    /// fails is logged, never retried at the pipeline's expense: the
    /// proposal is on `mend.proposals` and in the API either way.
    async fn notify(&self, proposal: &Proposal) {
        if let Some(url) = &self.context.integrations.slack_webhook_url {
            let message = mend_integrations::slack::proposal_message(proposal, false);
            match mend_integrations::slack::post(&self.http, url, &message).await {
                Ok(()) => tracing::info!(proposal = %proposal.proposal_id, "approval requested on Slack"),
                Err(error) => tracing::warn!(proposal = %proposal.proposal_id, %error, "Slack notification failed"),
            }
        }
    }

    /// The proposal (and, when policy allows, the decision) for a diagnosis;
    /// None when the incident is healed already (the contract has moved to
    /// its writer schema: a diagnosis re-delivered after the apply).
    pub async fn propose(&self, diagnosis: &Diagnosis) -> Result<Option<(Proposal, Option<Decision>)>, HandleError> {
        let name = &diagnosis.envelope.dataset;
        let dataset = self
            .context
            .dataset(name)
            .ok_or_else(|| HandleError::Fatal(format!("diagnosis for unknown dataset {name}").into()))?;
        let warehouse = self.context.warehouse(dataset).await?;
        let contract = warehouse.contract(name).await?.unwrap_or_else(|| Contract {
            dataset: name.clone(),
            schema_id: 0,
            mapping: BTreeMap::new(),
        });
        if diagnosis.writer_schema_id.is_some_and(|id| i64::from(id) == i64::from(contract.schema_id)) {
            tracing::info!(incident = %diagnosis.envelope.incident_id, "already healed: the contract is at the writer schema");
            return Ok(None);
        }
        let writer = match diagnosis.writer_schema_id.and_then(|id| u32::try_from(id).ok()) {
            Some(id) => match self.context.codec.schema(id).await {
                Ok(schema) => schema.parsed.clone(),
                Err(CodecError::Invalid(_)) => Schema::Null,
                Err(unavailable) => return Err(unavailable.into()),
            },
            None => Schema::Null,
        };
        let plan = plan_dataset(dataset, &warehouse, &contract.mapping, &diagnosis.changes, &writer).await?;
        let plan_hash = Proposal::hash_steps(&plan.steps);
        // One proposal per incident: a diagnosis re-delivered after a crash
        // (even when the table has changed since, so the plan differs) names
        // the same proposal, which the applier applies at most once.
        let proposal_id = Proposal::rules_id(&diagnosis.envelope.incident_id);
        let mut proposal = Proposal {
            envelope: Envelope::answering(SERVICE, &diagnosis.envelope),
            proposal_id,
            writer_schema_id: diagnosis.writer_schema_id,
            changes: diagnosis.changes.clone(),
            steps: plan.steps,
            plan_hash,
            policy: plan.policy,
            rules: plan.rules,
            origin: Some(ProposalOrigin::rules()),
            refused: Vec::new(),
            blast_radius: plan.blast_radius,
        };
        proposal.seal();
        let decision = (plan.policy == Policy::Auto).then(|| {
            let reason = Some(proposal.rules.join("; "));
            Decision::on(&proposal, SERVICE, Verdict::Approved, "policy".into(), Channel::Policy, reason)
        });
        Ok(Some((proposal, decision)))
    }
}

impl EventHandler for Proposer {
    type Event = Diagnosis;

    fn context(&self) -> &Context {
        &self.context
    }

    async fn answer(&self, diagnosis: Diagnosis) -> Result<Vec<Outbound>, HandleError> {
        let Some((proposal, decision)) = self.propose(&diagnosis).await? else {
            return Ok(Vec::new());
        };
        tracing::info!(
            incident = %proposal.envelope.incident_id, proposal = %proposal.proposal_id, policy = %proposal.policy,
            "proposed"
        );
        if proposal.policy == Policy::Approve {
            self.notify(&proposal).await;
        }
        if proposal.policy != Policy::Block {
            self.pull_request(&proposal).await;
        }
        let mut outputs = vec![Outbound::event(&self.context.codec, &proposal).await?];
        if let Some(decision) = decision {
            outputs.push(Outbound::event(&self.context.codec, &decision).await?);
        }
        Ok(outputs)
    }
}

pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Proposer>, Arc<RunnerStatus>)> {
    Ok(context.transactional_runner(
        SERVICE,
        &context.group("proposer"),
        vec![topics::DIAGNOSES.to_owned()],
        Proposer::new(context.clone()),
    )?)
}
