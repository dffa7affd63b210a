//! What widening a large table costs, and who waits for it: a table of
//! `MEND_BENCH_ROWS` rows (default 1,000,000; the figure is 10M)
//! with a primary key, widened `integer` -> `bigint` (a rewrite). Prints
//! how long mend's costing takes (the rules and the dry run on an empty
//! copy), the guardrails' dry run on the table as mend runs it (emptied
//! first, rolled back) and as it ran before (paying the rewrite), and the
//! apply by ALTER with a 2 s `lock_timeout`, while a reader looks up one
//! row every 10 ms: the longest time any of its queries waited. Needs
//! `make infra-up` (PostgreSQL).

use std::time::{Duration, Instant};

use mend_model::Dialect;
use mend_store::guard::{Target, check};
use mend_store::{DryRun, Store as _, Warehouse};
use mend_tests::{postgres_url, unique};
use sqlx::PgPool;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("MEND_BENCH_ROWS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let schema = unique("ddl").replace('-', "_");
    let admin = PgPool::connect(&postgres_url()).await?;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, qty integer, note text,
           _mend_partition integer NOT NULL, _mend_offset bigint NOT NULL);
         INSERT INTO {schema}.orders SELECT i, i % 1000, 'order ' || i, 0, i FROM generate_series(1, {rows}) i;
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

    // The apply by ALTER, with a reader looking up one row every 10 ms.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (admin, schema, stop) = (admin.clone(), schema.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut longest, mut queries) = (Duration::ZERO, 0u32);
            while !stop.is_cancelled() {
                let began = Instant::now();
                let sql = format!("SELECT qty::int8 FROM {schema}.orders WHERE id = $1");
                let _: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(queries % 1000) + 1)
                    .fetch_optional(&admin)
                    .await?;
                longest = longest.max(began.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok((longest, queries))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let mut tx = admin.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    sqlx::query(sqlx::AssertSqlSafe(rendered[0].clone())).execute(&mut *tx).await?;
    tx.commit().await?;
    let alter = began.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let (longest, queries) = reader.await??;
    println!(
        "apply by ALTER (rewrite under ACCESS EXCLUSIVE): {:.2} s; the longest of {queries} reader queries waited {:.2} s",
        alter.as_secs_f64(),
        longest.as_secs_f64()
    );
    warehouse.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await?;
    Ok(())
}
