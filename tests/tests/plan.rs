//! `mend plan` through the real binary, against the registry and a warehouse
//! holding the dataset's contract (PostgreSQL and SQLite): each change class
//! gets its kind, its evidence, the right steps for the dialect and the exit
//! code of its decision; nothing is changed.

use std::path::PathBuf;

use apache_avro::Schema;
use mend_avro::schema::columns_for;
use mend_model::api::PlanReport;
use mend_model::{ChangeKind, Contract, Policy, RenameProof, StepKind};
use mend_store::Warehouse;
use mend_tests::{Deployment, mend_bin, register_schema, registry_url, unique};
use serde_json::{Value, json};

/// A dataset with an established contract (schema v1 and its table).
struct Planned {
    dir: PathBuf,
    name: String,
    warehouse: String,
}

fn v1() -> Value {
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "amount", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped"]}},
        {"name": "shipping", "type": {"type": "record", "name": "Shipping", "fields": [
            {"name": "street", "type": "string"}]}}
    ]})
}

/// v1 with its fields edited by `edit`.
fn v2(edit: impl FnOnce(&mut Vec<Value>)) -> Value {
    let mut schema = v1();
    if let Some(fields) = schema["fields"].as_array_mut() {
        edit(fields);
    }
    schema
}

impl Planned {
    async fn new(dialect: &str, extra_config: &str) -> anyhow::Result<Self> {
        let Deployment { dir, dataset: name, warehouse, .. } = Deployment::new(dialect, extra_config)?;
        let text = v1().to_string();
        let id = register_schema(&format!("{name}.orders-value"), &text).await?;
        let db = Warehouse::connect(&warehouse).await?;
        let (columns, mapping) = columns_for(&Schema::parse_str(&text)?, db.dialect(), mend_config::Nested::Json)
            .map_err(anyhow::Error::msg)?;
        let contract = Contract { dataset: name.clone(), schema_id: id, mapping };
        db.establish(&name, &name, &["id".to_owned()], &columns, &contract).await?;
        Ok(Self { dir, name, warehouse })
    }

    /// Runs `mend plan --json` on `schema`; its exit code and report.
    fn plan(&self, schema: &Value) -> anyhow::Result<(i32, PlanReport)> {
        let (code, stdout, stderr) = self.run(schema)?;
        let report = serde_json::from_str(&stdout)
            .map_err(|e| anyhow::anyhow!("mend plan printed no report (exit {code}, {e}): {stdout}{stderr}"))?;
        Ok((code, report))
    }

    /// Runs `mend plan --json` on `schema`; its exit code, stdout and stderr.
    fn run(&self, schema: &Value) -> anyhow::Result<(i32, String, String)> {
        let file = self.dir.join(format!("{}.avsc", unique("schema")));
        std::fs::write(&file, schema.to_string())?;
        let output = std::process::Command::new(mend_bin()?)
            .args(["plan", "--dataset", &self.name, "--schema", &file.to_string_lossy(), "--json"])
            .env("MEND_CONFIG", self.dir.join("mend.toml"))
            .env("MEND_WAREHOUSE_URL", &self.warehouse)
            .env("MEND_REGISTRY_URL", registry_url())
            .output()?;
        let code = output.status.code().unwrap_or(-1);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Ok((code, stdout.into_owned(), stderr.into_owned()))
    }
}

fn kinds(report: &PlanReport) -> Vec<(ChangeKind, String)> {
    report.changes.iter().map(|c| (c.change.kind, c.change.field.clone())).collect()
}

fn sql(report: &PlanReport) -> Vec<String> {
    report.steps.iter().filter_map(|s| s.sql.clone()).collect()
}

fn pair(kind: ChangeKind, field: &str) -> (ChangeKind, String) {
    (kind, field.to_owned())
}

async fn matrix(dialect: &str) -> anyhow::Result<()> {
    let planned = Planned::new(dialect, "").await?;
    let pg = dialect == "postgres";

    // No change at all, and changes that need no action: exit 0, no changes.
    let (code, report) = planned.plan(&v1())?;
    assert_eq!((code, report.decision), (0, Policy::Auto));
    assert!(kinds(&report).is_empty());
    let reordered = v2(|f| {
        f.swap(0, 1);
        f[2]["doc"] = json!("units ordered");
    });
    let (code, report) = planned.plan(&reordered)?;
    assert_eq!(code, 0, "field order and docs need nothing: {report:?}");
    assert!(kinds(&report).is_empty());

    // A nullable addition: DDL, applied automatically.
    let added = v2(|f| f.push(json!({"name": "coupon", "type": ["null", "string"], "default": null, "doc": "promo"})));
    let (code, report) = planned.plan(&added)?;
    assert_eq!(code, 0, "{report:?}");
    assert_eq!(kinds(&report), [pair(ChangeKind::FieldAdded, "coupon")]);
    let added = &report.changes[0];
    assert_eq!((added.change.nullable, added.change.has_default), (Some(true), Some(true)));
    assert_eq!(added.change.doc.as_deref(), Some("promo"));
    assert!(added.rule.contains("=> auto (default)"), "{added:?}");
    assert_eq!(sql(&report), [format!(r#"ALTER TABLE "{}" ADD COLUMN "coupon" TEXT"#, planned.name)]);
    assert_eq!(report.steps.last().map(|s| s.kind), Some(StepKind::Replay));

    // A required addition without a default waits for a person.
    let (code, report) = planned.plan(&v2(|f| f.push(json!({"name": "channel", "type": "string"}))))?;
    assert_eq!((code, report.decision), (2, Policy::Approve), "{report:?}");

    // A rename proven by an alias maps onto the old column, no DDL.
    let aliased = v2(|f| f[1] = json!({"name": "customer_email", "type": "string", "aliases": ["email"]}));
    let (code, report) = planned.plan(&aliased)?;
    assert_eq!(code, 2, "{report:?}");
    assert_eq!(kinds(&report), [pair(ChangeKind::FieldRenamed, "customer_email")]);
    let change = &report.changes[0].change;
    assert_eq!((change.from.as_deref(), change.to.as_deref()), (Some("email"), Some("customer_email")));
    assert_eq!((change.confidence, change.rename_proof), (Some(1.0), Some(RenameProof::Alias)));
    assert!(sql(&report).is_empty());
    let mapping = report.steps.iter().find(|s| s.kind == StepKind::Mapping);
    assert_eq!(
        mapping.map(|m| (m.field.as_deref(), m.column.as_deref())),
        Some((Some("customer_email"), Some("email")))
    );

    // Without an alias: names that only differ in separators are a rename,
    // unrelated ones a removal plus an addition.
    let (code, report) = planned.plan(&v2(|f| f[1] = json!({"name": "e_mail", "type": "string"})))?;
    assert_eq!(code, 2);
    assert_eq!(kinds(&report), [pair(ChangeKind::FieldRenamed, "e_mail")]);
    assert_eq!(report.changes[0].change.rename_proof, Some(RenameProof::Similarity));
    let (code, report) = planned.plan(&v2(|f| f[1] = json!({"name": "phone", "type": "string"})))?;
    assert_eq!(code, 2);
    assert_eq!(kinds(&report), [pair(ChangeKind::FieldAdded, "phone"), pair(ChangeKind::FieldRemoved, "email")]);
    assert!(sql(&report).iter().all(|s| !s.contains("DROP COLUMN")), "a removal never drops a column");

    // Widening: ALTER COLUMN TYPE on PostgreSQL (approval), mapping only on SQLite (auto).
    let (code, report) = planned.plan(&v2(|f| f[2] = json!({"name": "qty", "type": "long"})))?;
    assert_eq!(kinds(&report), [pair(ChangeKind::TypeWidened, "qty")]);
    if pg {
        assert_eq!(code, 2);
        assert_eq!(sql(&report), [format!(r#"ALTER TABLE "{}" ALTER COLUMN "qty" TYPE BIGINT"#, planned.name)]);
    } else {
        // mend heals it on its own, but the contract's readers cannot read a long.
        assert_eq!((code, report.contract_can_read), (4, Some(false)), "{report:?}");
        assert!(sql(&report).is_empty());
    }

    // A type the column cannot hold is blocked, with options for a person.
    let (code, report) = planned.plan(&v2(|f| f[3] = json!({"name": "amount", "type": "string"})))?;
    assert_eq!((code, report.decision), (3, Policy::Block));
    assert_eq!(kinds(&report), [pair(ChangeKind::TypeChanged, "amount")]);
    let cast = report.changes[0].change.cast.as_ref();
    assert!(cast.is_none_or(|c| !c.all_parse()), "a string never casts to double wholesale: {cast:?}");
    assert!(report.rules.iter().any(|r| r.contains("option")), "{report:?}");

    // Nullability, enum symbols, defaults.
    let (code, report) =
        planned.plan(&v2(|f| f[2] = json!({"name": "qty", "type": ["null", "int"], "default": null})))?;
    assert!(kinds(&report).contains(&pair(ChangeKind::NullabilityChanged, "qty")), "{report:?}");
    assert_eq!(code, if pg { 2 } else { 0 }, "PostgreSQL relaxes NOT NULL with approval: {report:?}");
    let symbols = v2(
        |f| f[4] = json!({"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped", "refunded"]}}),
    );
    let (code, report) = planned.plan(&symbols)?;
    assert_eq!((code, kinds(&report)), (0, vec![pair(ChangeKind::EnumSymbolsAdded, "status")]));
    assert_eq!(report.changes[0].change.all_symbols, ["paid", "shipped", "refunded"]);

    // Nested: a field added inside the JSON column of a record.
    let nested = v2(|f| {
        if let Some(fields) = f[5]["type"]["fields"].as_array_mut() {
            fields.push(json!({"name": "city", "type": ["null", "string"], "default": null}));
        }
    });
    let (code, report) = planned.plan(&nested)?;
    assert_eq!((code, kinds(&report)), (0, vec![pair(ChangeKind::FieldAdded, "shipping.city")]));

    // Several changes at once: one plan, the strictest decision.
    let several = v2(|f| {
        f.push(json!({"name": "coupon", "type": ["null", "string"], "default": null}));
        f[3] = json!({"name": "amount", "type": "string"});
    });
    let (code, report) = planned.plan(&several)?;
    assert_eq!(code, 3);
    assert_eq!(kinds(&report).len(), 2);

    // Nothing was changed: the contract and the table are as before.
    let db = Warehouse::connect(&planned.warehouse).await?;
    let columns: Vec<String> = db.columns(&planned.name).await?.into_iter().map(|c| c.name).collect();
    assert_eq!(columns, ["id", "email", "qty", "amount", "status", "shipping"]);
    Ok(())
}

#[tokio::test]
async fn plan_matrix_on_postgres() -> anyhow::Result<()> {
    matrix("postgres").await
}

#[tokio::test]
async fn plan_matrix_on_sqlite() -> anyhow::Result<()> {
    matrix("sqlite").await
}

#[tokio::test]
async fn the_dataset_policy_decides_and_bad_input_is_a_clear_error() -> anyhow::Result<()> {
    let planned =
        Planned::new("postgres", "[dataset.policy]\ntype_widened = \"auto\"\nfield_added = \"block\"\n").await?;
    let (code, report) = planned.plan(&v2(|f| f[2] = json!({"name": "qty", "type": "long"})))?;
    assert_eq!(code, 4, "auto, but the contract cannot read it: {report:?}");
    assert!(report.changes[0].rule.ends_with("(dataset policy)"), "{report:?}");
    // The widening's statement says what it costs: int4 -> int8 rewrites
    // the table, as the dry run on an empty copy confirms.
    let cost = report.steps.iter().find_map(|s| s.cost.as_ref()).expect("the widening's statement has a cost");
    assert_eq!(cost.class, mend_model::CostClass::Rewrite, "{cost}");
    assert!(cost.probe.as_deref().is_some_and(|p| p.contains("replaced the table's file")), "{cost}");
    // And squawk, linting what mend runs, warns of the type change (the
    // timeouts it would ask for are mend's own).
    let rules: Vec<&str> = cost.lint.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["changing-column-type"], "{cost}");
    assert!(cost.to_string().contains("squawk changing-column-type"), "{cost}");
    let (code, _) = planned.plan(&v2(|f| f.push(json!({"name": "c", "type": ["null", "string"], "default": null}))))?;
    assert_eq!(code, 3);
    // Not a schema: exit 1 with a message, not a panic.
    let (code, _, stderr) = planned.run(&json!({"type": "record", "name": "x"}))?;
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.is_empty(), "a clear error on stderr");
    Ok(())
}
