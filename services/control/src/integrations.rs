//! Decisions from outside: a merged GitHub pull request of a mend branch,
//! and Slack's Approve / Reject buttons. Both verify their sender's
//! signature before anything is decided.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_model::{Channel, Secret, Verdict};
use serde_json::json;

use crate::decisions::record_decision;
use crate::{Api, error};

/// `POST /github/webhook`: a merged pull request of a mend branch
/// (`mend/<proposal id>`) approves that proposal, recorded as decided by the
/// GitHub user who merged it. The delivery must be signed with the webhook
/// secret (`X-Hub-Signature-256`); other events are acknowledged and ignored.
pub(crate) async fn github_webhook(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = &api.settings.github_webhook_secret else {
        return error(StatusCode::NOT_FOUND, "GitHub webhooks are not configured (MEND_GITHUB_WEBHOOK_SECRET)");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !mend_integrations::github::verify(secret, header("x-hub-signature-256"), &body) {
        tracing::warn!("GitHub webhook with a missing or wrong signature refused");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let ignored = |why: &str| (StatusCode::OK, Json(json!({"ignored": why}))).into_response();
    match header("x-github-event") {
        Some("ping") => return (StatusCode::OK, Json(json!({"pong": true}))).into_response(),
        Some("pull_request") => {}
        _ => return ignored("not a pull_request event"),
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let pull = &event["pull_request"];
    if event["action"] != "closed" || pull["merged"] != true {
        return ignored("not a merge");
    }
    let Some(proposal_id) = pull["head"]["ref"].as_str().and_then(|r| r.strip_prefix("mend/")) else {
        return ignored("not a mend branch");
    };
    let login = pull["merged_by"]["login"].as_str().or(event["sender"]["login"].as_str()).unwrap_or("unknown");
    // A merge can arrive while this process is still reading the audit
    // topics back (just started): give the read model a moment.
    api.await_proposal(proposal_id, Duration::from_secs(10)).await;
    let reason = Some(format!("merged pull request #{}", pull["number"]));
    match record_decision(&api, proposal_id, Verdict::Approved, format!("github:{login}"), Channel::Github, reason)
        .await
    {
        Ok(decision) => (
            StatusCode::OK,
            Json(json!({"decision_id": decision.envelope.event_id, "proposal_id": decision.proposal_id})),
        )
            .into_response(),
        // Decided already (say, applied by policy): the merge only documents it.
        Err((StatusCode::CONFLICT, message)) => ignored(&message),
        Err((status, message)) => error(status, message),
    }
}

/// `POST /slack/interactions`: an Approve or Reject button pressed in the
/// message mend posted. The request must carry Slack's signature over the
/// exact body (and be at most five minutes old); the Slack user must be
/// mapped to an approver (`[slack] approvers` in mend.toml). The message is
/// then replaced, through `response_url`, by the decision.
pub(crate) async fn slack_interaction(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = &api.settings.slack_signing_secret else {
        return error(StatusCode::NOT_FOUND, "Slack interactions are not configured (MEND_SLACK_SIGNING_SECRET)");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = mend_model::events::now_millis() / 1000;
    if let Err(refused) = mend_integrations::slack::verify(
        secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now,
    ) {
        tracing::warn!(%refused, "Slack interaction refused");
        return error(StatusCode::UNAUTHORIZED, refused.to_string());
    }
    let payload = form_urlencoded::parse(&body).find(|(k, _)| k == "payload").map(|(_, v)| v.into_owned());
    let Some(payload) = payload.and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok()) else {
        return error(StatusCode::BAD_REQUEST, "expected a form field `payload` holding Slack's JSON");
    };
    let action = &payload["actions"][0];
    let (Some(action_id), Some(proposal_id)) = (action["action_id"].as_str(), action["value"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "no action in the payload");
    };
    let outcome = match action_id {
        "approve" => Verdict::Approved,
        "reject" => Verdict::Rejected,
        other => return error(StatusCode::BAD_REQUEST, format!("unknown action {other:?}")),
    };
    let user = payload["user"]["id"].as_str().unwrap_or_default().to_owned();
    let response_url = payload["response_url"].as_str().map(Secret::new);
    let reply = |message: serde_json::Value| {
        if let Some(url) = response_url.clone() {
            tokio::spawn(async move {
                if let Err(e) = mend_integrations::slack::post(&reqwest::Client::new(), &url, &message).await {
                    tracing::warn!(error = %e, "could not update the Slack message");
                }
            });
        }
    };
    let Some(approver) = api.context.config.slack.approvers.get(&user).cloned() else {
        reply(json!({"response_type": "ephemeral", "replace_original": false,
                     "text": format!("<@{user}> is not a mend approver; nothing was decided")}));
        return error(StatusCode::FORBIDDEN, format!("Slack user {user} is not mapped to an approver"));
    };
    let reason = Some(format!("via Slack (user {user})"));
    api.await_proposal(proposal_id, Duration::from_secs(2)).await;
    match record_decision(&api, proposal_id, outcome, approver.clone(), Channel::Slack, reason).await {
        Ok(decision) => {
            let verb = if outcome == Verdict::Approved { "Approved" } else { "Rejected" };
            let text = format!(
                "{verb} by {approver}: proposal {proposal_id} for dataset {} (decision {}, plan hash {})",
                decision.envelope.dataset, decision.envelope.event_id, decision.plan_hash
            );
            reply(json!({"replace_original": true, "text": text,
                         "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}));
            (StatusCode::OK, Json(json!({"decision_id": decision.envelope.event_id, "outcome": decision.outcome})))
                .into_response()
        }
        Err((status, message)) => {
            reply(json!({"response_type": "ephemeral", "replace_original": false, "text": message.clone()}));
            error(status, message)
        }
    }
}
