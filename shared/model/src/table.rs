//! The warehouse's value types, as the domain sees them: the database
//! adapter (`mend-store`) writes them, the Avro side (`mend-avro`) produces
//! them, and neither has to import the other to name a column.

use std::collections::BTreeMap;

/// Which SQL the warehouse speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A SQL value, typed by the column it goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text (nested records, arrays, maps).
    Json(String),
    /// UTC timestamp, ISO 8601 text.
    Timestamp(String),
    /// Calendar date, `YYYY-MM-DD`.
    Date(String),
    /// Exact decimal as text.
    Decimal(String),
}

/// A column of a destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// SQL type in the warehouse's dialect.
    pub sql_type: String,
    pub nullable: bool,
}

/// `name TYPE [NULL]` per column, for evidence maps and people.
pub fn describe_columns(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}{}", c.name, c.sql_type, if c.nullable { " NULL" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dataset's contract snapshot: the registry schema its table is known to
/// match, and where each field goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub dataset: String,
    pub schema_id: u32,
    /// Contract field name → column name (identity unless renamed).
    pub mapping: BTreeMap<String, String>,
}

/// The source position of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// A row to write: its values in column order, and where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub position: Position,
    pub values: Vec<SqlValue>,
}

/// Quotes an identifier for either dialect.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote("we\"ird"), "\"we\"\"ird\"");
    }
}
