//! The `_schemas` topic as the registry's storage: a reader task applies every
//! record to the [`Schemas`] in log order; writers append a record and wait until
//! the reader has applied it, so a write is visible to the writer's next read
//! and the state is always exactly what the log says.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use mend_runtime::kafka::{self, TopicSpec};

use crate::store::{LogKey, Schemas};

/// How long a write or a catch-up may wait for the log.
const LOG_TIMEOUT: Duration = Duration::from_secs(15);

/// The log is unreachable or too slow: the registry answers 50001/50002.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("schema log unavailable: {0}")]
    Unavailable(String),
    #[error("timed out waiting for the schema log")]
    Timeout,
}

/// Reader and writer of the schema log.
pub struct Log {
    topic: String,
    producer: FutureProducer,
    metadata: Arc<BaseConsumer>,
    applied: watch::Receiver<i64>,
}

impl Log {
    /// Creates the topic when missing (one partition, compacted), starts the
    /// reader and waits until everything already in the log is applied.
    pub async fn open(
        brokers: &str,
        topic: &str,
        store: Arc<RwLock<Schemas>>,
        shutdown: CancellationToken,
    ) -> Result<Self, LogError> {
        kafka::ensure_topics(brokers, &[TopicSpec::new(topic, 1).compacted()])
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        let unavailable = |e: rdkafka::error::KafkaError| LogError::Unavailable(e.to_string());
        let producer: FutureProducer =
            kafka::producer_config(brokers).set("linger.ms", "0").create().map_err(unavailable)?;
        let metadata: BaseConsumer = kafka::client_config(brokers).create().map_err(unavailable)?;
        // Kafka answers its fetch as soon as a write lands: a write waits
        // to see itself applied for no longer than that.
        let reader: StreamConsumer = kafka::reader_config(brokers)
            .set("group.id", format!("mend-registry-reader-{}", uuid::Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(unavailable)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning).map_err(unavailable)?;
        reader.assign(&assignment).map_err(unavailable)?;

        let (applied_tx, applied) = watch::channel(-1_i64);
        tokio::spawn(read_forever(reader, store, applied_tx, shutdown));
        let log = Self { topic: topic.to_owned(), producer, metadata: Arc::new(metadata), applied };
        // Right after the broker starts, the log's partition may have no
        // leader yet (NotLeaderForPartition): opening asks again, for as long
        // as a write would wait, before it gives up.
        let deadline = tokio::time::Instant::now() + LOG_TIMEOUT;
        loop {
            match log.catch_up().await {
                Ok(()) => return Ok(log),
                Err(LogError::Unavailable(error)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%error, "the schema log is not readable yet; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits until every record written to the log before this call is applied.
    pub async fn catch_up(&self) -> Result<(), LogError> {
        let metadata = self.metadata.clone();
        let topic = self.topic.clone();
        let (_low, high) = tokio::task::spawn_blocking(move || metadata.fetch_watermarks(&topic, 0, LOG_TIMEOUT))
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        self.wait_applied(high - 1).await
    }

    /// Appends a record (None is a tombstone) and waits until it is applied.
    pub async fn append<V: Serialize>(&self, key: &LogKey, value: Option<&V>) -> Result<i64, LogError> {
        let key = serde_json::to_vec(key).map_err(|e| LogError::Unavailable(e.to_string()))?;
        let value = value.map(serde_json::to_vec).transpose().map_err(|e| LogError::Unavailable(e.to_string()))?;
        let mut record = FutureRecord::to(&self.topic).key(&key).partition(0);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        let delivery =
            self.producer.send(record, LOG_TIMEOUT).await.map_err(|(e, _)| LogError::Unavailable(e.to_string()))?;
        self.wait_applied(delivery.offset).await?;
        Ok(delivery.offset)
    }

    async fn wait_applied(&self, offset: i64) -> Result<(), LogError> {
        let mut applied = self.applied.clone();
        tokio::time::timeout(LOG_TIMEOUT, applied.wait_for(|a| *a >= offset))
            .await
            .map_err(|_| LogError::Timeout)?
            .map_err(|_| LogError::Unavailable("the log reader stopped".into()))?;
        Ok(())
    }
}

async fn read_forever(
    reader: StreamConsumer,
    store: Arc<RwLock<Schemas>>,
    applied: watch::Sender<i64>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = reader.recv() => message,
        };
        match message {
            Ok(message) => {
                if let Some(key) = message.key() {
                    match store.write() {
                        Ok(mut store) => store.apply(key, message.payload()),
                        Err(poisoned) => poisoned.into_inner().apply(key, message.payload()),
                    }
                }
                let _ = applied.send(message.offset());
            }
            Err(error) => {
                tracing::warn!(%error, "reading the schema log failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
