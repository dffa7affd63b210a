//! A strict cursor over the Avro binary encoding of flat records: each
//! field read (or skipped) in place, strings and bytes as ranges of the
//! datum, no allocation per record. The COPY encoder ([`crate::copy`])
//! writes rows from it; the sealer reads one string field (an event's
//! hash) with [`StringField`].

use apache_avro::Schema;

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
pub(crate) struct FieldReader {
    pub(crate) kind: Kind,
    /// For `["null", T]` or `[T, "null"]`: the union index of null.
    pub(crate) null_branch: Option<u8>,
}

impl FieldReader {
    /// The reader of a field of this schema, when it is flat.
    pub(crate) fn of(schema: &Schema) -> Option<Self> {
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
pub(crate) enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// The enum's symbols.
    Enum(Vec<String>),
}

impl Kind {
    pub(crate) fn of(schema: &Schema) -> Option<Self> {
        Some(match schema {
            Schema::Null => Self::Null,
            Schema::Boolean => Self::Boolean,
            Schema::Int => Self::Int,
            Schema::Long => Self::Long,
            Schema::Float => Self::Float,
            Schema::Double => Self::Double,
            Schema::Bytes => Self::Bytes,
            Schema::String => Self::String,
            Schema::Enum(e) => Self::Enum(e.symbols.clone()),
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
pub(crate) enum Slot {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(usize, usize),
    Str(usize, usize),
    Enum(usize),
}

/// Reads the Avro binary encoding from a datum, strictly: a datum that ends
/// early is an error (apache-avro reads a string, boolean or union cut off
/// by the end of the input as null; see [`crate::codec::StrictReader`]).
pub(crate) struct Cursor<'d> {
    pub(crate) datum: &'d [u8],
    pub(crate) at: usize,
}

impl Cursor<'_> {
    pub(crate) fn field(&mut self, field: &FieldReader) -> Result<Slot, FlatError> {
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
    pub(crate) fn skip(&mut self, field: &FieldReader) -> Result<(), FlatError> {
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
mod tests {
    use apache_avro::types::Value;

    use super::*;

    #[test]
    fn a_string_field_is_read_from_the_front_of_a_datum_and_the_rest_left_unread() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"E","fields":[
              {"name":"a","type":["null","string"]},{"name":"b","type":"long"},
              {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
              {"name":"e","type":{"type":"enum","name":"K","symbols":["x","y"]}},
              {"name":"hash","type":"string"},
              {"name":"rest","type":{"type":"array","items":"long"}}]}"#,
        )
        .unwrap();
        let record = |a: Option<&str>, hash: &str| {
            Value::Record(vec![
                ("a".into(), Value::Union(u32::from(a.is_some()), Box::new(a.map_or(Value::Null, |a| a.into())))),
                ("b".into(), Value::Long(-77)),
                ("t".into(), Value::TimestampMillis(1_700_000_000_000)),
                ("e".into(), Value::Enum(1, "y".into())),
                ("hash".into(), Value::String(hash.into())),
                ("rest".into(), Value::Array(vec![Value::Long(1), Value::Long(2)])),
            ])
        };
        let field = StringField::new(&schema, "hash").expect("flat before the hash");
        for (a, hash) in [(None, "ab12"), (Some("ü"), ""), (Some("x"), &"f".repeat(64)[..])] {
            #[allow(deprecated)]
            let mut datum = apache_avro::to_avro_datum(&schema, record(a, hash)).unwrap();
            assert_eq!(field.read(&datum), Some(hash));
            // The array after it (a count, two items, the end) is not read,
            // nor anything after the record.
            let hash_end = datum.len() - 4;
            assert_eq!(field.read(&datum[..hash_end]), Some(hash));
            datum.extend_from_slice(b"\xff\xff");
            assert_eq!(field.read(&datum), Some(hash));
            // A datum that ends inside the field does not read.
            assert_eq!(field.read(&datum[..hash_end - 1]), None);
        }
        assert!(StringField::new(&schema, "b").is_none(), "not a string");
        assert!(StringField::new(&schema, "missing").is_none());
        let nested = Schema::parse_str(
            r#"{"type":"record","name":"N","fields":[{"name":"r","type":{"type":"array","items":"long"}},{"name":"hash","type":"string"}]}"#,
        )
        .unwrap();
        assert!(StringField::new(&nested, "hash").is_none(), "a field before it that is not flat");
    }
}
