//! What widening a large table costs, and who waits for it: a table of
//! `MEND_BENCH_ROWS` rows (default 1,000,000; the figure is 10M)
//! with a primary key, widened `integer` -> `bigint` (a rewrite). Prints
//! how long mend's costing takes (the rules and the dry run on an empty
//! copy), the guardrails' dry run on the table as mend runs it (emptied
//! first, rolled back) and as it ran before (paying the rewrite), and the
//! apply by ALTER with a 2 s `lock_timeout`, and the same widening of a
//! second column by expand/contract (the wider column, mend's dual-write
//! trigger, the backfill in batches, the swap by renames), while a reader
//! looks up one row and a writer inserts one every 10 ms: the longest time
//! any of their queries waited, each way. Needs `make infra-up`
//! (PostgreSQL).

use std::time::{Duration, Instant};

use mend_model::Dialect;
use mend_store::expand::Dual;
use mend_store::guard::{Target, check};
use mend_store::{DryRun, Store as _, Warehouse};
use mend_tests::{postgres_url, unique};
use sqlx::PgPool;

/// Other sessions on the table while it is widened: a reader looking up
/// one row and a writer inserting one, each every 10 ms, timing each query.
struct Probes {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<(Duration, u32)>>>,
}

impl Probes {
    /// New rows get ids from `first` up.
    fn start(admin: &PgPool, schema: &str, first: i64) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let queries = [
            format!("SELECT qty::int8 FROM {schema}.orders WHERE id = $1 % 1000 + 1"),
            format!("INSERT INTO {schema}.orders VALUES ($1 + {first} + 1, 1, 1, 'new', 0, 0)"),
        ];
        let tasks = queries
            .into_iter()
            .map(|sql| {
                let (admin, stop) = (admin.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut longest, mut queries) = (Duration::ZERO, 0u32);
                    while !stop.is_cancelled() {
                        let began = Instant::now();
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(i64::from(queries)).execute(&admin).await?;
                        longest = longest.max(began.elapsed());
                        queries += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    anyhow::Ok((longest, queries))
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops them: what each waited at longest, in words.
    async fn stop(self) -> anyhow::Result<String> {
        self.stop.cancel();
        let mut said = Vec::new();
        for (task, who) in self.tasks.into_iter().zip(["reader", "writer"]) {
            let (longest, queries) = task.await??;
            said.push(format!("the longest of {queries} {who} queries waited {:.3} s", longest.as_secs_f64()));
        }
        Ok(said.join(", "))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("MEND_BENCH_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let schema = unique("ddl").replace('-', "_");
    let admin = PgPool::connect(&postgres_url()).await?;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, qty integer, qty2 integer, note text,
           _mend_partition integer NOT NULL, _mend_offset bigint NOT NULL);
         INSERT INTO {schema}.orders SELECT i, i % 1000, i, 'order ' || i, 0, i FROM generate_series(1, {rows}) i;
         ANALYZE {schema}.orders;"
    )))
    .execute(&admin)
    .await?;
    println!("ddl bench: {rows} rows loaded in {:.1} s", started.elapsed().as_secs_f64());
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let warehouse = Warehouse::connect(&url).await?;
    let widen = "ALTER TABLE orders ALTER COLUMN qty TYPE bigint".to_owned();

    let began = Instant::now();
    let cost = warehouse.costs("orders", std::slice::from_ref(&widen)).await?.remove(0);
    let costing = began.elapsed();
    let cost = cost.ok_or_else(|| anyhow::anyhow!("no cost"))?;
    println!("cost: {cost}");
    println!("costing (rules + dry run on an empty copy): {:.0} ms", costing.as_secs_f64() * 1e3);

    let Warehouse::Postgres(engine) = &warehouse else { anyhow::bail!("PostgreSQL") };
    let target = Target {
        dialect: Dialect::Postgres,
        schema: schema.clone(),
        table: "orders".into(),
        columns: warehouse.columns("orders").await?,
    };
    let rendered = vec![check(&widen, &target).map_err(|e| anyhow::anyhow!("{e}"))?.sql];
    let tables = vec!["orders".to_owned()];
    for (rewrites, what) in [(true, "emptied first, as mend runs it"), (false, "paying the rewrite, as before")] {
        let how = DryRun { rewrites, lock_timeout: Duration::from_secs(2) };
        let began = Instant::now();
        let findings = engine.prove(&target, &tables, &rendered, how).await?;
        anyhow::ensure!(findings.is_empty(), "{findings:?}");
        println!("guardrails' dry run on the table ({what}): {:.0} ms", began.elapsed().as_secs_f64() * 1e3);
    }

    // The apply by ALTER, while a reader looks up one row and a writer
    // inserts one every 10 ms.
    let probes = Probes::start(&admin, &schema, rows);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let mut tx = admin.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    sqlx::query(sqlx::AssertSqlSafe(rendered[0].clone())).execute(&mut *tx).await?;
    tx.commit().await?;
    let alter = began.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waited = probes.stop().await?;
    println!("apply by ALTER (rewrite under ACCESS EXCLUSIVE): {:.2} s; {waited}", alter.as_secs_f64());

    // The same widening of the other column by expand/contract, as the
    // applier runs it: expand, backfill in batches, swap by renames.
    let dual = Dual::of("qty2");
    let steps = [
        format!("ALTER TABLE orders ADD COLUMN {} bigint", dual.wide),
        format!("ALTER TABLE orders RENAME COLUMN qty2 TO {}", mend_store::expand::old_name("qty2")),
        format!("ALTER TABLE orders RENAME COLUMN {} TO qty2", dual.wide),
    ];
    let lock = Duration::from_secs(2);
    let probes = Probes::start(&admin, &schema, 2 * rows);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let vetted = warehouse.vet("orders", &steps, lock).await?;
    anyhow::ensure!(vetted.refused.is_empty(), "{:?}", vetted.refused);
    warehouse.expand("orders", &vetted.statements[..1], &dual, lock).await?;
    let expanded = began.elapsed();
    let backfilled = warehouse.backfill("orders", &dual, lock, |_, _| {}).await?;
    let backfill = began.elapsed() - expanded;
    let swap = warehouse.vet("orders", &steps[1..], lock).await?;
    let then = warehouse.end_dual_write("orders", &dual).await?;
    let contract = mend_model::Contract { dataset: "orders".into(), schema_id: 1, mapping: Default::default() };
    let apply = mend_store::Apply {
        proposal_id: "bench",
        decision_id: "bench",
        statements: &swap.statements,
        schema: &swap.schema,
        contract: &contract,
        limits: mend_store::Limits { lock_timeout: lock, statement_timeouts: vec![Duration::from_secs(10); 2] },
        then: &then,
    };
    let swapped = Instant::now();
    anyhow::ensure!(warehouse.apply(&apply).await?, "the swap was applied before");
    let swap = swapped.elapsed();
    let total = began.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waited = probes.stop().await?;
    println!(
        "apply by expand/contract: {:.2} s (expand {:.0} ms, backfill {:.2} s of {} rows in {} batches, swap {:.0} ms); {waited}",
        total.as_secs_f64(),
        expanded.as_secs_f64() * 1e3,
        backfill.as_secs_f64(),
        backfilled.rows,
        backfilled.batches,
        swap.as_secs_f64() * 1e3
    );
    let wrong: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.orders WHERE qty2 IS DISTINCT FROM qty2__mend_old AND id <= {rows}"
    )))
    .fetch_one(&admin)
    .await?;
    anyhow::ensure!(wrong == 0, "{wrong} rows whose widened value differs from the old one");
    warehouse.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await?;
    Ok(())
}
