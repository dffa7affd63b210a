//! Human in the loop, through the real `mend up`: bearer tokens and roles on
//! the API, Slack (an incoming-webhook message per proposal, signed button
//! presses) against a local server of the test's own that checks every
//! request, and the applier's guardrails against plans nobody approved.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use mend_avro::codec::Codec;
use mend_model::api::{DraftOutcome, Incident};
use mend_model::events::{Application, Decision, Envelope, Event, IncidentId, PlanStep, Proposal};
use mend_model::{Channel, IncidentStatus};
use mend_store::Warehouse;
use mend_tests::{
    Deployment, consume_until, eventually, incident_where, produce_avro, producer, register_schema, registry_url,
};
use rdkafka::message::Message;
use serde_json::{Value, json};

/// What the fake Slack received: (path, content type, JSON body).
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A local stand-in for Slack: `/webhook` (incoming webhook) and
/// `/response` (an interaction's response_url). Both answer as Slack does
/// (`ok`), after checking the request is JSON.
async fn fake_slack() -> anyhow::Result<(String, Received)> {
    async fn record(
        State((path, received)): State<(&'static str, Received)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, &'static str) {
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((path.into(), content_type, body));
        (StatusCode::OK, "ok")
    }
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route("/webhook", axum::routing::post(record).with_state(("/webhook", received.clone())))
        .route("/response", axum::routing::post(record).with_state(("/response", received.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, received))
}

fn received_on(received: &Received, path: &str) -> Vec<Value> {
    let all = received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.iter().filter(|(p, _, _)| p == path).map(|(_, _, body)| body.clone()).collect()
}

fn schema(version: u8) -> String {
    let email = if version == 1 {
        json!({"name": "email", "type": "string"})
    } else {
        json!({"name": "customer_email", "type": "string", "aliases": ["email"]})
    };
    json!({"type": "record", "name": "Order", "namespace": "shop",
           "fields": [{"name": "id", "type": "long"}, email]})
    .to_string()
}

fn order(version: u8, id: i64) -> Avro {
    let field = if version == 1 { "email" } else { "customer_email" };
    Avro::Record(vec![("id".into(), Avro::Long(id)), (field.into(), Avro::String(format!("c{id}@example.com")))])
}

/// Produces `ids` with schema `version` (registered first).
async fn produce_orders(deployment: &Deployment, version: u8, ids: std::ops::Range<i64>) -> anyhow::Result<u32> {
    let text = schema(version);
    let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let producer = producer()?;
    for order_id in ids {
        produce_avro(&producer, &deployment.topic(), &order_id.to_string(), id, &parsed, order(version, order_id))
            .await?;
    }
    Ok(id)
}

async fn rows(deployment: &Deployment, at_least: i64) -> anyhow::Result<()> {
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    eventually(&format!("{at_least} rows"), || {
        let (warehouse, table) = (warehouse.clone(), deployment.dataset.clone());
        async move { Ok((warehouse.count(&table).await.unwrap_or(0) >= at_least).then_some(())) }
    })
    .await
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value, HeaderMap)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    /// The incidents, read with `token`, as the API's typed model.
    async fn incidents(&self, token: &str) -> anyhow::Result<Vec<Incident>> {
        let (status, list, _) = self.call(reqwest::Method::GET, "/incidents", Some(token), None).await?;
        anyhow::ensure!(status == 200, "GET /incidents answered {status}: {list}");
        Ok(serde_json::from_value(list)?)
    }

    async fn slack(&self, body: &str, timestamp: i64, signature: Option<String>) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}/slack/interactions", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("x-slack-signature", signature);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// A Slack `block_actions` payload, form-encoded as Slack sends it.
fn slack_press(user: &str, action: &str, proposal: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase()},
        "actions": [{"action_id": action, "block_id": "mend_decision", "value": proposal, "type": "button"}],
        "response_url": response_url,
    });
    form_urlencoded::Serializer::new(String::new()).append_pair("payload", &payload.to_string()).finish()
}

#[tokio::test]
async fn tokens_roles_and_slack_approval() -> anyhow::Result<()> {
    let (slack, received) = fake_slack().await?;
    let secret = "slack-signing-secret";
    let mut deployment =
        Deployment::new("sqlite", "approval_timeout = \"2s\"\n[slack]\napprovers = { U_ALICE = \"alice\" }\n")?;
    deployment.env = vec![
        ("MEND_API_TOKENS".into(), "vic:viewer:viewer-token,alice:approver:approver-token".into()),
        ("MEND_SLACK_WEBHOOK_URL".into(), format!("{slack}/webhook")),
        ("MEND_SLACK_SIGNING_SECRET".into(), secret.into()),
    ];
    let up = deployment.up("up.log").await?;
    assert!(!deployment.health().await?.supervisor, "without a key, /health says no supervisor runs");
    let api = Api { base: format!("http://{}", deployment.api), http: reqwest::Client::new() };

    produce_orders(&deployment, 1, 0..3).await?;
    rows(&deployment, 3).await?;
    produce_orders(&deployment, 2, 3..5).await?;

    // The proposal reaches Slack as a Block Kit message with both buttons.
    let message = eventually("the Slack message", || {
        let received = received.clone();
        async move { Ok(received_on(&received, "/webhook").into_iter().next()) }
    })
    .await?;
    let text = message.to_string();
    assert!(text.contains(&deployment.dataset) && text.contains("field_renamed"), "{text}");
    assert!(text.contains("email → customer_email"), "the change and its evidence: {text}");
    let buttons = message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["type"] == "actions")
        .context("no actions block")?["elements"]
        .clone();
    assert_eq!(buttons[0]["action_id"], "approve");
    assert_eq!(buttons[1]["action_id"], "reject");
    let proposal = buttons[0]["value"].as_str().context("no proposal id")?.to_owned();
    assert!(received.lock().map(|r| r.iter().all(|(_, ct, _)| ct.starts_with("application/json"))).unwrap_or(false));

    // Not decided within the dataset's approval_timeout: escalated (the
    // message again), and still open.
    let reminder = eventually("the escalation", || {
        let received = received.clone();
        async move {
            Ok(received_on(&received, "/webhook")
                .into_iter()
                .find(|m| m["text"].as_str().unwrap_or("").starts_with("Still waiting")))
        }
    })
    .await?;
    assert!(reminder.to_string().contains(&proposal));

    // Tokens and roles.
    let (status, _, headers) = api.call(reqwest::Method::GET, "/incidents", None, None).await?;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer")));
    assert_eq!(api.call(reqwest::Method::GET, "/incidents", Some("nope"), None).await?.0, 401);
    // The proposal was posted before control read it back from the topic.
    eventually("the proposal in the API", || {
        let (api, proposal) = (&api, proposal.clone());
        async move {
            let incidents = api.incidents("viewer-token").await?;
            Ok(incidents.iter().any(|i| i.proposal_id.as_ref() == Some(&proposal)).then_some(()))
        }
    })
    .await?;
    let (status, shown, _) =
        api.call(reqwest::Method::GET, &format!("/proposals/{proposal}"), Some("viewer-token"), None).await?;
    assert_eq!(status, 200);
    let shown: Proposal = serde_json::from_value(shown)?;
    assert!(!shown.steps.is_empty(), "{shown:?}");
    let approve = format!("/proposals/{proposal}/approve");
    let body = Some(json!({"by": "vic"}));
    assert_eq!(api.call(reqwest::Method::POST, &approve, Some("viewer-token"), body.clone()).await?.0, 403);
    assert_eq!(api.call(reqwest::Method::POST, &approve, None, body.clone()).await?.0, 401);
    let unknown = "/proposals/00000000-0000-0000-0000-000000000000/approve";
    assert_eq!(api.call(reqwest::Method::POST, unknown, Some("approver-token"), body.clone()).await?.0, 404);
    assert_eq!(api.call(reqwest::Method::GET, "/health", None, None).await?.0, 200, "health stays open for probes");
    // The CLI sends its token (MEND_API_TOKEN): a viewer is refused, and says so.
    let refused = deployment
        .command(&["approve", &proposal, "--by", "vic"])?
        .env("MEND_API_TOKEN", "viewer-token")
        .output()
        .await?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("403") && said.contains("approver"), "{said}");

    // Slack: unsigned, forged, stale and unmapped presses are refused.
    let now = mend_model::events::now_millis() / 1000;
    let press = slack_press("U_ALICE", "approve", &proposal, &format!("{slack}/response"));
    assert_eq!(api.slack(&press, now, None).await?.0, 401);
    let forged = mend_integrations::slack::sign("wrong-secret", now, press.as_bytes());
    assert_eq!(api.slack(&press, now, Some(forged)).await?.0, 401);
    let stale = now - 400;
    assert_eq!(
        api.slack(&press, stale, Some(mend_integrations::slack::sign(secret, stale, press.as_bytes()))).await?.0,
        401
    );
    let eve = slack_press("U_EVE", "approve", &proposal, &format!("{slack}/response"));
    assert_eq!(api.slack(&eve, now, Some(mend_integrations::slack::sign(secret, now, eve.as_bytes()))).await?.0, 403);
    // A body changed after signing.
    let signed = mend_integrations::slack::sign(secret, now, press.as_bytes());
    assert_eq!(api.slack(&eve, now, Some(signed.clone())).await?.0, 401);

    // Alice presses Approve.
    let (status, answer) = api.slack(&press, now, Some(signed)).await?;
    assert_eq!(status, 200, "{answer}");
    // Approving a decided proposal again applies nothing.
    let (status, again, _) = api.call(reqwest::Method::POST, &approve, Some("approver-token"), body).await?;
    assert_eq!(status, 409, "{again}");

    rows(&deployment, 5).await?;
    let updated = eventually("the Slack message to be updated", || {
        let received = received.clone();
        async move { Ok(received_on(&received, "/response").into_iter().find(|m| m["replace_original"] == true)) }
    })
    .await?;
    assert!(updated["text"].as_str().unwrap_or("").contains("Approved by alice"), "{updated}");
    let healed = eventually("the incident to heal", || {
        let api = &api;
        let proposal = proposal.clone();
        async move {
            let incidents = api.incidents("viewer-token").await?;
            Ok(incidents
                .into_iter()
                .find(|i| i.proposal_id.as_ref() == Some(&proposal) && i.status == IncidentStatus::Healed))
        }
    })
    .await?;
    let decision = healed.decision.as_ref().context("healed without a decision")?;
    assert_eq!((decision.by.as_str(), decision.channel), ("alice", Channel::Slack));
    // `mend replay` re-runs the incident's replay by hand: idempotent.
    let incident = &healed.id;
    let replayed = deployment.command(&["replay", "--incident", incident])?.output().await?;
    let said = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{said}{}", String::from_utf8_lossy(&replayed.stderr));
    assert!(said.contains("replayed 2, loaded 2, still quarantined 0"), "{said}");
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    assert_eq!(warehouse.count(&deployment.dataset).await?, 5, "a replay twice changes nothing");

    // The audit log: one decision, by alice through Slack, naming the plan's hash.
    let codec = Codec::new(&registry_url())?;
    let decisions =
        consume_until(Decision::TOPIC, |m| m.key() == Some(deployment.dataset.as_bytes()), |seen| !seen.is_empty())
            .await?;
    let decision: Decision = codec.decode_event(decisions[0].payload().unwrap_or_default()).await?;
    assert_eq!((decision.by.as_str(), decision.channel.as_str()), ("alice", "slack"));
    assert_eq!(decision.proposal_id, proposal);
    assert_eq!(decision.plan_hash, Proposal::hash_steps(&decision.steps));
    drop(up);
    Ok(())
}

/// Decisions nobody approved through mend (published straight to the
/// topic) with a tampered plan or disallowed SQL are refused by the applier
/// and recorded; the table is untouched.
#[tokio::test]
async fn the_applier_refuses_tampered_and_disallowed_plans() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let up = deployment.up("up.log").await?;
    let schema_id = produce_orders(&deployment, 1, 0..2).await?;
    rows(&deployment, 2).await?;
    let codec = Codec::new(&registry_url())?;
    let producer = producer()?;
    let table = format!("\"{}\"", deployment.dataset);
    let cases = [
        ("tampered", vec![format!("ALTER TABLE {table} ADD COLUMN note TEXT")], true),
        ("drop", vec![format!("DROP TABLE {table}")], false),
        ("two statements", vec![format!("ALTER TABLE {table} ADD COLUMN a TEXT; DROP TABLE {table}")], false),
        ("another table", vec!["ALTER TABLE mend_contracts ADD COLUMN x TEXT".to_owned()], false),
        ("narrowing", vec![format!("ALTER TABLE {table} ALTER COLUMN id TYPE INTEGER")], false),
    ];
    let mut expected = Vec::new();
    for (name, statements, tamper) in cases {
        let steps: Vec<PlanStep> = statements
            .into_iter()
            .map(|sql| PlanStep {
                kind: mend_model::StepKind::Ddl,
                description: name.into(),
                sql: Some(sql),
                field: None,
                column: None,
                patch: None,
                cost: None,
            })
            .collect();
        let mut decision = Decision {
            envelope: Envelope::new("attacker", &deployment.dataset, IncidentId::for_drift(&deployment.dataset, 999)),
            proposal_id: uuid::Uuid::now_v7().to_string(),
            plan_hash: Proposal::hash_steps(&steps),
            writer_schema_id: Some(i32::try_from(schema_id)?),
            steps,
            outcome: mend_model::Verdict::Approved,
            by: "mallory".into(),
            channel: mend_model::Channel::Api,
            reason: None,
        };
        if tamper {
            decision.plan_hash = Proposal::hash_steps(&[]);
        }
        decision.seal();
        let payload = codec.encode_event(&decision).await?;
        mend_tests::produce(&producer, Decision::TOPIC, deployment.dataset.as_bytes(), &payload).await?;
        expected.push((decision.proposal_id.clone(), name));
    }
    let applications = consume_until(
        Application::TOPIC,
        |m| m.key() == Some(deployment.dataset.as_bytes()),
        |seen| seen.len() >= expected.len(),
    )
    .await?;
    for message in applications {
        let application: Application = codec.decode_event(message.payload().unwrap_or_default()).await?;
        let (_, name) =
            expected.iter().find(|(p, _)| *p == application.proposal_id).context("unexpected application")?;
        assert_ne!(application.outcome.as_str(), "applied", "{name}: {application:?}");
        assert_eq!(application.statements, 0, "{name}");
        let error = application.error.clone().unwrap_or_default();
        match *name {
            "tampered" => assert!(error.contains("approved hash"), "{error}"),
            _ => assert_eq!(application.outcome.as_str(), "refused", "{name}: {error}"),
        }
    }
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    assert_eq!(warehouse.count(&deployment.dataset).await?, 2, "the table is untouched");
    let columns: Vec<String> = warehouse.columns(&deployment.dataset).await?.into_iter().map(|c| c.name).collect();
    assert_eq!(columns, ["id", "email"]);
    drop(up);
    Ok(())
}

/// A local stand-in for GitHub's REST API holding one repository in memory:
/// refs, files per branch, pull requests. It checks the headers GitHub
/// requires on every request and answers with GitHub's statuses.
#[derive(Default)]
struct FakeRepo {
    refs: std::collections::BTreeMap<String, String>,
    /// (branch, path) → content.
    files: std::collections::BTreeMap<(String, String), String>,
    pulls: Vec<Value>,
    refused: Vec<String>,
}

type Repo = Arc<Mutex<FakeRepo>>;

async fn fake_github(schema_yml: &str) -> anyhow::Result<(String, Repo)> {
    use axum::extract::{Path, Query};
    use axum::routing::get;
    use base64::Engine as _;
    let repo: Repo = Arc::default();
    {
        let mut state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.refs.insert("main".into(), "sha-main".into());
        state.files.insert(("main".into(), "dbt/models/schema.yml".into()), schema_yml.to_owned());
    }
    fn checked(repo: &Repo, headers: &HeaderMap, what: &str) -> Option<(StatusCode, Json<Value>)> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let problem = if header("authorization") != "Bearer gh-token" {
            Some((StatusCode::UNAUTHORIZED, "Bad credentials"))
        } else if header("x-github-api-version") != "2022-11-28" || header("accept") != "application/vnd.github+json" {
            Some((StatusCode::BAD_REQUEST, "missing API version or media type"))
        } else if header("user-agent").is_empty() {
            Some((StatusCode::FORBIDDEN, "a User-Agent is required"))
        } else {
            None
        };
        problem.map(|(status, message)| {
            repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner).refused.push(format!("{what}: {message}"));
            (status, Json(json!({"message": message})))
        })
    }
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    let app = axum::Router::new()
        .route(
            "/repos/acme/analytics/git/ref/heads/{*branch}",
            get(|State(repo): State<Repo>, headers: HeaderMap, Path(branch): Path<String>| async move {
                if let Some(refused) = checked(&repo, &headers, "get ref") {
                    return refused;
                }
                let state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match state.refs.get(&branch) {
                    Some(sha) => (StatusCode::OK, Json(json!({"ref": format!("refs/heads/{branch}"), "object": {"sha": sha}}))),
                    None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
                }
            }),
        )
        .route(
            "/repos/acme/analytics/git/refs",
            axum::routing::post(|State(repo): State<Repo>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if let Some(refused) = checked(&repo, &headers, "create ref") {
                    return refused;
                }
                let mut state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let name = body["ref"].as_str().unwrap_or_default().trim_start_matches("refs/heads/").to_owned();
                if state.refs.contains_key(&name) {
                    return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "Reference already exists"})));
                }
                let from = state.refs.iter().find(|(_, sha)| body["sha"] == json!(sha)).map(|(b, _)| b.clone());
                let Some(from) = from else { return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "Object does not exist"}))) };
                let files: Vec<_> = state.files.iter().filter(|((b, _), _)| *b == from).map(|((_, p), c)| (p.clone(), c.clone())).collect();
                for (path, content) in files {
                    state.files.insert((name.clone(), path), content);
                }
                state.refs.insert(name.clone(), format!("sha-{name}"));
                (StatusCode::CREATED, Json(json!({"ref": body["ref"]})))
            }),
        )
        .route(
            "/repos/acme/analytics/contents/{*path}",
            get(|State(repo): State<Repo>, headers: HeaderMap, Path(path): Path<String>, Query(query): Query<std::collections::HashMap<String, String>>| async move {
                if let Some(refused) = checked(&repo, &headers, "get contents") {
                    return refused;
                }
                let state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let branch = query.get("ref").cloned().unwrap_or_else(|| "main".into());
                match state.files.get(&(branch, path)) {
                    Some(content) => (StatusCode::OK, Json(json!({"encoding": "base64", "content": B64.encode(content), "sha": format!("blob-{}", content.len())}))),
                    None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
                }
            })
            .put(|State(repo): State<Repo>, headers: HeaderMap, Path(path): Path<String>, Json(body): Json<Value>| async move {
                if let Some(refused) = checked(&repo, &headers, "put contents") {
                    return refused;
                }
                let mut state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let branch = body["branch"].as_str().unwrap_or("main").to_owned();
                let Some(current) = state.files.get(&(branch.clone(), path.clone())) else {
                    return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})));
                };
                if body["sha"] != json!(format!("blob-{}", current.len())) || body["message"].as_str().is_none() {
                    return (StatusCode::CONFLICT, Json(json!({"message": "sha does not match"})));
                }
                let Some(content) = body["content"].as_str().and_then(|c| B64.decode(c).ok()).and_then(|c| String::from_utf8(c).ok()) else {
                    return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "content is not base64"})));
                };
                state.files.insert((branch, path), content);
                (StatusCode::OK, Json(json!({"commit": {"sha": "sha-commit"}})))
            }),
        )
        .route(
            "/repos/acme/analytics/pulls",
            axum::routing::post(|State(repo): State<Repo>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if let Some(refused) = checked(&repo, &headers, "pulls") {
                    return refused;
                }
                let mut state = repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if state.pulls.iter().any(|p| p["head"] == body["head"]) {
                    return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": "A pull request already exists"})));
                }
                let number = state.pulls.len() + 1;
                let mut pull = body.clone();
                pull["number"] = json!(number);
                pull["html_url"] = json!(format!("https://github.com/acme/analytics/pull/{number}"));
                state.pulls.push(pull.clone());
                (StatusCode::CREATED, Json(pull))
            }),
        )
        .with_state(repo.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, repo))
}

#[tokio::test]
async fn a_merged_pull_request_approves_its_plan() -> anyhow::Result<()> {
    let dbt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbt");
    let schema_yml = std::fs::read_to_string(dbt.join("models/schema.yml"))?;
    let (github, repo) = fake_github(&schema_yml).await?;
    let extra = format!(
        "dbt = {{ project = \"{}\", schema = \"models/schema.yml\", model = \"orders\" }}\n\
         github = {{ repo = \"acme/analytics\", directory = \"dbt\" }}\n",
        dbt.display()
    );
    let mut deployment = Deployment::new("postgres", &extra)?;
    deployment.env = vec![
        ("MEND_GITHUB_TOKEN".into(), "gh-token".into()),
        ("MEND_GITHUB_API_URL".into(), github),
        ("MEND_GITHUB_WEBHOOK_SECRET".into(), "hook-secret".into()),
    ];
    let up = deployment.up("up.log").await?;
    produce_orders(&deployment, 1, 0..3).await?;
    rows(&deployment, 3).await?;
    produce_orders(&deployment, 2, 3..5).await?;

    let pull = eventually("the pull request", || {
        let repo = repo.clone();
        async move { Ok(repo.lock().ok().and_then(|r| r.pulls.first().cloned())) }
    })
    .await?;
    let (branch, proposal) = {
        let state = repo.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert!(state.refused.is_empty(), "requests GitHub would refuse: {:?}", state.refused);
        let branch = pull["head"].as_str().context("no head")?.to_owned();
        let proposal = branch.strip_prefix("mend/").context("not a mend branch")?.to_owned();
        assert_eq!(pull["base"], "main");
        let body = pull["body"].as_str().unwrap_or_default();
        assert!(body.contains("field_renamed") && body.contains("alias") && body.contains(&proposal), "{body}");
        let patched =
            state.files.get(&(branch.clone(), "dbt/models/schema.yml".into())).context("no file on the branch")?;
        assert!(patched.contains("meta: {mend_source_field: customer_email, mend_renamed_from: email}"), "{patched}");
        assert_eq!(
            state.files.get(&("main".into(), "dbt/models/schema.yml".into())),
            Some(&schema_yml),
            "main untouched"
        );
        (branch, proposal)
    };

    // The merge webhook (once mend lists the proposal, as a reviewer would
    // see it): refused without the right signature, then approving.
    eventually("the proposal in the API", || {
        let (api, proposal) = (format!("http://{}/proposals/{proposal}", deployment.api), proposal.clone());
        async move { Ok(reqwest::get(&api).await?.status().is_success().then_some(proposal)) }
    })
    .await?;
    let event = json!({
        "action": "closed", "number": 1,
        "pull_request": {"number": 1, "merged": true, "head": {"ref": branch}, "merged_by": {"login": "octocat"}},
        "sender": {"login": "octocat"},
    })
    .to_string();
    let hook = |signature: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/github/webhook", deployment.api))
            .header("x-github-event", "pull_request")
            .header("content-type", "application/json")
            .body(event.clone());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    assert_eq!(hook(None).await?.status().as_u16(), 401);
    assert_eq!(hook(Some(mend_integrations::github::sign("wrong", event.as_bytes()))).await?.status().as_u16(), 401);
    let merged = hook(Some(mend_integrations::github::sign("hook-secret", event.as_bytes()))).await?;
    assert_eq!(merged.status().as_u16(), 200, "{}", merged.text().await?);
    rows(&deployment, 5).await?;
    let healed = incident_where(&deployment.api, "the incident to heal", |i| {
        i.proposal_id.as_ref() == Some(&proposal) && i.status == IncidentStatus::Healed
    })
    .await?;
    let decision = healed.decision.as_ref().context("healed without a decision")?;
    assert_eq!((decision.by.as_str(), decision.channel), ("github:octocat", Channel::Github));
    drop(up);
    Ok(())
}

/// The dataset's incident once it is in `status` (through the API).
async fn incident_in(api: &str, dataset: &str, status: IncidentStatus) -> anyhow::Result<Incident> {
    incident_where(api, &format!("an incident of {dataset} {status}"), |i| i.dataset == dataset && i.status == status)
        .await
}

#[tokio::test]
async fn a_replay_that_loads_nothing_leaves_the_incident_held_not_healed() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let up = deployment.up("up.log").await?;
    produce_orders(&deployment, 1, 0..2).await?;
    rows(&deployment, 2).await?;
    // id becomes a string: the table cannot hold it, the incident blocks.
    let text = json!({"type": "record", "name": "Order", "namespace": "shop",
        "fields": [{"name": "id", "type": "string"}, {"name": "email", "type": "string"}]})
    .to_string();
    let writer = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
    let (parsed, producer) = (Schema::parse_str(&text)?, producer()?);
    for id in ["a1", "a2"] {
        let record =
            Avro::Record(vec![("id".into(), Avro::String(id.into())), ("email".into(), Avro::String("x".into()))]);
        produce_avro(&producer, &deployment.topic(), id, writer, &parsed, record).await?;
    }
    let api = format!("http://{}", deployment.api);
    let incident = incident_in(&deployment.api, &deployment.dataset, IncidentStatus::Blocked).await?;
    let id = incident.id;
    // A plan that applies but cannot make the records load.
    let table = format!("\"{}\"", deployment.dataset);
    let draft: DraftOutcome = reqwest::Client::new()
        .post(format!("{api}/incidents/{id}/proposals"))
        .json(&json!({"by": "tester", "rationale": "a note column; the ids stay strings", "steps": [
            {"kind": "ddl", "description": "a note", "sql": format!("ALTER TABLE {table} ADD COLUMN note TEXT")},
            {"kind": "replay", "description": "replay"}]}))
        .send()
        .await?
        .json()
        .await?;
    assert!(draft.accepted, "{draft:?}");
    let approved = reqwest::Client::new()
        .post(format!("{api}/proposals/{}/approve", draft.proposal_id))
        .json(&json!({"by": "tester"}))
        .send()
        .await?;
    assert!(approved.status().is_success(), "{}", approved.text().await?);
    let held = eventually("the incident to be held", || {
        let (api, id) = (deployment.api.clone(), id.clone());
        async move { Ok(Some(mend_tests::incident(&api, &id).await?).filter(|i| i.application.is_some())) }
    })
    .await?;
    assert_eq!(held.status, IncidentStatus::Held, "applied, but nothing loaded: {held:?}");
    let application = held.application.as_ref().context("no application")?;
    assert_eq!((application.loaded, application.still_quarantined), (0, 2));
    let reasons: Vec<&str> = application.held.iter().map(|h| h.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{application:?}");
    // The draft moved the contract to the string ids the bigint column refuses.
    assert!(reasons.iter().all(|r| r.contains("bigint")), "each says why: {reasons:?}");
    assert!(held.healed_at.is_none() && held.time_to_heal_seconds.is_none(), "{held:?}");
    drop(up);
    Ok(())
}

#[tokio::test]
async fn a_long_promoted_to_double_keeps_two_to_the_53_plus_one_exact() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let up = deployment.up("up.log").await?;
    let schema = |qty: &str| {
        json!({"type": "record", "name": "Order", "namespace": "shop",
            "fields": [{"name": "id", "type": "long"}, {"name": "qty", "type": qty}]})
        .to_string()
    };
    let producer = producer()?;
    let big = (1i64 << 53) + 1;
    let v1 = register_schema(&format!("{}-value", deployment.topic()), &schema("long")).await?;
    let parsed = Schema::parse_str(&schema("long"))?;
    for (id, qty) in [(0, big), (1, -big)] {
        let record = Avro::Record(vec![("id".into(), Avro::Long(id)), ("qty".into(), Avro::Long(qty))]);
        produce_avro(&producer, &deployment.topic(), &id.to_string(), v1, &parsed, record).await?;
    }
    rows(&deployment, 2).await?;
    // Avro lets a reader promote long to double: the planner widens the
    // bigint column to NUMERIC, not to double precision, which rounds.
    let v2 = register_schema(&format!("{}-value", deployment.topic()), &schema("double")).await?;
    let parsed = Schema::parse_str(&schema("double"))?;
    let record = Avro::Record(vec![("id".into(), Avro::Long(2)), ("qty".into(), Avro::Double(0.1))]);
    produce_avro(&producer, &deployment.topic(), "2", v2, &parsed, record).await?;
    let api = format!("http://{}", deployment.api);
    let incident = incident_in(&deployment.api, &deployment.dataset, IncidentStatus::AwaitingApproval).await?;
    let sql: Vec<&str> = incident.steps.iter().filter_map(|s| s.sql.as_deref()).collect();
    assert_eq!(
        sql,
        [format!(r#"ALTER TABLE "{}" ALTER COLUMN "qty" TYPE NUMERIC"#, deployment.dataset)],
        "{incident:?}"
    );
    let proposal = incident.proposal_id.as_deref().context("no proposal")?;
    let approved = reqwest::Client::new()
        .post(format!("{api}/proposals/{proposal}/approve"))
        .json(&json!({"by": "tester"}))
        .send()
        .await?;
    assert!(approved.status().is_success(), "{}", approved.text().await?);
    rows(&deployment, 3).await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let mut values = warehouse.rows_as_text(&deployment.dataset, &["id", "qty"]).await?;
    values.sort();
    let qty: Vec<Option<&str>> = values.iter().map(|r| r[1].as_deref()).collect();
    assert_eq!(qty, [Some("9007199254740993"), Some("-9007199254740993"), Some("0.1")], "exact: {values:?}");
    drop(up);
    Ok(())
}
