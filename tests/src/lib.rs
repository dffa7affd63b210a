//! Helpers for mend's end-to-end tests: they run against the real broker,
//! registry and databases that `make test` starts. Every test uses its own
//! topic, group, subject and table names, and waits for conditions, never
//! for durations.

use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn brokers() -> String {
    std::env::var("MEND_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn registry_url() -> String {
    std::env::var("MEND_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:18081".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Creates topics (the broker does not auto-create them).
pub async fn create_topic(name: &str, partitions: i32) -> anyhow::Result<()> {
    mend_shared::kafka::ensure_topics(&brokers(), &[mend_shared::kafka::TopicSpec::new(name, partitions)]).await?;
    Ok(())
}

pub fn producer() -> anyhow::Result<FutureProducer> {
    Ok(mend_shared::kafka::producer_config(&brokers()).create()?)
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
    let consumer: StreamConsumer = mend_shared::kafka::client_config(&brokers())
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
    let consumer: StreamConsumer = mend_shared::kafka::client_config(&brokers()).set("group.id", group).create()?;
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
    let http = reqwest::Client::new();
    let base = registry_url();
    http.put(format!("{base}/config/{subject}"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"compatibility":"NONE"}"#)
        .send()
        .await?
        .error_for_status()?;
    let response = http
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": schema }).to_string())
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    Ok(u32::try_from(body["id"].as_u64().context("no id")?)?)
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
