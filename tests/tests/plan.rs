//! `mend plan` through the real binary, against the registry and a warehouse
//! holding the dataset's contract (PostgreSQL and SQLite): each change class
//! gets its kind, its evidence, the right steps for the dialect and the exit
//! code of its decision; nothing is changed.

use std::path::PathBuf;

use apache_avro::Schema;
use mend_avro::schema::columns_for;
use mend_model::Contract;
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
    fn plan(&self, schema: &Value) -> anyhow::Result<(i32, Value)> {
        let file = self.dir.join(format!("{}.avsc", unique("schema")));
        std::fs::write(&file, schema.to_string())?;
        let output = std::process::Command::new(mend_bin()?)
            .args(["plan", "--dataset", &self.name, "--schema", &file.to_string_lossy(), "--json"])
            .env("MEND_CONFIG", self.dir.join("mend.toml"))
            .env("MEND_WAREHOUSE_URL", &self.warehouse)
            .env("MEND_REGISTRY_URL", registry_url())
            .output()?;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        anyhow::ensure!(
            report.is_object() || code == 1,
            "mend plan printed no JSON (exit {code}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((code, report))
    }
}

fn kinds(report: &Value) -> Vec<(String, String)> {
    report["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["kind"].as_str().unwrap_or("").to_owned(), c["field"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn sql(report: &Value) -> Vec<String> {
    report["steps"].as_array().into_iter().flatten().filter_map(|s| s["sql"].as_str().map(str::to_owned)).collect()
}

fn pair(kind: &str, field: &str) -> (String, String) {
    (kind.to_owned(), field.to_owned())
}

async fn matrix(dialect: &str) -> anyhow::Result<()> {
    let planned = Planned::new(dialect, "").await?;
    let pg = dialect == "postgres";

    // No change at all, and changes that need no action: exit 0, no changes.
    let (code, report) = planned.plan(&v1())?;
    assert_eq!((code, report["decision"].as_str()), (0, Some("auto")));
    assert!(kinds(&report).is_empty());
    let reordered = v2(|f| {
        f.swap(0, 1);
        f[2]["doc"] = json!("units ordered");
    });
    let (code, report) = planned.plan(&reordered)?;
    assert_eq!(code, 0, "field order and docs need nothing: {report}");
    assert!(kinds(&report).is_empty());

    // A nullable addition: DDL, applied automatically.
    let added = v2(|f| f.push(json!({"name": "coupon", "type": ["null", "string"], "default": null, "doc": "promo"})));
    let (code, report) = planned.plan(&added)?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(kinds(&report), [pair("field_added", "coupon")]);
    assert_eq!(report["changes"][0]["nullable"], true);
    assert_eq!(report["changes"][0]["has_default"], true);
    assert!(report["changes"][0]["rule"].as_str().unwrap_or("").contains("=> auto (default)"));
    assert_eq!(sql(&report), [format!(r#"ALTER TABLE "{}" ADD COLUMN "coupon" TEXT"#, planned.name)]);
    assert_eq!(report["steps"].as_array().and_then(|s| s.last()).map(|s| s["kind"].clone()), Some(json!("replay")));

    // A required addition without a default waits for a person.
    let (code, report) = planned.plan(&v2(|f| f.push(json!({"name": "channel", "type": "string"}))))?;
    assert_eq!((code, report["decision"].as_str()), (2, Some("approve")), "{report}");

    // A rename proven by an alias maps onto the old column, no DDL.
    let aliased = v2(|f| f[1] = json!({"name": "customer_email", "type": "string", "aliases": ["email"]}));
    let (code, report) = planned.plan(&aliased)?;
    assert_eq!(code, 2, "{report}");
    assert_eq!(kinds(&report), [pair("field_renamed", "customer_email")]);
    let change = &report["changes"][0];
    assert_eq!((change["from"].as_str(), change["to"].as_str()), (Some("email"), Some("customer_email")));
    assert_eq!(change["confidence"], 1.0);
    assert!(sql(&report).is_empty());
    let mapping = report["steps"].as_array().into_iter().flatten().find(|s| s["kind"] == "mapping").cloned();
    assert_eq!(
        mapping.map(|m| (m["field"].clone(), m["column"].clone())),
        Some((json!("customer_email"), json!("email")))
    );

    // Without an alias: names that only differ in separators are a rename,
    // unrelated ones a removal plus an addition.
    let (code, report) = planned.plan(&v2(|f| f[1] = json!({"name": "e_mail", "type": "string"})))?;
    assert_eq!(code, 2);
    assert_eq!(kinds(&report), [pair("field_renamed", "e_mail")]);
    assert_eq!(report["changes"][0]["evidence"]["method"], "similarity (no Avro alias)");
    let (code, report) = planned.plan(&v2(|f| f[1] = json!({"name": "phone", "type": "string"})))?;
    assert_eq!(code, 2);
    assert_eq!(kinds(&report), [pair("field_added", "phone"), pair("field_removed", "email")]);
    assert!(sql(&report).iter().all(|s| !s.contains("DROP COLUMN")), "a removal never drops a column");

    // Widening: ALTER COLUMN TYPE on PostgreSQL (approval), mapping only on SQLite (auto).
    let (code, report) = planned.plan(&v2(|f| f[2] = json!({"name": "qty", "type": "long"})))?;
    assert_eq!(kinds(&report), [pair("type_widened", "qty")]);
    if pg {
        assert_eq!(code, 2);
        assert_eq!(sql(&report), [format!(r#"ALTER TABLE "{}" ALTER COLUMN "qty" TYPE BIGINT"#, planned.name)]);
    } else {
        // mend heals it on its own, but the contract's readers cannot read a long.
        assert_eq!((code, &report["contract_can_read"]), (4, &json!(false)), "{report}");
        assert!(sql(&report).is_empty());
    }

    // A type the column cannot hold is blocked, with options for a person.
    let (code, report) = planned.plan(&v2(|f| f[3] = json!({"name": "amount", "type": "string"})))?;
    assert_eq!((code, report["decision"].as_str()), (3, Some("block")));
    assert_eq!(kinds(&report), [pair("type_changed", "amount")]);
    assert!(report["rules"].as_array().into_iter().flatten().any(|r| r.as_str().unwrap_or("").contains("option")));

    // Nullability, enum symbols, defaults.
    let (code, report) =
        planned.plan(&v2(|f| f[2] = json!({"name": "qty", "type": ["null", "int"], "default": null})))?;
    assert!(kinds(&report).contains(&pair("nullability_changed", "qty")), "{report}");
    assert_eq!(code, if pg { 2 } else { 0 }, "PostgreSQL relaxes NOT NULL with approval: {report}");
    let symbols = v2(
        |f| f[4] = json!({"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["paid", "shipped", "refunded"]}}),
    );
    let (code, report) = planned.plan(&symbols)?;
    assert_eq!((code, kinds(&report)), (0, vec![pair("enum_symbols_added", "status")]));

    // Nested: a field added inside the JSON column of a record.
    let nested = v2(|f| {
        if let Some(fields) = f[5]["type"]["fields"].as_array_mut() {
            fields.push(json!({"name": "city", "type": ["null", "string"], "default": null}));
        }
    });
    let (code, report) = planned.plan(&nested)?;
    assert_eq!((code, kinds(&report)), (0, vec![pair("field_added", "shipping.city")]));

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
    assert_eq!(code, 4, "auto, but the contract cannot read it: {report}");
    assert!(report["changes"][0]["rule"].as_str().unwrap_or("").ends_with("(dataset policy)"));
    let (code, _) = planned.plan(&v2(|f| f.push(json!({"name": "c", "type": ["null", "string"], "default": null}))))?;
    assert_eq!(code, 3);
    // Not a schema: exit 1 with a message, not a panic.
    let (code, _) = planned.plan(&json!({"type": "record", "name": "x"}))?;
    assert_eq!(code, 1);
    Ok(())
}
