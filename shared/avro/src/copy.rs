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

use mend_model::{Position, Row, SqlValue};

use crate::plan::{LoadPlan, Source};
use crate::schema::strip_null;

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
/// COPY text of a string. It never holds NUL: the value path refuses such
/// strings (`values::NUL_TEXT`), since COPY has no way to write one.
fn text(s: &[u8], out: &mut Vec<u8>) {
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
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
            other => out.push(other),
        }
    }
}

/// Why a flat record could not be decoded into a row (each is a quarantine
/// kind; see `crate::loader::Rejection`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatError {
    /// The bytes do not follow the writer schema (`undecodable`).
    #[error("{0}")]
    Undecodable(String),
    /// The bytes end before the writer schema does (`truncated`).
    #[error("the record ends after {0} bytes, before its schema does")]
    Truncated(usize),
    /// Bytes left after the record (`trailing_bytes`).
    #[error("{0} bytes left over after the record")]
    TrailingBytes(usize),
    /// A string that is not UTF-8 (`invalid_utf8`).
    #[error("a string that is not UTF-8")]
    InvalidUtf8,
    /// A value does not fit its column (`value_rejected`).
    #[error("{0}")]
    Rejected(String),
    /// The key column at this index of the plan's columns is null
    /// (`missing_key`).
    #[error("key column {0} is null")]
    MissingKey(usize),
}

impl FlatError {
    /// The quarantine kind of a record refused with this error.
    pub fn kind(&self) -> mend_model::QuarantineKind {
        use mend_model::QuarantineKind as K;
        match self {
            Self::Undecodable(_) => K::Undecodable,
            Self::Truncated(_) => K::Truncated,
            Self::TrailingBytes(_) => K::TrailingBytes,
            Self::InvalidUtf8 => K::InvalidUtf8,
            Self::Rejected(_) => K::ValueRejected,
            Self::MissingKey(_) => K::MissingKey,
        }
    }
}

/// How one writer field is read.
#[derive(Debug, Clone)]
struct FieldReader {
    kind: Kind,
    /// For `["null", T]` or `[T, "null"]`: the union index of null.
    null_branch: Option<u8>,
}

impl FieldReader {
    /// The reader of a field of this schema, when it is flat.
    fn of(schema: &Schema) -> Option<Self> {
        Self::with(schema, Kind::of)
    }

    /// The reader that skips a field of this schema: logical types read as
    /// the type they are encoded as.
    fn skipping(schema: &Schema) -> Option<Self> {
        Self::with(schema, |schema| Kind::of(schema).or_else(|| Kind::under_logical(schema)))
    }

    fn with(schema: &Schema, kind: impl Fn(&Schema) -> Option<Kind>) -> Option<Self> {
        match schema {
            Schema::Union(union) => {
                let variants = union.variants();
                let null = variants.iter().position(|v| matches!(v, Schema::Null))?;
                if variants.len() != 2 {
                    return None;
                }
                let kind = kind(&variants[1 - null])?;
                Some(Self { kind, null_branch: Some(u8::try_from(null).ok()?) })
            }
            other => Some(Self { kind: kind(other)?, null_branch: None }),
        }
    }
}

/// Reads one string field of a record from the front of its datum: the
/// fields before it are skipped (they must be flat) and those after it are
/// not read at all. The sealer reads each event's hash from its envelope
/// so, without decoding the event.
#[derive(Debug, Clone)]
pub struct StringField {
    before: Vec<FieldReader>,
}

impl StringField {
    /// The reader of `record`'s field `name`, when that field is a string
    /// and every field before it is flat.
    pub fn new(record: &Schema, name: &str) -> Option<Self> {
        let Schema::Record(record) = record else { return None };
        let at = record.fields.iter().position(|f| f.name == name)?;
        if !matches!(record.fields[at].schema, Schema::String) {
            return None;
        }
        let before =
            record.fields[..at].iter().map(|f| FieldReader::skipping(&f.schema)).collect::<Option<Vec<_>>>()?;
        Some(Self { before })
    }

    /// The field's value in `datum` (which may go on past the record), or
    /// None when the datum does not read as the record.
    pub fn read<'d>(&self, datum: &'d [u8]) -> Option<&'d str> {
        let mut cursor = Cursor { datum, at: 0 };
        for field in &self.before {
            cursor.skip(field).ok()?;
        }
        let (from, to) = cursor.span().ok()?;
        std::str::from_utf8(&datum[from..to]).ok()
    }
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

    /// The kind a logical type is encoded as.
    fn under_logical(schema: &Schema) -> Option<Self> {
        Some(match schema {
            Schema::Date | Schema::TimeMillis => Self::Int,
            Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Self::Long,
            Schema::Uuid(apache_avro::schema::UuidSchema::String) => Self::String,
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
    /// type as [`crate::values::to_sql`] converts it.
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
        let fields = record.fields.iter().map(|field| FieldReader::of(&field.schema)).collect::<Option<Vec<_>>>()?;
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
    /// format's 5-byte header) at `position`; `key` holds the indices of
    /// the key columns, which must not be null. On error `out` is unchanged.
    pub fn decode(&self, datum: &[u8], position: Position, key: &[usize], out: &mut Vec<u8>) -> Result<(), FlatError> {
        let start = out.len();
        let result = self.write(datum, position, key, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn write(&self, datum: &[u8], position: Position, key: &[usize], out: &mut Vec<u8>) -> Result<(), FlatError> {
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
        if cursor.at < datum.len() {
            return Err(FlatError::TrailingBytes(datum.len() - cursor.at));
        }
        for column in &self.columns {
            match column {
                Column::Constant(encoded) => out.extend_from_slice(encoded),
                Column::Field { index, target } => self.column(datum, slots[*index], *index, *target, out)?,
            }
            out.push(b'\t');
        }
        // After the values, as the generic path checks: a value its column
        // refuses is named before a null key.
        for &column in key {
            let null = match self.columns.get(column) {
                Some(Column::Constant(encoded)) => encoded == b"\\N",
                Some(Column::Field { index, .. }) => matches!(slots[*index], Slot::Null),
                None => false,
            };
            if null {
                return Err(FlatError::MissingKey(column));
            }
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
            Slot::Str(from, to) if datum[from..to].contains(&0) => {
                return Err(FlatError::Rejected(crate::values::NUL_TEXT.into()));
            }
            Slot::Str(from, to) => text(&datum[from..to], out),
            Slot::Bytes(from, to) if target == Target::Text => {
                if std::str::from_utf8(&datum[from..to]).is_err() {
                    return Err(FlatError::Rejected("bytes that are not UTF-8 for a string column".into()));
                }
                if datum[from..to].contains(&0) {
                    return Err(FlatError::Rejected(crate::values::NUL_TEXT.into()));
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
                std::str::from_utf8(&self.datum[from..to]).map_err(|_| FlatError::InvalidUtf8)?;
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

    /// Goes past a field without reading its value (strings are not
    /// checked to be UTF-8, enum indices not checked against the symbols).
    fn skip(&mut self, field: &FieldReader) -> Result<(), FlatError> {
        if let Some(null) = field.null_branch {
            match self.long()? {
                branch if branch == i64::from(null) => return Ok(()),
                branch if branch == i64::from(1 - null) => {}
                branch => return Err(FlatError::Undecodable(format!("union branch {branch} of a union of 2"))),
            }
        }
        match field.kind {
            Kind::Null => {}
            Kind::Boolean => _ = self.take(1)?,
            Kind::Int | Kind::Long | Kind::Enum(_) => _ = self.long()?,
            Kind::Float => _ = self.take(4)?,
            Kind::Double => _ = self.take(8)?,
            Kind::Bytes | Kind::String => _ = self.span()?,
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FlatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.datum.len())
            .ok_or(FlatError::Truncated(self.datum.len()))?;
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
mod tests;
