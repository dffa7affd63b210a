//! Deciding: approve and reject through the API, and the one path every
//! channel (API, CLI, Slack, GitHub) records a decision through.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_model::api::DecisionRecorded;
pub use mend_model::api::DecisionRequest;
use mend_model::events::Decision;
use mend_model::{Channel, IncidentStatus, Policy, Verdict};

use crate::auth::Caller;
use crate::{Api, error};

pub(crate) async fn approve(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match crate::body::<DecisionRequest>(&body, true) {
        Ok(request) => decide(&api, caller.map(|c| c.0), &id, Verdict::Approved, request).await,
        Err(response) => *response,
    }
}

pub(crate) async fn reject(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match crate::body::<DecisionRequest>(&body, true) {
        Ok(request) => decide(&api, caller.map(|c| c.0), &id, Verdict::Rejected, request).await,
        Err(response) => *response,
    }
}

async fn decide(
    api: &Api,
    caller: Option<Caller>,
    proposal_id: &str,
    outcome: Verdict,
    request: DecisionRequest,
) -> Response {
    let Some(by) = crate::auth::who(caller, request.by) else {
        return error(StatusCode::BAD_REQUEST, "say who decides: {\"by\": \"name\"}");
    };
    let channel = request.channel.unwrap_or(Channel::Api);
    match record_decision(api, proposal_id, outcome, by, channel, request.reason).await {
        Ok(decision) => (StatusCode::ACCEPTED, Json(DecisionRecorded::of(&decision))).into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// Records a decision on a proposal: checked against the read model (it
/// exists, it is not decided yet, policy does not block it), published to
/// `mend.decisions` and acknowledged by the broker before it counts.
pub async fn record_decision(
    api: &Api,
    proposal_id: &str,
    outcome: Verdict,
    by: String,
    channel: Channel,
    reason: Option<String>,
) -> Result<Decision, (StatusCode, String)> {
    let decision = {
        let mut model = api.model();
        let Some(proposal) = model.proposals.get(proposal_id).cloned() else {
            return Err((StatusCode::NOT_FOUND, format!("no proposal {proposal_id}")));
        };
        if proposal.is_draft() && proposal.policy == Policy::Block {
            // Refusing it again decides nothing, and must not close the
            // incident to the plans that can still be decided.
            let reasons = &proposal.refused;
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "proposal {proposal_id} is a draft the guardrails refused ({}); it can be neither approved nor \
                     rejected: draft another plan, or decide the rules' proposal",
                    reasons.join("; ")
                ),
            ));
        }
        let incident = model.incident(&proposal.envelope);
        if let Some(decided) = &incident.decision {
            return Err((
                StatusCode::CONFLICT,
                format!("proposal {proposal_id} was already {} by {}; nothing applied", decided.outcome, decided.by),
            ));
        }
        if proposal.policy == Policy::Block && outcome == Verdict::Approved {
            return Err((
                StatusCode::CONFLICT,
                format!("proposal {proposal_id} is blocked by policy: {}", proposal.rules.join("; ")),
            ));
        }
        let decision = Decision::on(&proposal, crate::SERVICE, outcome, by, channel, reason);
        // Hold the proposal as decided now, so a second call is refused
        // even before the event comes back through the topic.
        model.decision(decision.clone());
        model.changed();
        decision
    };
    let undo = |api: &Api| {
        let mut model = api.model();
        if let Some(incident) = model.incidents.get_mut(&decision.envelope.incident_id.0) {
            incident.decision = None;
            incident.status = IncidentStatus::AwaitingApproval;
        }
        model.changed();
    };
    match api.context.publish(&decision).await {
        Ok(()) => Ok(decision),
        Err(e) => {
            // Not recorded: let the proposal be decided again.
            undo(api);
            Err((StatusCode::SERVICE_UNAVAILABLE, format!("the decision was not recorded: {e}")))
        }
    }
}
