//! Expand/contract through a real `mend up` on PostgreSQL: a widening of
//! `qty` (Avro int → long, `integer` → `bigint`, a rewrite) on a table of a
//! million rows, above the dataset's size gate, while the loader keeps
//! loading records of the old schema.
//!
//! - the plan is expand/contract, not the ALTER: the wider column added,
//!   a backfill step, the swap by renames; no step of it a rewrite;
//! - it is applied while records keep arriving, and afterwards every
//!   record is in the table once (lost 0), every `qty` equals its `id` as
//!   produced (misplaced 0), `qty` is `bigint`, the old column is kept as
//!   `qty__mend_old`, and mend's trigger is gone;
//! - a reader querying the table all along never waited longer than the
//!   dataset's `lock_timeout` and a margin: the longest wait is printed.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::{CostClass, IncidentStatus, StepKind};
use mend_tests::{Deployment, incident_where, postgres_url, produce_avro, producer, register_schema};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows written straight into the table before the drift.
const BULK: i64 = 1_000_000;

/// The test's records: `qty` an int (v1), then a long (v2); `qty` = `id`.
fn schema(qty: &str) -> serde_json::Value {
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "id", "type": "long"}, {"name": "qty", "type": qty}]})
}

struct Source {
    topic: String,
    producer: rdkafka::producer::FutureProducer,
    id: u32,
    schema: Schema,
    long: bool,
}

impl Source {
    async fn new(deployment: &Deployment, qty: &str) -> Result<Self> {
        let topic = deployment.topic();
        let value = schema(qty);
        let id = register_schema(&format!("{topic}-value"), &value.to_string()).await?;
        Ok(Self { topic, producer: producer()?, id, schema: Schema::parse(&value)?, long: qty == "long" })
    }

    async fn send(&self, i: i64) -> Result<()> {
        let qty = if self.long { Avro::Long(i) } else { Avro::Int(i32::try_from(i)?) };
        let value = Avro::Record(vec![("id".into(), Avro::Long(i)), ("qty".into(), qty)]);
        produce_avro(&self.producer, &self.topic, &i.to_string(), self.id, &self.schema, value).await
    }
}

async fn scalar(admin: &PgPool, sql: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(admin).await?)
}

#[tokio::test]
async fn a_widening_over_the_size_gate_is_expanded_backfilled_and_swapped_while_loading() -> Result<()> {
    let extra =
        "[dataset.policy]\ntype_widened = \"auto\"\n[dataset.ddl]\nrewrite_gate_mib = 8\nlock_timeout = \"1s\"\n";
    let deployment = Deployment::new("postgres", extra)?;
    let mut up = deployment.up("expand.log").await?;
    let admin = PgPool::connect(&postgres_url()).await?;
    let table = deployment.dataset.clone();

    // The loader creates the table and the contract from the first
    // records; a million more rows go in straight, as if loaded long ago.
    let v1 = Source::new(&deployment, "int").await?;
    for i in BULK..BULK + 10 {
        v1.send(i).await?;
    }
    let rows = format!("SELECT count(*) FROM {table}");
    // The table is there once the first batch is (until then, no rows).
    let first = || async { Ok((scalar(&admin, &rows).await.unwrap_or(0) >= 10).then_some(())) };
    mend_tests::eventually("the first rows", first).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, qty, _mend_partition, _mend_offset) SELECT i, i, -1, i FROM generate_series(0, {}) i;
         ANALYZE {table};",
        BULK - 1
    )))
    .execute(&admin)
    .await?;

    // Old-schema records keep arriving all along, and a reader keeps
    // querying the table, timing each query.
    let stop = CancellationToken::new();
    let writer = {
        let (stop, v1) = (stop.clone(), v1);
        tokio::spawn(async move {
            let mut next = BULK + 10;
            while !stop.is_cancelled() {
                v1.send(next).await?;
                next += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(next)
        })
    };
    let reader = {
        let (admin, table, stop) = (admin.clone(), table.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut longest, mut queries) = (Duration::ZERO, 0u32);
            while !stop.is_cancelled() {
                let began = Instant::now();
                // A statement prepared before the swap and run after it
                // fails once ("cached plan must not change result type"),
                // as after any ALTER of the column's type: asked again.
                let sql = format!("SELECT qty FROM {table} WHERE id = {}", queries % 1000);
                let read = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).persistent(false).fetch_optional(&admin);
                if let Err(error) = read.await {
                    anyhow::ensure!(error.to_string().contains("cached plan must not change result type"), "{error}");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false).fetch_optional(&admin).await?;
                }
                longest = longest.max(began.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((longest, queries))
        })
    };

    // The drift: ten records with qty a long.
    let v2 = Source::new(&deployment, "long").await?;
    let drifted = 2 * BULK..2 * BULK + 10;
    for i in drifted.clone() {
        v2.send(i).await?;
    }
    let began = Instant::now();
    let planned = incident_where(&deployment.api, "the widening's plan", |i| i.policy.is_some()).await?;
    let kinds: Vec<StepKind> = planned.steps.iter().map(|s| s.kind).collect();
    ensure!(kinds.contains(&StepKind::Backfill), "not expand/contract: {kinds:?}; rules {:?}", planned.rules);
    ensure!(
        planned.steps.iter().filter_map(|s| s.cost.as_ref()).all(|c| c.class == CostClass::Metadata),
        "a step of the plan is not metadata only: {:?}",
        planned.steps
    );
    ensure!(planned.rules.iter().any(|r| r.starts_with("expand/contract for qty")), "{:?}", planned.rules);
    let healed = incident_where(&deployment.api, "the widening healed", |i| i.status == IncidentStatus::Healed).await?;
    let healing = began.elapsed();
    stop.cancel();
    let next = writer.await??;
    let (longest, queries) = reader.await??;
    let application = healed.application.context("a healed incident without its application")?;

    // Every record once, each qty its id, whichever way it came.
    let expected = BULK + (next - BULK) + 10;
    mend_tests::eventually("every record loaded", || async {
        Ok((scalar(&admin, &rows).await? >= expected).then_some(()))
    })
    .await?;
    let total = scalar(&admin, &rows).await?;
    let distinct = scalar(&admin, &format!("SELECT count(DISTINCT id) FROM {table}")).await?;
    let misplaced = scalar(&admin, &format!("SELECT count(*) FROM {table} WHERE qty IS DISTINCT FROM id")).await?;
    let drifted_in =
        scalar(&admin, &format!("SELECT count(*) FROM {table} WHERE id >= {} AND id < {}", drifted.start, drifted.end))
            .await?;
    ensure!(total == expected && distinct == expected, "{total} rows, {distinct} ids, expected {expected}");
    ensure!(misplaced == 0, "{misplaced} rows with qty other than their id");
    ensure!(drifted_in == 10, "{drifted_in} of the 10 drifted records loaded");
    let types: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
         WHERE table_name = $1 AND column_name LIKE 'qty%' ORDER BY 1",
    )
    .bind(&table)
    .fetch_all(&admin)
    .await?;
    let expected_columns = [("qty", "bigint"), ("qty__mend_old", "integer")];
    ensure!(
        types.iter().map(|(c, t, _)| (c.as_str(), t.as_str())).eq(expected_columns),
        "columns after the swap: {types:?}"
    );
    let triggers =
        scalar(&admin, &format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass")).await?;
    ensure!(triggers == 0, "mend's trigger is still on the table");
    // A reader waited at most the lock timeout behind the swap (and a
    // margin for a loaded 2-core machine).
    ensure!(longest < Duration::from_millis(1800), "a reader waited {longest:?} ({queries} queries)");
    println!(
        "expand/contract of {BULK} rows while loading: healed in {:.1} s; {} records loaded meanwhile; \
         lost 0, misplaced 0; the longest of {queries} reads waited {longest:?}; {} lock waits",
        healing.as_secs_f64(),
        next - BULK - 10,
        application.lock_waits.len()
    );
    up.kill().await?;
    Ok(())
}
