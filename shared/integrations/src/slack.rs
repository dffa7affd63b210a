//! Slack: the Block Kit message mend posts to an incoming webhook for each
//! proposal waiting for a person, and the verification of Slack's signed
//! interaction requests (the Approve / Reject buttons).
//!
//! Slack signs each request with HMAC-SHA256 over `v0:<timestamp>:<body>`
//! using the app's signing secret, sent as `X-Slack-Signature: v0=<hex>` with
//! `X-Slack-Request-Timestamp`; requests older than five minutes are refused
//! (replays).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use mend_model::Secret;
use mend_model::events::{FieldChange, Proposal};

/// How old a signed request may be.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Why an interaction request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("the request timestamp is more than five minutes from now (a replay?)")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Verifies a Slack request: `timestamp` and `signature` are the header
/// values, `now` the current Unix time in seconds.
pub fn verify(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return Err(SignatureError::Missing) };
    let sent: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Stale)?;
    if (now - sent).unsigned_abs() > MAX_AGE.as_secs() {
        return Err(SignatureError::Stale);
    }
    let given = signature.strip_prefix("v0=").and_then(|hex| hex::decode(hex).ok()).ok_or(SignatureError::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

/// The signature Slack would send for `body` at `timestamp` (for tests and
/// local tools).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn describe(change: &FieldChange) -> String {
    let mut line = format!("• `{}` {}", change.kind, change.field);
    if let (Some(from), Some(to)) = (&change.from, &change.to) {
        line = format!("• `{}` {from} → {to}", change.kind);
    } else if let (Some(old), Some(new)) = (&change.old_type, &change.new_type) {
        line.push_str(&format!(" ({old} → {new})"));
    }
    if let Some(confidence) = change.confidence {
        line.push_str(&format!(", confidence {confidence:.2}"));
    }
    let evidence: Vec<String> =
        change.evidence.iter().filter(|(k, _)| !k.ends_with("_schema")).map(|(k, v)| format!("{k}: {v}")).collect();
    if !evidence.is_empty() {
        line.push_str(&format!("\n    _{}_", evidence.join("; ")));
    }
    line
}

/// The Block Kit message for a proposal waiting for a person: incident,
/// dataset, each change with its evidence, the plan's SQL, and Approve /
/// Reject buttons whose value is the proposal id. `escalation` marks a
/// reminder after the approval timeout.
pub fn proposal_message(proposal: &Proposal, escalation: bool) -> Value {
    let dataset = &proposal.envelope.dataset;
    let title = if escalation {
        format!("Still waiting: schema drift on {dataset} needs a decision")
    } else {
        format!("Schema drift on {dataset}: approval needed")
    };
    let changes = proposal.changes.iter().map(describe).collect::<Vec<_>>().join("\n");
    let sql: Vec<&str> = proposal.steps.iter().filter_map(|s| s.sql.as_deref()).collect();
    let sql =
        if sql.is_empty() { "no DDL (mapping changes only)".to_owned() } else { format!("```{}```", sql.join(";\n")) };
    let steps = proposal.steps.iter().enumerate().map(|(i, s)| match &s.cost {
        Some(cost) => format!("{}. [{}] {}\n    _cost: {cost}_", i + 1, s.kind, s.description),
        None => format!("{}. [{}] {}", i + 1, s.kind, s.description),
    });
    // Slack takes at most 3,000 characters in a section's text.
    let downstream = proposal.blast_radius.as_ref().map(|radius| {
        let mut text = format!("*Downstream in dbt*\n{}", radius.summary());
        for node in radius.affected() {
            let line = format!("\n• {node}");
            if text.len() + line.len() > 2900 {
                text.push_str("\n• … (the rest in `mend show`)");
                break;
            }
            text.push_str(&line);
        }
        text
    });
    let mut message = json!({
        "text": format!("{title} (proposal {})", proposal.proposal_id),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Incident*\n{}", proposal.envelope.incident_id)},
                {"type": "mrkdwn", "text": format!("*Dataset*\n{dataset}")},
                {"type": "mrkdwn", "text": format!("*Proposal*\n{}", proposal.proposal_id)},
                {"type": "mrkdwn", "text": format!("*Policy*\n{}", proposal.policy)},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Changes*\n{changes}")}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Plan*\n{}", steps.collect::<Vec<_>>().join("\n"))}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*SQL*\n{sql}")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("plan hash {}", proposal.plan_hash)}]},
            {"type": "actions", "block_id": "mend_decision", "elements": [
                {"type": "button", "action_id": "approve", "style": "primary", "value": proposal.proposal_id,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "reject", "style": "danger", "value": proposal.proposal_id,
                 "text": {"type": "plain_text", "text": "Reject"}},
            ]},
        ],
    });
    if let (Some(text), Some(blocks)) = (downstream, message["blocks"].as_array_mut()) {
        blocks.insert(5, json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    message
}

/// Posts a message to an incoming webhook. Slack answers `ok` with 200.
pub async fn post(http: &reqwest::Client, url: &Secret, message: &Value) -> Result<(), String> {
    let response = http
        .post(url.expose())
        .json(message)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("slack webhook: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("slack webhook answered {status}: {}", response.text().await.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_stale_or_forged_ones_do_not() {
        let body = b"payload=%7B%7D";
        let now = 1_700_000_000;
        let good = sign("secret", now, body);
        assert_eq!(verify(&Secret::new("secret"), Some(&now.to_string()), Some(&good), body, now + 10), Ok(()));
        assert_eq!(
            verify(&Secret::new("other"), Some(&now.to_string()), Some(&good), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&Secret::new("secret"), Some(&now.to_string()), Some(&good), b"payload=x", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&Secret::new("secret"), Some(&now.to_string()), Some(&good), body, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify(&Secret::new("secret"), None, Some(&good), body, now), Err(SignatureError::Missing));
        assert_eq!(
            verify(&Secret::new("secret"), Some(&now.to_string()), Some("v0=zz"), body, now),
            Err(SignatureError::Mismatch)
        );
    }
}
