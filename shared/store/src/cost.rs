//! What a plan's DDL costs the dataset's table, known before it runs.
//!
//! Each statement the allow-list lets through ([`crate::guard`]) gets a
//! class — metadata (the catalog only), scan (every row read under the
//! lock) or rewrite (the table and its indexes written anew under the
//! lock) — and the lock it takes, by the database's documented rules for
//! the few kinds mend allows ([`by_rules`]). On PostgreSQL a dry run on an
//! empty copy of the table confirms it: a changed `relfilenode` is a
//! rewrite, and `pg_locks` names the lock taken (`pg.rs`). Where the
//! database and the rules disagree, the database wins and the reason says
//! so. The table's size comes from the catalog's statistics, and a table
//! never analysed is said to be so ([`Size`]).

use mend_model::events::StatementCost;
use mend_model::{CostClass, Dialect};

use crate::guard::types::{self, Builtin};
use crate::guard::{Effect, Target};

/// PostgreSQL's lock for every ALTER TABLE form mend allows.
pub(crate) const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
/// SQLite has no table locks: a schema change holds the database's one
/// write lock (readers of a WAL database go on).
const SQLITE_WRITE: &str = "the database's write lock";

/// The table's size as the catalog knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Rows as the statistics estimate them; None when never analysed.
    pub rows: Option<i64>,
    /// Bytes on disk with indexes and TOAST; None when the database cannot say.
    pub bytes: Option<i64>,
}

/// What the dry run on an empty copy saw of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Whether the table's file was replaced (a rewrite).
    pub rewrote: bool,
    /// The strongest lock it took on the copy, as the documentation names it.
    pub lock: Option<String>,
}

/// The class, lock and reason of one allowed statement by the database's
/// rules, `target` being the table as the statements before it leave it.
pub(crate) fn by_rules(target: &Target, effects: &[Effect]) -> (CostClass, Option<&'static str>, String) {
    let mut class = CostClass::Metadata;
    let mut reasons = Vec::new();
    let mut lock = None;
    for effect in effects {
        let (effect_class, reason) = effect_cost(target, effect);
        class = class.max(effect_class);
        reasons.push(reason);
        if !matches!(effect, Effect::CreateChild { .. }) {
            lock = Some(match target.dialect {
                Dialect::Postgres => ACCESS_EXCLUSIVE,
                Dialect::Sqlite => SQLITE_WRITE,
            });
        }
    }
    (class, lock, reasons.join("; "))
}

fn effect_cost(target: &Target, effect: &Effect) -> (CostClass, String) {
    match effect {
        Effect::AddColumn { column, .. } => {
            (CostClass::Metadata, format!("adding {column} without a default changes the catalog only"))
        }
        Effect::DropNotNull { column } => {
            (CostClass::Metadata, format!("dropping NOT NULL of {column} changes the catalog only"))
        }
        Effect::RenameColumn { from, to } => {
            (CostClass::Metadata, format!("renaming {from} to {to} changes the catalog only"))
        }
        Effect::CreateChild { table } => {
            (CostClass::Metadata, format!("creates the empty table {table}; the dataset's table is not locked"))
        }
        Effect::SetType { column, sql_type } => {
            let dialect = target.dialect;
            let from = target.columns.iter().find(|c| c.name == *column).and_then(|c| types::current(&c.sql_type));
            let to = sql_type.name(dialect);
            match from {
                Some(from) if keeps_file(from, *sql_type) => (
                    CostClass::Metadata,
                    format!(
                        "{column} {} -> {to}: every stored value is already valid, so the table is not rewritten",
                        from.name(dialect)
                    ),
                ),
                Some(from) => (
                    CostClass::Rewrite,
                    format!(
                        "{column} {} -> {to} is not binary-coercible: the table and its indexes are rewritten",
                        from.name(dialect)
                    ),
                ),
                None => {
                    (CostClass::Rewrite, format!("{column} -> {to} from a type mend does not know: taken as a rewrite"))
                }
            }
        }
    }
}

/// Whether PostgreSQL changes a column from `from` to `to` without
/// rewriting the table: the old type is binary-coercible to the new one
/// (`varchar` to `text`), or numeric's own rule lets it keep every stored
/// value as it is (the same scale and no less precision, or no limit).
fn keeps_file(from: Builtin, to: Builtin) -> bool {
    match (from, to) {
        (Builtin::Varchar, Builtin::Text) => true,
        (Builtin::Numeric(Some(_)), Builtin::Numeric(None)) => true,
        (Builtin::Numeric(Some((p1, s1))), Builtin::Numeric(Some((p2, s2)))) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// A statement's cost: the rules' class and lock, corrected by what the
/// dry run on an empty copy saw when there was one, and the table's size.
pub(crate) fn cost(
    (class, lock, reason): (CostClass, Option<&'static str>, String),
    probe: Option<Result<Probe, String>>,
    size: Size,
) -> StatementCost {
    let mut cost = StatementCost {
        class,
        lock: lock.map(str::to_owned),
        reason,
        probe: None,
        rows: size.rows,
        bytes: size.bytes,
        lint: Vec::new(),
    };
    match probe {
        None => {}
        Some(Err(error)) => cost.probe = Some(format!("the dry run on an empty copy failed: {error}")),
        Some(Ok(probe)) => {
            let seen = if probe.rewrote { CostClass::Rewrite } else { CostClass::Metadata };
            let file = if probe.rewrote { "replaced the table's file" } else { "kept the table's file" };
            let lock = probe.lock.as_deref().unwrap_or("no lock");
            cost.probe = Some(format!("the dry run on an empty copy {file} and took {lock}"));
            // A scan keeps the file: only a rewrite is seen either way.
            if (seen == CostClass::Rewrite) != (class == CostClass::Rewrite) {
                cost.reason = format!("{}: the database says {seen}, not {class}", cost.reason);
                cost.class = seen;
            }
            if probe.lock.is_some() {
                cost.lock = probe.lock;
            }
        }
    }
    cost
}

/// `pg_locks`' mode (`AccessExclusiveLock`) as the documentation names
/// it (`ACCESS EXCLUSIVE`).
pub(crate) fn lock_name(mode: &str) -> String {
    let mode = mode.strip_suffix("Lock").unwrap_or(mode);
    let mut name = String::new();
    for c in mode.chars() {
        if c.is_ascii_uppercase() && !name.is_empty() {
            name.push(' ');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// PostgreSQL's table lock modes, weakest first.
const LOCK_ORDER: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

/// The strongest of `pg_locks` modes.
pub(crate) fn strongest(modes: &[String]) -> Option<String> {
    modes.iter().max_by_key(|mode| LOCK_ORDER.iter().position(|known| known == mode)).map(|mode| lock_name(mode))
}

#[cfg(test)]
mod tests {
    use mend_model::Column;

    use super::*;

    fn target(columns: &[(&str, &str)]) -> Target {
        Target {
            dialect: Dialect::Postgres,
            schema: "public".into(),
            table: "t".into(),
            columns: columns
                .iter()
                .map(|(name, sql_type)| Column { name: (*name).into(), sql_type: (*sql_type).into(), nullable: true })
                .collect(),
        }
    }

    fn set(column: &str, sql_type: Builtin) -> Effect {
        Effect::SetType { column: column.into(), sql_type }
    }

    #[test]
    fn widenings_that_keep_the_file_are_metadata_and_the_rest_rewrite() {
        let t = target(&[("a", "integer"), ("b", "real"), ("c", "character varying(20)"), ("d", "numeric(10,2)")]);
        let class = |effect: Effect| by_rules(&t, &[effect]).0;
        assert_eq!(class(set("a", Builtin::BigInt)), CostClass::Rewrite);
        assert_eq!(class(set("b", Builtin::Double)), CostClass::Rewrite);
        assert_eq!(class(set("c", Builtin::Text)), CostClass::Metadata);
        assert_eq!(class(set("d", Builtin::Numeric(Some((12, 2))))), CostClass::Metadata);
        assert_eq!(class(set("d", Builtin::Numeric(None))), CostClass::Metadata);
        assert_eq!(class(set("d", Builtin::Numeric(Some((12, 3))))), CostClass::Rewrite);
        assert_eq!(class(Effect::AddColumn { column: "e".into(), sql_type: Builtin::Text }), CostClass::Metadata);
        let (_, lock, _) = by_rules(&t, &[Effect::CreateChild { table: "t__x".into() }]);
        assert_eq!(lock, None);
        let (class, lock, reason) =
            by_rules(&t, &[Effect::DropNotNull { column: "a".into() }, set("a", Builtin::BigInt)]);
        assert_eq!((class, lock), (CostClass::Rewrite, Some(ACCESS_EXCLUSIVE)));
        assert!(reason.contains("int4 -> int8 is not binary-coercible"), "{reason}");
    }

    #[test]
    fn the_database_overrules_the_rules() {
        let rules = (CostClass::Metadata, Some(ACCESS_EXCLUSIVE), "r".to_owned());
        let probe = Probe { rewrote: true, lock: Some("ACCESS EXCLUSIVE".into()) };
        let cost = cost(rules, Some(Ok(probe)), Size { rows: None, bytes: Some(8192) });
        assert_eq!(cost.class, CostClass::Rewrite);
        assert_eq!(cost.reason, "r: the database says rewrite, not metadata");
        assert_eq!(cost.estimate(), "rows unknown (never analysed), 8.0 KiB");
        assert_eq!(
            strongest(&["RowExclusiveLock".into(), "AccessExclusiveLock".into()]).as_deref(),
            Some(ACCESS_EXCLUSIVE)
        );
        assert_eq!(lock_name("ShareUpdateExclusiveLock"), "SHARE UPDATE EXCLUSIVE");
    }
}
