//! The drift story of `tests/drift.rs` and `tests/chaos.rs`: one dataset
//! whose schema drifts version by version (an addition, a widening, a
//! rename without an alias that only the values prove, new enum symbols,
//! the removal of a required field, a field added inside a nested record),
//! and what each order should look like in the table.

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};

/// The versions of the story.
pub const VERSIONS: u8 = 7;

/// The policy under which every change of the story heals on its own.
pub const POLICY: &str =
    "[dataset.policy]\nfield_renamed = \"auto\"\nfield_removed = \"auto\"\ntype_widened = \"auto\"\n";

/// The columns a query written for version 1 reads.
pub const COLUMNS: [&str; 7] = ["id", "email", "qty", "amount", "status", "coupon", "ship"];

pub const PER_VERSION: i64 = 20;

/// The schema of each version (1-based).
pub fn schema(version: u8) -> Value {
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
pub struct Expected {
    pub email: String,
    pub qty: Option<i64>,
    pub amount: f64,
    pub status: &'static str,
    pub coupon: Option<String>,
    pub city: String,
    pub zip: Option<String>,
}

pub fn expected(version: u8, id: i64) -> Expected {
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

pub fn record(version: u8, id: i64, e: &Expected) -> Avro {
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
