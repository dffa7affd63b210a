//! What the pipeline and peers benches share: the bench's own broker, the
//! order records, producing them, mend's loader run in this process until a
//! table holds them, and COPY of the same rows (the practical limit).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value;
use mend_config::{Dataset, FileConfig};
use mend_model::topics;
use mend_runtime::Connections;
use mend_runtime::Context;
use mend_runtime::kafka;
use mend_store::Warehouse;
use mend_tests::{registry_url, unique};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

pub const BROKER: &str = "127.0.0.1:29192";
pub const V1: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"},
  {"name":"status","type":"string"},{"name":"created_at","type":"long"}]}"#;
pub const V2: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"},
  {"name":"status","type":"string"},{"name":"created_at","type":"long"},
  {"name":"coupon","type":["null","string"],"default":null}]}"#;

pub fn postgres() -> String {
    std::env::var("MEND_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/warehouse".into())
}

pub async fn register(subject: &str, schema: &str) -> anyhow::Result<u32> {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": schema }).to_string())
        .send()
        .await?
        .json()
        .await?;
    Ok(u32::try_from(body["id"].as_u64().context("id")?)?)
}

pub fn order(i: i64, v2: bool) -> Value {
    let mut fields = vec![
        ("id".into(), Value::Long(i)),
        ("email".into(), Value::String(format!("user{i}@example.com"))),
        ("amount".into(), Value::Double(i as f64 * 0.5)),
        ("status".into(), Value::String(["paid", "shipped"][usize::from(i % 2 == 0)].into())),
        ("created_at".into(), Value::Long(1_700_000_000_000 + i)),
    ];
    if v2 {
        fields.push(("coupon".into(), Value::Union(0, Box::new(Value::Null))));
    }
    Value::Record(fields)
}

pub async fn produce(
    brokers: &str,
    topic: &str,
    id: u32,
    schema: &Schema,
    from: i64,
    count: i64,
    v2: bool,
) -> anyhow::Result<()> {
    produce_with(brokers, topic, id, schema, from, count, v2, 0).await
}

/// [`produce`], every `bad_every`-th record (0: none) with a wrong magic
/// byte, which the loader quarantines.
#[allow(clippy::too_many_arguments)]
pub async fn produce_with(
    brokers: &str,
    topic: &str,
    id: u32,
    schema: &Schema,
    from: i64,
    count: i64,
    v2: bool,
    bad_every: i64,
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka::producer_config(brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut pending = Vec::new();
    for i in from..from + count {
        #[allow(deprecated)]
        let datum = apache_avro::to_avro_datum(schema, order(i, v2))?;
        let magic = u8::from(bad_every > 0 && i % bad_every == 0);
        let payload = [&[magic][..], &id.to_be_bytes()[..], &datum].concat();
        let key = i.to_string();
        pending.push(producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)).map_err(|(e, _)| e)?);
        if pending.len() >= 50_000 {
            for delivery in pending.drain(..) {
                delivery.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

pub fn context(datasets: Vec<Dataset>, prefix: &str) -> anyhow::Result<Arc<Context>> {
    let connections = Connections { group_prefix: prefix.into(), ..Connections::new(BROKER, &registry_url()) };
    Ok(Context::new(connections, FileConfig { datasets, ..FileConfig::default() }, postgres())?)
}

pub fn dataset(name: &str, topic: &str, key: &[&str]) -> Dataset {
    Dataset {
        name: name.into(),
        topic: topic.into(),
        table: name.into(),
        key: key.iter().map(|k| (*k).to_owned()).collect(),
        subject: Some(format!("{topic}-value")),
        ..Dataset::default()
    }
}

pub async fn wait_rows(warehouse: &Warehouse, table: &str, rows: i64) -> anyhow::Result<()> {
    loop {
        if warehouse.count(table).await.unwrap_or(0) >= rows {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one loader run measured.
pub struct Loaded {
    /// Rows/s from the runner's start (consumer set-up and table creation
    /// included) to the last committed batch.
    pub rate: f64,
    /// Rows/s after the first committed batch (the steady state).
    pub steady: f64,
    /// CPU time of this process (every thread) from the runner's start
    /// until the last record is loaded and, with the sealer, sealed.
    pub cpu: Duration,
}

/// Runs the loader on `dataset` until it has committed `rows` records.
/// Progress is read from the runner's counter (a record counts once its
/// batch is committed), not by counting the table while it loads, which
/// would compete with the load for PostgreSQL; the table is counted once at
/// the end.
pub async fn load(dataset: Dataset, rows: i64) -> anyhow::Result<Loaded> {
    load_with(dataset, rows, rows, false).await
}

/// [`load`] of `records` of which `rows` load (the rest are quarantined),
/// with the sealer running beside the loader when `seal`.
pub async fn load_with(dataset: Dataset, records: i64, rows: i64, seal: bool) -> anyhow::Result<Loaded> {
    let context = context(vec![dataset.clone()], &unique("bench"))?;
    let (runner, status) = mend_loader::runner(&context)?;
    let shutdown = CancellationToken::new();
    let sealer = seal.then(|| {
        let sealer = sealer(&context, Duration::from_secs(2));
        let sealed = sealer.status();
        (tokio::spawn(sealer.run(shutdown.clone())), sealed)
    });
    // A new chain first seals what earlier runs left on the audit topics:
    // that catching up is not this load's cost, so the clock starts after it.
    let before = match &sealer {
        Some((_, sealed)) => {
            let before = audit_events().await?;
            while sealed.records.load(Ordering::Relaxed) < before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            before
        }
        None => 0,
    };
    let start = Instant::now();
    let cpu = cpu_time::ProcessTime::now();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let mut first = None;
    loop {
        let committed = status.records.load(Ordering::Relaxed);
        if first.is_none() && committed > 0 {
            first = Some((start.elapsed(), committed));
        }
        if committed >= u64::try_from(records)? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let (first_at, first_rows) = first.context("no batch committed")?;
    let steady = (records - i64::try_from(first_rows)?) as f64 / (elapsed - first_at).as_secs_f64();
    if let Some((_, sealed)) = &sealer {
        // Everything the loader quarantined is sealed before the sealer stops.
        while sealed.records.load(Ordering::Relaxed) < before + u64::try_from(records - rows)? {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu = cpu.elapsed();
    shutdown.cancel();
    task.await??;
    if let Some((sealer, _)) = sealer {
        sealer.await??;
    }
    let loaded = context.warehouse(&dataset).await?.count(&dataset.table).await?;
    anyhow::ensure!(loaded == rows, "the loader reported {rows} records but the table holds {loaded} rows");
    drop_table(&dataset.table).await?;
    Ok(Loaded { rate: records as f64 / elapsed.as_secs_f64(), steady, cpu })
}

/// Drops a table the bench filled (a million rows each run add up).
pub async fn drop_table(table: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{table}\""))).execute(&pool).await?;
    Ok(())
}

/// COPY of the same rows: straight into a table, or staged and upserted.
pub async fn copy_baseline(rows: i64, keyed: bool) -> anyhow::Result<f64> {
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let table = unique("bench_copy").replace('-', "_");
    let key = if keyed { " PRIMARY KEY" } else { "" };
    let ddl = format!(
        "CREATE TABLE {table} (id BIGINT NOT NULL{key}, email TEXT NOT NULL, amount DOUBLE PRECISION NOT NULL, \
         status TEXT NOT NULL, created_at BIGINT NOT NULL, _mend_partition INTEGER NOT NULL, _mend_offset BIGINT NOT NULL)"
    );
    sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&pool).await?;
    let mut text = Vec::with_capacity(usize::try_from(rows)? * 64);
    for i in 0..rows {
        let status = ["paid", "shipped"][usize::from(i % 2 == 0)];
        text.extend_from_slice(
            format!("{i}\tuser{i}@example.com\t{:?}\t{status}\t{}\t0\t{i}\n", i as f64 * 0.5, 1_700_000_000_000 + i)
                .as_bytes(),
        );
    }
    let start = Instant::now();
    let mut tx = pool.begin().await?;
    let target = if keyed {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT * FROM {table} WITH NO DATA"
        )))
        .execute(&mut *tx)
        .await?;
        "stage".to_owned()
    } else {
        table.clone()
    };
    let mut copy = tx.copy_in_raw(&format!("COPY {target} FROM STDIN")).await?;
    copy.send(text).await?;
    copy.finish().await?;
    if keyed {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET email = excluded.email, \
             amount = excluded.amount, status = excluded.status, created_at = excluded.created_at, \
             _mend_partition = excluded._mend_partition, _mend_offset = excluded._mend_offset"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    drop_table(&table).await?;
    Ok(rate)
}

/// Events on mend's audit topics.
pub async fn audit_events() -> anyhow::Result<u64> {
    let mut events = 0;
    for topic in topics::EVENT_TOPICS {
        for (_, low, high) in kafka::watermarks(BROKER, topic).await? {
            events += u64::try_from(high - low)?;
        }
    }
    Ok(events)
}

/// A sealer of a chain of its own, as `mend up` configures it (signed),
/// sealing at least `every`.
pub fn sealer(context: &Context, every: Duration) -> mend_sealer::Sealer {
    let config = mend_audit::seal::SealerConfig {
        brokers: BROKER.into(),
        chain: unique("bench-chain"),
        every_events: mend_audit::seal::DEFAULT_EVERY_EVENTS,
        every,
        key: mend_audit::keys::generate().ok(),
    };
    mend_sealer::Sealer::new(config, context.codec.clone(), context.producer.clone())
}
