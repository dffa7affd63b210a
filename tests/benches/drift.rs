//! Drift intelligence costs, printed (no infrastructure needed):
//! - diagnosis + plan per schema change (it runs once per new writer schema,
//!   not per record): classification with rename scoring, then the planner
//!   with policy and a dbt patch, for a 40-field record with five changes;
//! - the rename value-overlap scoring on a 10,000-row sample (10,000 new
//!   values against 10,000 values of the old column).
//!
//! `cargo bench -p mend-tests --bench drift` (BENCH_ITERATIONS, default 2000).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use apache_avro::Schema;
use mend_avro::drift::{OverlapEvidence, classify_with, comparable, rename_candidates, value_overlap};
use mend_avro::schema::columns_for;
use mend_config::Nested;
use mend_model::Dialect;
use mend_proposer::{DbtFile, Target, plan};
use serde_json::json;

fn schemas() -> anyhow::Result<(Schema, Schema)> {
    let mut old: Vec<serde_json::Value> =
        (0..40).map(|i| json!({"name": format!("field_{i}"), "type": "string"})).collect();
    old[1] = json!({"name": "qty", "type": "int"});
    old[2] = json!({"name": "amount", "type": "double"});
    old[3] = json!({"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["a", "b"]}});
    old[4] = json!({"name": "email", "type": "string"});
    let mut new = old.clone();
    new.push(json!({"name": "coupon", "type": ["null", "string"], "default": null, "doc": "promotion"}));
    new[1] = json!({"name": "qty", "type": "long"});
    new[3] = json!({"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["a", "b", "c"]}});
    new[4] = json!({"name": "customer_email", "type": "string"});
    new[2] = json!({"name": "total", "type": "double"});
    let record = |fields: Vec<serde_json::Value>| json!({"type": "record", "name": "O", "fields": fields}).to_string();
    Ok((Schema::parse_str(&record(old))?, Schema::parse_str(&record(new))?))
}

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let (old, new) = schemas()?;
    let (columns, mapping) = columns_for(&old, Dialect::Postgres, Nested::Json).map_err(anyhow::Error::msg)?;
    let dbt_text = format!(
        "version: 2\nmodels:\n  - name: orders\n    columns:\n{}",
        (0..40).map(|i| format!("      - name: field_{i}\n        description: \"field {i}\"\n")).collect::<String>()
    );
    let policy = BTreeMap::new();
    let key = vec!["field_0".to_owned()];
    let evidence = OverlapEvidence::from([(
        ("amount".to_owned(), "total".to_owned()),
        mend_avro::drift::Overlap { fraction: 0.97, sampled: 10_000 },
    )]);
    let started = Instant::now();
    let mut steps = 0;
    for _ in 0..iterations {
        let changes = classify_with(&old, &new, &evidence);
        let target = Target {
            table: "orders",
            dialect: Dialect::Postgres,
            columns: &columns,
            mapping: &mapping,
            key: &key,
            policy: &policy,
            nested: Nested::Json,
            dbt: Some(DbtFile { path: "models/schema.yml", model: "orders", text: &dbt_text }),
        };
        steps += plan(&changes, &new, &target).steps.len();
    }
    let per = started.elapsed() / u32::try_from(iterations)?;
    let changes = classify_with(&old, &new, &evidence);
    println!(
        "diagnosis + plan per schema change: {:.1} µs ({} changes: {}; {} plan steps incl. a dbt patch; {iterations} iterations)",
        per.as_secs_f64() * 1e6,
        changes.len(),
        changes.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>().join(", "),
        steps / iterations,
    );
    println!("rename candidates scored: {:?}", rename_candidates(&old, &new));

    // Value overlap on a 10,000-row sample: building the old column's set
    // (from the warehouse's text) and scoring the new field's values.
    let old_values: Vec<String> = (0..10_000).map(|i| format!("customer{i}@example.com")).collect();
    let new_values: Vec<String> = (5_000..15_000).map(|i| format!("customer{i}@example.com")).collect();
    let runs = 50;
    let started = Instant::now();
    let mut fraction = 0.0;
    for _ in 0..runs {
        let set: HashSet<String> = old_values.iter().map(|v| comparable(v)).collect();
        let texts: Vec<String> = new_values.iter().map(|v| comparable(v)).collect();
        fraction = value_overlap(texts.iter().map(String::as_str), &set).fraction;
    }
    let per = started.elapsed() / runs;
    println!(
        "rename value-overlap scoring, 10,000-row sample: {:.2} ms per candidate pair (overlap {fraction:.2})",
        per.as_secs_f64() * 1e3
    );
    Ok(())
}
