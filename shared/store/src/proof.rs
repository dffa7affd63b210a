//! The proof on the catalog: whatever the parser thought a statement
//! meant, the dry run (a transaction rolled back) compares the database's
//! catalog before and after it, and every object whose definition changed
//! must be the dataset's table or a child table the plan creates, changed
//! only the ways the allowed statement kinds change them. Anything else is
//! a refusal naming the object. This is the check that catches the next
//! escape nobody thought of; the allow-list ([`crate::guard`]) keeps the
//! known ones from ever reaching the dry run.
//!
//! Each engine takes a snapshot of its catalog as [`Entry`] rows (see
//! `pg.rs`, `sqlite.rs`); the comparison is written once, here.

use std::collections::{BTreeMap, HashSet};

/// What may happen to an entry of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// It may appear (a child table, its storage, its row type).
    Appear,
    /// It may appear or change (the columns of the table and its children).
    Change,
    /// It may appear when plain (a child's storage); an existing one of the
    /// dataset's table may change (a type change rebuilds its indexes,
    /// constraints and defaults), never appear on it.
    Rebuild,
    /// It may appear; its disappearance is not a change of the object it
    /// names (dependencies on the dataset's objects).
    Reference,
    /// Nothing may happen to it: triggers, constraints, defaults,
    /// inheritance, functions, sequences, rules, policies, schemas.
    Never,
}

/// One object of the catalog, as a snapshot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// What it is, for messages and rules ("relation", "trigger", …).
    pub kind: String,
    /// Its name: the same object has the same name before and after.
    pub key: String,
    /// The relation it belongs to (PostgreSQL: the table's oid; SQLite:
    /// its name in lower case), or None when it belongs to none. A
    /// reference to the dataset's schema belongs to every allowed table.
    pub scope: Option<String>,
    /// Whether it is as plain as an allowed statement leaves it (no
    /// options, no default, built-in types).
    pub plain: bool,
    /// Its definition: any difference is a change.
    pub definition: String,
    /// How a finding names it (the key, or something a person reads better).
    pub label: String,
}

/// The scope of an entry that belongs to the dataset's schema itself.
pub(crate) const SCHEMA_SCOPE: &str = "schema";

/// The changes between two snapshots that the allowed statements cannot
/// make: each names its object. `allowed` are the scopes of the dataset's
/// table and of the child tables the plan creates; `rule` says what may
/// happen to each kind.
pub(crate) fn findings(
    before: &[Entry],
    after: &[Entry],
    allowed: &HashSet<String>,
    rule: impl Fn(&str) -> Rule,
) -> Vec<String> {
    let index = |entries: &[Entry]| -> BTreeMap<(String, String), Entry> {
        entries.iter().map(|e| ((e.kind.clone(), e.key.clone()), e.clone())).collect()
    };
    let (before, after) = (index(before), index(after));
    let ours =
        |entry: &Entry| entry.scope.as_deref().is_some_and(|scope| scope == SCHEMA_SCOPE || allowed.contains(scope));
    let mut findings = Vec::new();
    for (key, now) in &after {
        let was = before.get(key);
        if was.is_some_and(|was| was.definition == now.definition) {
            continue;
        }
        let what = if was.is_some() { "changed" } else { "appeared" };
        let fits = match rule(&now.kind) {
            Rule::Appear | Rule::Reference => was.is_none() && ours(now) && now.plain,
            Rule::Change => ours(now) && now.plain && was.is_none_or(|was| was.scope == now.scope),
            Rule::Rebuild => ours(now) && was.map_or(now.plain, |was| was.scope == now.scope),
            Rule::Never => false,
        };
        if !fits {
            let why = if ours(now) { "" } else { ", outside the dataset's table" };
            findings.push(format!("{} {} {what}{why}", now.kind, now.label));
        }
    }
    for (key, was) in &before {
        if !after.contains_key(key) && rule(&was.kind) != Rule::Reference {
            findings.push(format!("{} {} disappeared", was.kind, was.label));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, key: &str, scope: Option<&str>, plain: bool, definition: &str) -> Entry {
        Entry {
            kind: kind.into(),
            key: key.into(),
            scope: scope.map(str::to_owned),
            plain,
            definition: definition.into(),
            label: key.into(),
        }
    }

    fn rule(kind: &str) -> Rule {
        match kind {
            "relation" => Rule::Appear,
            "columns" => Rule::Change,
            "dependency" => Rule::Reference,
            _ => Rule::Never,
        }
    }

    #[test]
    fn only_the_tables_own_changes_pass() {
        let before = vec![
            entry("relation", "public.orders", Some("1"), true, "r"),
            entry("columns", "public.orders", Some("1"), true, "id int"),
            entry("relation", "public.decoy", Some("2"), true, "r"),
            entry("dependency", "orders -> decoy", Some("2"), true, ""),
        ];
        let allowed: HashSet<String> = ["1".to_owned(), "3".to_owned()].into();
        let mut after = before.clone();
        after[1].definition = "id int, coupon text".into();
        after.push(entry("relation", "public.orders__x", Some("3"), true, "r"));
        after.push(entry("dependency", "orders__x -> schema", Some(SCHEMA_SCOPE), true, ""));
        after.retain(|e| e.kind != "dependency" || e.key != "orders -> decoy");
        assert_eq!(findings(&before, &after, &allowed, rule), Vec::<String>::new());

        let mut bad = after.clone();
        bad.push(entry("trigger", "decoy.RI_1", None, false, "t"));
        bad.push(entry("dependency", "orders__x -> decoy", Some("2"), true, ""));
        bad.push(entry("relation", "public.orders__y", Some("3"), false, "u"));
        bad[0].definition = "r, hassubclass".into();
        bad.retain(|e| e.key != "public.decoy");
        assert_eq!(
            findings(&before, &bad, &allowed, rule),
            [
                "dependency orders__x -> decoy appeared, outside the dataset's table",
                "relation public.orders changed",
                "relation public.orders__y appeared",
                "trigger decoy.RI_1 appeared, outside the dataset's table",
                "relation public.decoy disappeared",
            ]
        );
    }
}
