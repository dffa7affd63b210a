//! The blast radius of a plan in a dbt project: what its column changes do
//! to every model, snapshot, test, exposure and metric downstream of the
//! dataset's table, read offline from the project's compiled manifest
//! (`target/manifest.json` after `dbt compile`).
//!
//! The table is found among the project's sources; the graph is walked in
//! dependency order, and each SQL node's `compiled_code` is read for column
//! lineage ([`sql`]): which changed columns it passes on, and every place it
//! reads one (projections, joins, filters, grouping, windows). Each node gets
//! a verdict ([`Impact`]): breaking, partial, none, or unknown when mend
//! cannot read it (a Python model, SQL it cannot parse, no compiled code):
//! never silently none.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use mend_model::Impact;
use mend_model::events::{BlastRadius, Downstream};
use serde::Deserialize;

mod alias;
mod sql;

/// What a plan does to one of the table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Renamed: every reference to the old name fails.
    Renamed { to: String },
    /// A new type; a widening keeps every value's meaning.
    Retyped { from: String, to: String, widening: bool },
    /// NULL from now on: its field left the writer's schema.
    Nulls,
    /// A new column.
    Added { sql_type: String },
    /// Takes values it never held: new enum symbols.
    Values { added: Vec<String> },
    /// Computed downstream from a changed column (`from`, in words).
    Derived { from: String },
}

/// A change of one column of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub column: String,
    pub change: Change,
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let column = &self.column;
        match &self.change {
            Change::Renamed { to } => write!(f, "{column} renamed to {to}"),
            Change::Retyped { from, to, widening: true } => write!(f, "{column} widened from {from} to {to}"),
            Change::Retyped { from, to, widening: false } => write!(f, "{column} changes type from {from} to {to}"),
            Change::Nulls => write!(f, "{column} is NULL from now on (its field was removed)"),
            Change::Added { sql_type } => write!(f, "new column {column} {sql_type}"),
            Change::Values { added } => write!(f, "{column} takes new values: {}", added.join(", ")),
            Change::Derived { from } => write!(f, "{column} is computed from {from}"),
        }
    }
}

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a dbt manifest: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// The part of a dbt manifest (any schema version since v7) the walk reads.
#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
    #[serde(default)]
    sources: BTreeMap<String, Node>,
    #[serde(default)]
    exposures: BTreeMap<String, Node>,
    #[serde(default)]
    metrics: BTreeMap<String, Node>,
    #[serde(default)]
    semantic_models: BTreeMap<String, Node>,
    #[serde(default)]
    saved_queries: BTreeMap<String, Node>,
    #[serde(default)]
    child_map: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct Node {
    #[serde(default)]
    resource_type: String,
    #[serde(default)]
    name: String,
    language: Option<String>,
    compiled_code: Option<String>,
    /// Its file, relative to the project (`models/stg_orders.sql`).
    original_file_path: Option<String>,
    relation_name: Option<String>,
    schema: Option<String>,
    identifier: Option<String>,
    #[serde(default)]
    depends_on: DependsOn,
    column_name: Option<String>,
    test_metadata: Option<TestMetadata>,
}

#[derive(Debug, Default, Deserialize)]
struct DependsOn {
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct TestMetadata {
    #[serde(default)]
    name: String,
}

impl Node {
    /// The relation's own name, unquoted and lower-cased: the last part of
    /// `"db"."schema"."name"`, else its identifier or name.
    fn identifier(&self) -> String {
        let name = match &self.relation_name {
            Some(relation) => sql::last_part(relation),
            None => self.identifier.clone().unwrap_or_else(|| self.name.clone()),
        };
        name.to_lowercase()
    }
}

/// A dbt project's graph, read from its manifest.
#[derive(Debug)]
pub struct Project {
    nodes: BTreeMap<String, Node>,
    children: BTreeMap<String, Vec<String>>,
}

/// What the walk knows of a node once its parents are read.
#[derive(Debug, Clone)]
struct State {
    impact: Impact,
    reasons: Vec<String>,
    /// Its output columns (lower-cased) that change, and how.
    out: BTreeMap<String, Change>,
    /// It fails to build: everything built on it breaks too.
    broken: bool,
    /// mend cannot read it: what it passes on is unknown.
    opaque: bool,
}

impl State {
    fn new() -> Self {
        Self { impact: Impact::None, reasons: Vec::new(), out: BTreeMap::new(), broken: false, opaque: false }
    }

    fn add(&mut self, impact: Impact, reason: String) {
        self.impact = self.impact.max(impact);
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

impl Project {
    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|source| Error::Parse { path: path.display().to_string(), source })
    }

    /// Reads a manifest's text.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let manifest: Manifest = serde_json::from_str(text)?;
        let mut nodes = manifest.nodes;
        nodes.extend(manifest.sources);
        nodes.extend(manifest.exposures);
        nodes.extend(manifest.metrics);
        nodes.extend(manifest.semantic_models);
        nodes.extend(manifest.saved_queries);
        Ok(Self { nodes, children: manifest.child_map })
    }

    /// The sources that are `table` (in `schema`, when known): matched on
    /// the relation's name, and on its schema when both are known.
    pub fn sources(&self, schema: Option<&str>, table: &str) -> Vec<String> {
        let table = sql::last_part(table).to_lowercase();
        self.nodes
            .iter()
            .filter(|(_, n)| n.resource_type == "source" && n.identifier() == table)
            .filter(|(_, n)| match (schema, &n.schema) {
                (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                _ => true,
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The verdict on every node downstream of `sources` when the table's
    /// columns change by `effects`, worst first.
    pub fn downstream(&self, sources: &[String], effects: &[Effect]) -> Vec<Downstream> {
        let mut states: BTreeMap<&str, State> = BTreeMap::new();
        let source_state = State {
            out: effects.iter().map(|e| (e.column.to_lowercase(), e.change.clone())).collect(),
            ..State::new()
        };
        for source in sources {
            states.insert(source.as_str(), source_state.clone());
        }
        // Everything reachable, then Kahn's order over it: a node is read
        // once every parent of it that is downstream has been.
        let mut reachable: BTreeSet<&str> = BTreeSet::new();
        let mut queue: VecDeque<&str> = sources.iter().map(String::as_str).collect();
        while let Some(id) = queue.pop_front() {
            for child in self.children.get(id).into_iter().flatten() {
                if !states.contains_key(child.as_str()) && reachable.insert(child.as_str()) {
                    queue.push_back(child.as_str());
                }
            }
        }
        let waiting = |id: &str, states: &BTreeMap<&str, State>| {
            self.nodes.get(id).map_or(0, |n| {
                n.depends_on
                    .nodes
                    .iter()
                    .filter(|p| reachable.contains(p.as_str()) && !states.contains_key(p.as_str()))
                    .count()
            })
        };
        let mut order: Vec<&str> = Vec::with_capacity(reachable.len());
        let mut ready: VecDeque<&str> = reachable.iter().copied().filter(|id| waiting(id, &states) == 0).collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        while let Some(id) = ready.pop_front() {
            if !done.insert(id) {
                continue;
            }
            let state = self.node_state(id, &states);
            states.insert(id, state);
            order.push(id);
            for child in self.children.get(id).into_iter().flatten() {
                let child = child.as_str();
                if reachable.contains(child) && !done.contains(child) && waiting(child, &states) == 0 {
                    ready.push_back(child);
                }
            }
        }
        let mut nodes: Vec<Downstream> = order
            .into_iter()
            .map(|id| {
                let node = self.nodes.get(id);
                let state = states.remove(id).unwrap_or_else(State::new);
                let reasons = if state.impact == Impact::None && state.reasons.is_empty() {
                    vec!["reads none of the changed columns".to_owned()]
                } else {
                    state.reasons
                };
                Downstream {
                    id: id.to_owned(),
                    kind: node.map_or_else(|| "unknown".to_owned(), |n| n.resource_type.clone()),
                    name: node.map_or_else(|| id.to_owned(), |n| n.name.clone()),
                    impact: state.impact,
                    reasons,
                }
            })
            .collect();
        // A cycle (dbt refuses them; a hand-edited manifest may not).
        for id in reachable.iter().filter(|id| !done.contains(*id)) {
            nodes.push(Downstream {
                id: (*id).to_owned(),
                kind: self.nodes.get(*id).map_or_else(|| "unknown".to_owned(), |n| n.resource_type.clone()),
                name: self.nodes.get(*id).map_or_else(|| (*id).to_owned(), |n| n.name.clone()),
                impact: Impact::Unknown,
                reasons: vec!["on a dependency cycle in the manifest".to_owned()],
            });
        }
        nodes.sort_by(|a, b| b.impact.cmp(&a.impact).then_with(|| a.id.cmp(&b.id)));
        nodes
    }

    /// What `id` becomes, its parents read.
    fn node_state(&self, id: &str, states: &BTreeMap<&str, State>) -> State {
        let mut state = State::new();
        let Some(node) = self.nodes.get(id) else {
            state.add(Impact::Unknown, "not in the manifest's nodes".into());
            state.opaque = true;
            return state;
        };
        let parents: Vec<(&str, &Node, &State)> = node
            .depends_on
            .nodes
            .iter()
            .filter_map(|p| Some((p.as_str(), self.nodes.get(p)?, states.get(p.as_str())?)))
            .collect();
        let name = |parent: &Node, pid: &str| if parent.name.is_empty() { pid.to_owned() } else { parent.name.clone() };
        for (pid, parent, parent_state) in &parents {
            if parent_state.broken {
                state.add(Impact::Breaking, format!("builds on {}, which breaks", name(parent, pid)));
                state.broken = true;
            }
        }
        if state.broken {
            return state;
        }
        let sql_node = matches!(node.resource_type.as_str(), "model" | "snapshot" | "test" | "analysis");
        if !sql_node {
            // Exposures, metrics, semantic models, saved queries: what
            // their parents become.
            for (pid, parent, parent_state) in &parents {
                match parent_state.impact {
                    Impact::None if parent_state.out.is_empty() => {}
                    Impact::Unknown => {
                        state.add(Impact::Unknown, format!("uses {}, which mend cannot read", name(parent, pid)))
                    }
                    _ => state.add(Impact::Partial, format!("uses {}, which changes", name(parent, pid))),
                }
                state.out.extend(parent_state.out.clone());
            }
            return state;
        }
        if parents.iter().all(|(_, _, s)| s.out.is_empty() && !s.opaque) {
            return state;
        }
        if node.language.as_deref().is_some_and(|l| l != "sql") {
            state.add(
                Impact::Unknown,
                format!("a {} model: mend reads only SQL", node.language.as_deref().unwrap_or("")),
            );
            state.opaque = true;
            return state;
        }
        for (pid, parent, parent_state) in &parents {
            if parent_state.opaque {
                state.add(Impact::Unknown, format!("builds on {}, which mend cannot read", name(parent, pid)));
                state.opaque = true;
            }
        }
        if state.opaque {
            return state;
        }
        let Some(code) = node.compiled_code.as_deref() else {
            state.add(Impact::Unknown, "no compiled SQL in the manifest: run `dbt compile` first".into());
            state.opaque = true;
            return state;
        };
        let views: Vec<sql::Parent<'_>> = parents
            .iter()
            .map(|(pid, parent, parent_state)| sql::Parent {
                name: if parent.name.is_empty() { pid } else { parent.name.as_str() },
                identifier: parent.identifier(),
                out: &parent_state.out,
            })
            .collect();
        match sql::read(code, &views) {
            Ok(reading) => {
                for (impact, reason) in reading.reasons {
                    state.add(impact, reason);
                }
                state.out = reading.out;
                state.broken = state.impact == Impact::Breaking && node.resource_type != "test";
            }
            Err(error) => {
                state.add(Impact::Unknown, format!("cannot read its compiled SQL: {error}"));
                state.opaque = true;
            }
        }
        if let (Some(test), Some(column)) = (&node.test_metadata, &node.column_name) {
            let column = column.to_lowercase();
            for (_, _, parent_state) in &parents {
                match (test.name.as_str(), parent_state.out.get(&column)) {
                    ("not_null", Some(Change::Nulls)) => {
                        state.add(Impact::Breaking, format!("not_null on {column} fails: it is NULL from now on"))
                    }
                    ("accepted_values", Some(Change::Values { added })) => state.add(
                        Impact::Breaking,
                        format!("accepted_values on {column} fails on its new values: {}", added.join(", ")),
                    ),
                    _ => {}
                }
            }
        }
        state
    }
}

/// A renamed column aliased back to its old name in a model that reads the
/// table directly ([`aliases`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The model's name.
    pub model: String,
    /// Its SQL file, relative to the project (`models/stg_orders.sql`).
    pub path: String,
    /// The file as it is, and as the aliases leave it.
    pub before: String,
    pub after: String,
}

/// The dbt fix for the columns `effects` rename: each model reading the
/// table directly that `radius` finds changed, its file under `project`
/// patched to alias the new name back to the old, where that is certain
/// ([`alias`]); and for a person, one line per model that could not be.
/// What builds on an aliased model sees what it saw before.
pub fn aliases(manifest: &Path, project: &Path, radius: &BlastRadius, effects: &[Effect]) -> (Vec<Alias>, Vec<String>) {
    let renames: Vec<(&str, &str)> = effects
        .iter()
        .filter_map(|e| match &e.change {
            Change::Renamed { to } => Some((e.column.as_str(), to.as_str())),
            _ => None,
        })
        .collect();
    if renames.is_empty() || radius.error.is_some() {
        return (Vec::new(), Vec::new());
    }
    let project_graph = match Project::read(manifest) {
        Ok(graph) => graph,
        Err(error) => return (Vec::new(), vec![format!("no dbt alias: {error}")]),
    };
    let changed: BTreeSet<&str> =
        radius.nodes.iter().filter(|n| n.impact != Impact::None).map(|n| n.id.as_str()).collect();
    let first: BTreeSet<&str> = radius
        .sources
        .iter()
        .flat_map(|s| project_graph.children.get(s).into_iter().flatten())
        .map(String::as_str)
        .filter(|id| changed.contains(id))
        .collect();
    let (mut fixed, mut for_a_person) = (Vec::new(), Vec::new());
    for id in first {
        let Some(node) = project_graph.nodes.get(id).filter(|n| n.resource_type == "model") else { continue };
        let Some(path) = &node.original_file_path else {
            for_a_person.push(format!("{}: the manifest gives no file for it", node.name));
            continue;
        };
        let before = match std::fs::read_to_string(project.join(path)) {
            Ok(text) => text,
            Err(error) => {
                for_a_person.push(format!("{} ({path}): cannot read it: {error}", node.name));
                continue;
            }
        };
        let mut after = before.clone();
        let mut why_not = Vec::new();
        for (from, to) in &renames {
            match alias::alias(&after, from, to) {
                Ok(text) => after = text,
                Err(why) => why_not.push(format!("{from} renamed to {to}: it {why}")),
            }
        }
        if !why_not.is_empty() {
            for_a_person.push(format!("{} ({path}): {}", node.name, why_not.join("; ")));
        } else if after != before {
            fixed.push(Alias { model: node.name.clone(), path: path.clone(), before, after });
        }
    }
    (fixed, for_a_person)
}

/// The blast radius of `effects` on `table` (in `schema`, when known) in
/// the dbt project whose manifest is at `manifest`. A manifest that cannot
/// be read gives an error in the result, never an empty radius.
pub fn blast_radius(manifest: &Path, schema: Option<&str>, table: &str, effects: &[Effect]) -> BlastRadius {
    let mut radius = BlastRadius {
        manifest: manifest.display().to_string(),
        effects: effects.iter().map(ToString::to_string).collect(),
        ..BlastRadius::default()
    };
    match Project::read(manifest) {
        Ok(project) => {
            radius.sources = project.sources(schema, table);
            radius.nodes = project.downstream(&radius.sources, effects);
        }
        Err(error) => radius.error = Some(error.to_string()),
    }
    radius
}

#[cfg(test)]
mod tests;
