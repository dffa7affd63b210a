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

use crate::datum::FlatError;
use crate::datum::{Cursor, FieldReader, Kind, Slot};
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
    /// Per writer field, its enum symbols COPY-escaped (empty for others).
    symbols: Vec<Vec<Vec<u8>>>,
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
        let symbols = fields
            .iter()
            .map(|field| match &field.kind {
                Kind::Enum(symbols) => symbols
                    .iter()
                    .map(|symbol| {
                        let mut escaped = Vec::new();
                        text(symbol.as_bytes(), &mut escaped);
                        escaped
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        Some(Self { fields, symbols, columns })
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
            Slot::Enum(symbol) => match self.symbols[index].get(symbol) {
                Some(escaped) => out.extend_from_slice(escaped),
                None => return Err(FlatError::Undecodable("an enum slot for a field that is not an enum".into())),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
