use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;

use super::*;
use crate::loader::read_datum;
use crate::schema::columns_for;
use mend_config::Nested;
use mend_model::Dialect;
use mend_model::QuarantineKind;

#[test]
fn rows_are_escaped_as_copy_reads_them() {
    let rows = [Row {
        position: Position { partition: 1, offset: 9 },
        values: vec![
            // (a NUL never gets here: the value path refuses it, `values::NUL_TEXT`)
            SqlValue::Text("a\tb\\c\nd\ref".into()),
            SqlValue::Null,
            SqlValue::Bool(true),
            SqlValue::Float(1.5),
            SqlValue::Float(f64::NEG_INFINITY),
            SqlValue::Int(-42),
            SqlValue::Bytes(vec![0xde, 0xad]),
        ],
    }];
    let mut out = Vec::new();
    encode_rows(&rows, &mut out);
    assert_eq!(String::from_utf8_lossy(&out), "a\\tb\\\\c\\nd\\ref\t\\N\tt\t1.5\t-Infinity\t-42\t\\\\xdead\t1\t9\n");
}

/// The types a flat field can have, and how to make a random value of each.
const TYPES: [&str; 9] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string", "enum"];

fn type_json(kind: &str, name: &str) -> String {
    match kind {
        "enum" => format!(r#"{{"type":"enum","name":"E_{name}","symbols":["A","b_2","C_3"]}}"#),
        other => format!("\"{other}\""),
    }
}

/// What a contract field may declare for a writer field of `kind`
/// (Avro's promotions; the contract reads the writer).
fn promoted(kind: &str, rng: &mut fastrand::Rng) -> String {
    let choices: &[&str] = match kind {
        "int" => &["int", "long", "float", "double"],
        "long" => &["long", "float", "double"],
        "float" => &["float", "double"],
        "string" => &["string", "bytes"],
        "bytes" => &["bytes", "string"],
        other => return other.to_owned(),
    };
    choices[rng.usize(..choices.len())].to_owned()
}

struct Field {
    name: String,
    kind: &'static str,
    /// Union index of null, for a nullable field.
    null: Option<u32>,
}

fn field_json(name: &str, kind: &str, null: Option<u32>, enum_name: &str) -> String {
    let inner = type_json(kind, enum_name);
    let schema = match null {
        None => inner,
        Some(0) => format!(r#"["null",{inner}]"#),
        Some(_) => format!(r#"[{inner},"null"]"#),
    };
    format!(r#"{{"name":"{name}","type":{schema}}}"#)
}

fn record_json(fields: &[String]) -> String {
    format!(r#"{{"type":"record","name":"R","fields":[{}]}}"#, fields.join(","))
}

/// A random flat writer schema and a contract that reads it: its fields
/// shuffled, some promoted, and fields the writer lacks (with defaults).
fn schemas(rng: &mut fastrand::Rng) -> (Vec<Field>, Schema, Schema) {
    let fields: Vec<Field> = (0..rng.usize(1..9))
        .map(|i| {
            let kind = TYPES[rng.usize(..TYPES.len())];
            let null = (kind != "null" && rng.bool()).then(|| rng.u32(..2));
            Field { name: format!("f{i}"), kind, null }
        })
        .collect();
    let writer: Vec<String> = fields.iter().map(|f| field_json(&f.name, f.kind, f.null, &f.name)).collect();
    let mut contract: Vec<String> = fields
        .iter()
        .map(|f| {
            let kind = promoted(f.kind, rng);
            // A nullable writer field needs a nullable contract field.
            let null =
                if f.null.is_some() || (f.kind != "null" && rng.u8(..4) == 0) { Some(rng.u32(..2)) } else { None };
            field_json(&f.name, &kind, null, &f.name)
        })
        .collect();
    let extras = [
        r#"{"name":"x_null","type":["null","string"],"default":null}"#,
        r#"{"name":"x_long","type":"long","default":7}"#,
        r#"{"name":"x_text","type":"string","default":"t\tab\\"}"#,
        r#"{"name":"x_double","type":"double","default":2.5}"#,
    ];
    for extra in extras {
        if rng.bool() {
            contract.push(extra.to_owned());
        }
    }
    rng.shuffle(&mut contract);
    let parse = |json: String| Schema::parse_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    (fields, parse(record_json(&writer)), parse(record_json(&contract)))
}

fn random_text(rng: &mut fastrand::Rng) -> String {
    const CHARS: [char; 10] = ['a', 'Z', '7', ' ', '\t', '\n', '\r', '\\', '\0', 'é'];
    (0..rng.usize(0..12)).map(|_| if rng.u8(..8) == 0 { '日' } else { CHARS[rng.usize(..CHARS.len())] }).collect()
}

fn random_value(kind: &str, rng: &mut fastrand::Rng) -> Value {
    match kind {
        "null" => Value::Null,
        "boolean" => Value::Boolean(rng.bool()),
        "int" => Value::Int(if rng.bool() { rng.i32(-100..100) } else { rng.i32(..) }),
        "long" => Value::Long(if rng.bool() { rng.i64(-100..100) } else { rng.i64(..) }),
        "float" => Value::Float(if rng.bool() { rng.f32() * 100.0 } else { f32::from_bits(rng.u32(..)) }),
        "double" => Value::Double(if rng.bool() { rng.f64() * 1e6 } else { f64::from_bits(rng.u64(..)) }),
        // Bytes are sometimes UTF-8, sometimes not (a `string` contract
        // field rejects those).
        "bytes" if rng.bool() => Value::Bytes(random_text(rng).into_bytes()),
        "bytes" => Value::Bytes((0..rng.usize(0..10)).map(|_| rng.u8(..)).collect()),
        "string" => Value::String(random_text(rng)),
        _ => {
            let index = rng.u32(..3);
            Value::Enum(index, ["A", "b_2", "C_3"][index as usize].to_owned())
        }
    }
}

fn random_datum(fields: &[Field], writer: &Schema, rng: &mut fastrand::Rng) -> Vec<u8> {
    let values = fields
        .iter()
        .map(|f| {
            let value = match f.null {
                None => random_value(f.kind, rng),
                Some(null) if rng.u8(..3) == 0 => Value::Union(null, Box::new(Value::Null)),
                Some(null) => Value::Union(1 - null, Box::new(random_value(f.kind, rng))),
            };
            (f.name.clone(), value)
        })
        .collect();
    #[allow(deprecated)]
    apache_avro::to_avro_datum(writer, Value::Record(values)).unwrap_or_else(|e| panic!("{e}"))
}

/// The generic path: apache-avro's `Value`, the plan's row, its COPY text.
fn generic(reader: &GenericDatumReader<'_>, plan: &LoadPlan, datum: &[u8]) -> Result<Vec<u8>, QuarantineKind> {
    let value = read_datum(reader, 0, datum).map_err(|rejection| rejection.kind)?;
    let values = plan.row(value).map_err(|_| QuarantineKind::ValueRejected)?;
    let mut out = Vec::new();
    encode_row(&Row { position: Position { partition: 3, offset: 11 }, values }, &mut out);
    Ok(out)
}

fn flat(decoder: &FlatDecoder, datum: &[u8]) -> Result<Vec<u8>, QuarantineKind> {
    let mut out = b"kept".to_vec();
    let result = decoder.decode(datum, Position { partition: 3, offset: 11 }, &[], &mut out);
    match result {
        Ok(()) => Ok(out.split_off(4)),
        Err(error) => {
            assert_eq!(out, b"kept", "a failed decode leaves the buffer as it was");
            Err(error.kind())
        }
    }
}

/// Both load, or both are refused for the same reason kind.
fn same_class(a: &Result<Vec<u8>, QuarantineKind>, b: &Result<Vec<u8>, QuarantineKind>) -> bool {
    match (a, b) {
        (Ok(_), Ok(_)) => true,
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

#[test]
fn flat_records_decode_to_the_same_copy_text_as_the_generic_path() {
    let mut rng = fastrand::Rng::with_seed(0x6d656e64);
    let (mut records, mut rejected, mut broken) = (0, 0, 0);
    for _ in 0..400 {
        let (fields, writer, contract) = schemas(&mut rng);
        let mapping: BTreeMap<String, String> =
            columns_for(&contract, Dialect::Postgres, Nested::Json).unwrap_or_else(|e| panic!("{e}")).1;
        let plan = LoadPlan::new(&writer, &contract, &mapping, Nested::Json)
            .unwrap_or_else(|e| panic!("{e}\nwriter {writer:?}\ncontract {contract:?}"));
        let decoder = FlatDecoder::new(&writer, &plan).unwrap_or_else(|| panic!("not flat: {writer:?}"));
        let reader = GenericDatumReader::builder(&writer).build().unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..50 {
            let datum = random_datum(&fields, &writer, &mut rng);
            let expected = generic(&reader, &plan, &datum);
            let got = flat(&decoder, &datum);
            match (&expected, &got) {
                (Ok(expected), Ok(got)) => {
                    assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(expected), "{writer:?}");
                    records += 1;
                }
                _ => {
                    assert!(same_class(&expected, &got), "{expected:?} vs {got:?} for {datum:?} of {writer:?}");
                    rejected += 1;
                }
            }
            // Cut short, or with a byte changed: the two paths agree on
            // whether the record loads, and on its row when it does.
            if !datum.is_empty() {
                let cut = &datum[..rng.usize(..datum.len())];
                assert_eq!(flat(&decoder, cut), Err(QuarantineKind::Truncated), "{cut:?} of {writer:?}");
                assert_eq!(generic(&reader, &plan, cut), Err(QuarantineKind::Truncated), "{cut:?} of {writer:?}");
                let mut longer = datum.clone();
                longer.push(rng.u8(..));
                assert_eq!(flat(&decoder, &longer), Err(QuarantineKind::TrailingBytes), "{longer:?} of {writer:?}");
                assert_eq!(generic(&reader, &plan, &longer), Err(QuarantineKind::TrailingBytes));
                let mut changed = datum.clone();
                let at = rng.usize(..changed.len());
                changed[at] = rng.u8(..);
                let (expected, got) = (generic(&reader, &plan, &changed), flat(&decoder, &changed));
                assert!(same_class(&expected, &got), "{expected:?} vs {got:?} for {changed:?} of {writer:?}");
                if let (Ok(expected), Ok(got)) = (&expected, &got) {
                    assert_eq!(got, expected, "{changed:?} of {writer:?}");
                } else {
                    broken += 1;
                }
            }
        }
    }
    // The generator reaches every outcome (so the assertions above ran).
    assert!(records > 10_000 && rejected > 100 && broken > 100, "{records} {rejected} {broken}");
}

#[test]
fn nested_and_logical_schemas_take_the_generic_path() {
    let parse = |fields: &str| Schema::parse_str(&record_json(&[fields.to_owned()])).unwrap_or_else(|e| panic!("{e}"));
    for fields in [
        r#"{"name":"a","type":{"type":"record","name":"In","fields":[{"name":"b","type":"int"}]}}"#,
        r#"{"name":"a","type":{"type":"array","items":"int"}}"#,
        r#"{"name":"a","type":["null","int","string"]}"#,
        r#"{"name":"a","type":{"type":"long","logicalType":"timestamp-millis"}}"#,
        r#"{"name":"a","type":{"type":"fixed","name":"F","size":2}}"#,
    ] {
        let schema = parse(fields);
        let mapping = columns_for(&schema, Dialect::Postgres, Nested::Json).unwrap_or_else(|e| panic!("{e}")).1;
        let plan = LoadPlan::new(&schema, &schema, &mapping, Nested::Json).unwrap_or_else(|e| panic!("{e}"));
        assert!(FlatDecoder::new(&schema, &plan).is_none(), "{fields}");
    }
}
