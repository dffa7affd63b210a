//! `mend audit rebuild`: each dataset's contract history and applied
//! changes from the topics alone, compared with what the warehouse says
//! (`mend_contracts`, `mend_applied`, the table's columns). A change made
//! to the table outside mend, a contract that moved without an event, or
//! an application the warehouse does not know, is a difference.

use std::collections::BTreeSet;

use mend_model::{ApplicationOutcome, Dialect, StepKind};
use serde::Serialize;

use crate::{AuditEvent, Entry, LogPosition};

/// One applied change, from the topics.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedChange {
    pub position: LogPosition,
    pub time: i64,
    pub proposal_id: String,
    pub decision_id: String,
    pub decided_by: Option<String>,
    /// The contract's schema after it.
    pub contract_schema_id: Option<i32>,
    /// Its DDL, as approved.
    pub statements: Vec<String>,
}

/// A dataset's history, from the topics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub dataset: String,
    /// The contract in force when the dataset first drifted (the one the
    /// loader established), when an event says so.
    pub first_contract: Option<i32>,
    /// Applied changes in the order they were applied (one per proposal).
    pub applied: Vec<AppliedChange>,
}

/// Rebuilds `dataset`'s history from `entries`.
pub fn history(entries: &[Entry], dataset: &str) -> History {
    let mut events: Vec<(&LogPosition, &AuditEvent)> = entries
        .iter()
        .filter_map(|e| Some((&e.position, e.event()?)))
        .filter(|(_, e)| e.envelope().dataset == dataset)
        .collect();
    events.sort_by_key(|(p, e)| (e.envelope().time, (*p).clone()));
    let decision = |id: &str| {
        events.iter().find_map(|(_, e)| match e {
            AuditEvent::Decision(d) if d.envelope.event_id == id => Some(d),
            _ => None,
        })
    };
    let mut history = History { dataset: dataset.to_owned(), ..History::default() };
    let mut seen = BTreeSet::new();
    for (position, event) in &events {
        match event {
            AuditEvent::Detection(d) if history.first_contract.is_none() && history.applied.is_empty() => {
                history.first_contract = d.contract_schema_id;
            }
            AuditEvent::Application(a) if a.outcome == ApplicationOutcome::Applied => {
                if !seen.insert(a.proposal_id.clone()) {
                    continue; // re-delivered: the same change finishing its replay
                }
                let decided = decision(&a.decision_id);
                history.applied.push(AppliedChange {
                    position: (*position).clone(),
                    time: a.envelope.time,
                    proposal_id: a.proposal_id.clone(),
                    decision_id: a.decision_id.clone(),
                    decided_by: decided.map(|d| d.by.clone()),
                    contract_schema_id: a.contract_schema_id,
                    statements: decided
                        .map(|d| {
                            d.steps.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.clone()).collect()
                        })
                        .unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    history
}

/// What the warehouse says of a dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WarehouseState {
    pub contract_schema_id: Option<u32>,
    /// `loader`, or the decision whose plan last moved the contract.
    pub contract_mover: Option<String>,
    /// (proposal, decision) of every plan recorded as applied.
    pub applied: Vec<(String, String)>,
    /// The table's columns (mend's position columns excluded).
    pub columns: Vec<String>,
}

/// The columns the table should have: those of the first contract, as
/// changed by each applied DDL statement in turn.
pub fn expected_columns(first: Vec<String>, history: &History, dialect: Dialect, table: &str) -> Vec<String> {
    let mut columns = first;
    for statement in history.applied.iter().flat_map(|a| &a.statements) {
        let (added, renamed) = mend_store::guard::column_changes(statement, dialect, table);
        for (old, new) in renamed {
            if let Some(column) = columns.iter_mut().find(|c| **c == old) {
                *column = new;
            }
        }
        columns.extend(added.into_iter().filter(|a| !columns.contains(a)).collect::<Vec<_>>());
    }
    columns
}

/// Every difference between the history and the warehouse, said for a
/// person. `expected` is [`expected_columns`].
pub fn compare(history: &History, state: &WarehouseState, expected: &[String]) -> Vec<String> {
    let mut differences = Vec::new();
    let last = history.applied.last();
    let rebuilt_schema = last.and_then(|a| a.contract_schema_id).or(history.first_contract);
    let held = state.contract_schema_id.and_then(|id| i32::try_from(id).ok());
    match (rebuilt_schema, held) {
        (Some(rebuilt), Some(held)) if rebuilt != held => differences.push(format!(
            "the contract is schema {held} in the warehouse, but the topics move it to schema {rebuilt}: it moved \
             without an event"
        )),
        (Some(rebuilt), None) => {
            differences.push(format!("no contract in the warehouse; the topics say schema {rebuilt}"))
        }
        _ => {}
    }
    let mover = last.map_or("loader", |a| a.decision_id.as_str());
    if let Some(held) = &state.contract_mover
        && held != mover
    {
        differences.push(if last.is_none() {
            format!("the contract was last moved by {held}, but the topics record no applied change")
        } else {
            format!("the contract was last moved by {held}, but the topics say decision {mover} moved it last")
        });
    }
    let recorded: BTreeSet<&str> = state.applied.iter().map(|(p, _)| p.as_str()).collect();
    let rebuilt: BTreeSet<&str> = history.applied.iter().map(|a| a.proposal_id.as_str()).collect();
    for missing in rebuilt.difference(&recorded) {
        differences.push(format!("proposal {missing} was applied by the topics, but mend_applied does not record it"));
    }
    for extra in recorded.difference(&rebuilt) {
        differences.push(format!("mend_applied records proposal {extra}, but no application event applied it"));
    }
    for (proposal, decision) in &state.applied {
        if let Some(change) = history.applied.iter().find(|a| a.proposal_id == *proposal)
            && change.decision_id != *decision
        {
            differences.push(format!(
                "mend_applied says decision {decision} applied proposal {proposal}; the topics say {}",
                change.decision_id
            ));
        }
    }
    if !state.columns.is_empty() {
        for column in state.columns.iter().filter(|c| !expected.contains(c)) {
            differences.push(format!(
                "column {column} is in the table, but neither its first contract nor a change mend applied made it \
                 (added outside mend?)"
            ));
        }
        for column in expected.iter().filter(|c| !state.columns.contains(c)) {
            differences
                .push(format!("column {column} should be in the table but is not (dropped or renamed outside mend?)"));
        }
    }
    differences
}

/// One applied change, for people.
pub fn describe(change: &AppliedChange) -> String {
    format!(
        "{} applied proposal {} (decision {}{}), contract → schema {}, {} statements",
        change.position,
        change.proposal_id,
        change.decision_id,
        change.decided_by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default(),
        change.contract_schema_id.map_or("unchanged".into(), |s| s.to_string()),
        change.statements.len()
    )
}

/// A dataset's rebuild: its history from the topics, what the warehouse
/// says, the columns the history leads to, and every difference.
#[derive(Debug, Clone, Serialize)]
pub struct Rebuild {
    pub dataset: String,
    pub table: String,
    pub history: History,
    pub warehouse: WarehouseState,
    pub expected_columns: Vec<String>,
    pub differences: Vec<String>,
}

impl Rebuild {
    /// Whether the warehouse agrees with the topics.
    pub fn agrees(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Why a dataset could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Warehouse(#[from] mend_store::StoreError),
    #[error(transparent)]
    Registry(#[from] mend_avro::codec::CodecError),
    #[error("dataset {dataset}: schema {id}: {reason}")]
    Schema { dataset: String, id: u32, reason: String },
}

/// Rebuilds `dataset` from `entries` (the live log) and compares it with
/// its `warehouse`; the first contract's schema comes from `codec`.
pub async fn rebuild(
    dataset: &mend_config::Dataset,
    warehouse: &mend_store::Warehouse,
    codec: &mend_avro::Codec,
    entries: &[Entry],
) -> Result<Rebuild, RebuildError> {
    let history = history(entries, &dataset.name);
    let contract = warehouse.contract(&dataset.name).await?;
    let state = WarehouseState {
        contract_schema_id: contract.as_ref().map(|c| c.schema_id),
        contract_mover: warehouse.contract_mover(&dataset.name).await?,
        applied: warehouse.applied_plans(&dataset.name).await?,
        columns: warehouse.columns(&dataset.table).await?.into_iter().map(|c| c.name).collect(),
    };
    // The first contract: what the first drift found in force, or (when
    // nothing was ever applied) the contract the loader established.
    let first = history
        .first_contract
        .and_then(|id| u32::try_from(id).ok())
        .or_else(|| history.applied.is_empty().then_some(state.contract_schema_id).flatten());
    let expected = match first {
        Some(id) => {
            let schema = codec.schema(id).await?;
            let (columns, _) = mend_avro::schema::columns_for(&schema.parsed, warehouse.dialect(), dataset.nested)
                .map_err(|reason| RebuildError::Schema { dataset: dataset.name.clone(), id, reason })?;
            let first = columns.into_iter().map(|c| c.name).collect();
            expected_columns(first, &history, warehouse.dialect(), &dataset.table)
        }
        None => state.columns.clone(),
    };
    let differences = if contract.is_some() || !history.applied.is_empty() {
        compare(&history, &state, &expected)
    } else {
        Vec::new()
    };
    Ok(Rebuild {
        dataset: dataset.name.clone(),
        table: dataset.table.clone(),
        history,
        warehouse: state,
        expected_columns: expected,
        differences,
    })
}
