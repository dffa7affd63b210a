//! The supervisor's own cost: a live `mend up` (PostgreSQL) with ten
//! datasets whose `amount` changes from double to string (blocked by the
//! rules), and a replay server that answers at once (`describe_table`, then
//! `propose_plan`). Prints, per run, the supervisor's time (everything but
//! the model's latency: its tool calls, the guardrails and dry run, the
//! control API) and the time from detection to the supervisor's proposal.
//! Needs `make infra-up`; set `MEND_BIN` to a release `mend`.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use axum::response::Response;
use mend_model::AgentOutcome;
use mend_model::api::{Incident, SupervisorView};
use mend_tests::anthropic::{self, answer};
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema, unique};
use serde_json::{Value, json};

const DATASETS: usize = 10;
const RECORDS: i64 = 200;

fn script(dataset: &str, _kind: &str, turn: usize, incident: &str) -> Response {
    let tool = |name: &str, input: Value| {
        answer(
            "tool_use",
            vec![json!({"type": "tool_use", "id": format!("toolu_{turn}"), "name": name, "input": input})],
        )
    };
    match turn {
        0 => tool("describe_table", json!({"dataset": dataset})),
        _ => tool(
            "propose_plan",
            json!({"incident_id": incident, "rationale": "bench", "steps": [
            {"kind": "ddl", "description": "text amounts", "sql": format!("ALTER TABLE \"{dataset}\" ADD COLUMN amount_text TEXT")},
            {"kind": "mapping", "description": "amount onto amount_text", "field": "amount", "column": "amount_text"},
            {"kind": "replay", "description": "replay"}]}),
        ),
    }
}

fn schema(version: u8) -> String {
    let amount = if version >= 2 { "string" } else { "double" };
    json!({"type": "record", "name": "Order", "namespace": "bench", "fields": [
        {"name": "id", "type": "long"}, {"name": "amount", "type": amount}]})
    .to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prefix = unique("bagent").replace('-', "_");
    let names: Vec<String> = (0..DATASETS).map(|n| format!("{prefix}_{n}")).collect();
    let kinds = vec!["fix"; DATASETS];
    let mut deployment = Deployment::new("postgres", "")?;
    let config = deployment.dir.join("mend.toml");
    let mut text = std::fs::read_to_string(&config)?.replace(&deployment.dataset, &names[0]);
    for name in &names[1..] {
        text.push_str(&format!("[[dataset]]\nname = \"{name}\"\ntopic = \"{name}.orders\"\ntable = \"{name}\"\n"));
    }
    std::fs::write(&config, text)?;
    deployment.dataset = names[0].clone();
    let base = anthropic::serve(anthropic::fake(&names, &kinds, script)).await?;
    deployment.env = vec![
        ("MEND_ANTHROPIC_API_KEY".into(), "bench-key".into()),
        ("MEND_ANTHROPIC_BASE_URL".into(), base),
        ("MEND_ANTHROPIC_MODEL".into(), "claude-test".into()),
    ];
    let mut up = deployment.up("bench-supervisor.log").await?;
    let producer = producer()?;
    for name in &names {
        let subject = format!("{name}.orders-value");
        for version in [1u8, 2] {
            let text = schema(version);
            let (id, parsed) = (register_schema(&subject, &text).await?, Schema::parse_str(&text)?);
            for n in 0..RECORDS {
                let amount = if version == 2 { Avro::String(n.to_string()) } else { Avro::Double(n as f64) };
                let value = Avro::Record(vec![
                    ("id".into(), Avro::Long(i64::from(version) * 1000 + n)),
                    ("amount".into(), amount),
                ]);
                produce_avro(&producer, &format!("{name}.orders"), &n.to_string(), id, &parsed, value).await?;
            }
        }
    }
    let api = format!("http://{}/incidents", deployment.api);
    let runs: Vec<SupervisorView> = eventually("every supervisor run", || {
        let (api, names) = (api.clone(), names.clone());
        async move {
            let incidents: Vec<Incident> = reqwest::get(&api).await?.json().await?;
            let runs: Vec<SupervisorView> = incidents
                .into_iter()
                .filter(|i| names.contains(&i.dataset))
                .filter_map(|i| i.supervisor)
                .filter(|run| run.outcome == AgentOutcome::Proposed)
                .collect();
            Ok((runs.len() == names.len()).then_some(runs))
        }
    })
    .await?;
    let mut own: Vec<f64> = runs.iter().map(|r| r.seconds * 1000.0).collect();
    let mut to_proposal: Vec<f64> = runs.iter().filter_map(|r| r.detection_to_proposal_seconds).collect();
    own.sort_by(f64::total_cmp);
    to_proposal.sort_by(f64::total_cmp);
    println!(
        "supervisor bench: {DATASETS} blocked incidents, a model that answers at once (2 turns, 2 tool calls each)"
    );
    println!(
        "supervisor per run (all but the model) p50 {:>6.1} ms   max {:>6.1} ms",
        percentile(&own, 0.5),
        percentile(&own, 1.0)
    );
    println!(
        "detection -> proposal              p50 {:>6.2} s    max {:>6.2} s",
        percentile(&to_proposal, 0.5),
        percentile(&to_proposal, 1.0)
    );
    up.kill().await?;
    Ok(())
}
