//! The supervisor against a local Anthropic-compatible server of the test's
//! own, which checks every request (key and version headers, model, the
//! tools array equal to the MCP server's tools, a `tool_result` first in the
//! next user message for every `tool_use` id) and answers from a script per
//! dataset. Each dataset's `amount` changes from double to string, which the
//! rules block; the script decides what the model does about it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_model::api::Incident;
use mend_model::events::{AgentRun, Event, Proposal};
use mend_model::{AgentOutcome, ApplicationOutcome, DetectionSource, IncidentStatus, StepKind};
use mend_store::Warehouse;
use mend_tests::anthropic::{self, Fake, answer};
use mend_tests::{Deployment, eventually, incidents, produce_avro, producer, register_schema, unique};
use serde_json::{Value, json};

const PER_VERSION: i64 = 10;

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
        // A long turn the API paused: the supervisor sends it back as it is.
        ("fix", 0) => answer("pause_turn", vec![json!({"type": "text", "text": "Looking at the table first."})]),
        ("fix", 1) => tool("describe_table", json!({"dataset": dataset})),
        ("fix", 2) => tool("sample_records", json!({"dataset": dataset, "limit": 5})),
        ("fix", 3) => tool(
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
        ("hostile", 3) => draft(&format!(r#"CREATE TABLE "{table}__inh" (id bigint) INHERITS ("mend_offsets")"#)),
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
        ("dbt", 0) => tool("get_incident", json!({"incident_id": incident})),
        ("dbt", 1) => tool(
            "propose_plan",
            json!({
            "incident_id": incident,
            "rationale": "the model still selects email; the upstream renamed it customer_email",
            "steps": [{"kind": "dbt_patch", "description": "select customer_email as email", "patch": DBT_PATCH}]}),
        ),
        _ => answer("end_turn", vec![]),
    }
}

const DBT_PATCH: &str = "--- a/models/orders_summary.sql\n+++ b/models/orders_summary.sql\n@@ -1 +1 @@\n-select id, email from orders\n+select id, customer_email as email from orders\n";

async fn incident_of(api: &str, dataset: &str) -> anyhow::Result<Option<Incident>> {
    Ok(incidents(api).await?.into_iter().find(|i| i.dataset == dataset))
}

/// How many of `incident`'s drafts passed the guardrails.
fn accepted(incident: &Incident) -> usize {
    incident.drafts.iter().filter(|d| d.accepted).count()
}

/// A deployment with one dataset per name (`[supervisor]` budgets first) and a
/// fake Anthropic server playing `kinds` (one per name).
async fn setup(names: &[String], kinds: &[&str]) -> anyhow::Result<(Deployment, Arc<Fake>)> {
    let mut extra = String::from("[supervisor]\nmax_tool_calls = 4\nmax_tokens = 512\ndeadline = \"60s\"\n");
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
    let fake = anthropic::fake(names, kinds, script);
    let base = anthropic::serve(fake.clone()).await?;
    deployment.env = vec![
        ("MEND_ANTHROPIC_API_KEY".into(), "test-key".into()),
        ("MEND_ANTHROPIC_BASE_URL".into(), base),
        ("MEND_ANTHROPIC_MODEL".into(), "claude-test".into()),
    ];
    Ok((deployment, fake))
}

/// Each dataset's story: `PER_VERSION` orders with `amount` a double, then
/// as many with `amount` a string (blocked by the rules).
async fn produce_story(names: &[String]) -> anyhow::Result<()> {
    produce_versions(names, &[1, 2]).await
}

async fn produce_versions(names: &[String], versions: &[u8]) -> anyhow::Result<()> {
    let producer = producer()?;
    for name in names {
        let (topic, subject) = (format!("{name}.orders"), format!("{name}.orders-value"));
        for &version in versions {
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
    Ok(())
}

/// Polls mend up's log until a line has every one of `words`.
async fn logged(log: &std::path::Path, what: &str, words: &[&str]) -> anyhow::Result<String> {
    eventually(what, || {
        let (log, words): (std::path::PathBuf, Vec<String>) =
            (log.to_owned(), words.iter().map(|w| (*w).to_owned()).collect());
        async move {
            let text = std::fs::read_to_string(&log)?;
            Ok(text.lines().find(|l| words.iter().all(|w| l.contains(w.as_str()))).map(str::to_owned))
        }
    })
    .await
}

/// The supervisor's events on `mend.agent_runs` for `names`, once there are `count`.
async fn agent_runs(names: &[String], count: usize) -> anyhow::Result<Vec<AgentRun>> {
    let codec = mend_avro::Codec::new(&mend_tests::registry_url())?;
    eventually("the supervisor run events", || {
        let (codec, names) = (codec.clone(), names.to_vec());
        async move {
            let mut runs = Vec::new();
            for message in
                mend_runtime::kafka::read_to_end(&mend_tests::brokers(), mend_model::topics::AGENT_RUNS).await?
            {
                use rdkafka::message::Message;
                let run: AgentRun = codec.decode_event(message.payload().unwrap_or_default()).await?;
                if names.contains(&run.envelope.dataset) {
                    anyhow::ensure!(run.verify_hash(), "{run:?}");
                    runs.push(run);
                }
            }
            Ok((runs.len() >= count).then_some(runs))
        }
    })
    .await
}

#[tokio::test]
async fn the_supervisor_drafts_fixes_and_gives_up_with_reasons() -> anyhow::Result<()> {
    let kinds = ["fix", "hostile", "refusal", "cut", "busy", "unknown", "budget"];
    let prefix = unique("agent").replace('-', "_");
    let names: Vec<String> = kinds.iter().map(|k| format!("{prefix}_{k}")).collect();
    let (deployment, fake) = setup(&names, &kinds).await?;
    let up = deployment.up("up.log").await?;
    assert!(deployment.health().await?.supervisor, "with a key, /health says the supervisor runs");
    produce_story(&names).await?;
    let log = deployment.dir.join("up.log");
    let api = deployment.api.clone();

    // 1. The fix: the draft waits for a person; approved, it heals the table.
    let fix = &names[0];
    let waiting = eventually("the supervisor's draft to wait for approval", || {
        let (api, fix) = (api.clone(), fix.clone());
        async move { Ok(incident_of(&api, &fix).await?.filter(|i| accepted(i) > 0)) }
    })
    .await?;
    assert_eq!(waiting.status, IncidentStatus::AwaitingApproval, "{waiting:?}");
    assert!(waiting.decision.is_none(), "a drafted plan is never applied on its own");
    let draft = waiting.proposal_id.clone().unwrap_or_default();
    assert_eq!(waiting.drafts[0].by.as_deref(), Some("supervisor"), "{waiting:?}");
    assert!(waiting.drafts[0].refused.is_empty(), "{waiting:?}");
    let approved = reqwest::Client::new()
        .post(format!("http://{api}/proposals/{draft}/approve"))
        .json(&json!({"by": "tester", "reason": "amount_text is right"}))
        .send()
        .await?;
    assert!(approved.status().is_success(), "{}", approved.text().await?);
    eventually("the fix healed", || {
        let (api, fix) = (api.clone(), fix.clone());
        async move { Ok(incident_of(&api, &fix).await?.filter(|i| i.status == IncidentStatus::Healed)) }
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
        let line = logged(&log, &format!("the {kind} run to give up"), &["supervisor gave up", &incident.id]).await?;
        assert!(line.contains(reason), "{kind}: {line}");
        let incident = incident_of(&api, name).await?.unwrap_or_default();
        assert_eq!(incident.status, IncidentStatus::Blocked, "{kind}: {incident:?}");
        assert_eq!(accepted(&incident), 0, "{kind}: {incident:?}");
    }
    // The hostile drafts were each refused and recorded; the table is whole.
    let hostile = incident_of(&api, &names[1]).await?.unwrap_or_default();
    assert_eq!(hostile.drafts.len(), 4, "{hostile:?}");
    assert!(hostile.drafts.iter().all(|d| !d.accepted && !d.refused.is_empty()), "{hostile:?}");
    assert_eq!(warehouse.count(&names[1]).await?, PER_VERSION);
    // A refused draft can be neither approved nor rejected: rejecting it
    // once blocked the whole incident.
    let refused_draft = hostile.drafts[0].proposal_id.clone();
    for verb in ["reject", "approve"] {
        let answer = reqwest::Client::new()
            .post(format!("http://{api}/proposals/{refused_draft}/{verb}"))
            .json(&json!({"by": "tester"}))
            .send()
            .await?;
        let status = answer.status();
        let text = answer.text().await?;
        assert_eq!(status, reqwest::StatusCode::CONFLICT, "{verb}: {text}");
        assert!(text.contains("guardrails refused"), "{verb}: {text}");
    }
    let hostile = incident_of(&api, &names[1]).await?.unwrap_or_default();
    assert!(hostile.decision.is_none(), "{hostile:?}");
    // `cut` never ran its truncated tool call, and asked once more with room.
    {
        let seen = fake.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cut: Vec<u64> = seen.requests[&names[3]].iter().filter_map(|r| r["max_tokens"].as_u64()).collect();
        assert_eq!(cut, [512, 1024]);
        assert_eq!(seen.requests[&names[4]].len(), 3, "busy: three attempts, then escalated");
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    }

    // 3. Every run is an event on mend.agent_runs: the reviewer's record.
    let runs: BTreeMap<String, AgentRun> =
        agent_runs(&names, names.len()).await?.into_iter().map(|r| (r.envelope.dataset.clone(), r)).collect();
    let outcome = |name: &str| runs.get(name).map(|r| r.outcome.as_str());
    let fix_run = &runs[&names[0]];
    assert_eq!(fix_run.outcome.as_str(), "proposed");
    assert_eq!(
        fix_run.tool_calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["describe_table", "sample_records", "propose_plan"]
    );
    assert!(fix_run.plan.as_deref().is_some_and(|p| p.contains("amount_text")), "{fix_run:?}");
    assert_eq!(fix_run.proposal_id.as_deref(), Some(draft.as_str()));
    assert!(!fix_run.text.is_empty() && fix_run.input_tokens == 40 && fix_run.model == "claude-test");
    assert_eq!(outcome(&names[1]), Some("refused"));
    assert_eq!(runs[&names[1]].tool_calls.len(), 4);
    assert_eq!(outcome(&names[2]), Some("escalated"));
    assert_eq!(outcome(&names[3]), Some("escalated"));
    assert_eq!(outcome(&names[4]), Some("failed"));
    assert_eq!(outcome(&names[5]), Some("escalated"));
    assert!(runs[&names[5]].tool_calls[0].is_error, "an unknown tool is answered as an error");
    assert_eq!(outcome(&names[6]), Some("escalated"));
    // The incidents show the supervisor's part.
    let shown = eventually("the incidents to show the supervisor's runs", || {
        let (api, names) = (api.clone(), names.clone());
        async move {
            let agents: Vec<Incident> = incidents(&api)
                .await?
                .into_iter()
                .filter(|i| names.contains(&i.dataset) && i.supervisor.is_some())
                .collect();
            Ok((agents.len() == names.len()).then_some(agents))
        }
    })
    .await?;
    let fixed_incident = shown.iter().find(|i| i.dataset == names[0]).context("no incident")?;
    let fixed = fixed_incident.supervisor.clone();
    assert_eq!(fixed.as_ref().map(|a| a.outcome), Some(AgentOutcome::Proposed), "{fixed:?}");
    assert!(fixed.as_ref().and_then(|a| a.detection_to_proposal_seconds).is_some());
    // The console shows the run: each tool call with its input and output,
    // the model's reasoning and its tokens, as the run event has them.
    let run = &runs[&names[0]];
    let fixed = fixed.context("no run")?;
    assert_eq!(fixed.calls, run.tool_calls);
    assert_eq!((fixed.input_tokens, fixed.output_tokens), (run.input_tokens, run.output_tokens));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let signed = http
        .post(format!("http://{api}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=reviewer")
        .send()
        .await?;
    let cookie =
        signed.headers().get("set-cookie").context("no session")?.to_str()?.split(';').next().unwrap_or("").to_owned();
    let page = http
        .get(format!("http://{api}/console/incidents/{}", fixed_incident.id))
        .header("cookie", cookie)
        .send()
        .await?;
    let html = scraper::Html::parse_document(&page.text().await?);
    let select = |css: &str| scraper::Selector::parse(css).map_err(|e| anyhow::anyhow!("{e:?}"));
    let calls: Vec<String> =
        html.select(&select("section.supervisor ol.calls > li > code")?).map(|e| e.text().collect()).collect();
    let names_called: Vec<String> = run.tool_calls.iter().map(|c| c.name.clone()).collect();
    assert_eq!(calls, names_called);
    assert_eq!(html.select(&select("section.supervisor blockquote.reasoning")?).count(), run.text.len());
    drop(up);
    Ok(())
}

/// A crash after the supervisor's run was delivered but before its offset
/// was stored re-delivers the proposal: the restarted supervisor finds its
/// draft on the incident and does not run again. One proposal, one run.
#[tokio::test]
async fn the_supervisor_proposes_once_across_a_crash() -> anyhow::Result<()> {
    let names = vec![unique("agentcrash").replace('-', "_")];
    let (mut deployment, _fake) = setup(&names, &["fix"]).await?;
    let env = deployment.env.clone();
    deployment.env.push(("MEND_FAULT".into(), "runner.after_deliver.supervisor".into()));
    let mut up = deployment.up("up.log").await?;
    produce_story(&names).await?;
    let status = tokio::time::timeout(mend_tests::WAIT, up.wait()).await??;
    assert!(!status.success(), "mend up aborted at the fault point");
    deployment.env = env;
    let _up = deployment.up("up-after.log").await?;
    logged(&deployment.dir.join("up-after.log"), "the restarted supervisor to skip", &["not run again"]).await?;
    let incident = incident_of(&deployment.api, &names[0]).await?.unwrap_or_default();
    assert_eq!(accepted(&incident), 1, "{incident:?}");
    assert_eq!(agent_runs(&names, 1).await?.len(), 1, "one run");
    Ok(())
}

/// A dbt model failing on a column a rename moved, reported by
/// openlineage-python's HttpTransport: an incident with the error as its
/// evidence, which the rules cannot plan; the model drafts a patch of the
/// dbt model, and the proposal carries it. The same failure again joins it.
#[tokio::test]
async fn a_pipeline_failure_from_openlineage_gets_a_drafted_dbt_patch() -> anyhow::Result<()> {
    let names = vec![unique("lineage").replace('-', "_")];
    let (deployment, _fake) = setup(&names, &["dbt"]).await?;
    let _up = deployment.up("up.log").await?;
    produce_versions(&names, &[1]).await?;
    let warehouse = Warehouse::connect(&mend_tests::postgres_url()).await?;
    eventually("the table", || {
        let (warehouse, name) = (warehouse.clone(), names[0].clone());
        async move { Ok(warehouse.count(&name).await.ok().filter(|n| *n == PER_VERSION)) }
    })
    .await?;
    let python = std::env::var("MEND_PYTHON").unwrap_or_else(|_| "../.mend/venv/bin/python".into());
    let post = || {
        std::process::Command::new(&python)
            .args(["python/scripts/openlineage_fail.py", &format!("http://{}", deployment.api), "", &names[0]])
            .output()
    };
    let posted = post()?;
    anyhow::ensure!(posted.status.success(), "{}", String::from_utf8_lossy(&posted.stderr));
    let api = deployment.api.clone();
    let incident = eventually("the supervisor's dbt patch to wait for approval", || {
        let (api, name) = (api.clone(), names[0].clone());
        async move { Ok(incident_of(&api, &name).await?.filter(|i| accepted(i) > 0)) }
    })
    .await?;
    assert_eq!(incident.source, Some(DetectionSource::Openlineage), "{incident:?}");
    let evidence = |key: &str| incident.evidence.get(key).cloned().unwrap_or_default();
    assert!(evidence("error_message").contains("customer_email"), "{incident:?}");
    assert_eq!(evidence("schema_facet"), "id bigint, customer_email text", "{incident:?}");
    assert_eq!(incident.status, IncidentStatus::AwaitingApproval, "{incident:?}");
    let proposal_id = incident.proposal_id.clone().unwrap_or_default();
    let proposal: Proposal = reqwest::get(format!("http://{api}/proposals/{proposal_id}")).await?.json().await?;
    assert_eq!(proposal.steps[0].kind, StepKind::DbtPatch, "{proposal:?}");
    assert_eq!(proposal.steps[0].patch.as_deref(), Some(DBT_PATCH), "{proposal:?}");

    let again = post()?;
    anyhow::ensure!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let listed = incidents(&api).await?;
    let failures = listed.iter().filter(|i| i.dataset == names[0]).count();
    assert_eq!(failures, 1, "a repeated failure joins its incident: {listed:?}");

    // Approved, the patch is recorded as applied; the contract stays.
    let approved = reqwest::Client::new()
        .post(format!("http://{api}/proposals/{proposal_id}/approve"))
        .json(&json!({"by": "tester"}))
        .send()
        .await?;
    assert!(approved.status().is_success(), "{}", approved.text().await?);
    let healed = eventually("the failure's incident healed", || {
        let (api, name) = (api.clone(), names[0].clone());
        async move { Ok(incident_of(&api, &name).await?.filter(|i| i.status == IncidentStatus::Healed)) }
    })
    .await?;
    assert_eq!(healed.application.map(|a| a.outcome), Some(ApplicationOutcome::Applied));

    // Malformed and other events.
    let http = reqwest::Client::new();
    let url = format!("http://{api}/api/v1/lineage");
    let malformed = http.post(&url).json(&json!({"eventType": "FAIL"})).send().await?;
    assert_eq!(malformed.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(malformed.text().await?.contains("job.namespace and job.name are required"));
    let start = http
        .post(&url)
        .json(&json!({"eventType": "START", "job": {"namespace": "n", "name": "j"}, "run": {"runId": "r"}}))
        .send()
        .await?;
    assert_eq!(start.status(), reqwest::StatusCode::OK);
    Ok(())
}
