//! Property tests beside the coverage-guided fuzz targets (`fuzz/`, which
//! keep fixed schemas and let libFuzzer shape the bytes): random Avro
//! schemas, pairs of them, and bytes from
//! nowhere or from valid records cut and changed, through everything that
//! reads them — the wire-format header, the strict datum reader, the load
//! plan, the flat COPY decoder and the drift classifier. Nothing may panic,
//! and the flat decoder must refuse a record exactly when, and for the same
//! reason as, the generic path.
//!
//! `make test` runs each for proptest's default 256 cases; `make fuzz` runs
//! them for `PROPTEST_CASES` (a million by default) in release. A failing
//! case is kept in `proptest-regressions/` and tried first ever after.

use apache_avro::Schema;
use mend_config::Nested;
use mend_model::{Dialect, QuarantineKind};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

use crate::agree::judge;
use crate::drift::classify;
use crate::loader::frame;
use crate::schema::columns_for;

/// Field names drawn from a small pool, so that two schemas share fields.
const NAMES: [&str; 6] = ["id", "email", "amount", "status", "a", "b"];

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!("null")),
        Just(json!("boolean")),
        Just(json!("int")),
        Just(json!("long")),
        Just(json!("float")),
        Just(json!("double")),
        Just(json!("bytes")),
        Just(json!("string")),
        Just(json!({"type": "long", "logicalType": "timestamp-millis"})),
        Just(json!({"type": "int", "logicalType": "date"})),
        Just(json!({"type": "string", "logicalType": "uuid"})),
        Just(json!({"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2})),
        Just(json!({"type": "fixed", "name": "F", "size": 4})),
        proptest::sample::subsequence(vec!["A", "B", "C", "D"], 1..4)
            .prop_map(|symbols| json!({"type": "enum", "name": "E", "symbols": symbols})),
    ]
}

fn avro_type() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| json!(["null", t])),
            inner.clone().prop_map(|t| json!([t, "null"])),
            inner.clone().prop_map(|t| json!({"type": "array", "items": t})),
            inner.clone().prop_map(|t| json!({"type": "map", "values": t})),
            fields(inner).prop_map(|fields| json!({"type": "record", "name": "R", "fields": fields})),
        ]
    })
}

fn fields(types: impl Strategy<Value = Json>) -> impl Strategy<Value = Vec<Json>> {
    proptest::collection::btree_map(proptest::sample::select(NAMES.to_vec()), (types, any::<bool>()), 1..5).prop_map(
        |fields| {
            fields
                .into_iter()
                .map(|(name, (schema, default))| {
                    let mut field = json!({"name": name, "type": schema});
                    if default && schema.as_array().is_some_and(|u| u.first() == Some(&json!("null"))) {
                        field["default"] = Json::Null;
                    }
                    field
                })
                .collect()
        },
    )
}

/// Gives every named type a name of its own (Avro forbids redefining one).
fn rename(schema: &mut Json, next: &mut usize) {
    match schema {
        Json::Object(map) => {
            if matches!(map.get("type").and_then(Json::as_str), Some("record" | "enum" | "fixed")) {
                map.insert("name".into(), json!(format!("N{next}")));
                *next += 1;
            }
            for value in map.values_mut() {
                rename(value, next);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|item| rename(item, next)),
        _ => {}
    }
}

/// A top-level record schema (None when Avro refuses what was drawn, such
/// as a union inside a union).
fn record() -> impl Strategy<Value = Option<Schema>> {
    fields(avro_type()).prop_map(|fields| {
        let mut schema = json!({"type": "record", "name": "Top", "fields": fields});
        rename(&mut schema, &mut 0);
        Schema::parse_str(&schema.to_string()).ok()
    })
}

/// Bytes to decode: random, or a valid-looking header and random datum, or
/// the datum cut short or lengthened.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|datum| [&[0, 0, 0, 0, 1][..], &datum].concat()),
    ]
}

/// A random value of `schema` (None for types this does not generate).
fn value_of(schema: &Schema, rng: &mut fastrand::Rng, depth: usize) -> Option<apache_avro::types::Value> {
    use apache_avro::types::Value as V;
    let text = |rng: &mut fastrand::Rng| -> String {
        (0..rng.usize(0..6)).map(|_| ['a', '\t', '\\', 'é', '日', '0'][rng.usize(..6)]).collect()
    };
    let many = |rng: &mut fastrand::Rng| if depth > 3 { 0 } else { rng.usize(0..3) };
    Some(match schema {
        Schema::Null => V::Null,
        Schema::Boolean => V::Boolean(rng.bool()),
        Schema::Int => V::Int(if rng.bool() { rng.i32(-3..3) } else { rng.i32(..) }),
        Schema::Long => V::Long(if rng.bool() { rng.i64(-3..3) } else { rng.i64(..) }),
        Schema::Float => V::Float(f32::from_bits(rng.u32(..))),
        Schema::Double => V::Double(f64::from_bits(rng.u64(..))),
        Schema::Bytes => V::Bytes((0..rng.usize(0..6)).map(|_| rng.u8(..)).collect()),
        Schema::String => V::String(text(rng)),
        Schema::Date => V::Date(rng.i32(-1000..1000)),
        Schema::TimestampMillis => V::TimestampMillis(rng.i64(-1 << 40..1 << 40)),
        Schema::Uuid(_) => V::Uuid(uuid::Uuid::from_u128(rng.u128(..))),
        Schema::Fixed(fixed) => V::Fixed(fixed.size, (0..fixed.size).map(|_| rng.u8(..)).collect()),
        Schema::Enum(e) => {
            let index = rng.usize(..e.symbols.len());
            V::Enum(u32::try_from(index).ok()?, e.symbols[index].clone())
        }
        Schema::Union(union) => {
            let index = rng.usize(..union.variants().len());
            V::Union(u32::try_from(index).ok()?, Box::new(value_of(&union.variants()[index], rng, depth + 1)?))
        }
        Schema::Array(array) => {
            V::Array((0..many(rng)).map(|_| value_of(&array.items, rng, depth + 1)).collect::<Option<_>>()?)
        }
        Schema::Map(map) => V::Map(
            (0..many(rng))
                .map(|i| Some((format!("k{i}"), value_of(&map.types, rng, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
        Schema::Record(record) => V::Record(
            record
                .fields
                .iter()
                .map(|f| Some((f.name.clone(), value_of(&f.schema, rng, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// Datums of `writer`: valid ones, and each cut short, lengthened and with
/// a byte changed; then random bytes.
fn datums(writer: &Schema, seed: u64, random: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    for _ in 0..4 {
        let Some(value) = value_of(writer, &mut rng, 0) else { break };
        #[allow(deprecated)]
        let Ok(datum) = apache_avro::to_avro_datum(writer, value) else { continue };
        if !datum.is_empty() {
            out.push(datum[..rng.usize(..datum.len())].to_vec());
            let mut changed = datum.clone();
            let at = rng.usize(..changed.len());
            changed[at] = rng.u8(..);
            out.push(changed);
        }
        out.push([&datum[..], &[rng.u8(..)]].concat());
        out.push(datum);
    }
    out.extend(random.iter().filter_map(|p| frame(p).ok().map(|_| p[5..].to_vec())));
    out
}

proptest! {
    /// Any pair of schemas: classified, planned, and any bytes read with
    /// the writer's schema; the two decoders agree.
    #[test]
    fn fuzz_schema_pairs_and_bytes(
        old in record(),
        other in record(),
        same in any::<bool>(),
        seed in any::<u64>(),
        payloads in proptest::collection::vec(payload(), 0..4),
    ) {
        let Some(old) = old else { return Ok(()) };
        // Half the time the writer is the contract itself, so that plans
        // exist and records load.
        let new = if same { Some(old.clone()) } else { other };
        let Some(new) = new else { return Ok(()) };
        prop_assert!(classify(&old, &old).is_empty(), "a schema does not drift from itself");
        let _ = classify(&old, &new);
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            if let Ok((columns, _)) = columns_for(&old, dialect, Nested::Json) {
                prop_assert!(!columns.is_empty());
            }
        }
        let data = datums(&new, seed, &payloads);
        let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let judged = judge(&new, &old, &data);
        prop_assert!(judged.is_ok(), "{:?} of {:?}", judged, new);
    }

    /// The header: a record is too large, not in the wire format, or names
    /// the schema id of its bytes 1–4.
    #[test]
    fn fuzz_wire_format_header(payload in proptest::collection::vec(any::<u8>(), 0..16)) {
        match frame(&payload) {
            Ok(id) => {
                prop_assert_eq!(payload[0], 0);
                prop_assert_eq!(id, u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]));
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.kind, QuarantineKind::NotWireFormat);
                prop_assert!(payload.len() < 5 || payload[0] != 0);
            }
        }
    }
}
