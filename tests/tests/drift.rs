//! Every change class through the broker, on PostgreSQL and on SQLite: one
//! dataset whose schema drifts version by version (an addition, a widening,
//! a rename without an alias that only the values prove, new enum symbols,
//! the removal of a required field, a field added inside a nested record),
//! each healed before the next. Then every record is checked value by value against what a query
//! written for the *first* schema expects in each column; lost and misplaced
//! values must be 0.

use std::collections::BTreeMap;

use anyhow::Context as _;
use apache_avro::Schema;
use mend_model::api::Incident;
use mend_model::{ChangeKind, IncidentStatus};
use mend_store::Warehouse;
use mend_tests::story::{COLUMNS, Expected, PER_VERSION, POLICY, VERSIONS, expected, record, schema};
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use serde_json::{Value, json};

async fn story(dialect: &str) -> anyhow::Result<()> {
    // Everything but type changes applied on its own: this test is about
    // classes and values; approvals have tests of their own.
    let deployment = Deployment::new(dialect, POLICY)?;
    let up = deployment.up("up.log").await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let producer = producer()?;
    let mut all: BTreeMap<i64, Expected> = BTreeMap::new();
    for version in 1..=VERSIONS {
        let text = schema(version).to_string();
        let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
        let parsed = Schema::parse_str(&text)?;
        for n in 0..PER_VERSION {
            let order = i64::from(version - 1) * PER_VERSION + n;
            let e = expected(version, order);
            produce_avro(&producer, &deployment.topic(), &order.to_string(), id, &parsed, record(version, order, &e))
                .await?;
            all.insert(order, e);
        }
        let want = i64::try_from(all.len())?;
        eventually(&format!("version {version} loaded ({want} rows)"), || {
            let (warehouse, table) = (warehouse.clone(), deployment.dataset.clone());
            async move { Ok((warehouse.count(&table).await.unwrap_or(0) >= want).then_some(())) }
        })
        .await?;
    }

    // What mend concluded for each version (the last rows can land just
    // before their application event is read back: wait for it).
    let url = format!("http://{}/incidents", deployment.api);
    let incidents: Vec<Incident> = eventually("every incident healed", || {
        let url = url.clone();
        async move {
            let list: Vec<Incident> = reqwest::get(&url).await?.json().await?;
            Ok((list.len() >= 5 && list.iter().all(|i| i.status == IncidentStatus::Healed)).then_some(list))
        }
    })
    .await?;
    let kinds: Vec<Vec<ChangeKind>> = incidents.iter().map(|i| i.changes.iter().map(|c| c.kind).collect()).collect();
    use ChangeKind::{EnumSymbolsAdded, FieldAdded, FieldRemoved, FieldRenamed, TypeWidened};
    for expected in [FieldAdded, TypeWidened, FieldRenamed, EnumSymbolsAdded, FieldRemoved] {
        assert!(kinds.iter().any(|k| k.contains(&expected)), "no {expected} incident among {kinds:?}");
    }
    let rename = incidents.iter().flat_map(|i| &i.changes).find(|c| c.kind == FieldRenamed);
    let rename = rename.context("a rename")?;
    assert_eq!((rename.from.as_deref(), rename.to.as_deref()), (Some("amount"), Some("total")), "{rename:?}");
    assert_eq!(
        rename.evidence.get("value_overlap").map(String::as_str),
        Some("1.00"),
        "proven by the values: {rename:?}"
    );

    // Every value where a query written for version 1 looks for it.
    let rows = warehouse.rows_as_text(&deployment.dataset, &COLUMNS).await?;
    let (mut lost, mut misplaced, mut checked) = (0, 0, 0);
    let by_id: BTreeMap<i64, Vec<Option<String>>> =
        rows.into_iter().filter_map(|r| Some((r[0].as_deref()?.parse().ok()?, r))).collect();
    for (id, e) in &all {
        let Some(row) = by_id.get(id) else {
            lost += 1;
            continue;
        };
        let ship: Value = row[6].as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let ok = row[1].as_deref() == Some(e.email.as_str())
            && row[2].as_deref().and_then(|q| q.parse::<i64>().ok()) == e.qty
            && row[3].as_deref().and_then(|a| a.parse::<f64>().ok()).is_some_and(|a| (a - e.amount).abs() < 1e-9)
            && row[4].as_deref() == Some(e.status)
            && row[5].as_deref() == e.coupon.as_deref()
            && ship["city"] == json!(e.city)
            && ship.get("zip").and_then(Value::as_str) == e.zip.as_deref();
        if ok {
            checked += 1;
        } else {
            misplaced += 1;
            eprintln!("order {id}: expected {e:?}, found {row:?}");
        }
    }
    assert_eq!((lost, misplaced, checked), (0, 0, all.len()), "{dialect}: lost, misplaced, checked");
    let names: Vec<String> = warehouse.columns(&deployment.dataset).await?.into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        ["id", "email", "qty", "amount", "status", "ship", "coupon"],
        "no column dropped, none for total"
    );
    drop(up);
    Ok(())
}

#[tokio::test]
async fn every_class_through_the_broker_on_postgres() -> anyhow::Result<()> {
    story("postgres").await
}

#[tokio::test]
async fn every_class_through_the_broker_on_sqlite() -> anyhow::Result<()> {
    story("sqlite").await
}
