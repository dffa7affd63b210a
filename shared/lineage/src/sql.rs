//! Column lineage of one compiled SQL node (polyglot-sql's analysis,
//! PostgreSQL's dialect): every place it reads a changed column of a parent
//! — projections, joins, filters, grouping, windows, in CTEs too — and which
//! of its output columns change.
//!
//! polyglot-sql resolves references through CTEs that name their columns,
//! but stops at a CTE that selects `*` (dbt's `with source as (select * from
//! …)`); [`Query::resolve`] follows such a CTE to the relation its star
//! reads.

use std::collections::BTreeMap;

use mend_model::Impact;
use polyglot_sql::query_analysis::ColumnUseContext;
use polyglot_sql::{AnalyzeQueryOptions, DialectType, ProjectionFact, QueryAnalysis, TransformKind, analyze_query};

use crate::Change;

/// A parent of the node, as the node's SQL names it.
pub(crate) struct Parent<'a> {
    pub name: &'a str,
    /// Its relation's name, lower-cased (`stg_orders`).
    pub identifier: String,
    /// Its output columns that change.
    pub out: &'a BTreeMap<String, Change>,
}

/// What reading the node found.
pub(crate) struct Reading {
    pub reasons: Vec<(Impact, String)>,
    /// Its output columns (lower-cased) that change.
    pub out: BTreeMap<String, Change>,
}

/// Where a referenced column comes from.
enum Origin {
    /// A column of the parent at this index.
    Parent(usize, String),
    /// A column mend cannot place (an unqualified name over several
    /// relations, a relation that is no parent).
    Unplaced(String),
}

/// The unquoted last part of a dotted name: `"db"."s"."t"` → `t`.
pub(crate) fn last_part(name: &str) -> String {
    let mut part = String::new();
    let mut quoted = false;
    for c in name.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => part.clear(),
            _ => part.push(c),
        }
    }
    part
}

fn analyse(sql: &str) -> Result<QueryAnalysis, String> {
    let options = AnalyzeQueryOptions { dialect: DialectType::PostgreSQL, ..Default::default() };
    analyze_query(sql, options).map_err(|e| e.to_string())
}

/// How deep CTEs may refer to CTEs before mend stops following them.
const DEPTH: usize = 32;

struct Query<'a> {
    top: QueryAnalysis,
    /// Each CTE (lower-cased name) and its body's analysis.
    ctes: BTreeMap<String, QueryAnalysis>,
    parents: &'a [Parent<'a>],
}

impl Query<'_> {
    fn parent(&self, relation: &str) -> Option<usize> {
        let name = last_part(relation).to_lowercase();
        self.parents.iter().position(|p| p.identifier == name)
    }

    fn cte(&self, relation: &str) -> Option<&QueryAnalysis> {
        self.ctes.get(&last_part(relation).to_lowercase())
    }

    /// The relations a star of `scope` reads: the one it names (an alias
    /// resolved), else every relation of the scope.
    fn star_relations(scope: &QueryAnalysis, star_table: Option<&str>) -> Vec<String> {
        let name_of = |r: &polyglot_sql::RelationFact| r.table.clone().unwrap_or_else(|| r.name.clone());
        match star_table {
            Some(table) => {
                let table = last_part(table);
                let relation = scope.relations.iter().find(|r| {
                    r.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(&table))
                        || r.name.eq_ignore_ascii_case(&table)
                });
                vec![relation.map_or(table, name_of)]
            }
            None => scope.relations.iter().map(name_of).collect(),
        }
    }

    /// Where `column` of `relation` comes from.
    fn resolve(&self, relation: Option<&str>, column: &str, depth: usize) -> Vec<Origin> {
        let Some(relation) = relation else { return vec![Origin::Unplaced(column.to_owned())] };
        if depth > DEPTH {
            return vec![Origin::Unplaced(column.to_owned())];
        }
        if let Some(scope) = self.cte(relation) {
            let named =
                scope.projections.iter().find(|p| p.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(column)));
            if let Some(projection) = named {
                return projection
                    .upstream
                    .iter()
                    .flat_map(|u| self.resolve(u.table.as_deref(), &u.column, depth + 1))
                    .collect();
            }
            return scope
                .projections
                .iter()
                .filter(|p| p.is_star)
                .flat_map(|p| Self::star_relations(scope, p.star_table.as_deref()))
                .flat_map(|r| self.resolve(Some(&r), column, depth + 1))
                .collect();
        }
        match self.parent(relation) {
            Some(index) => vec![Origin::Parent(index, column.to_lowercase())],
            None => Vec::new(),
        }
    }

    /// The columns a star over `relation` outputs that come from a parent:
    /// each named column and its origins, and the parents passed on whole.
    fn expand(&self, relation: &str, depth: usize, named: &mut Vec<(String, Vec<Origin>)>, whole: &mut Vec<usize>) {
        if depth > DEPTH {
            return;
        }
        if let Some(scope) = self.cte(relation) {
            for projection in &scope.projections {
                if projection.is_star {
                    for r in Self::star_relations(scope, projection.star_table.as_deref()) {
                        self.expand(&r, depth + 1, named, whole);
                    }
                } else if let Some(name) = &projection.name {
                    let origins = self.origins(projection, depth + 1);
                    named.push((name.to_lowercase(), origins));
                }
            }
        } else if let Some(index) = self.parent(relation) {
            whole.push(index);
        }
    }

    fn origins(&self, projection: &ProjectionFact, depth: usize) -> Vec<Origin> {
        projection.upstream.iter().flat_map(|u| self.resolve(u.table.as_deref(), &u.column, depth)).collect()
    }

    fn change<'q>(&'q self, origin: &'q Origin) -> Option<(&'q Parent<'q>, &'q str, &'q Change)> {
        match origin {
            Origin::Parent(index, column) => {
                let parent = &self.parents[*index];
                parent.out.get(column).map(|change| (parent, column.as_str(), change))
            }
            Origin::Unplaced(_) => None,
        }
    }

    /// Whether an unplaced column is named like a changed one.
    fn named_like_a_change(&self, origin: &Origin) -> Option<String> {
        match origin {
            Origin::Unplaced(column) => {
                let column = column.to_lowercase();
                self.parents.iter().any(|p| p.out.contains_key(&column)).then_some(column)
            }
            Origin::Parent(..) => None,
        }
    }
}

/// The verdict on reading a changed column, the reference passed on
/// unchanged (`direct`) or not: its impact, the verb and what follows the
/// column's name and contexts (`reads orders.email (join), which is …`).
fn verdict(change: &Change, direct: bool) -> (Impact, &'static str, String) {
    match change {
        Change::Renamed { to } => (Impact::Breaking, "reads", format!(", which is renamed to {to}")),
        Change::Nulls => (Impact::Partial, "reads", ", NULL from now on".into()),
        Change::Retyped { from, to, widening: true } => {
            (Impact::Partial, "reads", format!(", widened from {from} to {to}"))
        }
        Change::Retyped { from, to, widening: false } if direct => {
            (Impact::Partial, "passes on", format!(" as {to} (was {from})"))
        }
        Change::Retyped { from, to, widening: false } => {
            (Impact::Breaking, "uses", format!(" as {from}; it becomes {to}"))
        }
        Change::Added { .. } => (Impact::Partial, "reads", ", a new column".into()),
        Change::Values { added } => {
            (Impact::Partial, "reads", format!(", which takes new values: {}", added.join(", ")))
        }
        Change::Derived { from } => (Impact::Partial, "reads", format!(", computed from {from}")),
    }
}

/// The verdicts of a node's references, one reason per changed column and
/// verdict with every place it is read: `reads orders.status (status in
/// CTE renamed, filter, group), NULL from now on`.
#[derive(Default)]
struct Uses {
    by_column: BTreeMap<(Impact, &'static str, String, String), Vec<String>>,
}

impl Uses {
    fn add(&mut self, query: &Query<'_>, origin: &Origin, context: &str, direct: bool) {
        let key = if let Some((parent, column, change)) = query.change(origin) {
            let (impact, verb, tail) = verdict(change, direct);
            (impact, verb, format!("{}.{column}", parent.name), tail)
        } else if let Some(column) = query.named_like_a_change(origin) {
            (Impact::Unknown, "cannot tell which relation gives", column, String::new())
        } else {
            return;
        };
        let contexts = self.by_column.entry(key).or_default();
        if !contexts.iter().any(|c| c == context) {
            contexts.push(context.to_owned());
        }
    }

    fn reasons(self) -> impl Iterator<Item = (Impact, String)> {
        self.by_column.into_iter().map(|((impact, verb, column, tail), contexts)| {
            (impact, format!("{verb} {column} ({}){tail}", contexts.join(", ")))
        })
    }
}

/// What an output column built from `change` of `parent.column` by
/// `transform` becomes; None when the node breaks on it.
fn passed_on(parent: &str, column: &str, change: &Change, transform: Option<TransformKind>) -> Option<Change> {
    let direct = matches!(transform, None | Some(TransformKind::Direct | TransformKind::Star));
    match change {
        Change::Renamed { .. } => None,
        Change::Retyped { widening: false, .. } if !direct => None,
        _ if direct => Some(change.clone()),
        _ => Some(Change::Derived { from: format!("{parent}.{column}") }),
    }
}

/// A clause's name, for a person.
fn clause(context: ColumnUseContext) -> &'static str {
    use ColumnUseContext as C;
    match context {
        C::Join => "join",
        C::Filter => "filter",
        C::Group => "group by",
        C::Having => "having",
        C::Qualify => "qualify",
        C::WindowPartition => "window partition",
        C::WindowOrder => "window order",
        C::WindowFrame => "window frame",
        C::Order => "order by",
        C::AggregateOrder => "aggregate order",
        C::SetOperationFilter => "set operation filter",
    }
}

/// Reads one node's compiled SQL against its parents' changes.
pub(crate) fn read(sql: &str, parents: &[Parent<'_>]) -> Result<Reading, String> {
    let top = analyse(sql)?;
    let mut ctes = BTreeMap::new();
    for cte in &top.cte_facts {
        let body = analyse(&cte.body_sql).map_err(|e| format!("in the CTE {}: {e}", cte.name))?;
        ctes.insert(cte.name.to_lowercase(), body);
    }
    let query = Query { top, ctes, parents };
    let mut uses = Uses::default();
    // Every explicit reference: each projection of each CTE and of the
    // query, and every column used in a clause.
    let scopes = query.ctes.iter().map(|(name, scope)| (Some(name), scope));
    for (cte, scope) in scopes.chain(std::iter::once((None, &query.top))) {
        for projection in scope.projections.iter().filter(|p| !p.is_star) {
            let name = projection.name.as_deref().unwrap_or("?");
            let context = match cte {
                Some(cte) => format!("{name} in CTE {cte}"),
                None => format!("output {name}"),
            };
            for upstream in &projection.upstream {
                let direct = matches!(upstream.path_transform_kind, None | Some(TransformKind::Direct));
                for origin in query.resolve(upstream.table.as_deref(), &upstream.column, 0) {
                    uses.add(&query, &origin, &context, direct);
                }
            }
        }
    }
    for used in &query.top.column_uses {
        let context = clause(used.context);
        for reference in &used.references {
            let reference = &reference.reference;
            for origin in query.resolve(reference.table.as_deref(), &reference.column, 0) {
                uses.add(&query, &origin, context, false);
            }
        }
    }
    let mut reasons: Vec<(Impact, String)> = uses.reasons().collect();
    // The output: each named column from its origins; a star's columns as
    // the relation it reads has them.
    let mut out = BTreeMap::new();
    for projection in &query.top.projections {
        if projection.is_star {
            let mut named = Vec::new();
            let mut whole = Vec::new();
            for relation in Query::star_relations(&query.top, projection.star_table.as_deref()) {
                query.expand(&relation, 0, &mut named, &mut whole);
            }
            for (name, origins) in named {
                for origin in &origins {
                    if let Some((parent, column, change)) = query.change(origin)
                        && let Some(change) = passed_on(parent.name, column, change, None)
                    {
                        out.insert(name.clone(), change);
                    }
                }
            }
            for index in whole {
                let parent = &query.parents[index];
                for (column, change) in parent.out {
                    let effect = crate::Effect { column: column.clone(), change: change.clone() };
                    reasons.push((Impact::Partial, format!("its select * passes on {}: {effect}", parent.name)));
                    out.insert(column.clone(), change.clone());
                }
            }
        } else if let Some(name) = &projection.name {
            for upstream in &projection.upstream {
                for origin in query.resolve(upstream.table.as_deref(), &upstream.column, 0) {
                    if let Some((parent, column, change)) = query.change(&origin)
                        && let Some(change) = passed_on(parent.name, column, change, upstream.path_transform_kind)
                    {
                        out.insert(name.to_lowercase(), change);
                    }
                }
            }
        }
    }
    Ok(Reading { reasons, out })
}
