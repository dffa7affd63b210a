//! Guardrails on the SQL a plan may run: an allow-list, decided before
//! anything runs. Every DDL statement of a plan is parsed (sqlparser, in the
//! warehouse's dialect) and must be exactly one statement of these kinds on
//! the dataset's own table, with nothing in it but what is listed:
//!
//! - `ALTER TABLE t ADD [COLUMN] c TYPE [NULL]`: a new column of a type
//!   mend writes ([`types`]), without a default, constraint, collation,
//!   identity or generated expression;
//! - `ALTER TABLE t ALTER [COLUMN] c [SET DATA] TYPE wider [USING …]`
//!   (PostgreSQL): a widening that keeps every value exactly
//!   ([`types::widens`]); `USING` only as mend's own conversion of that
//!   same column (`convert_to(c, 'UTF8')` text → bytea, `convert_from(c,
//!   'UTF8')` back);
//! - `ALTER TABLE t ALTER [COLUMN] c DROP NOT NULL` (PostgreSQL);
//! - `ALTER TABLE t RENAME [COLUMN] a TO b`, alone in its statement;
//! - `CREATE TABLE t__child (c TYPE [NULL], …)`: a child table holding
//!   only columns of types mend writes: no constraint, REFERENCES,
//!   INHERITS, LIKE, PARTITION, TEMPORARY, UNLOGGED, WITH or tablespace.
//!
//! Several ADD COLUMN, ALTER COLUMN and DROP NOT NULL may share one
//! ALTER TABLE. Names are compared as the database compares them
//! ([`names`]: quoting, case folding, `U&` escapes, the table's schema), so
//! every spelling of the dataset's table is recognised and nothing else is.
//!
//! An allowed statement is not run as written: [`check`] renders it again
//! from what it allowed, every name quoted and schema-qualified and every
//! type the catalog's own (`pg_catalog.int8`), and that text is what the
//! dry run and the apply execute. Whatever sqlparser and the database might
//! read differently, what runs is what was checked. The dry run then proves
//! it on the catalog (see `Warehouse::vet`).

mod names;
pub mod types;

use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, CreateTable, Expr, FunctionArg,
    FunctionArgExpr, FunctionArguments, ObjectName, Statement, Value,
};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use mend_model::{Column, Dialect};

use crate::quote;
use types::Builtin;

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {statement:?}: {reason}")]
pub struct Refused {
    pub statement: String,
    pub reason: String,
}

/// The table a plan may change, as the warehouse's catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dialect: Dialect,
    /// The schema holding the table (`main` on SQLite).
    pub schema: String,
    pub table: String,
    /// Its columns, mend's position columns excluded.
    pub columns: Vec<Column>,
}

/// A statement the allow-list lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// mend's own rendering of it: the text that runs.
    pub sql: String,
    /// What it does, in order.
    pub effects: Vec<Effect>,
}

/// One thing an allowed statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AddColumn { column: String, sql_type: Builtin },
    SetType { column: String, sql_type: Builtin },
    DropNotNull { column: String },
    RenameColumn { from: String, to: String },
    CreateChild { table: String },
}

impl Target {
    /// The columns as `allowed` leaves them: the next statement of a plan is
    /// checked against these.
    pub fn apply(&mut self, allowed: &Allowed) {
        let dialect = self.dialect;
        for effect in &allowed.effects {
            match effect {
                Effect::AddColumn { column, sql_type } => {
                    self.columns.push(Column { name: column.clone(), sql_type: sql_type.name(dialect), nullable: true })
                }
                Effect::SetType { column, sql_type } => {
                    if let Some(c) = self.columns.iter_mut().find(|c| names::same(dialect, column, &c.name)) {
                        c.sql_type = sql_type.name(dialect);
                    }
                }
                Effect::DropNotNull { column } => {
                    if let Some(c) = self.columns.iter_mut().find(|c| names::same(dialect, column, &c.name)) {
                        c.nullable = true;
                    }
                }
                Effect::RenameColumn { from, to } => {
                    if let Some(c) = self.columns.iter_mut().find(|c| names::same(dialect, from, &c.name)) {
                        c.name = to.clone();
                    }
                }
                Effect::CreateChild { .. } => {}
            }
        }
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| names::same(self.dialect, name, &c.name))
    }

    /// Whether `name` (as written) is the dataset's table.
    fn is_table(&self, name: &ObjectName) -> bool {
        self.local(name).is_some_and(|local| names::same(self.dialect, &local, &self.table))
    }

    /// The table part of `name` when it is unqualified or qualified with
    /// the table's own schema; None for any other schema or form.
    fn local(&self, name: &ObjectName) -> Option<String> {
        match names::parts(self.dialect, name)?.as_slice() {
            [local] => Some(local.clone()),
            [schema, local] if names::same(self.dialect, schema, &self.schema) => Some(local.clone()),
            _ => None,
        }
    }

    /// A table of the dataset's schema, qualified and quoted.
    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(table))
    }
}

/// Parses SQL in `dialect`, as mend reads a plan's statements.
fn parse(statement: &str, dialect: Dialect) -> Result<Vec<Statement>, String> {
    match dialect {
        Dialect::Postgres => {
            let statement = names::unicode_identifiers(statement)?;
            Parser::parse_sql(&PostgreSqlDialect {}, &statement)
        }
        Dialect::Sqlite => Parser::parse_sql(&SQLiteDialect {}, statement),
    }
    .map_err(|e| e.to_string())
}

/// How a DDL statement changes the columns of `table`: columns added, and
/// columns renamed (old, new). Other statements, and statements on other
/// tables, change none.
pub fn column_changes(statement: &str, dialect: Dialect, table: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (mut added, mut renamed) = (Vec::new(), Vec::new());
    for parsed in parse(statement, dialect).unwrap_or_default() {
        let Statement::AlterTable(alter) = parsed else { continue };
        if !names::parts(dialect, &alter.name).is_some_and(|p| p.last().is_some_and(|t| names::same(dialect, t, table)))
        {
            continue;
        }
        for operation in &alter.operations {
            match operation {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    added.push(names::resolve(dialect, &column_def.name));
                }
                AlterTableOperation::RenameColumn { old_column_name, new_column_name } => {
                    renamed.push((names::resolve(dialect, old_column_name), names::resolve(dialect, new_column_name)))
                }
                _ => {}
            }
        }
    }
    (added, renamed)
}

/// Checks one statement against the allow-list for `target`; returns what
/// it does and mend's rendering of it.
pub fn check(statement: &str, target: &Target) -> Result<Allowed, Refused> {
    let refuse = |reason: String| Refused { statement: statement.to_owned(), reason };
    let dialect = target.dialect;
    let parsed = parse(statement, dialect).map_err(|e| refuse(format!("not valid {} SQL: {e}", dialect.name())))?;
    let [parsed] = parsed.as_slice() else {
        return Err(refuse(format!("{} statements in one step; exactly one is allowed", parsed.len())));
    };
    match parsed {
        Statement::AlterTable(alter) => {
            if alter.table_type.is_some() || alter.location.is_some() || alter.on_cluster.is_some() {
                return Err(refuse(format!("{alter} is not a plain ALTER TABLE")));
            }
            if alter.only {
                return Err(refuse("ALTER TABLE ONLY is not one of mend's statements".into()));
            }
            if !target.is_table(&alter.name) {
                return Err(refuse(format!("ALTER TABLE {} is not the dataset's table {}", alter.name, target.table)));
            }
            if alter.operations.is_empty() {
                return Err(refuse("an ALTER TABLE without an operation".into()));
            }
            let renames = alter.operations.iter().any(|o| matches!(o, AlterTableOperation::RenameColumn { .. }));
            if renames && alter.operations.len() > 1 {
                return Err(refuse("RENAME COLUMN stands alone in its ALTER TABLE".into()));
            }
            // Each operation sees the columns as the ones before it leave them.
            let mut columns = target.clone();
            let mut rendered = Vec::new();
            let mut effects = Vec::new();
            for operation in &alter.operations {
                let (sql, effect) = operation_allowed(operation, &columns).map_err(refuse)?;
                let allowed = Allowed { sql: String::new(), effects: vec![effect.clone()] };
                columns.apply(&allowed);
                rendered.push(sql);
                effects.push(effect);
            }
            let sql = format!("ALTER TABLE {} {}", target.qualified(&target.table), rendered.join(", "));
            Ok(Allowed { sql, effects })
        }
        Statement::CreateTable(create) => {
            let child = child_allowed(create, target).map_err(refuse)?;
            let columns = create
                .columns
                .iter()
                .map(|column| {
                    let sql_type = plain_column(column, dialect)?;
                    Ok(format!("{} {}", quote(&names::resolve(dialect, &column.name)), sql_type.render(dialect)))
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(refuse)?;
            let sql = format!("CREATE TABLE {} ({})", target.qualified(&child), columns.join(", "));
            Ok(Allowed { sql, effects: vec![Effect::CreateChild { table: child }] })
        }
        other => {
            let kind = other.to_string().split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(refuse(format!("{kind} is not an allowed statement kind")))
        }
    }
}

/// One operation of an ALTER TABLE on the dataset's table: mend's
/// rendering of it and what it does, or why it is refused.
fn operation_allowed(operation: &AlterTableOperation, target: &Target) -> Result<(String, Effect), String> {
    let dialect = target.dialect;
    match operation {
        AlterTableOperation::AddColumn { if_not_exists, column_def, column_position, .. } => {
            if *if_not_exists {
                return Err("ADD COLUMN IF NOT EXISTS: mend adds a column it knows is missing".into());
            }
            if column_position.is_some() {
                return Err(format!("{operation}: a column position is not allowed"));
            }
            let column = names::resolve(dialect, &column_def.name);
            if target.column(&column).is_some() {
                return Err(format!("column {column} exists already"));
            }
            let sql_type = plain_column(column_def, dialect)?;
            let sql = format!("ADD COLUMN {} {}", quote(&column), sql_type.render(dialect));
            Ok((sql, Effect::AddColumn { column, sql_type }))
        }
        AlterTableOperation::AlterColumn { column_name, op } => {
            if dialect == Dialect::Sqlite {
                return Err("SQLite cannot change a column in place".into());
            }
            let name = names::resolve(dialect, column_name);
            let Some(current) = target.column(&name) else {
                return Err(format!("no column {name} in {}", target.table));
            };
            let column = current.name.clone();
            match op {
                AlterColumnOperation::DropNotNull => {
                    Ok((format!("ALTER COLUMN {} DROP NOT NULL", quote(&column)), Effect::DropNotNull { column }))
                }
                AlterColumnOperation::SetDataType { data_type, using, .. } => {
                    let to = types::written(data_type, dialect)?;
                    let Some(from) = types::current(&current.sql_type) else {
                        return Err(format!("{column} is of type {}, which mend does not widen", current.sql_type));
                    };
                    if !types::widens(from, to) {
                        return Err(format!(
                            "{column} {} -> {data_type} is not a widening that keeps every value",
                            current.sql_type
                        ));
                    }
                    let using = match (using, conversion(from, to)) {
                        (None, _) => String::new(),
                        (Some(expr), Some(function)) if converts(expr, function, &column, dialect) => {
                            format!(" USING pg_catalog.{function}({}, 'UTF8')", quote(&column))
                        }
                        (Some(expr), _) => return Err(format!("USING {expr} is not mend's own conversion")),
                    };
                    let sql = format!("ALTER COLUMN {} TYPE {}{using}", quote(&column), to.render(dialect));
                    Ok((sql, Effect::SetType { column, sql_type: to }))
                }
                other => Err(format!("ALTER COLUMN … {other} is not allowed")),
            }
        }
        AlterTableOperation::RenameColumn { old_column_name, new_column_name } => {
            let (old, new) = (names::resolve(dialect, old_column_name), names::resolve(dialect, new_column_name));
            let Some(current) = target.column(&old) else {
                return Err(format!("no column {old} in {}", target.table));
            };
            if target.column(&new).is_some() {
                return Err(format!("column {new} exists already"));
            }
            let from = current.name.clone();
            let sql = format!("RENAME COLUMN {} TO {}", quote(&from), quote(&new));
            Ok((sql, Effect::RenameColumn { from, to: new }))
        }
        other => Err(format!("ALTER TABLE … {other} is not allowed")),
    }
}

/// A column of an added column or a child table: its type, if it has
/// nothing but a type mend writes (and NULL).
fn plain_column(column: &ColumnDef, dialect: Dialect) -> Result<Builtin, String> {
    if let Some(option) = column.options.iter().find(|o| o.name.is_some() || !matches!(o.option, ColumnOption::Null)) {
        return Err(format!("column {} may not carry {}: only its type (and NULL)", column.name, option.option));
    }
    types::written(&column.data_type, dialect)
}

/// The name of a CREATE TABLE's child table, if the statement creates
/// nothing but a child of the dataset's table with plain columns.
fn child_allowed(create: &CreateTable, target: &Target) -> Result<String, String> {
    let Some(child) = target.local(&create.name) else {
        return Err(format!("CREATE TABLE {} is not in the dataset's schema {}", create.name, target.schema));
    };
    let prefix = format!("{}__", target.table);
    let is_child = match target.dialect {
        Dialect::Postgres => child.starts_with(&prefix),
        Dialect::Sqlite => child.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()),
    };
    if !is_child || child.len() <= prefix.len() {
        return Err(format!("CREATE TABLE {} is not a child table {prefix}…", create.name));
    }
    let tie = if create.inherits.is_some() {
        Some("INHERITS ties it to another table")
    } else if create.like.is_some() || create.clone.is_some() {
        Some("LIKE copies another table")
    } else if create.partition_of.is_some() || create.partition_by.is_some() || create.for_values.is_some() {
        Some("PARTITION OF / BY ties it to another table or function")
    } else if create.query.is_some() {
        Some("AS SELECT reads other tables")
    } else if !create.constraints.is_empty() {
        Some("table constraints are not allowed")
    } else if create.temporary || create.unlogged || create.global.is_some() {
        Some("TEMPORARY and UNLOGGED are not allowed")
    } else if create.if_not_exists {
        Some("IF NOT EXISTS: mend creates a child it knows is missing")
    } else {
        None
    };
    if let Some(tie) = tie {
        return Err(format!("CREATE TABLE {}: {tie}", create.name));
    }
    // Anything else beyond the name and the columns (WITH, TABLESPACE,
    // ON COMMIT, options of other dialects) differs from the plain form.
    let plain = CreateTableBuilder::new(create.name.clone()).columns(create.columns.clone()).build();
    if *create != plain {
        return Err(format!("CREATE TABLE {}: only the child's columns and their types are allowed", create.name));
    }
    if create.columns.is_empty() {
        return Err(format!("CREATE TABLE {} without a column", create.name));
    }
    Ok(child)
}

/// The `USING` clause of a widening of `column` from `from` to `to` (SQL
/// type names), as the guard accepts it: mend's conversion between text and
/// bytes, or nothing when the types convert by themselves.
pub fn using(from: &str, to: &str, column: &str) -> String {
    match (types::current(from), types::current(to)) {
        (Some(from), Some(to)) => conversion(from, to)
            .map(|function| format!(" USING {function}({}, 'UTF8')", crate::quote(column)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// mend's own conversion function from one type to another, if it has one.
fn conversion(from: Builtin, to: Builtin) -> Option<&'static str> {
    match (from, to) {
        (Builtin::Text, Builtin::Bytes) => Some("convert_to"),
        (Builtin::Bytes, Builtin::Text) => Some("convert_from"),
        _ => None,
    }
}

/// Whether `expr` is `function(column, 'UTF8')` (in any spelling
/// PostgreSQL reads as that: the function's name in any case, or
/// qualified with `pg_catalog`; the encoding's name in any of its forms).
fn converts(expr: &Expr, function: &str, column: &str, dialect: Dialect) -> bool {
    let Expr::Function(call) = expr else { return false };
    let plain_call = !call.uses_odbc_syntax
        && matches!(call.parameters, FunctionArguments::None)
        && call.filter.is_none()
        && call.null_treatment.is_none()
        && call.over.is_none()
        && call.within_group.is_empty();
    let named = match names::parts(dialect, &call.name).as_deref() {
        Some([name]) | Some([_, name]) if name != function => false,
        Some([_]) => true,
        Some([schema, _]) => schema == "pg_catalog",
        _ => false,
    };
    let FunctionArguments::List(list) = &call.args else { return false };
    let argument = |i: usize| match list.args.get(i) {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))) => Some(expr),
        _ => None,
    };
    let same_column = matches!(argument(0), Some(Expr::Identifier(ident)) if names::same(dialect, &names::resolve(dialect, ident), column));
    let utf8 = match argument(1) {
        Some(Expr::Value(value)) => match &value.value {
            Value::SingleQuotedString(name) => {
                let clean: String =
                    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
                clean == "utf8" || clean == "unicode"
            }
            _ => false,
        },
        _ => false,
    };
    plain_call
        && named
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && list.args.len() == 2
        && same_column
        && utf8
}

/// Whether two spellings name the same SQL type (`int8` and `BIGINT`).
pub fn same_type(a: &str, b: &str) -> bool {
    match (types::current(a), types::current(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

#[cfg(test)]
mod tests;
