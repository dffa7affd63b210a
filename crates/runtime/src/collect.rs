//! Collecting records into batches for a runner, and the partitions a
//! runner in assign mode takes.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::handler::Inbound;
use crate::stall::StallWatch;
use crate::status::{RunnerContext, RunnerError};

/// Reads records into batches for a runner.
pub(crate) struct Collector {
    pub(crate) consumer: Arc<StreamConsumer<RunnerContext>>,
    pub(crate) max_batch: usize,
    pub(crate) max_bytes: usize,
    pub(crate) linger: Duration,
    /// A record taken from the consumer that did not fit the last batch.
    pub(crate) carried: Option<Inbound>,
    /// Partitions stuck behind a record the broker will not return.
    pub(crate) stalls: StallWatch,
}

impl Collector {
    /// Sends batches until `stop` is cancelled or the runner stops taking them.
    pub(crate) async fn run(
        mut self,
        batches: tokio::sync::mpsc::Sender<Result<Vec<Inbound>, RunnerError>>,
        stop: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                batch = self.collect() => batch,
            };
            if batch.as_ref().is_ok_and(Vec::is_empty) {
                return; // the consumer's stream ended (it does not while the consumer lives)
            }
            let failed = batch.is_err();
            if batches.send(batch).await.is_err() || failed {
                return;
            }
        }
    }

    /// Waits for a record, then takes up to `max_batch` records holding at
    /// most `max_bytes` (a larger record is a batch of its own), lingering at
    /// most `linger` for more once the first has arrived.
    async fn collect(&mut self) -> Result<Vec<Inbound>, RunnerError> {
        use futures::StreamExt as _;
        // One stream per batch: each `recv()` would register and unregister
        // a waker with the consumer, twice a lock per record.
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        let mut topic = None;
        if self.carried.is_none()
            && let Some(stuck) = self.stalls.look(&self.consumer).await
        {
            return Ok(vec![stuck]);
        }
        let first = match self.carried.take() {
            Some(record) => record,
            None => loop {
                match tokio::time::timeout(self.stalls.every, stream.next()).await {
                    Ok(Some(message)) => break Inbound::from_message(&message?, &mut topic),
                    Ok(None) => return Ok(Vec::new()),
                    Err(_idle) => {
                        if let Some(stuck) = self.stalls.look(&self.consumer).await {
                            return Ok(vec![stuck]);
                        }
                    }
                }
            },
        };
        let mut bytes = first.size();
        let mut batch = Vec::with_capacity(self.max_batch.min(4096));
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.linger;
        while batch.len() < self.max_batch {
            // Take what is already fetched without arming a timer per
            // record; wait (up to the linger) only when the queue is empty.
            let message = match futures::FutureExt::now_or_never(stream.next()) {
                Some(message) => message,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(message) => message,
                    Err(_elapsed) => break,
                },
            };
            let Some(message) = message else { break };
            let record = Inbound::from_message(&message?, &mut topic);
            if bytes + record.size() > self.max_bytes {
                self.carried = Some(record); // it starts the next batch
                break;
            }
            bytes += record.size();
            batch.push(record);
        }
        Ok(batch)
    }
}

/// Every partition of `topics`, from the group's committed offset; for the
/// topics in `at_end`, from their end when the group has committed nothing
/// there (blocking: metadata and offset requests).
pub(crate) fn list_partitions<C: Consumer<RunnerContext>>(
    consumer: &C,
    topics: &[String],
    at_end: &[String],
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions(consumer, topics)? {
        list.add_partition(&topic, partition);
    }
    start_offsets(consumer, list, at_end)
}

/// Every partition of `topics` (blocking: metadata requests).
pub(crate) fn partitions<C: Consumer<RunnerContext>>(
    consumer: &C,
    topics: &[String],
) -> Result<Vec<(String, i32)>, rdkafka::error::KafkaError> {
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        all.extend(metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| (topic.clone(), p.id()))));
    }
    Ok(all)
}

/// Where to start reading `list`: the group's committed offset; for the
/// topics in `at_end`, their end when the group has committed nothing there.
pub(crate) fn start_offsets<C: Consumer<RunnerContext>>(
    consumer: &C,
    list: TopicPartitionList,
    at_end: &[String],
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    // Explicit offsets: the committed one, else the start (or the end). A
    // start below the log's retention is reset to its earliest record
    // (`auto.offset.reset`). Measured on Tansu: the first record of a new
    // group arrives after 68 ms this way, after 550 ms with `Offset::Stored`
    // (librdkafka's own look-up and reset).
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ if at_end.iter().any(|t| t == element.topic()) => Offset::End,
            _ => Offset::Offset(0),
        };
        list.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    Ok(list)
}
