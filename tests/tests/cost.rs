//! What DDL costs, known before it runs, against a real PostgreSQL:
//!
//! - each statement kind mend allows gets its class (metadata or rewrite)
//!   and lock by the rules, and the dry run on an empty copy of the table
//!   agrees (its file kept or replaced, `ACCESS EXCLUSIVE` taken); the
//!   estimate comes from the statistics, and a table never analysed says so;
//! - the dry runs leave the table as it was, rows and file alike;
//! - the size gate turns an `auto` widening of a table above the gate into
//!   one that waits for a person, and leaves it `auto` below;
//! - through a real `mend up`: a reader holding the table makes the
//!   applier's widening wait `lock_timeout`, give up and try again (each
//!   attempt on the application event) and succeed once the reader lets
//!   go, while no other query waits behind it longer than the timeout.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::events::StatementCost;
use mend_model::{CostClass, IncidentStatus, Policy};
use mend_store::Warehouse;
use mend_tests::{Deployment, incident_where, postgres_url, produce_avro, producer, register_schema, unique};
use serde_json::json;
use sqlx::PgPool;

/// A schema of the test's own holding `orders` (10,000 rows, analysed, an
/// index on `qty`) and `fresh` (empty, never analysed), and a warehouse
/// whose search path is that schema.
struct Fixture {
    schema: String,
    warehouse: Warehouse,
    admin: PgPool,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let schema = unique("cost").replace('-', "_");
        let admin = PgPool::connect(&postgres_url()).await?;
        let s = &schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.orders (id bigint NOT NULL PRIMARY KEY, qty integer NOT NULL, ratio real,
               note varchar(20), price numeric(10,2), body text,
               _mend_partition integer NOT NULL, _mend_offset bigint NOT NULL);
             CREATE INDEX ON {s}.orders (qty);
             INSERT INTO {s}.orders SELECT i, i % 100, i / 7.0, 'n' || i, i / 100.0, repeat('x', 40), 0, i
               FROM generate_series(1, 10000) i;
             ANALYZE {s}.orders;
             CREATE TABLE {s}.fresh (id bigint, qty integer);"
        )))
        .execute(&admin)
        .await?;
        let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        let warehouse = Warehouse::connect(&url).await?;
        Ok(Self { schema, warehouse, admin })
    }

    /// The cost of one statement on `table` as it is now.
    async fn cost(&self, table: &str, sql: &str) -> Result<StatementCost> {
        let costs = self.warehouse.costs(table, &[sql.to_owned()]).await?;
        costs.into_iter().next().flatten().with_context(|| format!("no cost for {sql}"))
    }

    /// The table's file node and row count, from outside mend.
    async fn state(&self) -> Result<(i64, i64)> {
        let s = &self.schema;
        let sql = format!("SELECT pg_relation_filenode('{s}.orders')::int8, (SELECT count(*) FROM {s}.orders)");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(&self.admin).await?)
    }

    async fn drop(self) -> Result<()> {
        self.warehouse.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.schema))).execute(&self.admin).await?;
        Ok(())
    }
}

#[tokio::test]
async fn each_statement_kind_gets_its_class_and_the_dry_run_on_a_copy_agrees() -> Result<()> {
    let fixture = Fixture::new().await?;
    let before = fixture.state().await?;
    for (sql, class, file) in [
        ("ALTER TABLE orders ADD COLUMN coupon text", CostClass::Metadata, "kept"),
        ("ALTER TABLE orders ALTER COLUMN qty TYPE bigint", CostClass::Rewrite, "replaced"),
        ("ALTER TABLE orders ALTER COLUMN ratio TYPE double precision", CostClass::Rewrite, "replaced"),
        ("ALTER TABLE orders ALTER COLUMN note TYPE text", CostClass::Metadata, "kept"),
        ("ALTER TABLE orders ALTER COLUMN price TYPE numeric(12,2)", CostClass::Metadata, "kept"),
        ("ALTER TABLE orders ALTER COLUMN price TYPE numeric(14,4)", CostClass::Rewrite, "replaced"),
        ("ALTER TABLE orders ALTER COLUMN price TYPE numeric", CostClass::Metadata, "kept"),
        (
            "ALTER TABLE orders ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8')",
            CostClass::Rewrite,
            "replaced",
        ),
        ("ALTER TABLE orders ALTER COLUMN qty DROP NOT NULL", CostClass::Metadata, "kept"),
        ("ALTER TABLE orders RENAME COLUMN note TO memo", CostClass::Metadata, "kept"),
    ] {
        let cost = fixture.cost("orders", sql).await?;
        ensure!(cost.class == class, "{sql}: {cost}");
        ensure!(cost.lock.as_deref() == Some("ACCESS EXCLUSIVE"), "{sql}: {cost}");
        let probe = cost.probe.as_deref().unwrap_or_default();
        ensure!(probe.contains(&format!("{file} the table's file")), "{sql}: the dry run saw {probe:?}");
        ensure!(probe.ends_with("took ACCESS EXCLUSIVE"), "{sql}: the dry run saw {probe:?}");
        ensure!(!cost.reason.contains("the database says"), "{sql}: the rules and the database disagree: {cost}");
        ensure!(cost.rows == Some(10_000), "{sql}: the statistics say {:?} rows", cost.rows);
        ensure!(cost.bytes.is_some_and(|b| b > 500_000), "{sql}: {:?} bytes", cost.bytes);
    }
    // A new child table: no lock on the dataset's table, nothing to probe.
    let child = fixture.cost("orders", "CREATE TABLE orders__items (sku text)").await?;
    ensure!(child.class == CostClass::Metadata && child.lock.is_none() && child.probe.is_none(), "{child}");
    // Never analysed: said so, never taken for empty.
    let fresh = fixture.cost("fresh", "ALTER TABLE fresh ALTER COLUMN qty TYPE bigint").await?;
    ensure!(fresh.rows.is_none() && fresh.estimate().contains("never analysed"), "{fresh}");
    // A statement the allow-list refuses has no cost.
    let refused = fixture.warehouse.costs("orders", &["DROP TABLE orders".to_owned()]).await?;
    ensure!(refused == vec![None], "{refused:?}");

    // The dry runs (the copy, and the guardrails' own on the table, which
    // empties it first when a statement rewrites) leave the table as it was.
    let widen = vec!["ALTER TABLE orders ALTER COLUMN qty TYPE bigint".to_owned()];
    let vetted = fixture.warehouse.vet("orders", &widen, Duration::from_secs(2)).await?;
    ensure!(vetted.refused.is_empty(), "{:?}", vetted.refused);
    ensure!(
        fixture.state().await? == before,
        "a dry run changed the table: {before:?} -> {:?}",
        fixture.state().await?
    );
    fixture.drop().await
}

#[tokio::test]
async fn expand_contract_takes_a_widening_over_the_gate_unless_something_depends_on_the_column() -> Result<()> {
    let fixture = Fixture::new().await?;
    let dataset = mend_config::Dataset {
        name: "orders".into(),
        table: "orders".into(),
        key: vec!["id".into()],
        ddl: mend_config::Ddl { rewrite_gate_mib: 0, ..mend_config::Ddl::default() },
        ..mend_config::Dataset::default()
    };
    let writer = Schema::parse(&json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "qty", "type": "long"}, {"name": "ratio", "type": "double"}]}))?;
    let changes = [
        mend_model::events::FieldChange::new(mend_model::ChangeKind::TypeWidened, "qty"),
        mend_model::events::FieldChange::new(mend_model::ChangeKind::TypeWidened, "ratio"),
    ];
    let plan = mend_planner::plan_dataset(&dataset, &fixture.warehouse, &Default::default(), &changes, &writer).await?;
    let sql: Vec<&str> = plan.steps.iter().filter_map(|s| s.sql.as_deref()).collect();
    // qty has an index: the ALTER stays, and the gate asks a person.
    ensure!(sql.iter().any(|s| s.contains("\"qty\" TYPE")), "{sql:?}");
    let refusal = plan.rules.iter().find(|r| r.starts_with("expand/contract not offered for qty")).context("qty")?;
    ensure!(refusal.contains("index") && refusal.contains("depend on it"), "{refusal}");
    ensure!(plan.rules.iter().any(|r| r.starts_with("size gate: a rewrite")), "{:?}", plan.rules);
    // ratio has nothing on it: added beside, backfilled, swapped.
    let backfill = plan.steps.iter().find(|s| s.kind == mend_model::StepKind::Backfill).context("no backfill")?;
    ensure!(backfill.column.as_deref() == Some("ratio"), "{backfill:?}");
    for expected in [
        "ADD COLUMN \"ratio__mend_wide\" DOUBLE PRECISION",
        "RENAME COLUMN \"ratio\" TO \"ratio__mend_old\"",
        "RENAME COLUMN \"ratio__mend_wide\" TO \"ratio\"",
    ] {
        ensure!(sql.iter().any(|s| s.contains(expected)), "no {expected:?} in {sql:?}");
    }
    ensure!(!sql.iter().any(|s| s.contains("\"ratio\" TYPE")), "{sql:?}");
    let ratio_steps = plan.steps.iter().filter(|s| s.sql.as_deref().is_some_and(|s| s.contains("ratio")));
    ensure!(ratio_steps.clone().count() == 3, "{sql:?}");
    ensure!(ratio_steps.filter_map(|s| s.cost.as_ref()).all(|c| c.class == CostClass::Metadata), "{:?}", plan.steps);
    // Without expand/contract, both stay ALTERs.
    let dataset =
        mend_config::Dataset { ddl: mend_config::Ddl { expand_contract: false, ..dataset.ddl.clone() }, ..dataset };
    let plan = mend_planner::plan_dataset(&dataset, &fixture.warehouse, &Default::default(), &changes, &writer).await?;
    ensure!(plan.steps.iter().all(|s| s.kind != mend_model::StepKind::Backfill), "{:?}", plan.steps);
    fixture.drop().await
}

/// v1 and v2 of the test's records: `qty` an int, then a long.
fn schemas() -> (serde_json::Value, serde_json::Value) {
    let v = |qty: &str| {
        json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
            {"name": "id", "type": "long"}, {"name": "qty", "type": qty}]})
    };
    (v("int"), v("long"))
}

/// Registers `schema` for the deployment's topic and produces `ids` with it.
async fn produce(
    deployment: &Deployment,
    schema: &serde_json::Value,
    ids: std::ops::Range<i64>,
    long: bool,
) -> Result<()> {
    let topic = deployment.topic();
    let id = register_schema(&format!("{topic}-value"), &schema.to_string()).await?;
    let parsed = Schema::parse(schema)?;
    let producer = producer()?;
    for i in ids {
        let qty = if long { Avro::Long(i) } else { Avro::Int(i32::try_from(i)?) };
        let value = Avro::Record(vec![("id".into(), Avro::Long(i)), ("qty".into(), qty)]);
        produce_avro(&producer, &topic, &i.to_string(), id, &parsed, value).await?;
    }
    Ok(())
}

async fn count(admin: &PgPool, table: &str) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {table}");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(admin).await.unwrap_or(0))
}

#[tokio::test]
async fn the_size_gate_asks_a_person_for_a_rewrite_of_a_large_table() -> Result<()> {
    // A gate of 0 MiB: any rewrite is above it. The same widening on a
    // gate of 1 GiB stays automatic (below). Without expand/contract, which
    // would take the widening over the gate (tests/tests/expand.rs).
    for (gate, policy) in [(0, Policy::Approve), (1024, Policy::Auto)] {
        let extra = format!(
            "[dataset.policy]\ntype_widened = \"auto\"\n[dataset.ddl]\nrewrite_gate_mib = {gate}\nexpand_contract = false\n"
        );
        let deployment = Deployment::new("postgres", &extra)?;
        let mut up = deployment.up(&format!("gate-{gate}.log")).await?;
        let admin = PgPool::connect(&postgres_url()).await?;
        let (v1, v2) = schemas();
        produce(&deployment, &v1, 0..20, false).await?;
        mend_tests::eventually("the first rows", || async {
            Ok((count(&admin, &deployment.dataset).await? >= 20).then_some(()))
        })
        .await?;
        produce(&deployment, &v2, 20..21, true).await?;
        let incident = incident_where(&deployment.api, "the widening's plan", |i| i.policy.is_some()).await?;
        ensure!(incident.policy == Some(policy), "gate {gate}: {:?}; rules {:?}", incident.policy, incident.rules);
        let cost = incident.steps.iter().find_map(|s| s.cost.clone()).context("the widening has no cost")?;
        ensure!(cost.class == CostClass::Rewrite, "{cost}");
        let gated = incident.rules.iter().any(|r| r.starts_with("size gate: a rewrite of"));
        ensure!(gated == (policy == Policy::Approve), "gate {gate}: rules {:?}", incident.rules);
        up.kill().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_held_lock_is_waited_for_retried_and_never_blocks_others_longer_than_the_timeout() -> Result<()> {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let extra =
        "[dataset.policy]\ntype_widened = \"auto\"\n[dataset.ddl]\nlock_timeout = \"500ms\"\nlock_attempts = 60\n";
    let deployment = Deployment::new("postgres", extra)?;
    let mut up = deployment.up("lock.log").await?;
    let admin = PgPool::connect(&postgres_url()).await?;
    let table = deployment.dataset.clone();
    let (v1, v2) = schemas();
    produce(&deployment, &v1, 0..50, false).await?;
    mend_tests::eventually("the first rows", || async { Ok((count(&admin, &table).await? >= 50).then_some(())) })
        .await?;

    // A reader holds the table (ACCESS SHARE, in an open transaction).
    let mut holder = admin.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).execute(&mut *holder).await?;

    // Another reader queries the table all along, timing each query.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (admin, table, stop) = (admin.clone(), table.clone(), stop.clone());
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut queries = 0u32;
            while !stop.is_cancelled() {
                let began = Instant::now();
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).execute(&admin).await?;
                longest = longest.max(began.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((longest, queries))
        })
    };

    produce(&deployment, &v2, 50..51, true).await?;
    // The applier's attempts, seen waiting for the lock: three distinct ones
    // (each a statement started anew) before the holder lets go, so at
    // least two gave up.
    let mut attempts = std::collections::BTreeSet::new();
    let waiting = "SELECT query_start::text FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%' || $1 || '%' AND (query LIKE 'ALTER TABLE%' OR query LIKE 'TRUNCATE%')";
    let deadline = Instant::now() + Duration::from_secs(60);
    while attempts.len() < 3 {
        ensure!(Instant::now() < deadline, "the applier did not wait for the lock three times: {attempts:?}");
        let starts: Vec<String> = sqlx::query_scalar(waiting).bind(&table).fetch_all(&admin).await?;
        attempts.extend(starts);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.commit().await?;

    let healed = incident_where(&deployment.api, "the widening healed", |i| i.status == IncidentStatus::Healed).await?;
    stop.cancel();
    let (longest, queries) = reader.await??;
    let application = healed.application.context("a healed incident without its application")?;
    ensure!(application.lock_waits.len() >= 2, "{:?}", application.lock_waits);
    for wait in &application.lock_waits {
        ensure!(wait.error.contains("lock timeout"), "{wait:?}");
        ensure!(wait.waited_ms >= 450, "an attempt gave up after {} ms, before its timeout", wait.waited_ms);
    }
    // Every other query waited at most the timeout behind the applier (and
    // a margin for a loaded 2-core machine).
    ensure!(longest < TIMEOUT + Duration::from_millis(400), "a reader waited {longest:?} ({queries} queries)");
    let column: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = 'qty'",
    )
    .bind(&table)
    .fetch_one(&admin)
    .await?;
    ensure!(column == "bigint", "qty is {column}");
    ensure!(count(&admin, &table).await? == 51, "rows lost or doubled");
    println!(
        "{} attempts waited for the lock; the longest of {queries} other queries waited {longest:?}",
        application.lock_waits.len()
    );
    up.kill().await?;
    Ok(())
}
