//! [`Warehouse`]: whichever engine a URL names, with every [`Store`]
//! method and the guardrails' [`Warehouse::vet`].

use std::collections::{HashMap, HashSet};

use futures::Stream;
use mend_model::events::{PlanStep, StatementCost};
use mend_model::{Classify, Column, Contract, CostClass, Dialect, Row, StepKind};

use crate::expand::{Backfilled, Dual};
use crate::{
    Apply, Bookkeeping, Check, Chunk, DryRun, Kept, LoadTarget, Refusal, Store, StoreError, Vetted, cost, guard, pg,
    sql, sqlite,
};

/// A connection pool to the warehouse: one of the engines.
#[derive(Debug, Clone)]
pub enum Warehouse {
    Postgres(pg::Postgres),
    Sqlite(sqlite::Sqlite),
}

/// Calls the same method on whichever engine this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self {
            Warehouse::Postgres(engine) => engine.$method($($arg),*).await,
            Warehouse::Sqlite(engine) => engine.$method($($arg),*).await,
        }
    };
}

impl Warehouse {
    /// Connects and creates mend's own tables when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let warehouse = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres(pg::Postgres::connect(url).await?)
        } else if url.starts_with("sqlite:") {
            Self::Sqlite(sqlite::Sqlite::connect(url).await?)
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        dispatch!(warehouse.create_state_tables())?;
        Ok(warehouse)
    }

    /// Closes the pool: waits for its connections to be returned, then
    /// closes them.
    pub async fn close(&self) {
        match self {
            Self::Postgres(engine) => engine.close().await,
            Self::Sqlite(engine) => engine.close().await,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The contract of `dataset`, if it has one.
    pub async fn contract(&self, dataset: &str) -> Result<Option<Contract>, StoreError> {
        dispatch!(self.contract(dataset))
    }

    /// The columns of `table` from the database catalog, in table order
    /// (mend's position columns excluded). Empty when the table is missing.
    pub async fn columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        dispatch!(self.columns(table))
    }

    /// The plans of `dataset` recorded as applied: (proposal, decision).
    pub async fn applied_plans(&self, dataset: &str) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self.applied_plans(dataset))
    }

    /// Who last moved `dataset`'s contract: `loader` or a decision id.
    pub async fn contract_mover(&self, dataset: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self.contract_mover(dataset))
    }

    /// Creates the destination table and the dataset's first contract, in one
    /// transaction, unless the dataset already has a contract. Returns the
    /// contract in force.
    pub async fn establish(
        &self,
        dataset: &str,
        table: &str,
        key: &[String],
        columns: &[Column],
        contract: &Contract,
    ) -> Result<Contract, StoreError> {
        let create = sql::create_table(self.dialect(), table, key, columns);
        dispatch!(self.establish(dataset, &create, contract))?;
        self.contract(dataset).await?.ok_or_else(|| StoreError::Invalid(format!("contract of {dataset} vanished")))
    }

    /// Next offsets stored for `dataset` (topic, partition) → next offset.
    pub async fn offsets(&self, dataset: &str) -> Result<HashMap<(String, i32), i64>, StoreError> {
        dispatch!(self.offsets(dataset))
    }

    /// The records of `dataset` the loader quarantined with writer schema
    /// `writer`, in source order.
    pub async fn quarantined_records(&self, dataset: &str, writer: u32) -> Result<Vec<Kept>, StoreError> {
        dispatch!(self.quarantined_records(dataset, writer))
    }

    /// The first `limit` records of `dataset` the loader quarantined with
    /// writer schema `writer` that no replay has loaded since, in source
    /// order (evidence, not replays).
    pub async fn quarantined_sample(&self, dataset: &str, writer: u32, limit: i64) -> Result<Vec<Kept>, StoreError> {
        dispatch!(self.quarantined_sample(dataset, writer, limit))
    }

    /// How many records of `dataset` the loader quarantined, per writer schema.
    pub async fn quarantine_counts(&self, dataset: &str) -> Result<HashMap<u32, i64>, StoreError> {
        dispatch!(self.quarantine_counts(dataset))
    }

    /// Offsets of `topic` below `below` the loader quarantined and nobody
    /// has loaded since: a re-delivered batch judges these again.
    pub async fn quarantined(
        &self,
        dataset: &str,
        topic: &str,
        partition: i32,
        below: i64,
    ) -> Result<HashSet<i64>, StoreError> {
        dispatch!(self.quarantined(dataset, topic, partition, below))
    }

    /// Writes a loader batch in one transaction: its rows, arriving in chunks
    /// (written as they arrive), then the quarantined records and the next
    /// offsets of every partition, which `done` delivers once every chunk is
    /// sent. Nothing is committed when `done` is dropped unsent.
    pub async fn load_batch(
        &self,
        target: &LoadTarget,
        chunks: impl Stream<Item = Chunk> + Unpin + Send,
        done: tokio::sync::oneshot::Receiver<Bookkeeping>,
    ) -> Result<(), StoreError> {
        dispatch!(self.load_batch(target, chunks, done))
    }

    /// Writes replayed rows of quarantined records, each at most once: in
    /// one transaction, claims their positions in `mend_quarantined` (a
    /// position loaded before is not claimed again) and writes the rows it
    /// claimed. Rows must have distinct positions. Returns how many were
    /// written now.
    pub async fn replay_rows(&self, target: &LoadTarget, rows: &[Row]) -> Result<usize, StoreError> {
        dispatch!(self.replay_rows(target, rows))
    }

    /// `table` as the allow-list sees it: its schema and columns now.
    pub async fn target(&self, table: &str) -> Result<guard::Target, StoreError> {
        Ok(guard::Target {
            dialect: self.dialect(),
            schema: dispatch!(self.schema_of(table))?,
            table: table.to_owned(),
            columns: self.columns(table).await?,
        })
    }

    /// The one check every plan's SQL passes before it runs, for drafts and
    /// the applier alike: each statement through the allow-list
    /// ([`guard::check`]) against `table` as the statements before it leave
    /// it; then, if all pass, mend's renderings of them in a dry run (a
    /// transaction rolled back) proven on the catalog ([`proof`]). A
    /// statement that fails in the dry run, or a catalog change outside the
    /// dataset's table, is a refusal; Err only when the warehouse cannot be
    /// asked, or the table's lock was not free within `lock_timeout` (the
    /// dry run takes the lock the statements take).
    pub async fn vet(
        &self,
        table: &str,
        statements: &[String],
        lock_timeout: std::time::Duration,
    ) -> Result<Vetted, StoreError> {
        let original = self.target(table).await?;
        let mut target = original.clone();
        let mut vetted = Vetted { refused: Vec::new(), statements: Vec::new(), schema: original.schema.clone() };
        let mut tables = vec![table.to_owned()];
        let mut rewrites = false;
        for (index, statement) in statements.iter().enumerate() {
            match guard::check(statement, &target) {
                Ok(allowed) => {
                    rewrites |= cost::by_rules(&target, &allowed.effects).0 == CostClass::Rewrite;
                    target.apply(&allowed);
                    for effect in &allowed.effects {
                        if let guard::Effect::CreateChild { table } = effect {
                            tables.push(table.clone());
                        }
                    }
                    vetted.statements.push(allowed.sql);
                }
                Err(refused) => vetted.refused.push(Refusal {
                    statement: Some(index),
                    check: Check::AllowList,
                    reason: refused.reason,
                }),
            }
        }
        if !vetted.refused.is_empty() || vetted.statements.is_empty() {
            return Ok(vetted);
        }
        match dispatch!(self.prove(&original, &tables, &vetted.statements, DryRun { rewrites, lock_timeout })) {
            Ok(findings) => vetted.refused.extend(findings.into_iter().map(|finding| Refusal {
                statement: None,
                check: Check::Catalog,
                reason: format!("the dry run changed the catalog beyond the dataset's table: {finding}"),
            })),
            Err(error) if !error.is_retryable() => {
                let reason = format!("dry run (rolled back): {error}");
                vetted.refused.push(Refusal { statement: None, check: Check::DryRun, reason });
            }
            Err(error) => return Err(error),
        }
        Ok(vetted)
    }

    /// What each of `statements` costs `table`, in order ([`cost`]): the
    /// allow-list's reading of it, its class and lock by the database's
    /// rules, confirmed by a dry run on an empty copy of the table where the
    /// engine allows one, the table's size from the catalog, and on
    /// PostgreSQL what squawk's linter says of mend's rendering. None for a
    /// statement the allow-list refuses (and for those after it).
    pub async fn costs(&self, table: &str, statements: &[String]) -> Result<Vec<Option<StatementCost>>, StoreError> {
        let original = self.target(table).await?;
        let mut target = original.clone();
        let mut rules = Vec::with_capacity(statements.len());
        let mut rendered = Vec::with_capacity(statements.len());
        for statement in statements {
            let Ok(allowed) = guard::check(statement, &target) else { break };
            rules.push(cost::by_rules(&target, &allowed.effects));
            target.apply(&allowed);
            rendered.push(allowed.sql);
        }
        let size = dispatch!(self.size(&original.schema, table))?;
        let probes = if rendered.len() == statements.len() {
            dispatch!(self.probe(&original, &rendered))?
        } else {
            vec![None; rendered.len()]
        };
        let postgres = self.dialect() == Dialect::Postgres;
        let mut costs: Vec<Option<StatementCost>> = rules
            .into_iter()
            .zip(probes)
            .zip(&rendered)
            .map(|((rules, probe), sql)| {
                let mut cost = cost::cost(rules, probe, size);
                // squawk reads PostgreSQL only.
                if postgres {
                    cost.lint = crate::lint::findings(sql);
                }
                Some(cost)
            })
            .collect();
        costs.resize(statements.len(), None);
        Ok(costs)
    }

    /// Gives each ddl step of `steps` its cost on `table` ([`Self::costs`]),
    /// replacing whatever cost it carried: a cost is mend's reading, never
    /// a drafter's claim.
    pub async fn cost_steps(&self, table: &str, steps: &mut [PlanStep]) -> Result<(), StoreError> {
        for step in steps.iter_mut() {
            step.cost = None;
        }
        let ddl: Vec<String> = steps.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.clone()).collect();
        if ddl.is_empty() {
            return Ok(());
        }
        let mut costs = self.costs(table, &ddl).await?.into_iter();
        for step in steps.iter_mut().filter(|s| s.kind == StepKind::Ddl && s.sql.is_some()) {
            step.cost = costs.next().flatten();
        }
        Ok(())
    }

    /// What depends on `column` of `table` (indexes, constraints, defaults,
    /// views, triggers, owned sequences), as the catalog describes each:
    /// expand/contract would leave them on the old column. Empty on SQLite,
    /// which never needs it.
    pub async fn dependents(&self, table: &str, column: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Postgres(engine) => {
                let schema = dispatch!(self.schema_of(table))?;
                pg::expand::dependents(engine.pool(), &schema, table, column).await
            }
            Self::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// Expand/contract's expand ([`crate::expand`]): `statements` (mend's
    /// vetted renderings of the plan's ADD COLUMN) and the trigger writing
    /// both columns, in one transaction waiting at most `lock_timeout` for
    /// the table. False when an earlier attempt expanded already.
    pub async fn expand(
        &self,
        table: &str,
        statements: &[String],
        dual: &Dual,
        lock_timeout: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let engine = self.postgres("expand/contract")?;
        let schema = dispatch!(self.schema_of(table))?;
        pg::expand::expand(engine.pool(), &schema, table, statements, dual, lock_timeout).await
    }

    /// Expand/contract's backfill ([`crate::expand`]), in transactions of
    /// a range of pages each; `progress` hears (pages done, pages).
    pub async fn backfill(
        &self,
        table: &str,
        dual: &Dual,
        lock_timeout: std::time::Duration,
        progress: impl FnMut(i64, i64) + Send,
    ) -> Result<Backfilled, StoreError> {
        let engine = self.postgres("expand/contract")?;
        let schema = dispatch!(self.schema_of(table))?;
        pg::expand::backfill(engine.pool(), &schema, table, dual, lock_timeout, progress).await
    }

    /// mend's statements ending the dual write, for the swap's transaction
    /// ([`Apply::then`]).
    pub async fn end_dual_write(&self, table: &str, dual: &Dual) -> Result<Vec<String>, StoreError> {
        let engine = self.postgres("expand/contract")?;
        let schema = dispatch!(self.schema_of(table))?;
        pg::expand::cleanup(engine.pool(), &schema, table, dual).await
    }

    fn postgres(&self, what: &str) -> Result<&pg::Postgres, StoreError> {
        match self {
            Self::Postgres(engine) => Ok(engine),
            Self::Sqlite(_) => Err(StoreError::Invalid(format!("{what} is for PostgreSQL warehouses"))),
        }
    }

    /// How many plans of `dataset` have been applied.
    pub async fn applied_count(&self, dataset: &str) -> Result<i64, StoreError> {
        dispatch!(self.applied_count(dataset))
    }

    /// Whether a proposal has been applied already.
    pub async fn applied(&self, proposal_id: &str) -> Result<bool, StoreError> {
        dispatch!(self.applied(proposal_id))
    }

    /// Applies a plan exactly once: its statements, the contract move and the
    /// record of the proposal, in one transaction. Returns false when the
    /// proposal was already applied (nothing is done again).
    pub async fn apply(&self, application: &Apply<'_>) -> Result<bool, StoreError> {
        dispatch!(self.apply(application))
    }

    /// Every row of `table` as text (NULL as None), `columns` in order: for
    /// verification in reports and tests, not for data paths.
    pub async fn rows_as_text(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        dispatch!(self.rows_as_text(table, columns))
    }

    /// Up to `limit` distinct values of one column, as text (evidence for
    /// rename scoring). Empty when the table or column is missing.
    pub async fn column_values(&self, table: &str, column: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        dispatch!(self.column_values(table, column, limit))
    }

    /// Counts the rows of a table (for reports and tests).
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        dispatch!(self.count(table))
    }
}
