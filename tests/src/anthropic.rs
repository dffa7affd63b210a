//! A local Anthropic-compatible Messages API for tests and benches: it
//! checks every request (key and version headers, model, the tools array
//! equal to mend's MCP tools, a `tool_result` first in the next user message
//! for every `tool_use` id) and answers from a script per dataset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// mend's MCP tools, as the Messages API must receive them.
pub const TOOLS: [&str; 11] = [
    "approve_proposal",
    "blast_radius",
    "compare_schema",
    "describe_table",
    "get_incident",
    "list_incidents",
    "propose_plan",
    "quarantined_records",
    "registry_history",
    "reject_proposal",
    "sample_records",
];

/// What the scripted model says: `(dataset, kind, turn, incident id)`.
pub type Script = fn(&str, &str, usize, &str) -> Response;

pub fn answer(stop: &str, content: Vec<Value>) -> Response {
    Json(json!({"id": "msg", "type": "message", "role": "assistant", "model": "claude-test", "content": content,
        "stop_reason": stop, "usage": {"input_tokens": 10, "output_tokens": 5}}))
    .into_response()
}

/// What the fake server saw, per dataset: every request body.
#[derive(Default)]
pub struct Seen {
    pub requests: BTreeMap<String, Vec<Value>>,
    /// Requests that broke the API's rules, and why.
    pub violations: Vec<String>,
}

pub struct Fake {
    /// dataset → script kind
    pub kinds: BTreeMap<String, String>,
    pub script: Script,
    pub seen: Mutex<Seen>,
}

pub async fn messages(State(fake): State<Arc<Fake>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut violations = Vec::new();
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("test-key") {
        violations.push("x-api-key".to_owned());
    }
    if headers.get("anthropic-version").and_then(|v| v.to_str().ok()) != Some("2023-06-01") {
        violations.push("anthropic-version".to_owned());
    }
    if body["model"] != "claude-test" {
        violations.push(format!("model {}", body["model"]));
    }
    let tools: BTreeSet<&str> =
        body["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    if tools != TOOLS.into_iter().collect()
        || body["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["input_schema"]["type"] != "object"))
    {
        violations.push(format!("tools {tools:?}"));
    }
    // Every tool_use of the last assistant turn is answered first in the
    // user message after it.
    let history = body["messages"].as_array().cloned().unwrap_or_default();
    for pair in history.windows(2) {
        let asked: Vec<&str> = pair[0]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_use")
            .filter_map(|b| b["id"].as_str())
            .collect();
        if asked.is_empty() || pair[0]["role"] != "assistant" {
            continue;
        }
        let answered: Vec<&str> = pair[1]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .take(asked.len())
            .filter(|b| b["type"] == "tool_result")
            .filter_map(|b| b["tool_use_id"].as_str())
            .collect();
        if answered != asked {
            violations.push(format!("tool_use {asked:?} answered with {answered:?}"));
        }
    }
    let system = body["system"].as_str().unwrap_or_default();
    let Some((dataset, kind)) = fake.kinds.iter().find(|(d, _)| system.contains(&format!("dataset {d}:"))) else {
        return (StatusCode::BAD_REQUEST, "unknown dataset").into_response();
    };
    let incident = system.split("Incident ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or_default().to_owned();
    let turn = {
        let mut seen = fake.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.violations.extend(violations);
        let requests = seen.requests.entry(dataset.clone()).or_default();
        requests.push(body.clone());
        // A retried turn (busy, cut) is the same turn.
        history.iter().filter(|m| m["role"] == "assistant").count()
    };
    (fake.script)(dataset, kind, turn, &incident)
}

/// Serves `fake` on a free loopback port; returns its base URL.
pub async fn serve(fake: Arc<Fake>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/messages", axum::routing::post(messages)).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

/// A fake playing `kinds[i]` for dataset `names[i]` with `script`.
pub fn fake(names: &[String], kinds: &[&str], script: Script) -> Arc<Fake> {
    Arc::new(Fake {
        kinds: names.iter().cloned().zip(kinds.iter().map(|k| (*k).to_owned())).collect(),
        script,
        seen: Mutex::default(),
    })
}
