//! A partition stuck behind a record the broker will not return.
//!
//! Kafka returns a partition's first record even when it is larger than the
//! fetch size (KIP-74). Tansu 0.6 returns nothing instead (it caps a fetch at
//! 5 MiB), so every reader of that partition would wait for ever and nothing
//! after the record would load. A runner watches for it: a partition whose
//! position has not moved for [`StallWatch::every`] although its log holds
//! records after it is probed by a reader of its own; when that reader gets
//! nothing either while the broker answers, the record is handed to the
//! handler as [`Inbound::unfetched`] (quarantined, kept in its source topic)
//! and the runner reads on from the next offset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::handler::Inbound;
use crate::kafka;
use crate::status::RunnerContext;

/// How long a probe waits for the record.
const PROBE: Duration = Duration::from_secs(5);

/// The positions a runner's consumer had at its last look.
pub(crate) struct StallWatch {
    pub(crate) brokers: String,
    /// How long a position may stand still behind records before it is probed.
    pub(crate) every: Duration,
    last: Instant,
    positions: HashMap<(String, i32), i64>,
}

impl StallWatch {
    pub(crate) fn new(brokers: &str, every: Duration) -> Self {
        Self { brokers: brokers.to_owned(), every, last: Instant::now(), positions: HashMap::new() }
    }

    /// Whether a look is due.
    pub(crate) fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// The record a partition is stuck behind, if one is; the consumer is
    /// then moved past it. Looks at most once per `every`.
    pub(crate) async fn look(&mut self, consumer: &Arc<StreamConsumer<RunnerContext>>) -> Option<Inbound> {
        if !self.due() {
            return None;
        }
        self.last = Instant::now();
        let consumer = consumer.clone();
        let previous = std::mem::take(&mut self.positions);
        let brokers = self.brokers.clone();
        let (positions, stuck) =
            tokio::task::spawn_blocking(move || look(&consumer, &brokers, &previous)).await.ok()?;
        self.positions = positions;
        stuck
    }
}

/// Reads the positions; probes a partition that stood still behind records
/// since `previous`, and moves the consumer past a record that cannot be fetched.
fn look(
    consumer: &StreamConsumer<RunnerContext>,
    brokers: &str,
    previous: &HashMap<(String, i32), i64>,
) -> (HashMap<(String, i32), i64>, Option<Inbound>) {
    let mut positions = HashMap::new();
    let Ok(list) = consumer.position() else { return (positions, None) };
    // Nothing read since the partition was assigned: it starts at the
    // committed offset (one request for all of them).
    let mut unread = TopicPartitionList::new();
    for element in list.elements() {
        match element.offset() {
            Offset::Offset(position) => {
                positions.insert((element.topic().to_owned(), element.partition()), position);
            }
            _ => {
                unread.add_partition(element.topic(), element.partition());
            }
        }
    }
    if unread.count() > 0
        && let Ok(committed) = consumer.committed_offsets(unread, Duration::from_secs(10))
    {
        for element in committed.elements() {
            if let Offset::Offset(position) = element.offset() {
                positions.insert((element.topic().to_owned(), element.partition()), position);
            }
        }
    }
    // Those that stood still: at their log's end (idle), or stuck.
    let mut still = TopicPartitionList::new();
    for (key, position) in &positions {
        if previous.get(key) == Some(position) {
            let _ = still.add_partition_offset(&key.0, key.1, Offset::End);
        }
    }
    if still.count() == 0 {
        return (positions, None);
    }
    // One request for every log end (a latest-offset look-up by time).
    let Ok(ends) = consumer.offsets_for_times(still, Duration::from_secs(10)) else { return (positions, None) };
    let stuck = ends.elements().iter().find_map(|end| {
        let key = (end.topic().to_owned(), end.partition());
        let (Some(position), Offset::Offset(high)) = (positions.get(&key), end.offset()) else { return None };
        (high > *position).then(|| probe(consumer, brokers, &key.0, key.1, *position)).flatten()
    });
    (positions, stuck)
}

/// Reads `offset` with a consumer of its own: when the broker answers but
/// returns no record, the record cannot be fetched, and `consumer` is moved
/// past it.
fn probe(
    consumer: &StreamConsumer<RunnerContext>,
    brokers: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<Inbound> {
    let reader: BaseConsumer = kafka::reader_config(brokers, 100)
        .set("group.id", format!("mend-probe-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset)).ok()?;
    reader.assign(&list).ok()?;
    let deadline = Instant::now() + PROBE;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            // Readable: the runner's consumer is only slow.
            Some(Ok(_)) => return None,
            Some(Err(error)) => {
                tracing::debug!(%topic, partition, offset, %error, "probe failed");
                return None;
            }
            None => {}
        }
    }
    // The broker must answer, and still hold records from the offset on.
    let (_, high) = reader.fetch_watermarks(topic, partition, Duration::from_secs(5)).ok()?;
    if high <= offset {
        return None;
    }
    tracing::warn!(
        %topic, partition, offset, high,
        "the broker returns no record at this offset although its log goes on (a record larger than the \
         broker's largest fetch); quarantining it as too large and reading on"
    );
    if let Err(error) = consumer.seek(topic, partition, Offset::Offset(offset + 1), Duration::from_secs(10)) {
        tracing::warn!(%topic, partition, offset, %error, "cannot move past the record; probing again later");
        return None;
    }
    Some(Inbound::unfetched(topic, partition, offset))
}
