//! One supervisor run: a tool-use loop with Claude over mend's MCP tools,
//! called in process, until the model hands a fix over through
//! `propose_plan` or the run gives up (escalated to a person, with the
//! reason). Every stop reason of the Messages API is handled; a truncated
//! tool call is never run.

use std::time::{Duration, Instant};

use mend_mcp::server::McpServer;
use mend_model::api::{DraftOutcome, Incident};
use mend_model::events::ToolCall;
use serde_json::{Value, json};

use crate::claude::{Claude, ClaudeError};

/// The model a run converses with: Claude's Messages API, or a script in
/// the tests.
pub trait Model {
    /// The model's name, sent with each request.
    fn name(&self) -> &str;
    /// One turn: the Messages API's request and response bodies.
    fn turn(&self, request: &Value) -> impl Future<Output = Result<Value, ClaudeError>> + Send;
}

impl Model for Claude {
    fn name(&self) -> &str {
        &self.model
    }

    fn turn(&self, request: &Value) -> impl Future<Output = Result<Value, ClaudeError>> + Send {
        Claude::turn(self, request)
    }
}

/// The tools a run may call: mend's MCP tools in process, or fakes in the
/// tests.
pub trait Tools {
    /// Each tool as the Messages API takes it (name, description, input schema).
    fn list(&self) -> Vec<Value>;
    /// Calls one tool: its output, or why it failed.
    fn call(&self, name: &str, input: Value) -> impl Future<Output = Result<Value, String>> + Send;
}

impl Tools for McpServer {
    fn list(&self) -> Vec<Value> {
        self.tools()
            .into_iter()
            .map(|tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}))
            .collect()
    }

    fn call(&self, name: &str, input: Value) -> impl Future<Output = Result<Value, String>> + Send {
        self.invoke(name, input, None)
    }
}

/// What a run may spend.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_tool_calls: usize,
    pub max_tokens: u64,
    pub deadline: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The model's plan passed the guardrails and waits for approval.
    Proposed { proposal_id: String },
    /// Nothing was proposed: a person must look, for this reason.
    Escalated { reason: String },
    /// The model could not be asked (the API failed for good).
    Failed { reason: String },
}

/// What happened in a run, for the log and the reviewer.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    /// Each tool call: name, input, output (digested, kept bounded), time.
    pub tool_calls: Vec<ToolCall>,
    /// The plan last handed over through `propose_plan` and the verdict.
    pub plan: Option<String>,
    /// Plans the guardrails refused.
    pub refused: usize,
    /// The last turn's stop reason.
    pub stop_reason: Option<String>,
    /// The model's text, in order (its reasoning).
    pub text: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration: Duration,
}

/// The system prompt: the incident, the tools and the guardrails.
fn system(incident: &Incident) -> String {
    let json = |value: serde_json::Result<String>| value.unwrap_or_default();
    format!(
        "You are mend's supervisor. mend heals streaming ingestion pipelines when an upstream Avro schema drifts; \
         its rules could not fix this incident, so you investigate and draft the fix a person will review.\n\n\
         Incident {id} on dataset {dataset}: status {status}. Changes: {changes}. mend's rules: {rules}. \
         Evidence: {evidence}.\n\n{guide}",
        id = incident.id,
        dataset = incident.dataset,
        status = incident.status,
        changes = json(serde_json::to_string(&incident.changes)),
        rules = json(serde_json::to_string(&incident.rules)),
        evidence = json(serde_json::to_string(&incident.evidence)).chars().take(8192).collect::<String>(),
        guide = mend_mcp::diagnose_prompt(&incident.id),
    )
}

/// Runs the loop for `incident` (as the control API shows it).
pub async fn run(model: &impl Model, tools: &impl Tools, incident: &Incident, budget: Budget) -> Report {
    let started = Instant::now();
    let mut report = Report {
        outcome: Outcome::Escalated { reason: String::new() },
        tool_calls: Vec::new(),
        plan: None,
        refused: 0,
        stop_reason: None,
        text: Vec::new(),
        input_tokens: 0,
        output_tokens: 0,
        duration: Duration::ZERO,
    };
    let outcome = converse(model, tools, incident, budget, started, &mut report).await;
    report.outcome = outcome;
    report.duration = started.elapsed();
    report
}

fn escalate(reason: impl Into<String>) -> Outcome {
    Outcome::Escalated { reason: reason.into() }
}

async fn converse(
    model: &impl Model,
    server: &impl Tools,
    incident: &Incident,
    budget: Budget,
    started: Instant,
    report: &mut Report,
) -> Outcome {
    let tools = server.list();
    let mut messages = vec![json!({"role": "user", "content": format!(
        "Diagnose incident {} and hand over a fix with propose_plan.", incident.id
    )})];
    let mut max_tokens = budget.max_tokens;
    let mut retried_max_tokens = false;
    loop {
        if started.elapsed() > budget.deadline {
            return escalate(format!("the run's deadline ({:?}) passed before a plan was proposed", budget.deadline));
        }
        let request = json!({
            "model": model.name(), "max_tokens": max_tokens, "system": system(incident),
            "tools": tools, "messages": messages,
        });
        let remaining = budget.deadline.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(remaining, model.turn(&request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Outcome::Failed { reason: format!("the model could not be asked: {error}") },
            Err(_) => {
                return escalate(format!("the run's deadline ({:?}) passed while the model answered", budget.deadline));
            }
        };
        report.input_tokens += response["usage"]["input_tokens"].as_u64().unwrap_or(0);
        report.output_tokens += response["usage"]["output_tokens"].as_u64().unwrap_or(0);
        let content = response["content"].as_array().cloned().unwrap_or_default();
        let text: Vec<String> = content
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str().map(str::to_owned))
            .collect();
        report.text.extend(text.iter().cloned());
        let words = || if text.is_empty() { "(no text)".to_owned() } else { text.join(" ") };
        let stop = response["stop_reason"].as_str().unwrap_or("").to_owned();
        report.stop_reason = Some(stop.clone());
        match stop.as_str() {
            "tool_use" => {
                messages.push(json!({"role": "assistant", "content": content}));
                let mut results = Vec::new();
                let mut proposed = None;
                for block in content.iter().filter(|b| b["type"] == "tool_use") {
                    if report.tool_calls.len() >= budget.max_tool_calls {
                        return escalate(format!(
                            "the model used its {} tool calls without proposing a plan",
                            budget.max_tool_calls
                        ));
                    }
                    let name = block["name"].as_str().unwrap_or_default();
                    let called = Instant::now();
                    let result = server.call(name, block["input"].clone()).await;
                    let millis = i64::try_from(called.elapsed().as_millis()).unwrap_or(i64::MAX);
                    tracing::info!(tool = name, failed = result.is_err(), "supervisor tool call");
                    if name == "propose_plan" {
                        let verdict = result.as_ref().map_or_else(|e| json!({"error": e}), Clone::clone);
                        report.plan = Some(json!({"input": block["input"], "verdict": verdict}).to_string());
                        match result.as_ref().map(|answer| serde_json::from_value::<DraftOutcome>(answer.clone())) {
                            Ok(Ok(draft)) if draft.accepted => proposed = Some(draft.proposal_id),
                            Ok(_) => report.refused += 1,
                            Err(_) => {}
                        }
                    }
                    let (text, is_error) = match result {
                        Ok(value) => (value.to_string(), false),
                        Err(error) => (error, true),
                    };
                    report.tool_calls.push(ToolCall::new(name, block["input"].to_string(), &text, is_error, millis));
                    results.push(json!({
                        "type": "tool_result", "tool_use_id": block["id"], "content": text, "is_error": is_error,
                    }));
                }
                if let Some(proposal_id) = proposed {
                    return Outcome::Proposed { proposal_id };
                }
                messages.push(json!({"role": "user", "content": results}));
            }
            // A long turn paused by the API: send it back as it is.
            "pause_turn" => messages.push(json!({"role": "assistant", "content": content})),
            "max_tokens" => {
                // The answer was cut: a tool call in it may be truncated,
                // so nothing of it is run. Once, ask again with room.
                if retried_max_tokens {
                    return escalate(format!("the model's answer was cut at {max_tokens} tokens twice"));
                }
                retried_max_tokens = true;
                max_tokens = max_tokens.saturating_mul(2);
            }
            "refusal" => return escalate(format!("the model declined: {}", words())),
            "model_context_window_exceeded" => {
                return escalate("the conversation outgrew the model's context window");
            }
            other => {
                return escalate(format!("the model stopped ({other}) without proposing a plan: {}", words()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
