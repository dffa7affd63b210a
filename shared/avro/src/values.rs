//! Avro values to SQL values: promotions, logical types rendered as the SQL
//! text PostgreSQL and SQLite read, anything nested as JSON. Every value
//! has one lossless form (docs/values.md); a value
//! mend cannot represent is an error, which quarantines its record with the
//! reason. Nothing is ever written as debug text.

use apache_avro::Schema;
use apache_avro::schema::Names;
use apache_avro::types::Value;
use mend_model::SqlValue;
use serde_json::Value as J;

use crate::schema::{json_column, strip_null, type_name};

/// Why a string holding U+0000 cannot load: PostgreSQL's text and jsonb
/// hold no NUL character (and COPY cannot write one). Refused in either
/// dialect, so a dataset loads alike on both.
pub const NUL_TEXT: &str = "a string holding the NUL character (U+0000), which PostgreSQL's text and jsonb cannot hold";

/// The schema a value was written with, and the named types it refers to:
/// what a nested value's form (a decimal's scale) is read from.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub schema: &'a Schema,
    pub names: &'a Names,
}

impl<'a> Writer<'a> {
    /// `schema` without named types elsewhere (a default, a sample).
    pub fn alone(schema: &'a Schema) -> Self {
        static NONE: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::new);
        Self { schema, names: &NONE }
    }

    fn at(self, schema: &'a Schema) -> Self {
        Self { schema, ..self }
    }

    /// The schema itself, a named reference resolved.
    fn resolved(self) -> Result<&'a Schema, String> {
        match self.schema {
            Schema::Ref { name } => self
                .names
                .get(name)
                .or_else(|| self.names.iter().find(|(n, _)| n.name() == name.name()).map(|(_, s)| s))
                .ok_or_else(|| format!("the named type {} is not defined", name.fullname(None))),
            other => Ok(other),
        }
    }
}

/// Converts a value (written with `writer`, which the contract field can
/// read) to the SQL value of the contract field's column (`target`).
pub fn to_sql(value: Value, target: &Schema, writer: Writer<'_>) -> Result<SqlValue, String> {
    if json_column(target) {
        return Ok(match value {
            Value::Null => SqlValue::Null,
            Value::Union(_, inner) if matches!(*inner, Value::Null) => SqlValue::Null,
            value => SqlValue::Json(json_of(value, writer)?.to_string()),
        });
    }
    let (value, writer) = match (value, writer.resolved()?) {
        (Value::Union(index, inner), Schema::Union(union)) => {
            let branch = union.variants().get(index as usize).ok_or("a union branch beyond the schema")?;
            (*inner, writer.at(branch))
        }
        (Value::Union(_, inner), _) => (*inner, writer),
        (other, _) => (other, writer),
    };
    let (target, _) = strip_null(target);
    Ok(match (value, target) {
        (Value::Null, _) => SqlValue::Null,
        (Value::Boolean(b), _) => SqlValue::Bool(b),
        (Value::Int(i), Schema::Float | Schema::Double) => SqlValue::Float(f64::from(i)),
        (Value::Long(i), Schema::Float | Schema::Double) => SqlValue::Float(i as f64),
        (Value::Int(i), _) => SqlValue::Int(i64::from(i)),
        (Value::Long(i), _) => SqlValue::Int(i),
        (Value::Float(f), _) => SqlValue::Float(f64::from(f)),
        (Value::Double(f), _) => SqlValue::Float(f),
        (Value::String(s), Schema::Bytes) => SqlValue::Bytes(s.into_bytes()),
        (Value::Bytes(b), Schema::String) if b.contains(&0) => return Err(NUL_TEXT.into()),
        (Value::Bytes(b), Schema::String) => {
            SqlValue::Text(String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 for a string column")?)
        }
        (Value::String(s), _) | (Value::Enum(_, s), _) if s.contains('\0') => return Err(NUL_TEXT.into()),
        (Value::String(s), _) | (Value::Enum(_, s), _) => SqlValue::Text(s),
        (Value::Uuid(u), _) => SqlValue::Text(u.to_string()),
        (Value::Bytes(b), _) | (Value::Fixed(_, b), _) => SqlValue::Bytes(b),
        (Value::Date(days), _) => SqlValue::Date(date_text(i64::from(days))),
        (value @ (Value::TimestampMillis(_) | Value::TimestampMicros(_) | Value::TimestampNanos(_)), _) => {
            SqlValue::Timestamp(instant(&value).unwrap_or_default())
        }
        (
            value @ (Value::LocalTimestampMillis(_) | Value::LocalTimestampMicros(_) | Value::LocalTimestampNanos(_)),
            _,
        ) => SqlValue::Timestamp(instant(&value).unwrap_or_default()),
        (Value::TimeMillis(ms), _) => SqlValue::Int(i64::from(ms)),
        (Value::TimeMicros(us), _) => SqlValue::Int(us),
        (Value::Decimal(d), _) => SqlValue::Decimal(decimal_text(&d, scale(writer, target)?)?),
        (Value::BigDecimal(d), _) => SqlValue::Decimal(d.to_plain_string()),
        (other, _) => SqlValue::Json(json_of(other, writer)?.to_string()),
    })
}

/// A decimal's scale: the writer's (the contract's when the writer's is
/// not known).
fn scale(writer: Writer<'_>, target: &Schema) -> Result<usize, String> {
    match (writer.resolved()?, target) {
        (Schema::Decimal(d), _) | (_, Schema::Decimal(d)) => Ok(d.scale),
        (other, _) => Err(format!("a decimal value written as {}", type_name(other))),
    }
}

/// The JSON form of a value inside a JSON column (records, arrays, maps and
/// unions of them, durations), the same on every dialect: numbers as JSON
/// numbers (NaN and the infinities as the strings "NaN", "Infinity",
/// "-Infinity"); decimals as exact decimal strings; bytes and fixed as
/// lowercase hex; dates `YYYY-MM-DD`; times `HH:MM:SS[.fraction]`;
/// timestamps RFC 3339 in UTC (`…+00:00`), local timestamps without an
/// offset; durations `{"months", "days", "milliseconds"}`; a union as the
/// value of its branch.
pub fn json_of(value: Value, writer: Writer<'_>) -> Result<J, String> {
    let schema = writer.resolved()?;
    Ok(match (value, schema) {
        (Value::Union(index, inner), Schema::Union(union)) => {
            let branch = union.variants().get(index as usize).ok_or("a union branch beyond the schema")?;
            json_of(*inner, writer.at(branch))?
        }
        (Value::Union(_, inner), _) => json_of(*inner, writer)?,
        (Value::Null, _) => J::Null,
        (Value::Boolean(b), _) => J::Bool(b),
        (Value::Int(i), _) => J::from(i),
        (Value::Long(i), _) => J::from(i),
        (Value::Float(f), _) => float_json(f64::from(f)),
        (Value::Double(f), _) => float_json(f),
        (Value::String(s), _) | (Value::Enum(_, s), _) if s.contains('\0') => return Err(NUL_TEXT.into()),
        (Value::String(s), _) | (Value::Enum(_, s), _) => J::String(s),
        (Value::Uuid(u), _) => J::String(u.to_string()),
        (Value::Bytes(b), _) | (Value::Fixed(_, b), _) => J::String(hex::encode(b)),
        (Value::Decimal(d), Schema::Decimal(schema)) => J::String(decimal_text(&d, schema.scale)?),
        (Value::BigDecimal(d), _) => J::String(d.to_plain_string()),
        (Value::Date(days), _) => J::String(date_text(i64::from(days))),
        (Value::TimeMillis(ms), _) => J::String(time_text(i64::from(ms) * 1_000_000)?),
        (Value::TimeMicros(us), _) => J::String(time_text(us.saturating_mul(1000))?),
        (
            value @ (Value::TimestampMillis(_)
            | Value::TimestampMicros(_)
            | Value::TimestampNanos(_)
            | Value::LocalTimestampMillis(_)
            | Value::LocalTimestampMicros(_)
            | Value::LocalTimestampNanos(_)),
            _,
        ) => J::String(instant(&value).unwrap_or_default()),
        (Value::Duration(d), _) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "milliseconds": u32::from(d.millis()),
        }),
        (Value::Array(items), Schema::Array(array)) => {
            J::Array(items.into_iter().map(|v| json_of(v, writer.at(&array.items))).collect::<Result<_, _>>()?)
        }
        (Value::Map(map), Schema::Map(types)) => J::Object(
            map.into_iter()
                .map(|(k, v)| match k.contains('\0') {
                    true => Err(NUL_TEXT.to_owned()),
                    false => Ok((k, json_of(v, writer.at(&types.types))?)),
                })
                .collect::<Result<_, String>>()?,
        ),
        (Value::Record(fields), Schema::Record(record)) => J::Object(
            fields
                .into_iter()
                .zip(&record.fields)
                .map(|((name, v), field)| Ok((name, json_of(v, writer.at(&field.schema))?)))
                .collect::<Result<_, String>>()?,
        ),
        (value, schema) => {
            return Err(format!("a {} value where its schema says {}", value_kind(&value), type_name(schema)));
        }
    })
}

/// A float as JSON: a number, or the name of a value JSON has no number for.
fn float_json(f: f64) -> J {
    match serde_json::Number::from_f64(f) {
        Some(number) => J::Number(number),
        None if f.is_nan() => J::String("NaN".into()),
        None if f > 0.0 => J::String("Infinity".into()),
        None => J::String("-Infinity".into()),
    }
}

/// The RFC 3339 text of a timestamp value: UTC ones with `+00:00`, local
/// ones without an offset.
fn instant(value: &Value) -> Option<String> {
    let (nanos, local) = match *value {
        Value::TimestampMillis(ms) => (i128::from(ms) * 1_000_000, false),
        Value::TimestampMicros(us) => (i128::from(us) * 1000, false),
        Value::TimestampNanos(ns) => (i128::from(ns), false),
        Value::LocalTimestampMillis(ms) => (i128::from(ms) * 1_000_000, true),
        Value::LocalTimestampMicros(us) => (i128::from(us) * 1000, true),
        Value::LocalTimestampNanos(ns) => (i128::from(ns), true),
        _ => return None,
    };
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let text = timestamp_text(seconds, i64::try_from(nanos.rem_euclid(1_000_000_000)).ok()?);
    Some(if local { text.trim_end_matches("+00:00").to_owned() } else { text })
}

/// `HH:MM:SS[.fraction]` of nanoseconds after midnight.
fn time_text(nanos: i64) -> Result<String, String> {
    if !(0..86_400 * 1_000_000_000).contains(&nanos) {
        return Err(format!("a time of day {nanos} ns after midnight, beyond one day"));
    }
    let seconds = nanos / 1_000_000_000;
    let mut text = format!("{:02}:{:02}:{:02}", seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let fraction = nanos % 1_000_000_000;
    if fraction != 0 {
        text.push_str(format!(".{fraction:09}").trim_end_matches('0'));
    }
    Ok(text)
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Decimal(_) => "decimal",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        _ => "scalar",
    }
}

/// The exact decimal text of an Avro decimal of `scale` (any size).
pub(crate) fn decimal_text(decimal: &apache_avro::Decimal, scale: usize) -> Result<String, String> {
    let unscaled = num_bigint::BigInt::from(decimal.clone());
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{int}.{frac}"))
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian).
pub(crate) fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO 8601 UTC text of a timestamp.
pub(crate) fn timestamp_text(seconds: i64, nanos: i64) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    let mut text = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60);
    if nanos != 0 {
        text.push_str(format!(".{nanos:09}").trim_end_matches('0'));
    }
    text.push_str("+00:00");
    text
}

/// Howard Hinnant's days → civil date algorithm. Not chrono (which the
/// workspace already builds): chrono stops at year 262,143 and PostgreSQL's
/// `date` goes to 5,874,897 AD, so a value the warehouse holds would be
/// quarantined for a formatting library's limit.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_values_render_as_sql_text() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(19_723), "2024-01-01");
        assert_eq!(timestamp_text(1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123+00:00");
        assert_eq!(timestamp_text(-1, 0), "1969-12-31T23:59:59+00:00");
        let decimal = apache_avro::Decimal::from(vec![0xff, 0x38]); // -200
        assert_eq!(decimal_text(&decimal, 2).unwrap(), "-2.00");
        assert_eq!(decimal_text(&apache_avro::Decimal::from(vec![0x05]), 3).unwrap(), "0.005");
        // Wider than 128 bits: 2^135 at scale 2.
        let mut wide = vec![0u8; 17];
        wide[0] = 0x80; // -2^135
        assert_eq!(
            decimal_text(&apache_avro::Decimal::from(wide), 2).unwrap(),
            "-435561429658801233233119497512663310663.68"
        );
        assert_eq!(time_text(45_296_789_000_000).unwrap(), "12:34:56.789");
        assert_eq!(instant(&Value::LocalTimestampMicros(1)).unwrap(), "1970-01-01T00:00:00.000001");
        assert_eq!(instant(&Value::TimestampNanos(-1)).unwrap(), "1969-12-31T23:59:59.999999999+00:00");
        assert_eq!(float_json(f64::NAN), J::String("NaN".into()));
    }

    #[test]
    fn a_nested_decimal_keeps_its_scale_and_value() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"lines","type":{"type":"array","items":
              {"type":"record","name":"L","fields":[{"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
              {"name":"fee","type":["null",{"type":"fixed","name":"F","size":4,"logicalType":"decimal","precision":8,"scale":3}]},
              {"name":"again","type":["null","L"]}]}}}]}"#,
        )
        .unwrap();
        let line = |price: &[u8], again: Value| {
            Value::Record(vec![
                ("price".into(), Value::Decimal(apache_avro::Decimal::from(price.to_vec()))),
                (
                    "fee".into(),
                    Value::Union(1, Box::new(Value::Decimal(apache_avro::Decimal::from(vec![0, 0, 0x30, 0x39])))),
                ),
                ("again".into(), again),
            ])
        };
        let inner = line(&[0x01], Value::Union(0, Box::new(Value::Null)));
        let value = Value::Array(vec![line(&[0x27, 0xb1], Value::Union(1, Box::new(inner)))]);
        let Schema::Record(record) = &schema else { panic!() };
        let names = apache_avro::schema::ResolvedSchema::try_from(&schema)
            .unwrap()
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect::<Names>();
        let json = json_of(value, Writer { schema: &record.fields[0].schema, names: &names }).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"price": "101.61", "fee": "12.345", "again": {"price": "0.01", "fee": "12.345", "again": null}}])
        );
    }
}
