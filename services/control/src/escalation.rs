//! Escalation: a proposal nobody decided within its dataset's
//! `approval_timeout` is notified again, once per period; it stays open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mend_model::IncidentStatus;
use mend_model::events::Proposal;
use mend_runtime::Context;

use crate::read_model::ReadModel;

/// Proposals waiting longer than their dataset's `approval_timeout` are
/// escalated: notified again (Slack, and the log) once per timeout period,
/// and they stay open. The loader is never stalled meanwhile: records keep
/// flowing to quarantine. Runs until `shutdown`.
pub async fn escalate(
    context: Arc<Context>,
    model: Arc<Mutex<ReadModel>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = mend_model::events::now_millis();
        let due: Vec<Proposal> = {
            let mut model = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let ReadModel { incidents, proposals, .. } = &mut *model;
            incidents
                .values_mut()
                .filter(|i| i.status == IncidentStatus::AwaitingApproval)
                .filter_map(|incident| {
                    let timeout = context.dataset(&incident.dataset)?.approval_timeout?;
                    let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
                    let proposed = incident.proposed_at?;
                    let due = proposed.saturating_add(timeout.saturating_mul(i64::from(incident.escalations) + 1));
                    if now < due {
                        return None;
                    }
                    incident.escalations += 1;
                    proposals.get(incident.proposal_id.as_deref()?).cloned()
                })
                .collect()
        };
        for proposal in due {
            tracing::warn!(
                incident = %proposal.envelope.incident_id, proposal = %proposal.proposal_id, dataset = %proposal.envelope.dataset,
                "proposal still waits for a decision after its approval timeout: escalating"
            );
            if let Some(url) = &context.integrations.slack_webhook_url {
                let message = mend_integrations::slack::proposal_message(&proposal, true);
                if let Err(error) = mend_integrations::slack::post(&http, url, &message).await {
                    tracing::warn!(%error, "Slack escalation failed");
                }
            }
        }
    }
}
