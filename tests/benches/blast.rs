//! Plan time with the blast radius: a generated dbt manifest of
//! `MEND_BENCH_MODELS` models (default 1,000) downstream of one source —
//! staging models selecting `*` through CTEs, then models that filter, join,
//! group, window and aggregate on the source's columns, a not_null test on
//! every tenth — and `plan_dataset` (SQLite, in-process) for a removed
//! field, whose NULLs reach every model so every model's SQL is read; a
//! drafted rename, which breaks the staging layer and everything on it
//! without reading further; and a new column. Prints each plan's time (best
//! and worst of 5) and the verdicts. The goal: under 1 s for 1,000
//! models.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use mend_avro::drift::classify;
use mend_avro::schema::columns_for;
use mend_model::{Contract, Impact};
use mend_store::Warehouse;
use serde_json::{Value, json};

const STAGING: usize = 50;

/// The SQL of model `index` over its parents' relations.
fn model_sql(index: usize, parents: &[String]) -> String {
    let p = &parents[0];
    match index % 4 {
        0 => format!("select order_id, email, amount, status, amount * 2 as doubled from {p} where status = 'paid'"),
        1 => format!(
            "select a.order_id, a.email, a.amount, a.status from {p} a join {} b on a.order_id = b.order_id",
            parents.get(1).unwrap_or(p)
        ),
        2 => format!(
            "select order_id, email, amount, status, row_number() over (partition by email order by order_id) as n \
             from {p}"
        ),
        _ => format!(
            "with base as (select * from {p}) select order_id, email, sum(amount) as amount, status from base \
             group by order_id, email, status"
        ),
    }
}

/// A manifest of `models` models over the source table `table`.
fn manifest(models: usize, table: &str) -> Value {
    let relation = |name: &str| format!("\"warehouse\".\"analytics\".\"{name}\"");
    let source_id = "source.bench.shop.orders".to_owned();
    let mut nodes = serde_json::Map::new();
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |id: String, node: Value, parents: &[String], children: &mut BTreeMap<String, Vec<String>>| {
        for parent in parents {
            children.entry(parent.clone()).or_default().push(id.clone());
        }
        nodes.insert(id, node);
    };
    for index in 0..models {
        let name = format!("m{index}");
        let id = format!("model.bench.{name}");
        let (sql, parents) = if index < STAGING {
            let sql = format!(
                "with source as (select * from \"warehouse\".\"main\".\"{table}\"), \
                 renamed as (select id as order_id, email, amount, status from source) select * from renamed"
            );
            (sql, vec![source_id.clone()])
        } else {
            let first = index - 1 - (index * 7919) % (index.min(40));
            let second = (index * 104_729) % index;
            let names = [format!("m{first}"), format!("m{second}")];
            let sql = model_sql(index, &names.iter().map(|n| relation(n)).collect::<Vec<_>>());
            (sql, names.iter().map(|n| format!("model.bench.{n}")).collect())
        };
        let node = json!({"resource_type": "model", "name": name, "language": "sql", "compiled_code": sql,
            "relation_name": relation(&name), "depends_on": {"nodes": parents}});
        add(id.clone(), node, &parents, &mut children);
        if index % 10 == 0 {
            let test = format!("test.bench.not_null_{name}_amount");
            let node = json!({"resource_type": "test", "name": format!("not_null_{name}_amount"),
                "language": "sql", "column_name": "amount", "attached_node": id, "test_metadata": {"name": "not_null"},
                "compiled_code": format!("select amount from {} where amount is null", relation(&name)),
                "depends_on": {"nodes": [id]}});
            add(test, node, std::slice::from_ref(&id), &mut children);
        }
    }
    json!({
        "nodes": nodes,
        "sources": {source_id.clone(): {"resource_type": "source", "name": "orders", "schema": "main",
            "identifier": table, "relation_name": format!("\"warehouse\".\"main\".\"{table}\"")}},
        "child_map": children,
    })
}

fn v1() -> Value {
    json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "email", "type": "string"},
        {"name": "amount", "type": "int"}, {"name": "status", "type": "string"}]})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let models: usize = std::env::var("MEND_BENCH_MODELS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = std::env::temp_dir().join(mend_tests::unique("blast-bench"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(&manifest(models, "orders"))?)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "blast bench: {models} models (+{} tests), manifest {:.1} MiB",
        models.div_ceil(10),
        size as f64 / 1048576.0
    );

    let warehouse = Warehouse::connect(&format!("sqlite://{}/w.db", dir.display())).await?;
    let old = Schema::parse_str(&v1().to_string())?;
    let (columns, mapping) =
        columns_for(&old, warehouse.dialect(), mend_config::Nested::Json).map_err(anyhow::Error::msg)?;
    let contract = Contract { dataset: "orders".into(), schema_id: 1, mapping: mapping.clone() };
    warehouse.establish("orders", "orders", &["id".to_owned()], &columns, &contract).await?;
    let dataset = mend_config::Dataset {
        name: "orders".into(),
        topic: "orders".into(),
        table: "orders".into(),
        key: vec!["id".into()],
        dbt_manifest: Some(path.clone()),
        ..Default::default()
    };
    let edit = |edit: &dyn Fn(&mut Vec<Value>)| -> anyhow::Result<Schema> {
        let mut schema = v1();
        if let Some(fields) = schema["fields"].as_array_mut() {
            edit(fields);
        }
        Ok(Schema::parse_str(&schema.to_string())?)
    };
    let removed = edit(&|f| f.retain(|f| f["name"] != "amount"))?;
    let added = edit(&|f| f.push(json!({"name": "coupon", "type": ["null", "string"], "default": null})))?;

    println!("{:<44} {:>9} {:>9}  verdicts", "plan (plan_dataset, SQLite)", "best", "worst");
    for (what, new) in [("a removed field (every model read)", &removed), ("a new column", &added)] {
        let changes = classify(&old, new);
        let mut times = Vec::new();
        let mut plan = None;
        for _ in 0..5 {
            let began = Instant::now();
            plan = Some(mend_planner::plan_dataset(&dataset, &warehouse, &mapping, &changes, new).await?);
            times.push(began.elapsed());
        }
        let radius = plan.and_then(|p| p.blast_radius).ok_or_else(|| anyhow::anyhow!("no blast radius"))?;
        report(what, &times, &radius);
    }
    // A drafted RENAME COLUMN, as record_draft weighs it.
    let steps = vec![mend_model::events::PlanStep {
        kind: mend_model::StepKind::Ddl,
        description: "rename".into(),
        sql: Some("ALTER TABLE \"orders\" RENAME COLUMN \"email\" TO \"contact\"".into()),
        field: None,
        column: None,
        patch: None,
        cost: None,
    }];
    let mut times = Vec::new();
    let mut radius = None;
    for _ in 0..5 {
        let began = Instant::now();
        radius = mend_planner::blast::blast_radius(&dataset, &warehouse, &steps, &[], &mapping).await?;
        times.push(began.elapsed());
    }
    report("a drafted rename (blast radius only)", &times, &radius.ok_or_else(|| anyhow::anyhow!("no radius"))?);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn report(what: &str, times: &[Duration], radius: &mend_model::events::BlastRadius) {
    let best = times.iter().min().copied().unwrap_or_default();
    let worst = times.iter().max().copied().unwrap_or_default();
    let counts: Vec<String> = [Impact::Breaking, Impact::Unknown, Impact::Partial, Impact::None]
        .iter()
        .map(|i| format!("{} {i}", radius.count(*i)))
        .collect();
    println!(
        "{what:<44} {:>7.0}ms {:>7.0}ms  {}",
        best.as_secs_f64() * 1000.0,
        worst.as_secs_f64() * 1000.0,
        counts.join(", ")
    );
}
