//! mend beside the peer a streaming-ingestion team would pick instead:
//! Kafka Connect 4.4.0 with Debezium's JDBC sink, reading the same Avro
//! records from the same broker through Apicurio's converter in
//! Confluent's wire format against mend's registry (`make peers` installs
//! it; `infra/peers.sh`). Needs `make infra-up` (the registry and
//! PostgreSQL); starts its own one-node Kafka (127.0.0.1:29192) and the
//! Connect worker on it.
//!
//! The same `BENCH_RECORDS` records (default 1,000,000; one partition, so
//! one task for Connect, as its docs advise tasks = partitions), the same
//! table shape, append-only and keyed (upsert on `id`), each loaded by:
//! mend's loader (in this process), the Connect sink (`batch.size` and
//! the consumer's `max.poll.records` raised to 10,000, its docs' tuning
//! knobs), dlt 1.31 (PyPI; confluent-kafka's consumer decoding the Avro
//! and handing it over in batches of 10,000, as dlt's Kafka source does;
//! `merge` on `id` when keyed; `infra/peers/dlt_load.py`), and COPY of
//! the same rows (the limit). Prints rows/s, each ratio to COPY and to
//! mend, and CPU seconds per million rows: the loader's process (this one,
//! the Connect worker's JVM from `/proc/<pid>/stat`, or dlt's Python and
//! its children), and PostgreSQL's (the postmaster with every backend,
//! live and reaped) for each.
//!
//! Then the drift story (`tests/src/story.rs`, as the drift and chaos
//! tests tell it: a field added, widened, renamed, enum symbols added, a
//! required field removed, a nested field added; then the demo's
//! incompatible change, the renamed amount from double to string) through
//! both, from topics of their own: the Connect sink with its schema
//! evolution on (`schema.evolution=basic`, nested records flattened by
//! Kafka's `Flatten` transform, as its docs advise for nested values),
//! once through the story in order and once per change on a table of the
//! version before it (so that one stop does not hide what the next change
//! does); and `mend up` under the story's policy (every change healed on
//! its own but the incompatible one). For each change and each tool: rows loaded, lost,
//! in the wrong column (a value not where a query written for the first
//! schema finds it), whether the task stopped, the time until that
//! version's rows flowed, and what a person had to do.
//!
//! Run: `make peers` once, then `cargo bench -p mend-tests --bench peers`
//! (`BENCH_ONLY=throughput` or `BENCH_ONLY=drift` runs one part).

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use common::{BROKER, V1, copy_baseline, dataset, drop_table, load, postgres, produce, register};
use mend_runtime::kafka;
use mend_tests::story::{self, Expected};
use mend_tests::{Deployment, produce_avro, register_schema, unique};
use serde_json::{Value, json};

const CONNECT: &str = "http://127.0.0.1:18083";

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// The Connect worker, started by `infra/peers.sh up` and stopped on drop.
struct Peer {
    dir: PathBuf,
    pid: u32,
}

impl Peer {
    fn start(brokers: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("peers"));
        let status = std::process::Command::new(script()).args(["up", brokers, &dir.to_string_lossy()]).status()?;
        ensure!(status.success(), "infra/peers.sh up failed (run `make peers` first; its log is in {})", dir.display());
        let pid = std::fs::read_to_string(dir.join("connect.pid"))?.trim().parse()?;
        Ok(Self { dir, pid })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script()).args(["down", &self.dir.to_string_lossy()]).status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/peers.sh")
}

/// CPU seconds of a process (`with_children`: and of its reaped children).
fn cpu_of(pid: u32, with_children: bool) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis, from the state (3rd).
    let fields: Vec<&str> = stat.rsplit_once(')').context("no ')' in stat")?.1.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<f64> { Ok(fields.get(n - 3).context("short stat")?.parse::<f64>()?) };
    let mut ticks = field(14)? + field(15)?;
    if with_children {
        ticks += field(16)? + field(17)?;
    }
    Ok(ticks / TICKS)
}

/// PostgreSQL's CPU seconds: the postmaster's reaped children and every
/// live backend.
fn postgres_cpu() -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        if comm.trim() != "postgres" {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim).unwrap_or_default();
        let postmaster = std::fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|c| c.trim() != "postgres");
        total += cpu_of(pid, postmaster).unwrap_or(0.0);
    }
    Ok(total)
}

/// One loader's figures.
struct Run {
    rate: f64,
    /// Rows/s after the first rows were in (the steady state).
    steady: f64,
    /// CPU seconds of the loader's own process, and of PostgreSQL.
    cpu: f64,
    postgres_cpu: f64,
}

async fn rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    rows_in(pool, &format!("\"{table}\"")).await
}

/// Rows of a table named as SQL names it (quoted, maybe qualified); 0 when
/// it is missing.
async fn rows_in(pool: &sqlx::PgPool, qualified: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {qualified}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap_or(0)
}

/// Debezium's JDBC sink on `topic` into `table` of the warehouse, one task,
/// schema evolution on, from the topic's start.
fn sink_config(topic: &str, table: &str) -> anyhow::Result<Value> {
    let url = reqwest::Url::parse(&postgres())?;
    let host = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432));
    Ok(json!({
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": "1",
        "topics": topic,
        "table.name.format": table,
        "connection.url": format!("jdbc:postgresql://{host}{}", url.path()),
        "connection.username": url.username(),
        "connection.password": url.password().unwrap_or_default(),
        "schema.evolution": "basic",
        "consumer.override.auto.offset.reset": "earliest",
    }))
}

/// A connector of the Connect worker, through its REST API.
struct Connector {
    http: reqwest::Client,
    name: String,
}

impl Connector {
    async fn create(name: &str, config: &Value) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        http.post(format!("{CONNECT}/connectors"))
            .json(&json!({"name": name, "config": config}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("creating the connector {name}"))?;
        Ok(Self { http, name: name.to_owned() })
    }

    /// Its task's stack trace once the task has failed (the worker's own
    /// payload, read by key); None while it runs or cannot be asked.
    async fn failure(&self) -> Option<String> {
        let url = format!("{CONNECT}/connectors/{}/status", self.name);
        let status: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        let task = &status["tasks"][0];
        (task["state"] == "FAILED").then(|| task["trace"].as_str().unwrap_or_default().to_owned())
    }

    async fn delete(self) -> anyhow::Result<()> {
        self.http.delete(format!("{CONNECT}/connectors/{}", self.name)).send().await?.error_for_status()?;
        Ok(())
    }
}

/// The Connect sink on `topic` into `table` until it holds `records` rows:
/// from the connector's creation to the last row, and what it cost.
async fn connect_sink(peer: &Peer, topic: &str, records: i64, keyed: bool) -> anyhow::Result<Run> {
    let table = unique("peer").replace('-', "_");
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let mut config = sink_config(topic, &table)?;
    config["insert.mode"] = json!(if keyed { "upsert" } else { "insert" });
    config["batch.size"] = json!("10000");
    config["consumer.override.max.poll.records"] = json!("10000");
    if keyed {
        config["primary.key.mode"] = json!("record_value");
        config["primary.key.fields"] = json!("id");
    }
    let (cpu, pg_cpu, began) = (cpu_of(peer.pid, false)?, postgres_cpu()?, Instant::now());
    let connector = Connector::create(&table, &config).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut first = None;
    loop {
        let loaded = rows(&pool, &table).await;
        if first.is_none() && loaded > 0 {
            first = Some((began.elapsed(), loaded));
        }
        if loaded >= records {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Connect sink did not load {records} rows in 30 minutes");
        }
        if let Some(trace) = connector.failure().await {
            bail!("the Connect sink's task failed: {trace}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let (first_at, first_rows) = first.context("no rows")?;
    let run = Run {
        rate: records as f64 / elapsed,
        steady: (records - first_rows) as f64 / (elapsed - first_at.as_secs_f64()),
        cpu: cpu_of(peer.pid, false)? - cpu,
        postgres_cpu: postgres_cpu()? - pg_cpu,
    };
    connector.delete().await?;
    drop_table(&table).await?;
    Ok(run)
}

/// dlt on `topic` (`infra/peers/dlt_load.py` in its venv): from the
/// script's start (Python's imports included) to its exit, and what it
/// cost; `steady` is from its pipeline's start.
async fn dlt(topic: &str, records: i64, keyed: bool) -> anyhow::Result<Run> {
    let python = Path::new(&std::env::var("HOME")?).join(".cache/mend/dlt-1.31/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/peers/dlt_load.py");
    let (dataset, table) = ("peers_dlt", unique("t").replace('-', "_"));
    let disposition = if keyed { "merge" } else { "append" };
    // dlt refuses credentials without a password; a server trusting
    // loopback connections ignores it.
    let mut dsn = reqwest::Url::parse(&postgres())?;
    if dsn.password().is_none() {
        let _ = dsn.set_password(Some("unused"));
    }
    let pg_cpu = postgres_cpu()?;
    let began = Instant::now();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([BROKER, &mend_tests::registry_url(), topic, &records.to_string(), dsn.as_str(), dataset, &table])
        .arg(disposition)
        .output()
        .await
        .with_context(|| format!("running {} (infra/peers.sh install makes it)", python.display()))?;
    let elapsed = began.elapsed().as_secs_f64();
    ensure!(output.status.success(), "dlt failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value =
        serde_json::from_slice(output.stdout.rsplit(|b| *b == b'\n').find(|l| !l.is_empty()).unwrap_or_default())
            .context("dlt_load.py printed no report")?;
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let qualified = format!("\"{dataset}\".\"{table}\"");
    let loaded = rows_in(&pool, &qualified).await;
    ensure!(loaded == records, "dlt loaded {loaded} of {records} rows");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {qualified}"))).execute(&pool).await?;
    Ok(Run {
        rate: records as f64 / elapsed,
        steady: records as f64 / report["seconds"].as_f64().context("no seconds")?,
        cpu: report["cpu"].as_f64().context("no cpu")?,
        postgres_cpu: postgres_cpu()? - pg_cpu,
    })
}

/// mend's loader (in this process) on `topic`.
async fn mend_loader(topic: &str, records: i64, keyed: bool) -> anyhow::Result<Run> {
    let name = unique("bench_mend").replace('-', "_");
    let key: &[&str] = if keyed { &["id"] } else { &[] };
    let pg_cpu = postgres_cpu()?;
    let loaded = load(dataset(&name, topic, key), records).await?;
    Ok(Run {
        rate: loaded.rate,
        steady: loaded.steady,
        cpu: loaded.cpu.as_secs_f64(),
        postgres_cpu: postgres_cpu()? - pg_cpu,
    })
}

/// Records per version of the drift story.
const PER: i64 = 50;
/// The story's versions, and the incompatible change after them.
const STORY: u8 = story::VERSIONS + 1;
/// How long a version's rows are waited for before they count as not
/// flowing.
const PATIENCE: Duration = Duration::from_secs(90);

const CHANGES: [&str; STORY as usize] = [
    "baseline",
    "field added (coupon)",
    "int widened to long (qty)",
    "renamed, no alias (amount -> total)",
    "enum symbol added (status)",
    "required field removed (qty)",
    "nested field added (ship.zip)",
    "incompatible: double -> string (total)",
];

/// The story's schema of `version`; the last is the demo's incompatible
/// change, the renamed amount from double to string.
fn story_schema(version: u8) -> Value {
    if version <= story::VERSIONS {
        return story::schema(version);
    }
    let mut schema = story::schema(story::VERSIONS);
    if let Some(fields) = schema["fields"].as_array_mut() {
        for field in fields.iter_mut().filter(|f| f["name"] == "total") {
            field["type"] = json!("string");
        }
    }
    schema
}

fn story_record(version: u8, id: i64, e: &Expected) -> Avro {
    let record = story::record(version.min(story::VERSIONS), id, e);
    match record {
        Avro::Record(fields) if version > story::VERSIONS => Avro::Record(
            fields
                .into_iter()
                .map(|(name, value)| match (name.as_str(), value) {
                    ("total", _) => (name, Avro::String(format!("{:.2} EUR", e.amount))),
                    (_, value) => (name, value),
                })
                .collect(),
        ),
        other => other,
    }
}

/// What one tool made of one version of the story.
#[derive(Debug, Default)]
struct Outcome {
    loaded: i64,
    lost: i64,
    /// Loaded, with a value not where a query of the first schema finds it.
    misplaced: i64,
    /// Held in quarantine (mend), neither loaded nor lost.
    held: i64,
    stopped: bool,
    /// From the version's first record to its last row loaded.
    flowed: Option<Duration>,
    person: String,
}

/// Whether a row (as JSON) holds what a query written for the schema the
/// table was made from expects: its column names (amount, or total in a
/// table made after the rename), the nested city flat (Connect) or in the
/// JSON column (mend).
fn in_place(row: &Value, e: &Expected, version: u8) -> bool {
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    let city = row.get("ship__city").or_else(|| row.get("ship").and_then(|s| s.get("city")));
    let zip = row.get("ship__zip").or_else(|| row.get("ship").and_then(|s| s.get("zip")));
    // A table made from a version after the rename has no amount column:
    // its queries read total.
    let amount = row.get("amount").or_else(|| row.get("total")).and_then(number);
    row["email"] == json!(e.email)
        && row.get("qty").and_then(number).map(|q| q as i64) == e.qty
        // The incompatible version's amount is text: held, never loaded as a number.
        && (version > story::VERSIONS || amount.is_some_and(|a| (a - e.amount).abs() < 1e-9))
        && row["status"] == json!(e.status)
        && row.get("coupon").and_then(Value::as_str) == e.coupon.as_deref()
        && city == Some(&json!(e.city))
        && zip.and_then(Value::as_str) == e.zip.as_deref()
}

/// The rows of `table` with ids in `ids`, as JSON.
async fn rows_of(pool: &sqlx::PgPool, table: &str, ids: &std::ops::Range<i64>) -> Vec<Value> {
    let sql = format!(
        "SELECT row_to_json(t)::text FROM \"{table}\" t WHERE id >= {} AND id < {} ORDER BY id",
        ids.start, ids.end
    );
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap_or_default();
    rows.iter().filter_map(|row| serde_json::from_str(row).ok()).collect()
}

/// Produces version `version` of the story on `topic` (ids of its own).
async fn produce_version(topic: &str, version: u8) -> anyhow::Result<std::ops::Range<i64>> {
    let text = story_schema(version).to_string();
    let id = register_schema(&format!("{topic}-value"), &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let producer: rdkafka::producer::FutureProducer = kafka::producer_config(BROKER).create()?;
    let ids = i64::from(version - 1) * PER..i64::from(version) * PER;
    for order in ids.clone() {
        let e = story::expected(version.min(story::VERSIONS), order);
        produce_avro(&producer, topic, &order.to_string(), id, &parsed, story_record(version, order, &e)).await?;
    }
    Ok(ids)
}

/// Waits for `ids` to be in `table`, or for `settled` to say the tool is
/// done with them otherwise (Some(true): it stopped), and reads what landed.
async fn settle(
    pool: &sqlx::PgPool,
    table: &str,
    version: u8,
    ids: &std::ops::Range<i64>,
    began: Instant,
    mut settled: impl AsyncFnMut() -> Option<bool>,
) -> Outcome {
    let mut outcome = Outcome::default();
    while began.elapsed() < PATIENCE {
        if rows_of(pool, table, ids).await.len() as i64 >= PER {
            outcome.flowed = Some(began.elapsed());
            break;
        }
        if let Some(stopped) = settled().await {
            outcome.stopped = stopped;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = rows_of(pool, table, ids).await;
    outcome.loaded = rows.len() as i64;
    outcome.misplaced = rows
        .iter()
        .filter(|row| {
            let id = row["id"].as_i64().unwrap_or(-1);
            !in_place(row, &story::expected(version.min(story::VERSIONS), id), version)
        })
        .count() as i64;
    outcome
}

/// `versions` of the story, in order, through a Connect sink of their own
/// (a topic, connector and table), schema evolution on: each version's
/// outcome. After the task stops, the rest wait behind it in the topic.
async fn connect_story(versions: &[u8]) -> anyhow::Result<Vec<Outcome>> {
    let (topic, table) = (unique("peers-story"), unique("peer_story").replace('-', "_"));
    kafka::ensure_topics(BROKER, &[kafka::TopicSpec::new(&topic, 1)]).await?;
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let mut config = sink_config(&topic, &table)?;
    for (key, value) in [
        ("insert.mode", "upsert"),
        ("primary.key.mode", "record_value"),
        ("primary.key.fields", "id"),
        ("transforms", "flat"),
        ("transforms.flat.type", "org.apache.kafka.connect.transforms.Flatten$Value"),
        ("transforms.flat.delimiter", "__"),
    ] {
        config[key] = json!(value);
    }
    let mut connector = None;
    let mut outcomes = Vec::new();
    let mut stopped_at: Option<(u8, String)> = None;
    for (n, &version) in versions.iter().enumerate() {
        let began = Instant::now();
        let ids = produce_version(&topic, version).await?;
        if n == 0 {
            connector = Some(Connector::create(&table, &config).await?);
        }
        let sink = connector.as_ref().context("no connector")?;
        let mut outcome =
            settle(&pool, &table, version, &ids, began, async || sink.failure().await.map(|_| true)).await;
        if outcome.stopped && stopped_at.is_none() {
            let trace = sink.failure().await.unwrap_or_default();
            let cause = trace.lines().rfind(|l| l.contains("Caused by")).unwrap_or("no cause given");
            let cause = cause.rsplit(": ").next().unwrap_or(cause).trim().to_owned();
            stopped_at = Some((version, cause));
        }
        // Behind a stopped task the records wait in the topic: not lost,
        // not loaded until a person fixes what stopped it.
        if stopped_at.is_some() {
            outcome.held = PER - outcome.loaded;
        }
        outcome.lost = PER - outcome.loaded - outcome.held;
        outcome.person = match (&stopped_at, outcome.misplaced) {
            (Some((at, cause)), _) if *at == version => {
                format!("the task stopped ({cause}): change the table by hand, restart the task")
            }
            (Some((at, _)), _) => format!("waits behind the stop at v{at}"),
            (None, 0) if outcome.lost == 0 => "nothing".into(),
            (None, 0) => "find the missing rows".into(),
            (None, _) => "notice values in a new column, move them back, fix the queries".into(),
        };
        outcomes.push(outcome);
    }
    if let Some(connector) = connector {
        connector.delete().await?;
    }
    Ok(outcomes)
}

/// The story through `mend up`, the story's policy (everything but the
/// incompatible change heals on its own).
async fn drift_mend() -> anyhow::Result<Vec<Outcome>> {
    let mut deployment = Deployment::new("postgres", story::POLICY)?;
    deployment.env.push(("MEND_KAFKA_BROKERS".into(), BROKER.into()));
    let mut up = deployment.up("peers-story.log").await?;
    let pool = sqlx::PgPool::connect(&postgres()).await?;
    let mut outcomes = Vec::new();
    for version in 1..=STORY {
        let began = Instant::now();
        let ids = produce_version(&deployment.topic(), version).await?;
        // Records quarantined and not loaded since: held for a person.
        let held = async || -> i64 {
            sqlx::query_scalar("SELECT count(*) FROM mend_quarantined WHERE dataset = $1 AND NOT loaded")
                .bind(&deployment.dataset)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
        };
        let blocked = version > story::VERSIONS;
        let mut outcome = settle(&pool, &deployment.dataset, version, &ids, began, async || {
            (blocked && held().await >= PER).then_some(false)
        })
        .await;
        if blocked {
            outcome.held = held().await;
        }
        outcome.lost = PER - outcome.loaded - outcome.held;
        outcome.person = if outcome.held > 0 {
            "decide the blocked change (records held, replayed once a plan is approved)".into()
        } else {
            "nothing (the story's policy: auto)".into()
        };
        outcomes.push(outcome);
    }
    up.kill().await?;
    Ok(outcomes)
}

fn print_drift(connect: &[Outcome], alone: &[Outcome], mend: &[Outcome]) {
    println!(
        "drift story, {PER} records per version: loaded / lost / in the wrong column / waiting (mend: held in \
         quarantine; Connect: in the topic behind a stopped task); the task; rows flowing after; what a person does"
    );
    for (tool, outcomes, skip) in [
        ("Connect + Debezium JDBC sink (schema.evolution=basic), the story in order", connect, 0),
        (
            "Connect + Debezium JDBC sink, each change alone (a table of the version before it, then the change)",
            alone,
            1,
        ),
        ("mend up, the story in order", mend, 0),
    ] {
        println!("  {tool}");
        for (change, o) in CHANGES.iter().skip(skip).zip(outcomes) {
            let flowed = o.flowed.map_or_else(|| "never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
            println!(
                "    {change:<38} {:>3} / {:>3} / {:>3} / {:>3}  {:<8} {flowed:>7}  {}",
                o.loaded,
                o.lost,
                o.misplaced,
                o.held,
                if o.stopped { "stopped" } else { "running" },
                o.person
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: i64 = std::env::var("BENCH_RECORDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1_000_000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let _telemetry = mend_runtime::telemetry::init("bench");
    let broker = mend_tests::infra::Cluster::start(29192, 1).await.context("starting the bench's own Kafka")?;
    let peer = Peer::start(BROKER)?;
    let mut specs = kafka::audit_topics(1);
    specs.push(kafka::TopicSpec::new(mend_model::topics::SCHEMAS, 1));
    kafka::ensure_topics(BROKER, &specs).await?;
    if only != "drift" {
        throughput(&peer, records).await?;
    }
    if only != "throughput" {
        let versions: Vec<u8> = (1..=STORY).collect();
        let connect = connect_story(&versions).await?;
        let mut alone = Vec::new();
        for version in 2..=STORY {
            alone.extend(connect_story(&[version - 1, version]).await?.pop());
        }
        let mend = drift_mend().await?;
        print_drift(&connect, &alone, &mend);
    }
    drop(peer);
    drop(broker);
    Ok(())
}

async fn throughput(peer: &Peer, records: i64) -> anyhow::Result<()> {
    println!("peers bench: {records} records, one partition, Apache Kafka at {BROKER}, PostgreSQL");
    let topic = unique("peers-orders");
    kafka::ensure_topics(BROKER, &[kafka::TopicSpec::new(&topic, 1)]).await?;
    let id = register(&format!("{topic}-value"), V1).await?;
    produce(BROKER, &topic, id, &Schema::parse_str(V1)?, 0, records, false).await?;

    let per_million = |seconds: f64| seconds / records as f64 * 1e6;
    for keyed in [false, true] {
        let mend = mend_loader(&topic, records, keyed).await?;
        let connect = connect_sink(peer, &topic, records, keyed).await?;
        let dlt = dlt(&topic, records, keyed).await?;
        let copy = copy_baseline(records, keyed).await?;
        println!("{}", if keyed { "keyed (upsert on id)" } else { "append-only" });
        println!(
            "  {:<28} {:>10} {:>8} {:>8} {:>14} {:>14} {:>16}",
            "", "rows/s", "x COPY", "x mend", "CPU s/M rows", "PG CPU s/M", "steady rows/s"
        );
        for (who, run) in [("mend loader", &mend), ("Connect + Debezium JDBC sink", &connect), ("dlt", &dlt)] {
            println!(
                "  {who:<28} {:>10.0} {:>8.2} {:>8.2} {:>14.2} {:>14.2} {:>16.0}",
                run.rate,
                run.rate / copy,
                run.rate / mend.rate,
                per_million(run.cpu),
                per_million(run.postgres_cpu),
                run.steady
            );
        }
        println!(
            "  {:<28} {copy:>10.0} {:>8.2} {:>8.2}",
            if keyed { "COPY + upsert" } else { "COPY" },
            1.0,
            copy / mend.rate
        );
    }
    Ok(())
}
