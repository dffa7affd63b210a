//! Guardrails on the SQL a plan may run. Every DDL statement of a plan is
//! parsed (sqlparser, in the warehouse's dialect) and must be exactly one
//! statement of an allowed kind on the dataset's own table:
//!
//! - `ALTER TABLE t ADD COLUMN c TYPE [NULL]` (a new column, no constraints,
//!   defaults or generated expressions);
//! - `ALTER TABLE t ALTER COLUMN c TYPE wider` (int → bigint, real → double,
//!   numeric gaining precision, text ↔ bytea with mend's own conversion);
//! - `ALTER TABLE t ALTER COLUMN c DROP NOT NULL`;
//! - `ALTER TABLE t RENAME COLUMN a TO b`;
//! - `CREATE TABLE t__child (…)` (a child table of the dataset's, for arrays).
//!
//! Anything else (`DROP TABLE`, `DELETE`, another table, two statements in
//! one string, a narrowing type change) is refused with the reason.

use sqlparser::ast::{AlterColumnOperation, AlterTableOperation, ColumnOption, ObjectName, Statement};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use mend_model::{Column, Dialect};

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {statement:?}: {reason}")]
pub struct Refused {
    pub statement: String,
    pub reason: String,
}

/// How a DDL statement changes the columns of `table`: columns added, and
/// columns renamed (old, new). Other statements, and statements on other
/// tables, change none.
pub fn column_changes(statement: &str, dialect: Dialect, table: &str) -> (Vec<String>, Vec<(String, String)>) {
    let parsed = match dialect {
        Dialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, statement),
        Dialect::Sqlite => Parser::parse_sql(&SQLiteDialect {}, statement),
    };
    let (mut added, mut renamed) = (Vec::new(), Vec::new());
    for parsed in parsed.unwrap_or_default() {
        let Statement::AlterTable(alter) = parsed else { continue };
        if !names(&alter.name, table) {
            continue;
        }
        for operation in &alter.operations {
            match operation {
                AlterTableOperation::AddColumn { column_def, .. } => added.push(column_def.name.value.clone()),
                AlterTableOperation::RenameColumn { old_column_name, new_column_name } => {
                    renamed.push((old_column_name.value.clone(), new_column_name.value.clone()));
                }
                _ => {}
            }
        }
    }
    (added, renamed)
}

/// Checks one statement against the rules above, for `table` whose current
/// columns are `columns`.
pub fn check(statement: &str, dialect: Dialect, table: &str, columns: &[Column]) -> Result<(), Refused> {
    let refuse = |reason: String| Refused { statement: statement.to_owned(), reason };
    let parsed = match dialect {
        Dialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, statement),
        Dialect::Sqlite => Parser::parse_sql(&SQLiteDialect {}, statement),
    }
    .map_err(|e| refuse(format!("not valid {} SQL: {e}", dialect.name())))?;
    let [parsed] = parsed.as_slice() else {
        return Err(refuse(format!("{} statements in one step; exactly one is allowed", parsed.len())));
    };
    let column = |name: &str| columns.iter().find(|c| c.name == name);
    match parsed {
        Statement::AlterTable(alter) => {
            if !names(&alter.name, table) {
                return Err(refuse(format!("ALTER TABLE {} is not the dataset's table {table}", alter.name)));
            }
            if alter.operations.is_empty() {
                return Err(refuse("an ALTER TABLE without an operation".into()));
            }
            for operation in &alter.operations {
                match operation {
                    AlterTableOperation::AddColumn { column_def, .. } => {
                        if column(&column_def.name.value).is_some() {
                            return Err(refuse(format!("column {} exists already", column_def.name.value)));
                        }
                        if let Some(option) =
                            column_def.options.iter().find(|o| !matches!(o.option, ColumnOption::Null))
                        {
                            return Err(refuse(format!(
                                "a new column may not carry {}: only its type (and NULL)",
                                option.option
                            )));
                        }
                    }
                    AlterTableOperation::AlterColumn { column_name, op } => {
                        let Some(current) = column(&column_name.value) else {
                            return Err(refuse(format!("no column {} in {table}", column_name.value)));
                        };
                        match op {
                            AlterColumnOperation::DropNotNull => {}
                            AlterColumnOperation::SetDataType { data_type, using, .. } => {
                                let target = data_type.to_string();
                                if !widens(&current.sql_type, &target) {
                                    return Err(refuse(format!(
                                        "{} {} -> {target} is not a widening",
                                        current.name, current.sql_type
                                    )));
                                }
                                if let Some(using) = using {
                                    let expected = conversion(&current.sql_type, &target, &current.name);
                                    let given = using.to_string().replace(' ', "").to_lowercase();
                                    if expected.as_deref() != Some(given.as_str()) {
                                        return Err(refuse(format!("USING {using} is not mend's own conversion")));
                                    }
                                }
                            }
                            other => return Err(refuse(format!("ALTER COLUMN … {other} is not allowed"))),
                        }
                    }
                    AlterTableOperation::RenameColumn { old_column_name, new_column_name } => {
                        if column(&old_column_name.value).is_none() {
                            return Err(refuse(format!("no column {} in {table}", old_column_name.value)));
                        }
                        if column(&new_column_name.value).is_some() {
                            return Err(refuse(format!("column {} exists already", new_column_name.value)));
                        }
                    }
                    other => return Err(refuse(format!("ALTER TABLE … {other} is not allowed"))),
                }
            }
            Ok(())
        }
        Statement::CreateTable(create) => {
            let name = create.name.0.last().map(ToString::to_string).unwrap_or_default();
            let name = name.trim_matches('"');
            if create.name.0.len() != 1 || !name.starts_with(&format!("{table}__")) {
                return Err(refuse(format!("CREATE TABLE {} is not a child table {table}__…", create.name)));
            }
            if create.query.is_some() {
                return Err(refuse("CREATE TABLE … AS SELECT is not allowed".into()));
            }
            Ok(())
        }
        other => {
            let kind = other.to_string().split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(refuse(format!("{kind} is not an allowed statement kind")))
        }
    }
}

/// Whether `name` (possibly quoted, unqualified) is `table`.
fn names(name: &ObjectName, table: &str) -> bool {
    name.0.len() == 1 && name.0[0].as_ident().is_some_and(|ident| ident.value == table)
}

/// Canonical spelling of a SQL type for comparisons.
fn canonical(sql_type: &str) -> String {
    let t = sql_type.trim().to_uppercase();
    match t.as_str() {
        "INT" | "INT4" | "INTEGER" => "INTEGER".into(),
        "INT2" | "SMALLINT" => "SMALLINT".into(),
        "INT8" | "BIGINT" => "BIGINT".into(),
        "FLOAT4" | "REAL" => "REAL".into(),
        "FLOAT8" | "DOUBLE PRECISION" | "DOUBLE" => "DOUBLE PRECISION".into(),
        "DECIMAL" => "NUMERIC".into(),
        _ => t.replace("DECIMAL", "NUMERIC").replace(", ", ",").replace("CHARACTER VARYING", "VARCHAR"),
    }
}

/// Whether two spellings name the same SQL type (`int8` and `BIGINT`).
pub fn same_type(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

/// `NUMERIC(p,s)` → (p, s); plain `NUMERIC` → None.
fn numeric(t: &str) -> Option<(u32, u32)> {
    let inner = t.strip_prefix("NUMERIC(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Whether every value of SQL type `from` is a value of `to`.
pub fn widens(from: &str, to: &str) -> bool {
    let (from, to) = (canonical(from), canonical(to));
    let rank = |t: &str| match t {
        "SMALLINT" => Some(0),
        "INTEGER" => Some(1),
        "BIGINT" => Some(2),
        _ => None,
    };
    match (from.as_str(), to.as_str()) {
        (a, b) if a == b => false,
        (a, b) if rank(a).is_some() && rank(b).is_some() => rank(a) < rank(b),
        ("SMALLINT" | "INTEGER" | "BIGINT", "REAL" | "DOUBLE PRECISION" | "NUMERIC") => true,
        ("REAL", "DOUBLE PRECISION") => true,
        ("TEXT", "BYTEA") | ("BYTEA", "TEXT") => true,
        (a, "TEXT") if a.starts_with("VARCHAR") => true,
        (a, "NUMERIC") if a.starts_with("NUMERIC(") => true,
        (a, b) if a.starts_with("NUMERIC(") && b.starts_with("NUMERIC(") => match (numeric(a), numeric(b)) {
            (Some((p1, s1)), Some((p2, s2))) => s1 == s2 && p2 > p1,
            _ => false,
        },
        ("SMALLINT" | "INTEGER", b) if b.starts_with("NUMERIC(") => true,
        _ => false,
    }
}

/// mend's own `USING` conversion between two types (spaces removed,
/// lowercase), if there is one.
fn conversion(from: &str, to: &str, column: &str) -> Option<String> {
    let quoted = crate::quote(column).to_lowercase();
    match (canonical(from).as_str(), canonical(to).as_str()) {
        ("TEXT", "BYTEA") => Some(format!("convert_to({quoted},'utf8')")),
        ("BYTEA", "TEXT") => Some(format!("convert_from({quoted},'utf8')")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        let column =
            |name: &str, sql_type: &str, nullable| Column { name: name.into(), sql_type: sql_type.into(), nullable };
        vec![
            column("id", "bigint", false),
            column("email", "text", false),
            column("amount", "integer", true),
            column("price", "numeric(10,2)", true),
        ]
    }

    fn pg(sql: &str) -> Result<(), Refused> {
        check(sql, Dialect::Postgres, "orders", &columns())
    }

    #[test]
    fn allows_what_plans_do() {
        for sql in [
            r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#,
            "ALTER TABLE orders ADD COLUMN coupon TEXT NULL",
            r#"ALTER TABLE "orders" ALTER COLUMN "email" DROP NOT NULL"#,
            r#"ALTER TABLE "orders" ALTER COLUMN "amount" TYPE BIGINT"#,
            r#"ALTER TABLE "orders" ALTER COLUMN "price" TYPE NUMERIC(12, 2)"#,
            r#"ALTER TABLE "orders" ALTER COLUMN "email" TYPE BYTEA USING convert_to("email", 'UTF8')"#,
            r#"ALTER TABLE "orders" RENAME COLUMN "email" TO "customer_email""#,
            r#"CREATE TABLE "orders__lines" (sku TEXT, qty INTEGER)"#,
        ] {
            assert_eq!(pg(sql), Ok(()), "{sql}");
        }
        assert_eq!(check(r#"ALTER TABLE "orders" ADD COLUMN "c" TEXT"#, Dialect::Sqlite, "orders", &columns()), Ok(()));
    }

    #[test]
    fn refuses_everything_else() {
        for (sql, why) in [
            ("DROP TABLE orders", "not an allowed statement kind"),
            ("DELETE FROM orders", "not an allowed statement kind"),
            ("ALTER TABLE customers ADD COLUMN x TEXT", "not the dataset's table"),
            ("ALTER TABLE public.orders ADD COLUMN x TEXT", "not the dataset's table"),
            ("ALTER TABLE orders ADD COLUMN x TEXT; DROP TABLE orders", "2 statements"),
            ("ALTER TABLE orders DROP COLUMN email", "is not allowed"),
            ("ALTER TABLE orders ALTER COLUMN id TYPE INTEGER", "not a widening"),
            ("ALTER TABLE orders ALTER COLUMN email TYPE INTEGER USING 0", "not a widening"),
            ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING decode(email, 'hex')", "not mend's own"),
            ("ALTER TABLE orders ALTER COLUMN email SET DEFAULT 'x'", "is not allowed"),
            ("ALTER TABLE orders ADD COLUMN x TEXT DEFAULT (pg_sleep(10))", "may not carry"),
            ("ALTER TABLE orders ADD COLUMN email TEXT", "exists already"),
            ("ALTER TABLE orders RENAME TO old_orders", "is not allowed"),
            ("CREATE TABLE evil (x TEXT)", "not a child table"),
            ("CREATE TABLE orders__x AS SELECT * FROM pg_shadow", "AS SELECT"),
            ("GRANT ALL ON orders TO public", "not an allowed statement kind"),
            ("this is not sql", "not valid"),
        ] {
            let refused = pg(sql).expect_err(sql);
            assert!(refused.reason.contains(why), "{sql}: {}", refused.reason);
        }
    }

    #[test]
    fn widening_table() {
        assert!(widens("integer", "BIGINT"));
        assert!(widens("real", "DOUBLE PRECISION"));
        assert!(widens("numeric(10,2)", "NUMERIC(12,2)"));
        assert!(!widens("numeric(10,2)", "NUMERIC(12,3)"));
        assert!(!widens("bigint", "INTEGER"));
        assert!(!widens("double precision", "REAL"));
        assert!(!widens("text", "INTEGER"));
    }

    // Property tests in place of fuzzing (see `make fuzz`): statements
    // from SQL tokens never panic the guardrail, and what it allows is one
    // statement on the dataset's table (or a child table of it).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const TOKENS: [&str; 40] = [
            "ALTER",
            "TABLE",
            "orders",
            "\"orders\"",
            "other",
            "orders__items",
            "ADD",
            "COLUMN",
            "DROP",
            "RENAME",
            "TO",
            "TYPE",
            "SET",
            "DATA",
            "NOT",
            "NULL",
            "DEFAULT",
            "USING",
            "bigint",
            "integer",
            "text",
            "bytea",
            "numeric(12,2)",
            "double precision",
            "coupon",
            "amount",
            "email",
            "id",
            "(",
            ")",
            ",",
            ";",
            "CREATE",
            "DELETE",
            "FROM",
            "WHERE",
            "1",
            "'x'",
            "::",
            "--",
        ];

        fn statement() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::collection::vec(proptest::sample::select(TOKENS.to_vec()), 0..14).prop_map(|t| t.join(" ")),
                "\\PC{0,80}",
            ]
        }

        proptest! {
            #[test]
            fn fuzz_guard_statements(sql in statement(), sqlite in any::<bool>()) {
                let dialect = if sqlite { Dialect::Sqlite } else { Dialect::Postgres };
                let _ = column_changes(&sql, dialect, "orders");
                if check(&sql, dialect, "orders", &columns()).is_ok() {
                    let parsed = match dialect {
                        Dialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, &sql),
                        Dialect::Sqlite => Parser::parse_sql(&SQLiteDialect {}, &sql),
                    };
                    let parsed = parsed.unwrap_or_default();
                    prop_assert_eq!(parsed.len(), 1, "{}", sql);
                    match &parsed[0] {
                        Statement::AlterTable(alter) => prop_assert!(names(&alter.name, "orders"), "{}", sql),
                        Statement::CreateTable(create) => {
                            prop_assert!(create.name.to_string().trim_matches('"').starts_with("orders__"), "{}", sql)
                        }
                        other => prop_assert!(false, "{} allowed as {:?}", sql, other),
                    }
                }
            }
        }
    }
}
