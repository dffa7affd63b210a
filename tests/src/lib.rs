//! Helpers for mend's end-to-end tests: they run against the real broker,
//! registry and databases that `make test` starts. Every test uses its own
//! topic, group, subject and table names, and waits for conditions, never
//! for durations.

pub mod anthropic;
pub mod infra;
pub mod story;

use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// A test's own broker and registry, in place of `make test`'s (see [`point_at`]).
static OWN: std::sync::RwLock<Option<(String, String)>> = std::sync::RwLock::new(None);

/// Points every helper of this test process, and every mend process it
/// starts, at `brokers` and `registry_url` (a cluster of the test's own).
pub fn point_at(brokers: &str, registry_url: &str) {
    if let Ok(mut own) = OWN.write() {
        *own = Some((brokers.to_owned(), registry_url.to_owned()));
    }
}

fn own() -> Option<(String, String)> {
    OWN.read().ok().and_then(|own| own.clone())
}

pub fn brokers() -> String {
    own()
        .map(|(brokers, _)| brokers)
        .unwrap_or_else(|| std::env::var("MEND_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into()))
}

pub fn registry_url() -> String {
    own()
        .map(|(_, registry)| registry)
        .unwrap_or_else(|| std::env::var("MEND_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:18081".into()))
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Creates topics (the broker does not auto-create them).
pub async fn create_topic(name: &str, partitions: i32) -> anyhow::Result<()> {
    mend_runtime::kafka::ensure_topics(&brokers(), &[mend_runtime::kafka::TopicSpec::new(name, partitions)]).await?;
    Ok(())
}

pub fn producer() -> anyhow::Result<FutureProducer> {
    Ok(mend_runtime::kafka::producer_config(&brokers()).create()?)
}

/// Produces one record and waits for its delivery.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &[u8], payload: &[u8]) -> anyhow::Result<(i32, i64)> {
    let delivery = producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// Reads `topic` from the beginning until `done` holds for the records read so
/// far (records failing `keep` are skipped), or fails after [`WAIT`].
pub async fn consume_until(
    topic: &str,
    keep: impl Fn(&OwnedMessage) -> bool,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: StreamConsumer = mend_runtime::kafka::reader_config(&brokers())
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => {
                let message = message?.detach();
                if keep(&message) {
                    seen.push(message);
                }
            }
            Err(_) => bail!("timed out reading {topic}: {} matching records so far", seen.len()),
        }
    }
    Ok(seen)
}

/// Reads exactly `n` records with key `key` from `topic` (fails on timeout).
pub async fn consume_keyed(topic: &str, key: &str, n: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    consume_until(topic, |m| m.key() == Some(key.as_bytes()), |seen| seen.len() >= n).await
}

/// The offset committed by `group` on partition 0 of `topic` (None when nothing is committed).
pub fn committed_offset(group: &str, topic: &str) -> anyhow::Result<Option<i64>> {
    let consumer: StreamConsumer = mend_runtime::kafka::client_config(&brokers()).set("group.id", group).create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).context("committed offsets")?;
    let element = committed.find_partition(topic, 0).context("partition missing")?;
    Ok(match element.offset() {
        rdkafka::Offset::Offset(offset) => Some(offset),
        _ => None,
    })
}

/// The `mend` binary under test (`MEND_BIN`, else the debug build).
pub fn mend_bin() -> anyhow::Result<std::path::PathBuf> {
    let path = match std::env::var("MEND_BIN") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            std::path::PathBuf::from(target).join("debug/mend")
        }
    };
    anyhow::ensure!(path.exists(), "{} is missing: build it with `cargo build -p mend`", path.display());
    Ok(path)
}

/// The PostgreSQL warehouse tests use.
pub fn postgres_url() -> String {
    std::env::var("MEND_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/warehouse".into())
}

/// Registers `schema` under `subject` (compatibility NONE first, as upstream
/// teams that change types do) and returns its id.
pub async fn register_schema(subject: &str, schema: &str) -> anyhow::Result<u32> {
    let registry = registry_url();
    mend_avro::registry::set_compatibility(&reqwest::Client::new(), &registry, subject, "NONE").await?;
    Ok(mend_avro::codec::Codec::new(&registry)?.register(subject, schema).await?)
}

/// Polls `check` until it returns Some, or fails after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The incidents the control API at `api` (host:port) lists, as its typed
/// model.
pub async fn incidents(api: &str) -> anyhow::Result<Vec<mend_model::api::Incident>> {
    Ok(reqwest::get(format!("http://{api}/incidents")).await?.error_for_status()?.json().await?)
}

/// One incident by id, from the control API at `api` (host:port).
pub async fn incident(api: &str, id: &str) -> anyhow::Result<mend_model::api::Incident> {
    Ok(reqwest::get(format!("http://{api}/incidents/{id}")).await?.error_for_status()?.json().await?)
}

/// The first incident at `api` (host:port) that `pick` matches, once one does.
pub async fn incident_where(
    api: &str,
    what: &str,
    pick: impl Fn(&mend_model::api::Incident) -> bool,
) -> anyhow::Result<mend_model::api::Incident> {
    let pick = &pick;
    eventually(what, move || async move { Ok(incidents(api).await?.into_iter().find(|i| pick(i))) }).await
}

/// One isolated mend deployment: its own dataset (`<name>.orders` → table
/// `<name>`, keyed by `id`), config, warehouse, API port and consumer groups.
pub struct Deployment {
    pub dir: std::path::PathBuf,
    pub dataset: String,
    pub warehouse: String,
    pub api: String,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

impl Deployment {
    /// `warehouse` is `sqlite` or `postgres`; `extra` is appended to mend.toml
    /// (dataset tables such as `[dataset.policy]` come right after the dataset).
    pub fn new(warehouse: &str, extra: &str) -> anyhow::Result<Self> {
        let name = unique("heal").replace('-', "_");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let warehouse =
            if warehouse == "sqlite" { format!("sqlite://{}/warehouse.db", dir.display()) } else { postgres_url() };
        std::fs::write(
            dir.join("mend.toml"),
            format!(
                "[[dataset]]\nname = \"{name}\"\ntopic = \"{name}.orders\"\ntable = \"{name}\"\nkey = [\"id\"]\n{extra}"
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Self { dir, dataset: name, warehouse, api: format!("127.0.0.1:{port}"), env: Vec::new() })
    }

    /// The dataset's source topic.
    pub fn topic(&self) -> String {
        format!("{}.orders", self.dataset)
    }

    /// A `mend` command for this deployment.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(mend_bin()?);
        command
            .args(args)
            .env("MEND_CONFIG", self.dir.join("mend.toml"))
            .env("MEND_WAREHOUSE_URL", &self.warehouse)
            .env("MEND_API_ADDR", &self.api)
            .env("MEND_KAFKA_BROKERS", brokers())
            .env("MEND_REGISTRY_URL", registry_url())
            .env("MEND_GROUP_PREFIX", &self.dataset)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true);
        Ok(command)
    }

    /// Starts `mend up` (stderr to `log` in the deployment's directory) and
    /// waits until every service is consuming.
    pub async fn up(&self, log: &str) -> anyhow::Result<tokio::process::Child> {
        let log = std::fs::File::create(self.dir.join(log))?;
        let child = self.command(&["up"])?.stdout(std::process::Stdio::null()).stderr(log).spawn()?;
        let health = format!("http://{}/health", self.api);
        eventually("mend up to be healthy", || {
            let health = health.clone();
            async move { Ok(reqwest::get(&health).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await?;
        Ok(child)
    }

    /// What `/health` of the deployment's `mend up` says.
    pub async fn health(&self) -> anyhow::Result<mend_model::api::Health> {
        Ok(reqwest::get(format!("http://{}/health", self.api)).await?.json().await?)
    }
}

/// Produces one Avro record in the Confluent wire format (schema `id`).
pub async fn produce_avro(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    schema_id: u32,
    schema: &apache_avro::Schema,
    value: apache_avro::types::Value,
) -> anyhow::Result<()> {
    #[allow(deprecated)]
    let datum = apache_avro::to_avro_datum(schema, value)?;
    let payload = [&[0u8][..], &schema_id.to_be_bytes()[..], &datum].concat();
    produce(producer, topic, key.as_bytes(), &payload).await?;
    Ok(())
}
