//! The blast radius of a plan in a dbt project of the test's own, compiled
//! by dbt itself (dbt-core and dbt-postgres from PyPI): mend reads the
//! manifest dbt wrote and gives every model, test and exposure downstream of
//! the dataset's table its verdict — through `mend plan --json` for the
//! changes mend's rules plan, and through the lineage reader for a drafted
//! RENAME COLUMN and a type change SQL cannot take.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use mend_avro::schema::columns_for;
use mend_lineage::{Change, Effect};
use mend_model::api::PlanReport;
use mend_model::events::BlastRadius;
use mend_model::{Contract, Impact, Policy};
use mend_store::Warehouse;
use mend_tests::{Deployment, mend_bin, register_schema, registry_url, unique};
use serde_json::{Value, json};

fn v1() -> Value {
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped"]}}
    ]})
}

fn v2(edit: impl FnOnce(&mut Vec<Value>)) -> Value {
    let mut schema = v1();
    if let Some(fields) = schema["fields"].as_array_mut() {
        edit(fields);
    }
    schema
}

/// Copies tests/dbt_blast to `dir` and compiles it with dbt against the
/// test's PostgreSQL, its source tables named `orders` and `customers`.
fn compile(dir: &Path, orders: &str, customers: &str) -> anyhow::Result<PathBuf> {
    let project = dir.join("dbt");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbt_blast");
    for entry in walk(&source)? {
        let target = project.join(entry.strip_prefix(&source)?);
        std::fs::create_dir_all(target.parent().unwrap_or(&project))?;
        std::fs::copy(&entry, &target)?;
    }
    dbt_compile(&project, orders, customers)?;
    Ok(project.join("target/manifest.json"))
}

/// `dbt compile` of the project in `project`.
fn dbt_compile(project: &Path, orders: &str, customers: &str) -> anyhow::Result<()> {
    let python = std::env::var("MEND_PYTHON").unwrap_or_else(|_| "../.mend/venv/bin/python".into());
    let dbt = Path::new(&python).with_file_name("dbt");
    let url = reqwest::Url::parse(&mend_tests::postgres_url())?;
    let output = std::process::Command::new(&dbt)
        .args(["compile", "--profiles-dir", ".", "--no-use-colors"])
        .current_dir(project)
        .env("MEND_DBT_HOST", url.host_str().unwrap_or("127.0.0.1"))
        .env("MEND_DBT_PORT", url.port().unwrap_or(5432).to_string())
        .env("MEND_DBT_DATABASE", url.path().trim_start_matches('/'))
        .env("MEND_DBT_SCHEMA", format!("{orders}_dbt"))
        .env("MEND_DBT_ORDERS", orders)
        .env("MEND_DBT_CUSTOMERS", customers)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {} (make venv installs it): {e}", dbt.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "dbt compile failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Each node's verdict by its name (tests by their dbt name).
fn verdicts(radius: &BlastRadius) -> BTreeMap<String, (Impact, String)> {
    radius.nodes.iter().map(|n| (n.name.clone(), (n.impact, n.reasons.join("; ")))).collect()
}

fn plan(deployment: &Deployment, schema: &Value) -> anyhow::Result<(i32, PlanReport)> {
    let file = deployment.dir.join(format!("{}.avsc", unique("schema")));
    std::fs::write(&file, schema.to_string())?;
    let output = std::process::Command::new(mend_bin()?)
        .args(["plan", "--dataset", &deployment.dataset, "--schema", &file.to_string_lossy(), "--json"])
        .env("MEND_CONFIG", deployment.dir.join("mend.toml"))
        .env("MEND_WAREHOUSE_URL", &deployment.warehouse)
        .env("MEND_REGISTRY_URL", registry_url())
        .output()?;
    let code = output.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&output.stdout).map_err(|e| {
        anyhow::anyhow!("mend plan printed no report (exit {code}, {e}): {}", String::from_utf8_lossy(&output.stderr))
    })?;
    Ok((code, report))
}

const NOT_NULL_EMAIL: &str = "not_null_stg_orders_email";
const ACCEPTED_STATUS: &str = "accepted_values_stg_orders_status__paid__shipped";

#[tokio::test]
async fn every_node_downstream_gets_its_verdict_from_the_manifest_dbt_compiled() -> anyhow::Result<()> {
    // The dataset's table and its contract; the project compiled by dbt
    // over it (and a customers table it joins).
    let deployment = Deployment::new("postgres", "")?;
    let name = deployment.dataset.clone();
    let manifest = compile(&deployment.dir, &name, &format!("{name}_customers"))?;
    // Removals heal on their own here, so what asks for a person below is
    // the downstream gate.
    let mut config = std::fs::OpenOptions::new().append(true).open(deployment.dir.join("mend.toml"))?;
    std::io::Write::write_all(
        &mut config,
        format!("dbt_manifest = \"{}\"\n[dataset.policy]\nfield_removed = \"auto\"\n", manifest.display()).as_bytes(),
    )?;
    let text = v1().to_string();
    let id = register_schema(&format!("{name}.orders-value"), &text).await?;
    let db = Warehouse::connect(&deployment.warehouse).await?;
    let (columns, mapping) =
        columns_for(&Schema::parse_str(&text)?, db.dialect(), mend_config::Nested::Json).map_err(anyhow::Error::msg)?;
    db.establish(
        &name,
        &name,
        &["id".to_owned()],
        &columns,
        &Contract { dataset: name.clone(), schema_id: id, mapping },
    )
    .await?;

    // A field removed: its column is NULL from now on. The not_null test on
    // it fails (breaking), the join on it and the staging model passing it
    // on change (partial), the model reading the id only does not (none),
    // the Python model cannot be read (unknown, never none); and the
    // downstream gate asks a person although the dataset's policy is auto.
    let (code, report) = plan(&deployment, &v2(|f| f.retain(|f| f["name"] != "email")))?;
    let radius = report.blast_radius.clone().ok_or_else(|| anyhow::anyhow!("no blast radius: {report:?}"))?;
    let v = verdicts(&radius);
    assert_eq!(radius.sources, ["source.mend_blast.shop.orders"], "{radius:?}");
    assert_eq!(radius.effects, ["email is NULL from now on (its field was removed)"], "{radius:?}");
    assert_eq!(v[NOT_NULL_EMAIL].0, Impact::Breaking, "{v:#?}");
    assert!(v[NOT_NULL_EMAIL].1.contains("not_null on email fails"), "{v:#?}");
    assert_eq!(v["customer_orders"].0, Impact::Partial, "{v:#?}");
    assert!(v["customer_orders"].1.contains("(join)"), "{v:#?}");
    assert_eq!(v["stg_orders"].0, Impact::Partial, "{v:#?}");
    assert_eq!(v["order_ids"].0, Impact::None, "{v:#?}");
    assert_eq!(v["order_scores"].0, Impact::Unknown, "{v:#?}");
    assert!(v["order_scores"].1.contains("python model"), "{v:#?}");
    assert_eq!((code, report.decision), (2, Policy::Approve), "{:?}", report.rules);
    assert!(
        report.rules.iter().any(|r| r.starts_with("downstream: breaks not_null_stg_orders_email")),
        "{:?}",
        report.rules
    );

    // New enum symbols: the accepted_values test fails on them; the model
    // grouping by status and the exposure on it change.
    let refunded = v2(|f| f[3]["type"]["symbols"] = json!(["paid", "shipped", "refunded"]));
    let (_, report) = plan(&deployment, &refunded)?;
    let v = verdicts(report.blast_radius.as_ref().ok_or_else(|| anyhow::anyhow!("no blast radius"))?);
    assert_eq!(v[ACCEPTED_STATUS].0, Impact::Breaking, "{v:#?}");
    assert_eq!(v["revenue_by_status"].0, Impact::Partial, "{v:#?}");
    assert!(v["revenue_by_status"].1.contains("group by"), "{v:#?}");
    assert_eq!(v["revenue_dashboard"].0, Impact::Partial, "the exposure: {v:#?}");

    // int widened to long (ALTER … TYPE BIGINT): the filter and the sum on
    // amount change, nothing breaks, so the gate leaves the policy alone.
    let widened = v2(|f| f[2]["type"] = json!("long"));
    let (_, report) = plan(&deployment, &widened)?;
    let radius = report.blast_radius.clone().ok_or_else(|| anyhow::anyhow!("no blast radius"))?;
    let v = verdicts(&radius);
    assert_eq!(radius.effects, ["amount widened from int4 to int8"], "{radius:?}");
    assert_eq!(v["revenue_by_status"].0, Impact::Partial, "{v:#?}");
    assert!(v["revenue_by_status"].1.contains("filter"), "{v:#?}");
    assert_eq!(radius.count(Impact::Breaking), 0, "{v:#?}");
    assert!(!report.rules.iter().any(|r| r.starts_with("downstream:")), "{:?}", report.rules);

    // A nullable field added: only the model selecting * from the source
    // sees it; the staging model names its columns.
    let added = v2(|f| f.push(json!({"name": "coupon", "type": ["null", "string"], "default": null})));
    let (code, report) = plan(&deployment, &added)?;
    let v = verdicts(report.blast_radius.as_ref().ok_or_else(|| anyhow::anyhow!("no blast radius"))?);
    assert_eq!(v["raw_orders"].0, Impact::Partial, "{v:#?}");
    assert_eq!(v["stg_orders"].0, Impact::None, "{v:#?}");
    assert_eq!(code, 0, "{:?}", report.rules);

    // mend's own rename maps the new field onto the existing column: the
    // column keeps its name, so nothing downstream changes.
    let renamed = v2(|f| f[1] = json!({"name": "contact", "type": "string", "aliases": ["email"]}));
    let (_, report) = plan(&deployment, &renamed)?;
    let radius = report.blast_radius.clone().ok_or_else(|| anyhow::anyhow!("no blast radius"))?;
    assert_eq!((radius.effects.len(), radius.worst()), (0, Impact::None), "{radius:?}");

    // A drafted RENAME COLUMN breaks the staging model that names it and
    // everything built on it (the exposure too); the model selecting * only
    // passes the new name on.
    let schema = Some("public");
    let rename = [Effect { column: "email".into(), change: Change::Renamed { to: "contact".into() } }];
    let radius = mend_lineage::blast_radius(&manifest, schema, &name, &rename);
    let v = verdicts(&radius);
    assert_eq!(v["stg_orders"].0, Impact::Breaking, "{v:#?}");
    assert!(v["stg_orders"].1.contains("reads orders.email (email in CTE renamed"), "{v:#?}");
    for built_on in ["order_ids", "revenue_by_status", "revenue_dashboard", "unique_stg_orders_order_id"] {
        assert_eq!(v[built_on].0, Impact::Breaking, "{built_on}: {v:#?}");
    }
    assert_eq!(v["raw_orders"].0, Impact::Partial, "{v:#?}");

    // text to bytea: passing it on changes a type; joining and filtering
    // on it as text breaks.
    let bytes = [Effect {
        column: "email".into(),
        change: Change::Retyped { from: "text".into(), to: "bytea".into(), widening: false },
    }];
    let v = verdicts(&mend_lineage::blast_radius(&manifest, schema, &name, &bytes));
    assert_eq!((v["stg_orders"].0, v["customer_orders"].0), (Impact::Partial, Impact::Breaking), "{v:#?}");
    assert_eq!(v["order_ids"].0, Impact::None, "{v:#?}");

    // The dbt fix a draft of that rename gets: stg_orders names email once
    // in its select list, so its file is patched to alias contact back to
    // email; raw_orders passes `*` on, which is for a person.
    let dataset = mend_config::Dataset {
        name: name.clone(),
        table: name.clone(),
        dbt_manifest: Some(manifest.clone()),
        ..mend_config::Dataset::default()
    };
    let draft = [mend_model::events::PlanStep {
        kind: mend_model::StepKind::Ddl,
        description: "rename".into(),
        sql: Some(format!("ALTER TABLE \"{name}\" RENAME COLUMN email TO contact")),
        field: None,
        column: None,
        patch: None,
        cost: None,
    }];
    let (patches, rules) = mend_planner::blast::dbt_fixes(&dataset, &db, &draft, &radius).await?;
    let [patch] = patches.as_slice() else { anyhow::bail!("{patches:?}") };
    let diff = patch.patch.as_deref().unwrap_or_default();
    assert!(diff.starts_with("--- a/models/stg_orders.sql\n+++ b/models/stg_orders.sql\n"), "{diff}");
    let project = manifest.parent().and_then(Path::parent).ok_or_else(|| anyhow::anyhow!("no project"))?;
    let staging = project.join("models/stg_orders.sql");
    let patched =
        mend_planner::dbt::apply_patch(&std::fs::read_to_string(&staging)?, diff).map_err(anyhow::Error::msg)?;
    assert!(patched.contains("select id as order_id, contact as email, amount, status from source"), "{patched}");
    assert!(rules.len() == 1 && rules[0].contains("raw_orders (models/raw_orders.sql)"), "{rules:?}");
    // dbt compiles the patched project, and with it the rename breaks
    // nothing built on stg_orders.
    std::fs::write(&staging, patched)?;
    dbt_compile(project, &name, &format!("{name}_customers"))?;
    let v = verdicts(&mend_lineage::blast_radius(&manifest, schema, &name, &rename));
    for built_on in ["stg_orders", "order_ids", "revenue_by_status", "revenue_dashboard", "unique_stg_orders_order_id"]
    {
        assert_ne!(v[built_on].0, Impact::Breaking, "{built_on}: {v:#?}");
    }
    assert_eq!(v["raw_orders"].0, Impact::Partial, "{v:#?}");

    Ok(())
}
