//! What a plan does to the dbt project downstream of its table
//! ([`BlastRadius`]): a verdict per model, test, snapshot, exposure and
//! metric, each with its reasons, for the person who approves.

use serde::{Deserialize, Serialize};

use crate::protocol::Impact;

/// The plan's blast radius in a dbt project, read offline from the project's
/// compiled manifest: every node downstream of the dataset's table, worst
/// first. Not part of the plan's hash: it describes the plan, it is not a
/// step of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BlastRadius {
    /// The manifest read (`target/manifest.json`).
    pub manifest: String,
    /// The dbt sources (unique ids) that are the dataset's table; empty when
    /// the project reads it under no source.
    pub sources: Vec<String>,
    /// What the plan does to the table's columns, in words
    /// (`email renamed to contact`); empty when it changes none.
    pub effects: Vec<String>,
    /// Every node downstream of the sources, worst verdict first.
    pub nodes: Vec<Downstream>,
    /// Why the manifest could not be read; the verdicts are then unknown,
    /// never taken for none.
    pub error: Option<String>,
}

/// One dbt node downstream of the table, and what the plan does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Downstream {
    /// dbt's unique id (`model.shop.stg_orders`).
    pub id: String,
    /// dbt's resource type: model, test, snapshot, exposure, metric, …
    pub kind: String,
    pub name: String,
    pub impact: Impact,
    /// Why, one line each (`reads email (join), renamed to contact`).
    pub reasons: Vec<String>,
}

impl BlastRadius {
    /// The worst verdict downstream: unknown when the manifest could not be
    /// read, none when nothing is downstream.
    pub fn worst(&self) -> Impact {
        if self.error.is_some() {
            return Impact::Unknown;
        }
        self.nodes.iter().map(|n| n.impact).max().unwrap_or(Impact::None)
    }

    /// How many nodes have `impact`.
    pub fn count(&self, impact: Impact) -> usize {
        self.nodes.iter().filter(|n| n.impact == impact).count()
    }

    /// The nodes the plan changes something for (every verdict but none).
    pub fn affected(&self) -> impl Iterator<Item = &Downstream> {
        self.nodes.iter().filter(|n| n.impact != Impact::None)
    }

    /// One line: "2 breaking, 1 unknown, 3 partial, 4 unaffected of 10 dbt
    /// nodes downstream".
    pub fn summary(&self) -> String {
        if let Some(error) = &self.error {
            return format!("unknown: {error}");
        }
        if self.sources.is_empty() {
            return "the dbt project reads the table under no source".to_owned();
        }
        let parts: Vec<String> = [Impact::Breaking, Impact::Unknown, Impact::Partial, Impact::None]
            .into_iter()
            .map(|impact| (impact, self.count(impact)))
            .filter(|(_, n)| *n > 0)
            .map(|(impact, n)| match impact {
                Impact::None => format!("{n} unaffected"),
                _ => format!("{n} {impact}"),
            })
            .collect();
        if parts.is_empty() {
            return "nothing in the dbt project is downstream".to_owned();
        }
        format!("{} of {} dbt nodes downstream", parts.join(", "), self.nodes.len())
    }
}

impl std::fmt::Display for Downstream {
    /// "breaking model stg_orders: reads orders.email (join), which is
    /// renamed to contact".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}: {}", self.impact, self.kind, self.name, self.reasons.join("; "))
    }
}
