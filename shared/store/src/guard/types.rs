//! The column types a plan may write: exactly the set mend's own planner
//! emits per dialect (`mend_avro::schema::sql_type`), each resolved the way
//! the database resolves it, and the widenings that keep every value exact.
//!
//! A type is recognised from sqlparser's reading of it and rendered as the
//! catalog's own name, qualified with `pg_catalog` on PostgreSQL: a type of
//! the same name elsewhere on the search path (a domain, an enum, a type
//! called `double`) can never stand in for it. Serial, identity, domain,
//! composite, enum, range, array and every other type is refused.

use sqlparser::ast::{DataType, ExactNumberInfo, TimezoneInfo};

use mend_model::Dialect;

use super::names;

/// Largest precision PostgreSQL's `numeric(p, s)` takes.
const MAX_PRECISION: u64 = 1000;

/// A built-in column type mend writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Boolean,
    /// Only as a column's current type (mend never writes it).
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    /// `numeric(precision, scale)`, or unconstrained.
    Numeric(Option<(u32, u32)>),
    Text,
    /// `bytea` (PostgreSQL), `BLOB` (SQLite).
    Bytes,
    Date,
    Timestamp,
    Timestamptz,
    Jsonb,
    /// `character varying(n)`: only as a column's current type.
    Varchar,
}

impl Builtin {
    /// Whether mend's planner writes this type in `dialect`.
    fn written(self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Postgres => !matches!(self, Self::SmallInt | Self::Varchar),
            Dialect::Sqlite => matches!(self, Self::Integer | Self::Real | Self::Text | Self::Bytes),
        }
    }

    /// The type as mend writes it in a statement it runs: PostgreSQL's
    /// catalog name, qualified, so the search path plays no part.
    pub fn render(self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Postgres => format!("pg_catalog.{}", self.name(dialect)),
            Dialect::Sqlite => self.name(dialect),
        }
    }

    /// The catalog's own name of the type.
    pub fn name(self, dialect: Dialect) -> String {
        match (dialect, self) {
            (Dialect::Sqlite, Self::Integer) => "INTEGER".into(),
            (Dialect::Sqlite, Self::Real) => "REAL".into(),
            (Dialect::Sqlite, Self::Bytes) => "BLOB".into(),
            (Dialect::Sqlite, _) => "TEXT".into(),
            (_, Self::Boolean) => "bool".to_owned(),
            (_, Self::SmallInt) => "int2".into(),
            (_, Self::Integer) => "int4".into(),
            (_, Self::BigInt) => "int8".into(),
            (_, Self::Real) => "float4".into(),
            (_, Self::Double) => "float8".into(),
            (_, Self::Numeric(None)) => "numeric".into(),
            (_, Self::Numeric(Some((p, s)))) => format!("numeric({p},{s})"),
            (_, Self::Text) => "text".into(),
            (_, Self::Bytes) => "bytea".into(),
            (_, Self::Date) => "date".into(),
            (_, Self::Timestamp) => "timestamp".into(),
            (_, Self::Timestamptz) => "timestamptz".into(),
            (_, Self::Jsonb) => "jsonb".into(),
            (_, Self::Varchar) => "varchar".into(),
        }
    }

    /// How many decimal digits every value's integer part fits in, for the
    /// integer types.
    fn integer_digits(self) -> Option<u32> {
        match self {
            Self::SmallInt => Some(5),
            Self::Integer => Some(10),
            Self::BigInt => Some(19),
            _ => None,
        }
    }
}

/// The type a statement writes, if mend may write it in `dialect`; else why not.
pub fn written(data_type: &DataType, dialect: Dialect) -> Result<Builtin, String> {
    let builtin = read(data_type, dialect)?;
    if builtin.written(dialect) {
        Ok(builtin)
    } else {
        Err(format!("{data_type} is not a type mend writes in {}", dialect.name()))
    }
}

/// sqlparser's reading of a type, as the database would resolve it.
fn read(data_type: &DataType, dialect: Dialect) -> Result<Builtin, String> {
    use DataType as T;
    let pg = dialect == Dialect::Postgres;
    Ok(match data_type {
        T::Bool | T::Boolean if pg => Builtin::Boolean,
        T::SmallInt(None) | T::Int2(None) if pg => Builtin::SmallInt,
        T::Int(None) | T::Integer(None) | T::Int4(None) => Builtin::Integer,
        T::BigInt(None) | T::Int8(None) if pg => Builtin::BigInt,
        T::BigInt(None) => Builtin::Integer,
        T::Real | T::Float4 => Builtin::Real,
        T::DoublePrecision | T::Float8 if pg => Builtin::Double,
        T::Double(_) if pg => {
            return Err("DOUBLE alone is not a PostgreSQL type: PostgreSQL looks the name up on the search path, \
                        where any type called double would do (write DOUBLE PRECISION)"
                .into());
        }
        T::DoublePrecision | T::Float8 | T::Double(ExactNumberInfo::None) => Builtin::Real,
        T::Float(ExactNumberInfo::None) if pg => Builtin::Double,
        T::Float(ExactNumberInfo::Precision(1..=24)) if pg => Builtin::Real,
        T::Float(ExactNumberInfo::Precision(25..=53)) if pg => Builtin::Double,
        T::Numeric(info) | T::Decimal(info) | T::Dec(info) if pg => Builtin::Numeric(numeric(info)?),
        T::Text => Builtin::Text,
        T::Bytea if pg => Builtin::Bytes,
        T::Blob(None) if !pg => Builtin::Bytes,
        T::Date if pg => Builtin::Date,
        T::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) if pg => Builtin::Timestamp,
        T::Timestamp(None, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) if pg => Builtin::Timestamptz,
        T::JSONB if pg => Builtin::Jsonb,
        T::Custom(name, modifiers) if modifiers.is_empty() => {
            let parts: Vec<String> = names::parts(dialect, name).unwrap_or_default();
            let parts: Vec<String> = match dialect {
                Dialect::Postgres => parts,
                Dialect::Sqlite => parts.iter().map(|p| p.to_ascii_lowercase()).collect(),
            };
            let local = match parts.as_slice() {
                [name] => name.as_str(),
                [schema, name] if pg && schema == "pg_catalog" => name.as_str(),
                _ => return Err(format!("{data_type} is not a built-in type")),
            };
            match catalog_name(local, dialect) {
                Some(builtin) => builtin,
                None if pg && serial(local) => {
                    return Err(format!(
                        "{data_type} is a serial type: a sequence, a default and NOT NULL, not a column type"
                    ));
                }
                None => return Err(format!("{data_type} is not a built-in type mend writes")),
            }
        }
        T::Custom(..) => return Err(format!("{data_type} is not a built-in type mend writes")),
        other => return Err(format!("{other} is not a type mend writes in {}", dialect.name())),
    })
}

/// A type's own name in the catalog (`int8`, `float8`, …) as PostgreSQL
/// resolves it with `pg_catalog` first on the search path; on SQLite the
/// names mend writes.
fn catalog_name(name: &str, dialect: Dialect) -> Option<Builtin> {
    Some(match (dialect, name) {
        (Dialect::Postgres, "bool") => Builtin::Boolean,
        (Dialect::Postgres, "int2") => Builtin::SmallInt,
        (Dialect::Postgres, "int4") => Builtin::Integer,
        (Dialect::Postgres, "int8") => Builtin::BigInt,
        (Dialect::Postgres, "float4") => Builtin::Real,
        (Dialect::Postgres, "float8") => Builtin::Double,
        (Dialect::Postgres, "numeric") => Builtin::Numeric(None),
        (Dialect::Postgres, "text") => Builtin::Text,
        (Dialect::Postgres, "bytea") => Builtin::Bytes,
        (Dialect::Postgres, "date") => Builtin::Date,
        (Dialect::Postgres, "timestamp") => Builtin::Timestamp,
        (Dialect::Postgres, "timestamptz") => Builtin::Timestamptz,
        (Dialect::Postgres, "jsonb") => Builtin::Jsonb,
        (Dialect::Sqlite, "integer") => Builtin::Integer,
        (Dialect::Sqlite, "real") => Builtin::Real,
        (Dialect::Sqlite, "text") => Builtin::Text,
        (Dialect::Sqlite, "blob") => Builtin::Bytes,
        _ => return None,
    })
}

/// PostgreSQL's serial pseudo-types, in every spelling it knows.
fn serial(name: &str) -> bool {
    matches!(name, "serial" | "serial2" | "serial4" | "serial8" | "smallserial" | "bigserial")
}

/// A numeric's precision and scale, if within what every value keeps.
fn numeric(info: &ExactNumberInfo) -> Result<Option<(u32, u32)>, String> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => return Ok(None),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, u64::try_from(s).map_err(|_| "a negative scale")?),
    };
    if !(1..=MAX_PRECISION).contains(&precision) || scale > precision {
        return Err(format!("numeric({precision},{scale}): precision 1 to {MAX_PRECISION}, scale 0 to the precision"));
    }
    Ok(Some((u32::try_from(precision).map_err(|e| e.to_string())?, u32::try_from(scale).map_err(|e| e.to_string())?)))
}

/// A column's current type as the catalog spells it (`format_type` on
/// PostgreSQL, the declared type on SQLite), or as mend's planner spells
/// it; None for any type mend does not know.
pub fn current(sql_type: &str) -> Option<Builtin> {
    let t = sql_type.trim().to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
    let t = t.replace(", ", ",").replace(" (", "(");
    if let Some(inner) = t.strip_prefix("numeric(").or_else(|| t.strip_prefix("decimal(")) {
        let inner = inner.strip_suffix(')')?;
        let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
        return Some(Builtin::Numeric(Some((p.parse().ok()?, s.parse().ok()?))));
    }
    if t.starts_with("character varying") || t.starts_with("varchar") {
        return Some(Builtin::Varchar);
    }
    Some(match t.as_str() {
        "boolean" | "bool" => Builtin::Boolean,
        "smallint" | "int2" => Builtin::SmallInt,
        "integer" | "int" | "int4" => Builtin::Integer,
        "bigint" | "int8" => Builtin::BigInt,
        "real" | "float4" => Builtin::Real,
        "double precision" | "float8" => Builtin::Double,
        "numeric" | "decimal" => Builtin::Numeric(None),
        "text" => Builtin::Text,
        "bytea" | "blob" => Builtin::Bytes,
        "date" => Builtin::Date,
        "timestamp" | "timestamp without time zone" => Builtin::Timestamp,
        "timestamptz" | "timestamp with time zone" => Builtin::Timestamptz,
        "jsonb" => Builtin::Jsonb,
        _ => return None,
    })
}

/// Whether every value of `from` is a value of `to`, exactly: integers to
/// a wider integer, to `double precision` only where its 53-bit mantissa
/// holds them (smallint, integer), to `real` only where its 24 bits do
/// (smallint), to a numeric whose integer digits hold them; a numeric to
/// one with at least its integer digits and its scale; real to double;
/// varchar to text; text and bytea both ways (with mend's conversion).
pub fn widens(from: Builtin, to: Builtin) -> bool {
    use Builtin as B;
    match (from, to) {
        (a, b) if a == b => false,
        (B::SmallInt, B::Integer | B::BigInt | B::Real | B::Double) => true,
        (B::Integer, B::BigInt | B::Double) => true,
        (a, B::Numeric(None)) => a.integer_digits().is_some() || matches!(a, B::Numeric(Some(_))),
        (a, B::Numeric(Some((p, s)))) if a.integer_digits().is_some() => {
            a.integer_digits().is_some_and(|digits| i64::from(p) - i64::from(s) >= i64::from(digits))
        }
        // PostgreSQL 15 takes a scale above the precision (numeric(2,5)):
        // signed arithmetic keeps such a column's integer digits negative.
        (B::Numeric(Some((p1, s1))), B::Numeric(Some((p2, s2)))) => {
            s2 >= s1 && i64::from(p2) - i64::from(s2) >= i64::from(p1) - i64::from(s1)
        }
        (B::Real, B::Double) => true,
        (B::Varchar, B::Text) => true,
        (B::Text, B::Bytes) | (B::Bytes, B::Text) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(p: u32, s: u32) -> Builtin {
        Builtin::Numeric(Some((p, s)))
    }

    #[test]
    fn widening_keeps_every_value() {
        use Builtin as B;
        for (from, to) in [
            (B::Integer, B::BigInt),
            (B::SmallInt, B::Real),
            (B::Integer, B::Double),
            (B::Real, B::Double),
            (numeric(10, 2), numeric(12, 2)),
            (numeric(10, 2), numeric(11, 3)),
            (numeric(10, 2), numeric(12, 3)),
            (numeric(10, 2), B::Numeric(None)),
            (B::Integer, numeric(10, 0)),
            (B::Integer, numeric(12, 2)),
            (B::BigInt, numeric(19, 0)),
            (B::SmallInt, numeric(5, 0)),
            (B::Varchar, B::Text),
            (B::Text, B::Bytes),
        ] {
            assert!(widens(from, to), "{from:?} -> {to:?}");
        }
        for (from, to) in [
            (B::Integer, numeric(3, 0)),
            (B::Integer, numeric(10, 1)),
            (B::BigInt, numeric(18, 0)),
            (B::BigInt, B::Double),
            (B::BigInt, B::Real),
            (B::Integer, B::Real),
            (numeric(10, 2), numeric(10, 3)),
            (numeric(10, 2), numeric(12, 1)),
            (numeric(10, 2), B::Double),
            (B::Real, B::Numeric(None)),
            (B::BigInt, B::Integer),
            (B::Double, B::Real),
            (B::Text, B::Integer),
            (B::Integer, B::Integer),
        ] {
            assert!(!widens(from, to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn catalog_spellings_are_known() {
        assert_eq!(current("numeric(10,2)"), Some(numeric(10, 2)));
        assert_eq!(current("NUMERIC(12, 2)"), Some(numeric(12, 2)));
        assert_eq!(current("timestamp with time zone"), Some(Builtin::Timestamptz));
        assert_eq!(current("character varying(20)"), Some(Builtin::Varchar));
        assert_eq!(current("DOUBLE PRECISION"), Some(Builtin::Double));
        // A type of the user's called "double" is not double precision.
        assert_eq!(current("double"), None);
        assert_eq!(current("\"double\""), None);
        assert_eq!(current("public.mytype"), None);
    }
}
