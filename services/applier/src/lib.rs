//! applier — applies decided plans exactly once, then replays the incident's
//! quarantined records.
//!
//! - input topics: `mend.decisions` (plans to apply) and `mend.quarantine`
//!   (records quarantined after their incident was healed: replayed at once);
//! - output topic: `mend.applications`;
//! - key: the dataset name, so one dataset's decisions are applied in order;
//! - delivery: exactly once in effect. The plan's statements, the contract
//!   move and the proposal id are committed in one transaction, so a
//!   re-delivered decision changes nothing; the replay after it is idempotent
//!   (each quarantined record's row is written in the transaction that claims
//!   it in `mend_quarantined`), so a crash anywhere between the decision and
//!   the end of the replay is finished by the re-delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use mend_avro::codec::CodecError;
use mend_config::{Dataset, Ddl};
use mend_model::events::{
    Application, ContractState, Decision, Envelope, Event, Held, LockWait, Proposal, Quarantined, StatementCost,
};
use mend_model::{ApplicationOutcome, Classify as _, Contract, CostClass, Position, Row, StepKind, Verdict, topics};
use mend_runtime::handler::{Disposition, Handler, Inbound, Outbound, decode_event};
use mend_runtime::runner::{Runner, RunnerConfig, RunnerStatus};
use mend_runtime::{Context, HandleError, fault};
use mend_store::expand::Dual;
use mend_store::{Apply, Check, Limits, LoadTarget, Refusal, Vetted, Warehouse};

const SERVICE: &str = "applier";
/// Rows per replay transaction.
pub const REPLAY_CHUNK: usize = 1000;

/// Counts of one replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    pub replayed: i64,
    pub loaded: i64,
    pub still_quarantined: i64,
    /// Why records did not load (the first [`Application::MAX_HELD`]).
    pub held: Vec<Held>,
}

impl Replay {
    fn hold(&mut self, partition: i32, offset: i64, reason: String) {
        self.still_quarantined += 1;
        if self.held.len() < Application::MAX_HELD {
            self.held.push(Held { partition, offset, reason });
        }
    }
}

/// What one attempt at a plan came to.
enum Attempt {
    /// Applied now (true) or before (false).
    Applied(bool),
    /// The guardrails refused it; nothing ran.
    Refused(Vec<Refusal>),
}

pub struct Applier {
    context: Arc<Context>,
}

impl Applier {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context }
    }

    fn dataset(&self, name: &str) -> Result<&Dataset, HandleError> {
        self.context
            .dataset(name)
            .ok_or_else(|| HandleError::Fatal(format!("decision for unknown dataset {name}").into()))
    }

    /// Applies an approved decision and replays; returns the application event.
    pub async fn apply(&self, decision: &Decision) -> Result<Application, HandleError> {
        let dataset = self.dataset(&decision.envelope.dataset)?;
        let warehouse = self.context.applier_warehouse(dataset).await?;
        let mut application = Application {
            envelope: Envelope::answering(SERVICE, &decision.envelope),
            proposal_id: decision.proposal_id.clone(),
            decision_id: decision.envelope.event_id.clone(),
            outcome: ApplicationOutcome::Applied,
            contract_schema_id: decision.writer_schema_id,
            statements: 0,
            replayed: 0,
            loaded: 0,
            still_quarantined: 0,
            held: Vec::new(),
            applied_at: None,
            error: None,
            lock_waits: Vec::new(),
            contract_before: None,
        };
        // Only the plan that was approved, unchanged.
        if Proposal::hash_steps(&decision.steps) != decision.plan_hash {
            application.outcome = ApplicationOutcome::Failed;
            application.error = Some("the plan does not match its approved hash; nothing applied".into());
            return Ok(application);
        }
        let current = warehouse.contract(&dataset.name).await?;
        let before = current.as_ref().and_then(|c| {
            Some(ContractState { schema_id: i32::try_from(c.schema_id).ok()?, mapping: c.mapping.clone() })
        });
        let Some(contract) = next_contract(&dataset.name, current, decision) else {
            application.outcome = ApplicationOutcome::Failed;
            application.error = Some("the decision names no schema to move the contract to".into());
            return Ok(application);
        };
        application.contract_schema_id = i32::try_from(contract.schema_id).ok();
        let statements = statements(decision);
        application.statements = i32::try_from(statements.len()).unwrap_or(i32::MAX);
        // Each attempt vets and applies. One that waited `lock_timeout` for
        // the table's lock (in the dry run or the apply) is rolled back whole,
        // recorded, and tried again after a pause, so no query queues behind
        // mend for longer than that.
        let mut delays = lock_backoff(&dataset.ddl);
        let mut backfilled = None;
        loop {
            let began = std::time::Instant::now();
            let at = mend_model::events::now_millis();
            let attempt = match stages(decision) {
                Some(stages) => {
                    self.expand_contract(dataset, &warehouse, decision, &contract, &stages, &mut backfilled).await
                }
                None => self.attempt(dataset, &warehouse, decision, &contract, &statements, &[]).await,
            };
            let error = match attempt {
                Ok(Attempt::Applied(true)) => {
                    application.contract_before = before;
                    tracing::info!(proposal = %decision.proposal_id, statements = statements.len(), "plan applied");
                    break;
                }
                Ok(Attempt::Applied(false)) => {
                    tracing::info!(proposal = %decision.proposal_id, "plan applied before; finishing its replay");
                    break;
                }
                Ok(Attempt::Refused(refused)) => {
                    let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
                    tracing::warn!(proposal = %decision.proposal_id, refused = ?reasons, "plan refused by the guardrails");
                    // A statement the database itself refused in the dry run is a
                    // failure of the plan; anything the guardrails refused is a refusal.
                    let failed = refused.iter().all(|r| r.check == Check::DryRun);
                    application.outcome = if failed { ApplicationOutcome::Failed } else { ApplicationOutcome::Refused };
                    application.statements = 0;
                    application.error = Some(reasons.join("; "));
                    return Ok(application);
                }
                Err(error) => error,
            };
            if error.is_lock_timeout() {
                let waited_ms = i64::try_from(began.elapsed().as_millis()).unwrap_or(i64::MAX);
                application.lock_waits.push(LockWait { at, waited_ms, error: error.to_string() });
                let attempts = application.lock_waits.len();
                if let Some(delay) = delays.next() {
                    tracing::warn!(
                        proposal = %decision.proposal_id, table = %dataset.table, attempts, ?delay,
                        "the table's lock was not free within lock_timeout; nothing applied, trying again"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
                application.outcome = ApplicationOutcome::Failed;
                application.statements = 0;
                application.error = Some(format!(
                    "the lock on {} was not free within {:?} in {attempts} attempts; nothing applied and the \
                     records stay quarantined (see what holds the table in pg_stat_activity, or raise \
                     lock_attempts in the dataset's [dataset.ddl])",
                    dataset.table, dataset.ddl.lock_timeout
                ));
                return Ok(application);
            }
            if error.is_retryable() {
                return Err(error.into());
            }
            // The database refused the plan: nothing was committed.
            application.outcome = ApplicationOutcome::Failed;
            application.statements = 0;
            application.error = Some(error.to_string());
            return Ok(application);
        }
        application.applied_at = Some(mend_model::events::now_millis());
        fault::point("applier.after_apply");
        let replay = self.replay(dataset, &warehouse, contract.schema_id).await?;
        fault::point("applier.after_replay");
        application.replayed = replay.replayed;
        application.loaded = replay.loaded;
        application.still_quarantined = replay.still_quarantined;
        application.held = replay.held;
        Ok(application)
    }

    /// One attempt at a plan: the guardrails (the allow-list, then a dry
    /// run proven on the catalog), then the apply of mend's rendering of
    /// what they allowed, each statement with its class's timeouts, and
    /// `then` (mend's own statements) in the same transaction. A plan
    /// applied before (a redelivered decision) runs nothing again.
    async fn attempt(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
        decision: &Decision,
        contract: &Contract,
        statements: &[String],
        then: &[String],
    ) -> Result<Attempt, mend_store::StoreError> {
        let (vetted, limits) = if warehouse.applied(&decision.proposal_id).await? {
            (Vetted { refused: Vec::new(), statements: Vec::new(), schema: String::new() }, Limits::default())
        } else {
            let vetted = warehouse.vet(&dataset.table, statements, dataset.ddl.lock_timeout).await?;
            if !vetted.refused.is_empty() {
                return Ok(Attempt::Refused(vetted.refused));
            }
            (vetted, limits(&dataset.ddl, &warehouse.costs(&dataset.table, statements).await?))
        };
        let apply = Apply {
            proposal_id: &decision.proposal_id,
            decision_id: &decision.envelope.event_id,
            statements: &vetted.statements,
            schema: &vetted.schema,
            contract,
            limits,
            then,
        };
        fault::point("applier.before_apply");
        Ok(Attempt::Applied(warehouse.apply(&apply).await?))
    }

    /// One attempt at an expand/contract plan ([`mend_store::expand`]):
    /// the whole plan through the guardrails first; then the expand (its
    /// ADD COLUMN and the dual write's trigger, one short transaction,
    /// skipped when an earlier attempt or delivery did it); the backfill
    /// (once per apply, in batches of their own); then the swap, as any
    /// plan's [`Self::attempt`] — the renames vetted again on the table as
    /// it is now, then with the trigger dropped, the contract moved and the
    /// proposal recorded in one transaction under `lock_timeout`.
    async fn expand_contract(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
        decision: &Decision,
        contract: &Contract,
        stages: &Stages,
        backfilled: &mut Option<mend_store::expand::Backfilled>,
    ) -> Result<Attempt, mend_store::StoreError> {
        if warehouse.applied(&decision.proposal_id).await? {
            return Ok(Attempt::Applied(false));
        }
        let (table, lock_timeout) = (dataset.table.as_str(), dataset.ddl.lock_timeout);
        let dual = Dual::of(&stages.column);
        let expanded = warehouse.columns(table).await?.iter().any(|c| c.name == dual.wide);
        if !expanded {
            let whole: Vec<String> = stages.expand.iter().chain(&stages.swap).cloned().collect();
            let vetted = warehouse.vet(table, &whole, lock_timeout).await?;
            if !vetted.refused.is_empty() {
                return Ok(Attempt::Refused(vetted.refused));
            }
            warehouse.expand(table, &vetted.statements[..stages.expand.len()], &dual, lock_timeout).await?;
            tracing::info!(proposal = %decision.proposal_id, %table, column = %dual.column, wide = %dual.wide, "expanded: both columns written from now on");
        }
        fault::point("applier.after_expand");
        if backfilled.is_none() {
            let started = std::time::Instant::now();
            let mut reported = 0;
            let done = warehouse
                .backfill(table, &dual, lock_timeout, |done, pages| {
                    // Progress about every tenth of the table.
                    if done * 10 / pages.max(1) > reported {
                        reported = done * 10 / pages.max(1);
                        tracing::info!(%table, column = %dual.column, pages_done = done, pages, "backfilling");
                    }
                })
                .await?;
            tracing::info!(
                proposal = %decision.proposal_id, %table, column = %dual.column, rows = done.rows, batches = done.batches,
                lock_waits = done.lock_waits, seconds = started.elapsed().as_secs_f64(), "backfilled"
            );
            *backfilled = Some(done);
        }
        fault::point("applier.after_backfill");
        let then = warehouse.end_dual_write(table, &dual).await?;
        self.attempt(dataset, warehouse, decision, contract, &stages.swap, &then).await
    }

    /// Replays every quarantined record of `incident`, in source order.
    ///
    /// The loader kept each record it quarantined with `writer`, bytes and
    /// all, in `mend_quarantined` (in its batch's transaction), so the
    /// replay reads exactly those: its cost grows with the incident, not with
    /// `mend.quarantine`. A record quarantined after the replay loads through
    /// the straggler path.
    pub async fn replay(&self, dataset: &Dataset, warehouse: &Warehouse, writer: u32) -> Result<Replay, HandleError> {
        let kept = warehouse.quarantined_records(&dataset.name, writer).await?;
        self.load(dataset, warehouse, kept).await
    }

    /// Loads quarantined records — (partition, offset, bytes) — under the
    /// current contract, in source order (idempotent).
    async fn load(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
        records: Vec<(i32, i64, Option<Vec<u8>>)>,
    ) -> Result<Replay, HandleError> {
        // A record quarantined twice (a re-delivery) counts once.
        let mut by_position: BTreeMap<(i32, i64), Option<Vec<u8>>> = BTreeMap::new();
        for (partition, offset, payload) in records {
            by_position.entry((partition, offset)).or_insert(payload);
        }
        let mut counts = Replay { replayed: by_position.len() as i64, ..Replay::default() };
        let Some(contract) = warehouse.contract(&dataset.name).await? else {
            for (partition, offset) in by_position.into_keys() {
                counts.hold(partition, offset, "the dataset has no contract".into());
            }
            return Ok(counts);
        };
        let loader = self.context.loaders.get(&self.context.codec, dataset, contract).await?;
        let mut rows: Vec<Row> = Vec::new();
        let mut columns = Vec::new();
        for ((partition, offset), payload) in by_position {
            let Some(payload) = payload.as_deref() else {
                let reason =
                    "its bytes are not kept: a tombstone (mend never deletes rows), or a record too large to load";
                counts.hold(partition, offset, reason.into());
                continue;
            };
            match loader.row(&self.context.codec, payload).await? {
                Ok(values) => rows.push(Row { position: Position { partition, offset }, values }),
                Err(still) => counts.hold(partition, offset, still.reason),
            }
            if columns.is_empty()
                && let Some(writer) = mend_avro::codec::schema_id(payload)
                && let Ok(plan) = loader.fit(&self.context.codec, writer).await?
            {
                columns.clone_from(&plan.load.columns);
            }
        }
        let target = LoadTarget::new(dataset, columns);
        let (mut written, mut refused) = (0, 0);
        for chunk in rows.chunks(REPLAY_CHUNK) {
            match warehouse.replay_rows(&target, chunk).await {
                Ok(count) => written += count,
                // A value the warehouse refuses (a plan that moved the
                // contract beyond what the table holds): the chunk again,
                // row by row; the refused rows stay quarantined, with why.
                Err(error) if error.refuses_a_value() => {
                    for row in chunk {
                        match warehouse.replay_rows(&target, std::slice::from_ref(row)).await {
                            Ok(count) => written += count,
                            Err(error) if error.refuses_a_value() => {
                                refused += 1;
                                let reason = format!("the warehouse refused a value of it: {error}");
                                counts.hold(row.position.partition, row.position.offset, reason);
                            }
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
                Err(error) => return Err(error.into()),
            }
            fault::point("applier.mid_replay");
        }
        if written + refused < rows.len() {
            tracing::info!(dataset = %dataset.name, already = rows.len() - written - refused, "replayed records loaded before were left as they are");
        }
        counts.loaded = (rows.len() - refused) as i64;
        Ok(counts)
    }

    /// Records quarantined now, per dataset: those the contract already
    /// fits (their incident was healed meanwhile) are loaded at once. One
    /// contract read and one plan per writer schema per batch, not per record.
    async fn stragglers(&self, dataset: &str, events: Vec<Quarantined>) -> Result<(), HandleError> {
        let Some(dataset) = self.context.dataset(dataset) else { return Ok(()) };
        let records: Vec<(i32, i64, Option<Vec<u8>>)> =
            events.into_iter().filter(|e| e.topic == dataset.topic).map(|e| (e.partition, e.offset, e.value)).collect();
        if records.is_empty() {
            return Ok(());
        }
        let warehouse = self.context.applier_warehouse(dataset).await?;
        let replay = self.load(dataset, &warehouse, records).await?;
        if replay.loaded > 0 {
            tracing::info!(dataset = %dataset.name, loaded = replay.loaded, "loaded records quarantined after their incident was healed");
        }
        Ok(())
    }
}

impl Handler for Applier {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::with_capacity(batch.len());
        let mut stragglers: BTreeMap<String, Vec<Quarantined>> = BTreeMap::new();
        for record in batch {
            if &*record.topic == topics::QUARANTINE {
                let payload = record.payload.as_deref().unwrap_or_default();
                match self.context.codec.decode_event::<Quarantined>(payload).await {
                    Ok(event) => stragglers.entry(event.envelope.dataset.clone()).or_default().push(event),
                    Err(CodecError::Invalid(reason)) => tracing::warn!(%reason, "unreadable quarantine event"),
                    Err(unavailable) => return Err(unavailable.into()),
                }
                out.push(Disposition::Emit(Vec::new()));
                continue;
            }
            let decision: Decision = match decode_event(&self.context.codec, record).await? {
                Ok(event) => event,
                Err(bad) => {
                    out.push(bad);
                    continue;
                }
            };
            if decision.outcome != Verdict::Approved || !self.context.manages(&decision.envelope.dataset) {
                out.push(Disposition::Emit(Vec::new()));
                continue;
            }
            let mut application = self.apply(&decision).await?;
            application.seal();
            tracing::info!(
                incident = %application.envelope.incident_id, outcome = %application.outcome, replayed = application.replayed,
                loaded = application.loaded, still_quarantined = application.still_quarantined, "application"
            );
            out.push(Disposition::Emit(vec![Outbound::event(&self.context.codec, &application).await?]));
        }
        // After this batch's decisions: the contract may just have moved.
        for (dataset, events) in stragglers {
            self.stragglers(&dataset, events).await?;
        }
        Ok(out)
    }
}

/// The contract an approved plan moves `dataset` to from `current`: the
/// decision's writer schema (a pipeline failure's plan, a dbt patch or a
/// column, names none: the contract stays on its schema), with the plan's
/// mapping steps over the current mapping (a step naming a field without a
/// column forgets that field's mapping). None when neither names a schema.
fn next_contract(dataset: &str, current: Option<Contract>, decision: &Decision) -> Option<Contract> {
    let writer = decision.writer_schema_id.and_then(|id| u32::try_from(id).ok());
    let schema_id = writer.or(current.as_ref().map(|c| c.schema_id))?;
    let mut mapping = current.map(|c| c.mapping).unwrap_or_default();
    for step in decision.steps.iter().filter(|s| s.kind == StepKind::Mapping) {
        match (&step.field, &step.column) {
            (Some(field), Some(column)) => {
                mapping.insert(field.clone(), column.clone());
            }
            // The field's mapping forgotten (a revert): its default column
            // applies, and a writer field of that name is no longer taken
            // for it.
            (Some(field), None) => {
                mapping.remove(field);
            }
            (None, _) => {}
        }
    }
    Some(Contract { dataset: dataset.to_owned(), schema_id, mapping })
}

/// Each statement's `statement_timeout` by its class (a statement the
/// costing could not read gets the longer one), and the dataset's
/// `lock_timeout`.
fn limits(ddl: &Ddl, costs: &[Option<StatementCost>]) -> Limits {
    let timeout = |cost: &Option<StatementCost>| match cost {
        Some(cost) if cost.class == CostClass::Metadata => ddl.metadata_timeout,
        _ => ddl.rewrite_timeout,
    };
    Limits { lock_timeout: ddl.lock_timeout, statement_timeouts: costs.iter().map(timeout).collect() }
}

/// The delays between attempts of a plan whose lock was not free: from
/// the lock timeout, doubling, to 30 s, with jitter, `lock_attempts` in all.
fn lock_backoff(ddl: &Ddl) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(ddl.lock_timeout.max(Duration::from_millis(100)))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(ddl.lock_attempts.saturating_sub(1) as usize)
        .build()
}

/// The plan's DDL, in its order.
fn statements(decision: &Decision) -> Vec<String> {
    decision.steps.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.clone()).collect()
}

/// An expand/contract plan's DDL around its backfill step.
struct Stages {
    /// The column widened (the backfill step's).
    column: String,
    /// Before the backfill: the wider column added.
    expand: Vec<String>,
    /// After it: the renames and the old column's DROP NOT NULL.
    swap: Vec<String>,
}

/// The stages of a plan with a backfill step; None without one.
fn stages(decision: &Decision) -> Option<Stages> {
    let at = decision.steps.iter().position(|s| s.kind == StepKind::Backfill)?;
    let column = decision.steps[at].column.clone()?;
    let ddl = |steps: &[mend_model::events::PlanStep]| -> Vec<String> {
        steps.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.clone()).collect()
    };
    Some(Stages { column, expand: ddl(&decision.steps[..at]), swap: ddl(&decision.steps[at + 1..]) })
}

pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Applier>, Arc<RunnerStatus>)> {
    let topics = vec![topics::DECISIONS.to_owned(), topics::QUARANTINE.to_owned()];
    let mut config = RunnerConfig::new(SERVICE, &context.connections.brokers, &context.group("applier"), topics);
    // Records quarantined before the applier first ran are replayed from the
    // warehouse with their incident; only later ones are stragglers. (A new
    // group reading all of mend.quarantine would cost a scan of every
    // deployment's quarantine history.) See `mend_runtime::compat`.
    config.new_group_starts_at_end = vec![topics::QUARANTINE.to_owned()];
    // A batch may wait out a plan's lock attempts and run a rewrite: the
    // group must not take that for a stuck consumer.
    let longest = context.config.datasets.iter().map(|d| {
        let waits = (d.ddl.lock_timeout + Duration::from_secs(30)) * d.ddl.lock_attempts;
        d.ddl.rewrite_timeout + waits
    });
    config.max_poll_interval =
        config.max_poll_interval.max(longest.max().unwrap_or_default() + Duration::from_secs(60));
    Ok(context.runner_with(config, Applier::new(context.clone()))?)
}

#[cfg(test)]
mod tests;
