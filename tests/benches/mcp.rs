//! MCP read-tool latency: a live `mend up` (PostgreSQL warehouse) with the
//! demo's orders dataset, 2,000 records loaded and a rename waiting for
//! approval; each read tool called 50 times over streamable HTTP (protocol
//! 2026-07-28, one POST per call, as a stateless client does). Prints p50
//! and p95 per tool; the goal is p95 under 100 ms for all but
//! `sample_records`. Needs `make infra-up` and `cargo build -p mend`.

use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use serde_json::{Value, json};

const RECORDS: i64 = 2000;
const CALLS: usize = 50;

fn schema(renamed: bool) -> String {
    let email = if renamed {
        json!({"name": "customer_email", "type": "string", "aliases": ["email"]})
    } else {
        json!({"name": "email", "type": "string"})
    };
    json!({"type": "record", "name": "Order", "namespace": "bench", "fields": [
        {"name": "id", "type": "long"}, email, {"name": "amount", "type": "double"}, {"name": "status", "type": "string"}
    ]})
    .to_string()
}

async fn call(http: &reqwest::Client, url: &str, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let text = http
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", tool)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // One SSE event (`data: {...}`) or a plain JSON body.
    let json = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or(&text);
    let answer: Value = serde_json::from_str(json)?;
    anyhow::ensure!(answer["result"]["isError"] != true && answer["error"].is_null(), "{tool}: {answer}");
    Ok(answer["result"].clone())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let mut up = deployment.up("bench-up.log").await?;
    let subject = format!("{}-value", deployment.topic());
    let producer = producer()?;
    for (renamed, range) in [(false, 0..RECORDS), (true, RECORDS..RECORDS + 100)] {
        let text = schema(renamed);
        let (id, parsed) = (register_schema(&subject, &text).await?, Schema::parse_str(&text)?);
        for n in range {
            let email = if renamed { "customer_email" } else { "email" };
            let value = Avro::Record(vec![
                ("id".into(), Avro::Long(n)),
                (email.into(), Avro::String(format!("c{n}@example.com"))),
                ("amount".into(), Avro::Double(n as f64 / 4.0)),
                ("status".into(), Avro::String("paid".into())),
            ]);
            produce_avro(&producer, &deployment.topic(), &n.to_string(), id, &parsed, value).await?;
        }
    }
    let api = format!("http://{}", deployment.api);
    let incident = eventually("an incident waiting for approval", || {
        let url = format!("{api}/incidents");
        async move {
            let incidents: Value = reqwest::get(&url).await?.json().await?;
            Ok(incidents.as_array().and_then(|l| l.iter().find(|i| i["status"] == "awaiting_approval").cloned()))
        }
    })
    .await?;
    let (dataset, id) = (deployment.dataset.clone(), incident["id"].as_str().unwrap_or_default().to_owned());
    let http = reqwest::Client::new();
    let url = format!("{api}/mcp");
    println!("mcp bench: {RECORDS} records loaded, one incident; {CALLS} calls per tool over streamable HTTP");
    let tools: Vec<(&str, Value)> = vec![
        ("list_incidents", json!({})),
        ("get_incident", json!({"incident_id": id})),
        ("describe_table", json!({"dataset": dataset})),
        ("registry_history", json!({"dataset": dataset})),
        ("compare_schema", json!({"dataset": dataset, "schema": schema(true)})),
        ("quarantined_records", json!({"incident_id": id, "limit": 50})),
        ("sample_records", json!({"dataset": dataset, "limit": 50})),
    ];
    for (tool, arguments) in tools {
        call(&http, &url, tool, arguments.clone()).await?; // warm caches
        let mut times = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            call(&http, &url, tool, arguments.clone()).await?;
            times.push(started.elapsed());
        }
        times.sort();
        println!("{tool:<22} p50 {:>7.1} ms   p95 {:>7.1} ms", percentile(&times, 0.5), percentile(&times, 0.95));
    }
    up.kill().await?;
    Ok(())
}
