//! The supervisor against a local Anthropic-compatible server of the test's
//! own, which checks every request (key and version headers, model, the
//! tools array equal to the MCP server's tools, a `tool_result` first in the
//! next user message for every `tool_use` id) and answers from a script per
//! dataset. Each dataset's `amount` changes from double to string, which the
//! rules block; the script decides what the model does about it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mend_store::Warehouse;
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema, unique};
use serde_json::{Value, json};

const PER_VERSION: i64 = 10;
const TOOLS: [&str; 10] = [
    "approve_proposal",
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

fn schema(version: u8) -> String {
    let amount = if version >= 2 { "string" } else { "double" };
    json!({"type": "record", "name": "Order", "namespace": "agent", "fields": [
        {"name": "id", "type": "long"}, {"name": "email", "type": "string"}, {"name": "amount", "type": amount}
    ]})
    .to_string()
}

/// What the scripted model says at `turn` (0-based) of a run on `dataset`
/// (`incident` is the incident's id, from the system prompt).
fn script(dataset: &str, kind: &str, turn: usize, incident: &str) -> Response {
    let table = format!("\"{dataset}\"");
    let tool = |name: &str, input: Value| {
        answer(
            "tool_use",
            vec![
                json!({"type": "text", "text": format!("turn {turn}: calling {name}")}),
                json!({"type": "tool_use", "id": format!("toolu_{turn}"), "name": name, "input": input}),
            ],
        )
    };
    let draft = |sql: &str| {
        tool(
            "propose_plan",
            json!({"incident_id": incident, "rationale": "test", "steps": [
                {"kind": "ddl", "description": "hostile", "sql": sql}, {"kind": "replay", "description": "replay"}
            ]}),
        )
    };
    match (kind, turn) {
        ("fix", 0) => tool("describe_table", json!({"dataset": dataset})),
        ("fix", 1) => tool("sample_records", json!({"dataset": dataset, "limit": 5})),
        ("fix", 2) => tool(
            "propose_plan",
            json!({
            "incident_id": incident,
            "rationale": "amount now arrives as text; keep the double column for old rows and load the text beside it",
            "steps": [
                {"kind": "ddl", "description": "a column for the text amounts", "sql": format!("ALTER TABLE {table} ADD COLUMN amount_text TEXT")},
                {"kind": "ddl", "description": "new rows leave amount empty", "sql": format!("ALTER TABLE {table} ALTER COLUMN amount DROP NOT NULL")},
                {"kind": "mapping", "description": "amount onto amount_text", "field": "amount", "column": "amount_text"},
                {"kind": "replay", "description": "replay the quarantined records"}
            ]}),
        ),
        ("hostile", 0) => draft(&format!("DROP TABLE {table}")),
        ("hostile", 1) => draft("ALTER TABLE mend_offsets ADD COLUMN x TEXT"),
        ("hostile", 2) => {
            draft(&format!("ALTER TABLE {table} ADD COLUMN a TEXT; ALTER TABLE {table} ADD COLUMN b TEXT"))
        }
        ("hostile", 3) => draft(&format!("ALTER TABLE {table} ALTER COLUMN id TYPE INTEGER")),
        ("hostile", _) => {
            answer("end_turn", vec![json!({"type": "text", "text": "I could not find a plan the guardrails accept."})])
        }
        ("refusal", _) => answer("refusal", vec![json!({"type": "text", "text": "I will not touch this table."})]),
        ("cut", _) => answer(
            "max_tokens",
            vec![
                json!({"type": "tool_use", "id": format!("toolu_{turn}"), "name": "propose_plan", "input": {"incident_id": incident}}),
            ],
        ),
        ("busy", _) => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            [("retry-after", "0")],
            Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        )
            .into_response(),
        ("unknown", 0) => tool("drop_everything", json!({})),
        ("unknown", _) => answer("end_turn", vec![json!({"type": "text", "text": "No such tool; giving up."})]),
        ("budget", _) => tool("describe_table", json!({"dataset": dataset})),
        _ => answer("end_turn", vec![]),
    }
}

fn answer(stop: &str, content: Vec<Value>) -> Response {
    Json(json!({"id": "msg", "type": "message", "role": "assistant", "model": "claude-test", "content": content,
        "stop_reason": stop, "usage": {"input_tokens": 10, "output_tokens": 5}}))
    .into_response()
}

/// What the fake server saw, per dataset: every request body.
#[derive(Default)]
struct Seen {
    requests: BTreeMap<String, Vec<Value>>,
    /// Requests that broke the API's rules, and why.
    violations: Vec<String>,
}

struct Fake {
    /// dataset → script kind
    kinds: BTreeMap<String, String>,
    seen: Mutex<Seen>,
}

async fn messages(State(fake): State<Arc<Fake>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
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
    script(dataset, kind, turn, &incident)
}

async fn incident_of(api: &str, dataset: &str) -> anyhow::Result<Option<Value>> {
    let incidents: Value = reqwest::get(format!("http://{api}/incidents")).await?.json().await?;
    Ok(incidents.as_array().and_then(|l| l.iter().find(|i| i["dataset"] == dataset).cloned()))
}

#[tokio::test]
async fn the_supervisor_drafts_fixes_and_gives_up_with_reasons() -> anyhow::Result<()> {
    let kinds = ["fix", "hostile", "refusal", "cut", "busy", "unknown", "budget"];
    let prefix = unique("agent").replace('-', "_");
    let names: Vec<String> = kinds.iter().map(|k| format!("{prefix}_{k}")).collect();
    // The first dataset is the deployment's; the others are added to its mend.toml.
    let mut extra = String::from("[agent]\nmax_tool_calls = 4\nmax_tokens = 512\ndeadline = \"60s\"\n");
    for name in &names[1..] {
        extra.push_str(&format!(
            "[[dataset]]\nname = \"{name}\"\ntopic = \"{name}.orders\"\ntable = \"{name}\"\nkey = [\"id\"]\n"
        ));
    }
    let mut deployment = Deployment::new("postgres", "")?;
    let config = deployment.dir.join("mend.toml");
    let first = std::fs::read_to_string(&config)?.replace(&deployment.dataset, &names[0]);
    std::fs::write(&config, format!("{extra}{first}"))?;
    deployment.dataset = names[0].clone();

    let fake = Arc::new(Fake {
        kinds: names.iter().cloned().zip(kinds.iter().map(|k| (*k).to_owned())).collect(),
        seen: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/messages", axum::routing::post(messages)).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    deployment.env = vec![
        ("MEND_ANTHROPIC_API_KEY".into(), "test-key".into()),
        ("MEND_ANTHROPIC_BASE_URL".into(), base),
        ("MEND_ANTHROPIC_MODEL".into(), "claude-test".into()),
    ];
    let up = deployment.up("up.log").await?;

    let producer = producer()?;
    for name in &names {
        let (topic, subject) = (format!("{name}.orders"), format!("{name}.orders-value"));
        for version in [1u8, 2] {
            let text = schema(version);
            let (id, parsed) = (register_schema(&subject, &text).await?, Schema::parse_str(&text)?);
            for n in 0..PER_VERSION {
                let key = i64::from(version) * 100 + n;
                let amount =
                    if version == 2 { Avro::String(format!("{key}.50")) } else { Avro::Double(key as f64 + 0.5) };
                let value = Avro::Record(vec![
                    ("id".into(), Avro::Long(key)),
                    ("email".into(), Avro::String(format!("c{key}@example.com"))),
                    ("amount".into(), amount),
                ]);
                produce_avro(&producer, &topic, &key.to_string(), id, &parsed, value).await?;
            }
        }
    }
    let log = deployment.dir.join("up.log");
    let api = deployment.api.clone();

    // 1. The fix: the draft waits for a person; approved, it heals the table.
    let fix = &names[0];
    let waiting = eventually("the supervisor's draft to wait for approval", || {
        let (api, fix) = (api.clone(), fix.clone());
        async move {
            Ok(incident_of(&api, &fix)
                .await?
                .filter(|i| i["drafts"].as_array().is_some_and(|d| d.iter().any(|d| d["accepted"] == true))))
        }
    })
    .await?;
    assert_eq!(waiting["status"], "awaiting_approval", "{waiting}");
    assert!(waiting["decision"].is_null(), "a drafted plan is never applied on its own");
    let draft = waiting["proposal_id"].as_str().unwrap_or_default().to_owned();
    assert!(waiting["drafts"][0]["rules"][0].as_str().unwrap_or_default().starts_with("drafted by agent"));
    let approved = reqwest::Client::new()
        .post(format!("http://{api}/proposals/{draft}/approve"))
        .json(&json!({"by": "tester", "reason": "amount_text is right"}))
        .send()
        .await?;
    assert!(approved.status().is_success(), "{}", approved.text().await?);
    eventually("the fix healed", || {
        let (api, fix) = (api.clone(), fix.clone());
        async move { Ok(incident_of(&api, &fix).await?.filter(|i| i["status"] == "healed")) }
    })
    .await?;
    let warehouse = Warehouse::connect(&mend_tests::postgres_url()).await?;
    let rows = warehouse.rows_as_text(fix, &["id", "amount", "amount_text"]).await?;
    assert_eq!(rows.len(), 2 * PER_VERSION as usize, "lost none: {rows:?}");
    for row in rows {
        let id: i64 = row[0].as_deref().unwrap_or_default().parse()?;
        if id >= 200 {
            assert_eq!(row[1], None, "{row:?}");
            assert_eq!(row[2].as_deref(), Some(format!("{id}.50").as_str()), "misplaced: {row:?}");
        } else {
            assert_eq!(row[1].as_deref().map(str::parse::<f64>).transpose()?, Some(id as f64 + 0.5), "{row:?}");
            assert_eq!(row[2], None, "{row:?}");
        }
    }

    // 2. Every other run gives up, escalated with its reason, no proposal.
    let reasons = [
        ("hostile", "could not find a plan"),
        ("refusal", "declined: I will not touch this table"),
        ("cut", "cut at 1024 tokens twice"),
        ("busy", "529"),
        ("unknown", "No such tool"),
        ("budget", "used its 4 tool calls"),
    ];
    for ((kind, reason), name) in reasons.iter().zip(&names[1..]) {
        let incident = eventually(&format!("the {kind} incident"), || {
            let (api, name) = (api.clone(), name.clone());
            async move { incident_of(&api, &name).await }
        })
        .await?;
        let id = incident["id"].as_str().unwrap_or_default().to_owned();
        eventually(&format!("the {kind} run to give up"), || {
            let (log, id) = (log.clone(), id.clone());
            async move {
                let text = std::fs::read_to_string(&log)?;
                Ok(text.lines().find(|l| l.contains("supervisor gave up") && l.contains(&id)).map(str::to_owned))
            }
        })
        .await
        .and_then(|line| {
            anyhow::ensure!(line.contains(reason), "{kind}: {line}");
            Ok(())
        })?;
        let incident = incident_of(&api, name).await?.unwrap_or_default();
        assert_eq!(incident["status"], "blocked", "{kind}: {incident}");
        let accepted = incident["drafts"].as_array().into_iter().flatten().filter(|d| d["accepted"] == true).count();
        assert_eq!(accepted, 0, "{kind}: {incident}");
    }
    // The hostile drafts were each refused and recorded; the table is whole.
    let hostile = incident_of(&api, &names[1]).await?.unwrap_or_default();
    assert_eq!(hostile["drafts"].as_array().map(Vec::len), Some(4), "{hostile}");
    assert_eq!(warehouse.count(&names[1]).await?, PER_VERSION);
    // `cut` never ran its truncated tool call, and asked once more with room.
    let seen = fake.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cut: Vec<u64> = seen.requests[&names[3]].iter().filter_map(|r| r["max_tokens"].as_u64()).collect();
    assert_eq!(cut, [512, 1024]);
    assert_eq!(seen.requests[&names[4]].len(), 3, "busy: three attempts, then escalated");
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    drop(seen);
    drop(up);
    Ok(())
}
