//! Scale figures (needs `make infra-up` for the registry and PostgreSQL, and
//! a release `mend`: `make bench` builds it). Starts its own one-node Kafka
//! (127.0.0.1:29292, `infra/kafka.sh`) and prints:
//! - loader throughput with 1, 2 and 3 `mend run loader` processes in one
//!   consumer group sharing a 6-partition topic, records/s from their start
//!   to the last row;
//! - registry requests per million records, counted by a proxy in front of
//!   the registry, beside the number of distinct writer schemas;
//! - `mend up` start-up time (to a healthy `/health`) and resident memory
//!   with 10, 100 and 1,000 datasets, declared by one `topic_pattern`;
//! - at 1,000 datasets, the time from a drifted record on one of them to
//!   its incident in the control API.
//!
//! Run: `make bench`, or `cargo bench -p mend-tests --bench scale`
//! (`BENCH_RECORDS` sets the loader's record count, default 600,000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value;
use mend_runtime::kafka;
use mend_tests::{eventually, mend_bin, registry_url, unique};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const BROKER: &str = "127.0.0.1:29292";
const PARTITIONS: i32 = 6;
const V1: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"}]}"#;
/// The same fields, another schema (a doc string): a second writer schema
/// that needs no change.
const V1_DOC: &str = r#"{"type":"record","name":"Order","namespace":"bench","doc":"orders","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"},
  {"name":"coupon","type":["null","string"],"default":null}]}"#;

fn postgres() -> String {
    std::env::var("MEND_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/warehouse".into())
}

/// Requests the proxy forwarded: writer-schema look-ups (`GET
/// /schemas/ids/…` and `GET /schemas?subjectPrefix=…`, which lists a
/// subject's schemas) and the rest (start-up: event schema registration,
/// subject configs).
#[derive(Default)]
struct Requests {
    lookups: AtomicU64,
    other: AtomicU64,
}

impl Requests {
    fn read(&self) -> (u64, u64) {
        (self.lookups.load(Ordering::Relaxed), self.other.load(Ordering::Relaxed))
    }
}

/// A proxy in front of the registry that counts the requests it forwards.
async fn counting_registry() -> anyhow::Result<(String, Arc<Requests>)> {
    let count = Arc::new(Requests::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (counter, upstream, http) = (count.clone(), registry_url(), reqwest::Client::new());
    let forward = move |request: axum::extract::Request| {
        let (counter, upstream, http) = (counter.clone(), upstream.clone(), http.clone());
        async move {
            let path = request.uri().path();
            let lookup = request.method() == axum::http::Method::GET
                && (path.starts_with("/schemas/ids/") || path == "/schemas");
            if lookup { &counter.lookups } else { &counter.other }.fetch_add(1, Ordering::Relaxed);
            let (parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let mut forwarded = http.request(parts.method, format!("{upstream}{path}")).body(body);
            if let Some(kind) = parts.headers.get("content-type") {
                forwarded = forwarded.header("content-type", kind);
            }
            match forwarded.send().await {
                Ok(response) => {
                    let status = response.status();
                    let kind = response.headers().get("content-type").cloned();
                    let bytes = response.bytes().await.unwrap_or_default();
                    let mut answer = axum::response::Response::new(axum::body::Body::from(bytes));
                    *answer.status_mut() = status;
                    if let Some(kind) = kind {
                        answer.headers_mut().insert("content-type", kind);
                    }
                    answer
                }
                Err(error) => {
                    let mut answer = axum::response::Response::new(axum::body::Body::from(error.to_string()));
                    *answer.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
                    answer
                }
            }
        }
    };
    let router = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, count))
}

fn datum(schema: &Schema, i: i64, coupon: bool) -> anyhow::Result<Vec<u8>> {
    let mut fields = vec![
        ("id".to_owned(), Value::Long(i)),
        ("email".to_owned(), Value::String(format!("user{i}@example.com"))),
        ("amount".to_owned(), Value::Double(i as f64 / 100.0)),
    ];
    if coupon {
        fields.push(("coupon".to_owned(), Value::Union(1, Box::new(Value::String("SAVE".into())))));
    }
    #[allow(deprecated)]
    Ok(apache_avro::to_avro_datum(schema, Value::Record(fields))?)
}

/// Produces `count` records over the topic's partitions, written with the
/// writer schemas in turn (`ids`).
async fn produce(producer: &FutureProducer, topic: &str, ids: &[u32], count: i64) -> anyhow::Result<()> {
    let schema = Schema::parse_str(V1)?;
    let mut pending = Vec::new();
    for i in 0..count {
        let id = ids[usize::try_from(i)? % ids.len()];
        let payload = [&[0u8][..], &id.to_be_bytes()[..], &datum(&schema, i, false)?].concat();
        let partition = i32::try_from(i % i64::from(PARTITIONS))?;
        let key = i.to_string();
        loop {
            let record = FutureRecord::to(topic).key(key.as_bytes()).payload(&payload).partition(partition);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((error, _)) if error.to_string().contains("Queue full") => {
                    for delivery in pending.drain(..) {
                        delivery.await?.map_err(|(e, _)| e)?;
                    }
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// A deployment directory with `mend.toml` holding `datasets`.
fn deployment(datasets: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique("scale-bench"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("mend.toml"), datasets)?;
    Ok(dir)
}

fn mend(dir: &std::path::Path, registry: &str, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(mend_bin()?);
    command
        .args(args)
        .env("MEND_CONFIG", dir.join("mend.toml"))
        .env("MEND_WAREHOUSE_URL", postgres())
        .env("MEND_KAFKA_BROKERS", BROKER)
        .env("MEND_REGISTRY_URL", registry)
        .env("MEND_GROUP_PREFIX", dir.file_name().and_then(|n| n.to_str()).unwrap_or("scale"))
        .env("MEND_AUDIT_SEALER", "false")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

async fn count_rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{table}\"")))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Loads `records` with `processes` loaders; records/s from their start to
/// the last row.
async fn loaders(
    processes: u32,
    records: i64,
    producer: &FutureProducer,
    registry: &str,
) -> anyhow::Result<(f64, f64, u64)> {
    let name = unique("scale").replace('-', "_");
    let topic = format!("{name}.orders");
    kafka::ensure_topics(BROKER, &[kafka::TopicSpec::new(&topic, PARTITIONS)]).await?;
    let subject = format!("{topic}-value");
    let http = reqwest::Client::new();
    mend_avro::registry::set_compatibility(&http, &registry_url(), &subject, "NONE").await?;
    let codec = mend_avro::codec::Codec::new(&registry_url())?;
    let ids = [codec.register(&subject, V1).await?, codec.register(&subject, V1_DOC).await?];
    produce(producer, &topic, &ids, records).await?;
    let dir = deployment(&format!("[[dataset]]\nname = \"{name}\"\ntopic = \"{topic}\"\ntable = \"{name}\"\n"))?;
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let start = Instant::now();
    let mut children = Vec::new();
    for k in 1..=processes {
        let log = std::fs::File::create(dir.join(format!("loader-{k}.log")))?;
        children.push(mend(&dir, registry, &["run", "loader"])?.env("RUST_LOG", "info").stderr(log).spawn()?);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let rows = count_rows(&pool, &name).await;
        if rows > 0 && first.is_none() {
            first = Some((Instant::now(), rows));
        }
        if rows >= records {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{processes} loaders did not load {records} records in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let (first_at, first_rows) = first.unwrap_or((start, 0));
    let steady = (records - first_rows) as f64 / first_at.elapsed().as_secs_f64();
    drop(children);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{name}\""))).execute(&pool).await?;
    println!("    (logs in {})", dir.display());
    Ok((records as f64 / elapsed.as_secs_f64(), steady, ids.len() as u64))
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// `mend up` over `count` datasets (one topic pattern); start-up time and
/// resident memory; with `drift`, the time from a drifted record on one of
/// them to its incident.
async fn up(count: usize, registry: &str, producer: &FutureProducer, drift: bool) -> anyhow::Result<()> {
    let prefix = unique("fleet").replace('-', "_");
    let topics: Vec<String> = (0..count).map(|i| format!("{prefix}.t{i:04}")).collect();
    let specs: Vec<kafka::TopicSpec> = topics.iter().map(|t| kafka::TopicSpec::new(t, 1)).collect();
    for chunk in specs.chunks(100) {
        kafka::ensure_topics(BROKER, chunk).await?;
    }
    let dir = deployment(&format!(
        "[[dataset]]\ntopic_pattern = \"{}\\\\..*\"\n[dataset.policy]\nfield_added = \"auto\"\n",
        prefix
    ))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let api = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let child = mend(&dir, registry, &["up"])?.env("MEND_API_ADDR", &api).spawn()?;
    let pid = child.id().context("mend up's pid")?;
    let health = format!("http://{api}/health");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "mend up over {count} datasets not healthy in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "  {count:>5} datasets: start-up {:.2} s, resident memory {} MiB",
        started.as_secs_f64(),
        rss_mib(pid).map_or("?".into(), |m| m.to_string())
    );
    if drift {
        // One dataset in the middle: first records establish its table,
        // then a record with an added field.
        let topic = &topics[count / 2];
        let dataset = topic.clone();
        let subject = format!("{topic}-value");
        let http = reqwest::Client::new();
        mend_avro::registry::set_compatibility(&http, &registry_url(), &subject, "NONE").await?;
        let codec = mend_avro::codec::Codec::new(&registry_url())?;
        let v1 = codec.register(&subject, V1).await?;
        let v2 = codec.register(&subject, V2).await?;
        let schema = Schema::parse_str(V1)?;
        let payload = [&[0u8][..], &v1.to_be_bytes()[..], &datum(&schema, 1, false)?].concat();
        producer
            .send(FutureRecord::to(topic).key("1").payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        let pool = sqlx::PgPool::connect(&postgres()).await?;
        let table = dataset.replace('.', "_");
        eventually("the first record loaded", || {
            let (pool, table) = (pool.clone(), table.clone());
            async move { Ok((count_rows(&pool, &table).await == 1).then_some(())) }
        })
        .await?;
        let schema = Schema::parse_str(V2)?;
        let payload = [&[0u8][..], &v2.to_be_bytes()[..], &datum(&schema, 2, true)?].concat();
        let sent = Instant::now();
        producer
            .send(FutureRecord::to(topic).key("2").payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        let incidents = format!("http://{api}/incidents");
        loop {
            let listed: serde_json::Value = reqwest::get(&incidents).await?.json().await?;
            if listed.as_array().is_some_and(|all| all.iter().any(|i| i["dataset"] == serde_json::json!(dataset))) {
                break;
            }
            anyhow::ensure!(sent.elapsed() < Duration::from_secs(120), "no incident for the drift in 2 min");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("  drift on one of {count} datasets to its incident: {:.2} s", sent.elapsed().as_secs_f64());
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{table}\""))).execute(&pool).await?;
    }
    drop(child);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: i64 = std::env::var("BENCH_RECORDS").ok().and_then(|r| r.parse().ok()).unwrap_or(600_000);
    let _broker = mend_tests::infra::Cluster::start(29292, 1).await.context("starting the bench's own Kafka")?;
    let producer: FutureProducer = kafka::producer_config(BROKER).set("linger.ms", "20").create()?;
    let (registry, requests) = counting_registry().await?;
    println!("scale bench: Apache Kafka at {BROKER}, PostgreSQL warehouse, mend {}", mend_bin()?.display());

    println!("loader throughput ({records} records, {PARTITIONS} partitions, 2 writer schemas):");
    for processes in 1..=3 {
        let before = requests.read();
        let (rate, steady, schemas) = loaders(processes, records, &producer, &registry).await?;
        let after = requests.read();
        let (lookups, other) = (after.0 - before.0, after.1 - before.1);
        println!(
            "  {processes} process(es): {rate:>9.0} records/s from start-up, {steady:>9.0} after the first row; registry: {lookups} schema look-ups ({:.1} per million \
             records) for {schemas} distinct schemas in {processes} process(es), {other} start-up requests",
            lookups as f64 * 1e6 / records as f64
        );
    }

    println!("mend up over many datasets (one topic_pattern):");
    for (count, drift) in [(10, false), (100, false), (1000, true)] {
        up(count, &registry, &producer, drift).await?;
    }
    Ok(())
}
