//! Avro values to SQL values: promotions, logical types rendered as the SQL
//! text PostgreSQL and SQLite read, anything nested as JSON.

use apache_avro::Schema;
use apache_avro::types::Value;
use mend_model::SqlValue;

use crate::schema::strip_null;

/// Converts a value (written with any schema the contract field can read) to
/// the SQL value of the contract field's column.
pub fn to_sql(value: Value, schema: &Schema) -> Result<SqlValue, String> {
    let value = match value {
        Value::Union(_, inner) => *inner,
        other => other,
    };
    let (target, _) = strip_null(schema);
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
        (Value::Bytes(b), Schema::String) => {
            SqlValue::Text(String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 for a string column")?)
        }
        (Value::String(s), _) | (Value::Enum(_, s), _) => SqlValue::Text(s),
        (Value::Uuid(u), _) => SqlValue::Text(u.to_string()),
        (Value::Bytes(b), _) | (Value::Fixed(_, b), _) => SqlValue::Bytes(b),
        (Value::Date(days), _) => SqlValue::Date(date_text(i64::from(days))),
        (Value::TimestampMillis(ms), _) | (Value::LocalTimestampMillis(ms), _) => {
            SqlValue::Timestamp(timestamp_text(ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000))
        }
        (Value::TimestampMicros(us), _) | (Value::LocalTimestampMicros(us), _) => {
            SqlValue::Timestamp(timestamp_text(us.div_euclid(1_000_000), us.rem_euclid(1_000_000) * 1000))
        }
        (Value::TimestampNanos(ns), _) | (Value::LocalTimestampNanos(ns), _) => {
            SqlValue::Timestamp(timestamp_text(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000)))
        }
        (Value::TimeMillis(ms), _) => SqlValue::Int(i64::from(ms)),
        (Value::TimeMicros(us), _) => SqlValue::Int(us),
        (Value::Decimal(d), Schema::Decimal(schema)) => SqlValue::Decimal(decimal_text(&d, schema.scale)?),
        (Value::BigDecimal(d), _) => SqlValue::Decimal(d.to_string()),
        (other, _) => SqlValue::Json(json_of(other).to_string()),
    })
}

fn json_of(value: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Int(i) => J::from(i),
        Value::Long(i) | Value::TimeMicros(i) | Value::TimestampMillis(i) | Value::TimestampMicros(i) => J::from(i),
        Value::Float(f) => J::from(f64::from(f)),
        Value::Double(f) => J::from(f),
        Value::String(s) | Value::Enum(_, s) => J::String(s),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex::encode(b)),
        Value::Union(_, inner) => json_of(*inner),
        Value::Array(items) => J::Array(items.into_iter().map(json_of).collect()),
        Value::Map(map) => J::Object(map.into_iter().map(|(k, v)| (k, json_of(v))).collect()),
        Value::Record(fields) => J::Object(fields.into_iter().map(|(k, v)| (k, json_of(v))).collect()),
        Value::Date(d) => J::String(date_text(i64::from(d))),
        Value::Uuid(u) => J::String(u.to_string()),
        other => J::String(format!("{other:?}")),
    }
}

pub(crate) fn decimal_text(decimal: &apache_avro::Decimal, scale: usize) -> Result<String, String> {
    let bytes: Vec<u8> = Vec::try_from(decimal).map_err(|e| e.to_string())?;
    if bytes.len() > 16 {
        return Err("decimal wider than 128 bits".into());
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buffer = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buffer[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(buffer);
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
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

/// Howard Hinnant's days → civil date algorithm.
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
    }
}
