//! The conversation loop alone: a scripted model and fake tools, no
//! Messages API, no control API.

use std::sync::Mutex;
use std::time::Duration;

use mend_mcp::args::ProposeArgs;
use mend_model::api::{DraftOutcome, Incident};
use serde_json::{Value, json};

use super::{Budget, Model, Outcome, Tools, run};
use crate::claude::ClaudeError;

/// Answers each turn with the next response of its script, and keeps the
/// requests it was sent.
struct Script {
    answers: Mutex<Vec<Value>>,
    requests: Mutex<Vec<Value>>,
}

impl Script {
    fn new(answers: Vec<Value>) -> Self {
        Self { answers: Mutex::new(answers.into_iter().rev().collect()), requests: Mutex::new(Vec::new()) }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Model for Script {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn turn(&self, request: &Value) -> Result<Value, ClaudeError> {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request.clone());
        }
        let next = self.answers.lock().ok().and_then(|mut a| a.pop());
        next.ok_or_else(|| ClaudeError::Refused { status: 500, body: "the script is over".into() })
    }
}

/// `describe_table` answers; `propose_plan` accepts a plan whose rationale
/// is "good" and refuses the others. Every call is recorded.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Tools for Fake {
    fn list(&self) -> Vec<Value> {
        ["describe_table", "propose_plan"].map(|name| json!({"name": name, "input_schema": {"type": "object"}})).into()
    }

    async fn call(&self, name: &str, input: Value) -> Result<Value, String> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(name.to_owned());
        }
        match name {
            "describe_table" => Ok(json!({"columns": ["id", "amount"]})),
            "propose_plan" => {
                let args: ProposeArgs = serde_json::from_value(input).map_err(|e| e.to_string())?;
                let accepted = args.rationale == "good";
                let outcome = DraftOutcome {
                    accepted,
                    proposal_id: "p-1".into(),
                    incident_id: "i-1".into(),
                    refused: if accepted { Vec::new() } else { vec!["step 1: DROP TABLE is not allowed".into()] },
                };
                serde_json::to_value(outcome).map_err(|e| e.to_string())
            }
            other => Err(format!("no tool {other}")),
        }
    }
}

fn turn(stop: &str, content: Value) -> Value {
    json!({"stop_reason": stop, "content": content, "usage": {"input_tokens": 100, "output_tokens": 10}})
}

fn tool_use(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

/// `propose_plan`'s input: an empty plan with `rationale`.
fn plan(rationale: &str) -> Value {
    json!({"incident_id": "i-1", "steps": [], "rationale": rationale})
}

fn text(words: &str) -> Value {
    json!({"type": "text", "text": words})
}

fn budget() -> Budget {
    Budget { max_tool_calls: 5, max_tokens: 1000, deadline: Duration::from_secs(30) }
}

fn incident() -> Incident {
    Incident { id: "i-1".into(), dataset: "orders".into(), ..Incident::default() }
}

#[tokio::test]
async fn a_refused_plan_is_told_to_the_model_and_the_next_one_is_proposed() {
    let model = Script::new(vec![
        turn("tool_use", json!([text("Looking at the table."), tool_use("t1", "describe_table", json!({}))])),
        turn("tool_use", json!([tool_use("t2", "propose_plan", plan("bad"))])),
        turn("tool_use", json!([tool_use("t3", "propose_plan", plan("good"))])),
    ]);
    let tools = Fake::default();
    let report = run(&model, &tools, &incident(), budget()).await;
    assert_eq!(report.outcome, Outcome::Proposed { proposal_id: "p-1".into() });
    assert_eq!(tools.calls(), ["describe_table", "propose_plan", "propose_plan"]);
    assert_eq!((report.refused, report.input_tokens, report.output_tokens), (1, 300, 30));
    assert_eq!(report.text, ["Looking at the table."]);
    // The refusal went back to the model as the tool's result.
    let requests = model.requests();
    let last = requests.last().map(|r| r["messages"].to_string()).unwrap_or_default();
    assert!(last.contains("DROP TABLE is not allowed"), "{last}");
    assert_eq!(requests[0]["tools"].as_array().map(Vec::len), Some(2));
    assert_eq!(requests[0]["model"], "scripted");
}

#[tokio::test]
async fn a_cut_answer_is_never_run_and_is_asked_again_once_with_more_room() {
    let cut = turn("max_tokens", json!([tool_use("t1", "propose_plan", plan("good"))]));
    let model = Script::new(vec![cut.clone(), cut]);
    let tools = Fake::default();
    let report = run(&model, &tools, &incident(), budget()).await;
    assert_eq!(report.outcome, Outcome::Escalated { reason: "the model's answer was cut at 2000 tokens twice".into() });
    assert!(tools.calls().is_empty(), "a truncated tool call ran: {:?}", tools.calls());
    let room: Vec<Value> = model.requests().iter().map(|r| r["max_tokens"].clone()).collect();
    assert_eq!(room, [json!(1000), json!(2000)]);
}

#[tokio::test]
async fn the_run_gives_up_at_its_tool_budget_and_says_why_when_the_model_stops() {
    let describe = || turn("tool_use", json!([tool_use("t", "describe_table", json!({}))]));
    let model = Script::new((0..10).map(|_| describe()).collect());
    let tools = Fake::default();
    let spent = run(&model, &tools, &incident(), Budget { max_tool_calls: 3, ..budget() }).await;
    let reason = "the model used its 3 tool calls without proposing a plan".to_owned();
    assert_eq!(spent.outcome, Outcome::Escalated { reason });
    assert_eq!(tools.calls().len(), 3);

    let declined = Script::new(vec![turn("refusal", json!([text("I cannot help with that.")]))]);
    let report = run(&declined, &Fake::default(), &incident(), budget()).await;
    let reason = "the model declined: I cannot help with that.".to_owned();
    assert_eq!(report.outcome, Outcome::Escalated { reason });

    let done = Script::new(vec![turn("end_turn", json!([text("The producer should fix it.")]))]);
    let report = run(&done, &Fake::default(), &incident(), budget()).await;
    let reason = "the model stopped (end_turn) without proposing a plan: The producer should fix it.".to_owned();
    assert_eq!(report.outcome, Outcome::Escalated { reason });

    let gone = Script::new(Vec::new());
    let report = run(&gone, &Fake::default(), &incident(), budget()).await;
    assert!(matches!(report.outcome, Outcome::Failed { ref reason } if reason.contains("the script is over")));
}

#[tokio::test]
async fn a_paused_turn_is_sent_back_as_it_is() {
    let model = Script::new(vec![
        turn("pause_turn", json!([text("Thinking.")])),
        turn("tool_use", json!([tool_use("t1", "propose_plan", plan("good"))])),
    ]);
    let report = run(&model, &Fake::default(), &incident(), budget()).await;
    assert_eq!(report.outcome, Outcome::Proposed { proposal_id: "p-1".into() });
    let second = model.requests().get(1).map(|r| r["messages"].clone()).unwrap_or_default();
    assert_eq!(second[1], json!({"role": "assistant", "content": [text("Thinking.")]}));
}
