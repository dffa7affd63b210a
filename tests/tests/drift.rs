//! Every change class through the broker, on PostgreSQL and on SQLite: one
//! dataset whose schema drifts version by version (an addition, a widening,
//! a rename without an alias that only the values prove, new enum symbols,
//! the removal of a required field, a field added inside a nested record),
//! each healed before the next. Then every record is checked value by value against what a query
//! written for the *first* schema expects in each column; lost and misplaced
//! values must be 0.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_store::Warehouse;
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use serde_json::{Value, json};

const PER_VERSION: i64 = 20;

/// The schema of each version (1-based).
fn schema(version: u8) -> Value {
    let mut fields = vec![json!({"name": "id", "type": "long"}), json!({"name": "email", "type": "string"})];
    // v3 widens qty; v6 drops it (required, so its records cannot load without a plan).
    if version < 6 {
        fields.push(json!({"name": "qty", "type": if version >= 3 { "long" } else { "int" }}));
    }
    // v4: amount renamed total, no alias: only the values can prove it.
    fields.push(json!({"name": if version >= 4 { "total" } else { "amount" }, "type": "double"}));
    let mut symbols = vec!["paid", "shipped"];
    if version >= 5 {
        symbols.push("refunded");
    }
    fields.push(json!({"name": "status", "type": {"type": "enum", "name": "Status", "symbols": symbols}}));
    let mut ship = vec![json!({"name": "city", "type": "string"})];
    if version >= 7 {
        ship.push(json!({"name": "zip", "type": ["null", "string"], "default": null}));
    }
    fields.push(json!({"name": "ship", "type": {"type": "record", "name": "Ship", "fields": ship}}));
    if (2..6).contains(&version) {
        fields.push(json!({"name": "coupon", "type": ["null", "string"], "default": null, "doc": "promotion"}));
    }
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": fields})
}

/// What one order should look like in the table (old column names).
#[derive(Debug, Clone)]
struct Expected {
    email: String,
    qty: Option<i64>,
    amount: f64,
    status: &'static str,
    coupon: Option<String>,
    city: String,
    zip: Option<String>,
}

fn expected(version: u8, id: i64) -> Expected {
    Expected {
        email: format!("c{id}@example.com"),
        qty: match version {
            1 | 2 => Some(id),
            3..=5 => Some(3_000_000_000 + id),
            _ => None,
        },
        // A small set of amounts: the renamed field's values overlap the old column's.
        amount: [10.5, 20.0, 30.25, 42.0][usize::try_from(id % 4).unwrap_or(0)],
        status: if version >= 5 && id % 2 == 0 {
            "refunded"
        } else {
            ["paid", "shipped"][usize::try_from(id % 2).unwrap_or(0)]
        },
        coupon: ((2..6).contains(&version) && id % 3 == 0).then(|| format!("SAVE{id}")),
        city: format!("city{}", id % 5),
        zip: (version >= 7).then(|| format!("{:05}", id)),
    }
}

fn record(version: u8, id: i64, e: &Expected) -> Avro {
    let qty = match e.qty {
        Some(q) if version >= 3 => Some(Avro::Long(q)),
        Some(q) => Some(Avro::Int(i32::try_from(q).unwrap_or(0))),
        None => None,
    };
    let symbols: Vec<&str> = if version >= 5 { vec!["paid", "shipped", "refunded"] } else { vec!["paid", "shipped"] };
    let status = Avro::Enum(
        u32::try_from(symbols.iter().position(|s| *s == e.status).unwrap_or(0)).unwrap_or(0),
        e.status.into(),
    );
    let mut ship = vec![("city".to_owned(), Avro::String(e.city.clone()))];
    if version >= 7 {
        ship.push(("zip".into(), Avro::Union(1, Box::new(Avro::String(e.zip.clone().unwrap_or_default())))));
    }
    let mut fields = vec![
        ("id".to_owned(), Avro::Long(id)),
        ("email".to_owned(), Avro::String(e.email.clone())),
        ((if version >= 4 { "total" } else { "amount" }).to_owned(), Avro::Double(e.amount)),
        ("status".to_owned(), status),
        ("ship".to_owned(), Avro::Record(ship)),
    ];
    if let Some(qty) = qty {
        fields.insert(2, ("qty".to_owned(), qty));
    }
    if (2..6).contains(&version) {
        let coupon = match &e.coupon {
            Some(c) => Avro::Union(1, Box::new(Avro::String(c.clone()))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        fields.push(("coupon".into(), coupon));
    }
    Avro::Record(fields)
}

async fn story(dialect: &str) -> anyhow::Result<()> {
    // Everything but type changes applied on its own: this test is about
    // classes and values; approvals have tests of their own.
    let policy = "[dataset.policy]\nfield_renamed = \"auto\"\nfield_removed = \"auto\"\ntype_widened = \"auto\"\n";
    let deployment = Deployment::new(dialect, policy)?;
    let up = deployment.up("up.log").await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let producer = producer()?;
    let mut all: BTreeMap<i64, Expected> = BTreeMap::new();
    for version in 1..=7u8 {
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
    let incidents: Value = eventually("every incident healed", || {
        let url = url.clone();
        async move {
            let incidents: Value = reqwest::get(&url).await?.json().await?;
            let list = incidents.as_array().cloned().unwrap_or_default();
            Ok((list.len() >= 5 && list.iter().all(|i| i["status"] == "healed")).then_some(incidents))
        }
    })
    .await?;
    let kinds: Vec<Vec<String>> = incidents
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            i["changes"].as_array().into_iter().flatten().map(|c| c["kind"].as_str().unwrap_or("").to_owned()).collect()
        })
        .collect();
    for expected in ["field_added", "type_widened", "field_renamed", "enum_symbols_added", "field_removed"] {
        assert!(kinds.iter().any(|k| k.iter().any(|k| k == expected)), "no {expected} incident among {kinds:?}");
    }
    let rename = incidents
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["changes"].as_array().cloned().unwrap_or_default())
        .find(|c| c["kind"] == "field_renamed")
        .unwrap_or_default();
    assert_eq!((rename["from"].as_str(), rename["to"].as_str()), (Some("amount"), Some("total")), "{rename}");
    assert_eq!(rename["evidence"]["value_overlap"], "1.00", "proven by the values: {rename}");

    // Every value where a query written for version 1 looks for it.
    let columns = ["id", "email", "qty", "amount", "status", "coupon", "ship"];
    let rows = warehouse.rows_as_text(&deployment.dataset, &columns).await?;
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
