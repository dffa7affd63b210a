//! PostgreSQL's COPY text format: typed rows encoded into it, and flat Avro
//! records decoded straight into it.
//!
//! The loader's append-only path is bound by CPU, not by PostgreSQL: decoding
//! a record through apache-avro builds a `Value` tree (a field-name `String`
//! per field, a `String` per text value), which is then converted to
//! [`SqlValue`]s and only then encoded. For the common case of a flat record
//! of primitive fields, [`FlatDecoder`] reads the Avro binary encoding and
//! writes the COPY text of the row directly, with no allocation per record.
//! Every other schema takes the generic path; both produce the same bytes
//! (tested against each other on random records).

use apache_avro::Schema;

use crate::mapping::{LoadPlan, Source, strip_null};
use crate::warehouse::{Position, Row, SqlValue};

/// Appends the COPY text of `rows`: tab-separated, `\N` for NULL, backslash
/// escapes, then the row's source partition and offset.
pub fn encode_rows(rows: &[Row], out: &mut Vec<u8>) {
    for row in rows {
        encode_row(row, out);
    }
}

/// Appends the COPY text of one row.
pub fn encode_row(row: &Row, out: &mut Vec<u8>) {
    for value in &row.values {
        encode_value(value, out);
        out.push(b'\t');
    }
    end_row(row.position, out);
}

/// The row's source position columns and the line end.
fn end_row(position: Position, out: &mut Vec<u8>) {
    int(i64::from(position.partition), out);
    out.push(b'\t');
    int(position.offset, out);
    out.push(b'\n');
}

fn encode_value(value: &SqlValue, out: &mut Vec<u8>) {
    match value {
        SqlValue::Null => out.extend_from_slice(b"\\N"),
        SqlValue::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        SqlValue::Int(i) => int(*i, out),
        SqlValue::Float(f) => float(*f, out),
        SqlValue::Bytes(b) => bytes(b, out),
        SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Timestamp(s) | SqlValue::Date(s) | SqlValue::Decimal(s) => {
            text(s.as_bytes(), out);
        }
    }
}

fn int(i: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Shortest text that reads back as the same double (ryu), or PostgreSQL's
/// spelling of the non-finite values.
fn float(f: f64, out: &mut Vec<u8>) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f > 0.0 {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

/// `bytea` in hex form; its backslash is itself escaped for COPY.
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(3 + 2 * b.len());
    out.extend_from_slice(b"\\\\x");
    for byte in b {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
}

/// Text with what COPY interprets escaped. PostgreSQL text cannot hold NUL,
/// so NUL bytes are left out.
fn text(s: &[u8], out: &mut Vec<u8>) {
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0);
    if !s.iter().any(special) {
        out.extend_from_slice(s);
        return;
    }
    for &byte in s {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => {}
            other => out.push(other),
        }
    }
}

/// Why a flat record could not be decoded into a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatError {
    /// The bytes do not follow the writer schema (quarantine: `undecodable`).
    #[error("{0}")]
    Undecodable(String),
    /// A value does not fit its column (quarantine: `value_rejected`).
    #[error("{0}")]
    Rejected(String),
}

/// How one writer field is read.
#[derive(Debug, Clone)]
struct FieldReader {
    kind: Kind,
    /// For `["null", T]` or `[T, "null"]`: the union index of null.
    null_branch: Option<u8>,
}

#[derive(Debug, Clone)]
enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// Symbols, already COPY-escaped.
    Enum(Vec<Vec<u8>>),
}

impl Kind {
    fn of(schema: &Schema) -> Option<Self> {
        Some(match schema {
            Schema::Null => Self::Null,
            Schema::Boolean => Self::Boolean,
            Schema::Int => Self::Int,
            Schema::Long => Self::Long,
            Schema::Float => Self::Float,
            Schema::Double => Self::Double,
            Schema::Bytes => Self::Bytes,
            Schema::String => Self::String,
            Schema::Enum(e) => Self::Enum(
                e.symbols
                    .iter()
                    .map(|s| {
                        let mut escaped = Vec::new();
                        text(s.as_bytes(), &mut escaped);
                        escaped
                    })
                    .collect(),
            ),
            _ => return None,
        })
    }
}

/// A writer field's value in the record being decoded: scalars by value,
/// strings and bytes as ranges of the datum.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(usize, usize),
    Str(usize, usize),
    Enum(usize),
}

/// One column of the row, in column order.
#[derive(Debug, Clone)]
enum Column {
    /// A field the writer does not have: its default (or NULL), encoded once.
    Constant(Vec<u8>),
    /// The writer field at this index, converted for the contract field's
    /// type as [`crate::mapping::to_sql`] converts it.
    Field { index: usize, target: Target },
}

/// What the contract field's column takes, as far as conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `float` or `double`: integers are promoted.
    Float,
    /// `bytes`: strings become bytes.
    Bytes,
    /// `string`: bytes must be UTF-8.
    Text,
    Other,
}

/// Decodes the records of one flat writer schema straight into the COPY text
/// of their rows under a [`LoadPlan`]. Flat: a record whose fields are all
/// primitive (null, boolean, int, long, float, double, bytes, string),
/// enums, or nullable unions of those, each loaded into a top-level column
/// whose contract type is one of those too.
#[derive(Debug, Clone)]
pub struct FlatDecoder {
    fields: Vec<FieldReader>,
    columns: Vec<Column>,
}

impl FlatDecoder {
    /// The decoder for `writer`'s records under `plan`, or None when the
    /// schema is not flat (the generic path handles it).
    pub fn new(writer: &Schema, plan: &LoadPlan) -> Option<Self> {
        let Schema::Record(record) = writer else { return None };
        let fields = record
            .fields
            .iter()
            .map(|field| match &field.schema {
                Schema::Union(union) => {
                    let variants = union.variants();
                    let null = variants.iter().position(|v| matches!(v, Schema::Null))?;
                    if variants.len() != 2 {
                        return None;
                    }
                    let kind = Kind::of(&variants[1 - null])?;
                    Some(FieldReader { kind, null_branch: Some(u8::try_from(null).ok()?) })
                }
                other => Some(FieldReader { kind: Kind::of(other)?, null_branch: None }),
            })
            .collect::<Option<Vec<_>>>()?;
        let columns = plan
            .sources()
            .iter()
            .map(|(source, contract)| {
                let (contract, _) = strip_null(contract);
                Kind::of(contract)?;
                let target = match contract {
                    Schema::Float | Schema::Double => Target::Float,
                    Schema::Bytes => Target::Bytes,
                    Schema::String => Target::Text,
                    _ => Target::Other,
                };
                match source {
                    Source::Constant(value) => {
                        let mut encoded = Vec::new();
                        encode_value(value, &mut encoded);
                        Some(Column::Constant(encoded))
                    }
                    Source::Field(path) if path.len() == 1 && path[0] < fields.len() => {
                        Some(Column::Field { index: path[0], target })
                    }
                    Source::Field(_) => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { fields, columns })
    }

    /// Appends the row of one record (the Avro datum, without the wire
    /// format's 5-byte header) at `position`. On error `out` is unchanged.
    pub fn decode(&self, datum: &[u8], position: Position, out: &mut Vec<u8>) -> Result<(), FlatError> {
        let start = out.len();
        let result = self.write(datum, position, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn write(&self, datum: &[u8], position: Position, out: &mut Vec<u8>) -> Result<(), FlatError> {
        // A record has few fields: their slots live on the stack.
        let mut slots = [Slot::Null; 32];
        let mut heap = Vec::new();
        let slots: &mut [Slot] = if self.fields.len() <= slots.len() {
            &mut slots[..self.fields.len()]
        } else {
            heap.resize(self.fields.len(), Slot::Null);
            &mut heap
        };
        let mut cursor = Cursor { datum, at: 0 };
        for (field, slot) in self.fields.iter().zip(slots.iter_mut()) {
            *slot = cursor.field(field)?;
        }
        for column in &self.columns {
            match column {
                Column::Constant(encoded) => out.extend_from_slice(encoded),
                Column::Field { index, target } => self.column(datum, slots[*index], *index, *target, out)?,
            }
            out.push(b'\t');
        }
        end_row(position, out);
        Ok(())
    }

    fn column(
        &self,
        datum: &[u8],
        slot: Slot,
        index: usize,
        target: Target,
        out: &mut Vec<u8>,
    ) -> Result<(), FlatError> {
        match slot {
            Slot::Null => out.extend_from_slice(b"\\N"),
            Slot::Bool(b) => out.push(if b { b't' } else { b'f' }),
            // `to_sql` promotes an int or long read for a float column.
            Slot::Int(i) if target == Target::Float => float(i as f64, out),
            Slot::Int(i) => int(i, out),
            Slot::Float(f) => float(f, out),
            Slot::Str(from, to) if target == Target::Bytes => bytes(&datum[from..to], out),
            Slot::Str(from, to) => text(&datum[from..to], out),
            Slot::Bytes(from, to) if target == Target::Text => {
                if std::str::from_utf8(&datum[from..to]).is_err() {
                    return Err(FlatError::Rejected("bytes that are not UTF-8 for a string column".into()));
                }
                text(&datum[from..to], out);
            }
            Slot::Bytes(from, to) => bytes(&datum[from..to], out),
            Slot::Enum(symbol) => match &self.fields[index].kind {
                Kind::Enum(symbols) => out.extend_from_slice(&symbols[symbol]),
                _ => return Err(FlatError::Undecodable("an enum slot for a field that is not an enum".into())),
            },
        }
        Ok(())
    }
}

/// Reads the Avro binary encoding from a datum, strictly: a datum that ends
/// early is an error (apache-avro reads a string, boolean or union cut off
/// by the end of the input as null; see [`crate::codec::StrictReader`]).
struct Cursor<'d> {
    datum: &'d [u8],
    at: usize,
}

impl Cursor<'_> {
    fn field(&mut self, field: &FieldReader) -> Result<Slot, FlatError> {
        if let Some(null) = field.null_branch {
            let branch = self.long()?;
            if branch == i64::from(null) {
                return Ok(Slot::Null);
            }
            if branch != i64::from(1 - null) {
                return Err(FlatError::Undecodable(format!("union branch {branch} of a union of 2")));
            }
        }
        Ok(match &field.kind {
            Kind::Null => Slot::Null,
            Kind::Boolean => match self.take(1)?[0] {
                0 => Slot::Bool(false),
                1 => Slot::Bool(true),
                other => return Err(FlatError::Undecodable(format!("boolean byte {other}"))),
            },
            Kind::Int => {
                let i = self.long()?;
                i32::try_from(i).map_err(|_| FlatError::Undecodable(format!("int {i} out of range")))?;
                Slot::Int(i)
            }
            Kind::Long => Slot::Int(self.long()?),
            Kind::Float => Slot::Float(f64::from(f32::from_le_bytes(self.array()?))),
            Kind::Double => Slot::Float(f64::from_le_bytes(self.array()?)),
            Kind::Bytes => {
                let (from, to) = self.span()?;
                Slot::Bytes(from, to)
            }
            Kind::String => {
                let (from, to) = self.span()?;
                std::str::from_utf8(&self.datum[from..to])
                    .map_err(|e| FlatError::Undecodable(format!("a string that is not UTF-8: {e}")))?;
                Slot::Str(from, to)
            }
            Kind::Enum(symbols) => {
                let index = self.long()?;
                match usize::try_from(index) {
                    Ok(index) if index < symbols.len() => Slot::Enum(index),
                    _ => {
                        return Err(FlatError::Undecodable(format!("enum index {index} of {} symbols", symbols.len())));
                    }
                }
            }
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FlatError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.datum.len()).ok_or_else(|| {
            FlatError::Undecodable(format!("the record ends after {} bytes, before its schema does", self.datum.len()))
        })?;
        let taken = &self.datum[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FlatError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A length-prefixed run of bytes, as a range of the datum.
    fn span(&mut self) -> Result<(usize, usize), FlatError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| FlatError::Undecodable(format!("negative length {len}")))?;
        let from = self.at;
        self.take(len)?;
        Ok((from, self.at))
    }

    /// A zigzag varint, as apache-avro reads it (at most 10 bytes).
    fn long(&mut self) -> Result<i64, FlatError> {
        let mut z = 0u64;
        for j in 0..10 {
            let byte = self.take(1)?[0];
            z |= u64::from(byte & 0x7f) << (j * 7);
            if byte & 0x80 == 0 {
                return Ok(if z & 1 == 0 { (z >> 1) as i64 } else { !(z >> 1) as i64 });
            }
        }
        Err(FlatError::Undecodable("a varint longer than 10 bytes".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;

    use super::*;
    use crate::codec::StrictReader;
    use crate::config::Nested;
    use crate::mapping::columns_for;
    use crate::warehouse::Dialect;

    #[test]
    fn rows_are_escaped_as_copy_reads_them() {
        let rows = [Row {
            position: Position { partition: 1, offset: 9 },
            values: vec![
                SqlValue::Text("a\tb\\c\nd\re\0f".into()),
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
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a\\tb\\\\c\\nd\\ref\t\\N\tt\t1.5\t-Infinity\t-42\t\\\\xdead\t1\t9\n"
        );
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
    fn generic(reader: &GenericDatumReader<'_>, plan: &LoadPlan, datum: &[u8]) -> Result<Vec<u8>, FlatError> {
        let value = reader.read_value(&mut StrictReader(datum)).map_err(|e| FlatError::Undecodable(e.to_string()))?;
        let values = plan.row(value).map_err(FlatError::Rejected)?;
        let mut out = Vec::new();
        encode_row(&Row { position: Position { partition: 3, offset: 11 }, values }, &mut out);
        Ok(out)
    }

    fn flat(decoder: &FlatDecoder, datum: &[u8]) -> Result<Vec<u8>, FlatError> {
        let mut out = b"kept".to_vec();
        let result = decoder.decode(datum, Position { partition: 3, offset: 11 }, &mut out);
        match result {
            Ok(()) => Ok(out.split_off(4)),
            Err(error) => {
                assert_eq!(out, b"kept", "a failed decode leaves the buffer as it was");
                Err(error)
            }
        }
    }

    fn same_class(a: &Result<Vec<u8>, FlatError>, b: &Result<Vec<u8>, FlatError>) -> bool {
        matches!(
            (a, b),
            (Ok(_), Ok(_))
                | (Err(FlatError::Undecodable(_)), Err(FlatError::Undecodable(_)))
                | (Err(FlatError::Rejected(_)), Err(FlatError::Rejected(_)))
        )
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
                    assert!(matches!(flat(&decoder, cut), Err(FlatError::Undecodable(_))), "{cut:?} of {writer:?}");
                    assert!(generic(&reader, &plan, cut).is_err(), "{cut:?} of {writer:?}");
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
        let parse =
            |fields: &str| Schema::parse_str(&record_json(&[fields.to_owned()])).unwrap_or_else(|e| panic!("{e}"));
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
}
