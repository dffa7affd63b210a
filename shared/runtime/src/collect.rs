//! Collecting records into batches for a runner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::handler::Inbound;
use crate::status::{Ownership, RunnerContext, RunnerError};

/// Records taken from the consumer, and where it stood when it closed them.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) records: Vec<Inbound>,
    /// Per record, the ownership clock when it was taken.
    stamps: Vec<u64>,
    /// Per partition, the consumer's position when the batch closed, where
    /// it is past the batch's last record of the partition and nothing
    /// after that record was taken: the offsets between are transaction
    /// markers and aborted records, which the group's offset steps over
    /// (else a group reading a transactional topic lags by one forever).
    positions: HashMap<(Arc<str>, i32), i64>,
}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Which records are still this process's to commit (see [`Ownership`]).
    pub(crate) fn held(&self, held: &HashMap<(String, i32), u64>) -> Vec<bool> {
        let mut keep = Vec::with_capacity(self.records.len());
        for (run, stamps) in self.runs() {
            let since = held.get(&(run[0].topic.to_string(), run[0].partition)).copied();
            keep.extend(stamps.iter().map(|stamp| since.is_some_and(|since| *stamp >= since)));
        }
        keep
    }

    /// Per partition with a record in `keep`, the earliest stamp among
    /// them: the records stay this process's while the partition is held
    /// since then or earlier.
    pub(crate) fn kept_since(&self, keep: &[bool]) -> Vec<((String, i32), u64)> {
        let mut since: HashMap<(String, i32), u64> = HashMap::new();
        let mut at = 0;
        for (run, stamps) in self.runs() {
            let kept = &keep[at..at + run.len()];
            at += run.len();
            if let Some(earliest) = stamps.iter().zip(kept).filter(|(_, k)| **k).map(|(s, _)| *s).min() {
                let slot = since.entry((run[0].topic.to_string(), run[0].partition)).or_insert(earliest);
                *slot = (*slot).min(earliest);
            }
        }
        since.into_iter().collect()
    }

    /// The batch in runs of one partition, with their stamps.
    fn runs(&self) -> impl Iterator<Item = (&[Inbound], &[u64])> {
        let mut at = 0;
        self.records.chunk_by(|a, b| a.partition == b.partition && Arc::ptr_eq(&a.topic, &b.topic)).map(move |run| {
            let stamps = &self.stamps[at..at + run.len()];
            at += run.len();
            (run, stamps)
        })
    }

    /// The offset the group goes on from, per partition with a record in
    /// `keep`: after the partition's last kept record, or at the consumer's
    /// position past it when that record was the last the consumer gave.
    pub(crate) fn next_offsets(&self, keep: &[bool]) -> HashMap<(Arc<str>, i32), i64> {
        let mut next: HashMap<(Arc<str>, i32), (i64, bool)> = HashMap::new();
        for (record, kept) in self.records.iter().zip(keep) {
            let slot = next.entry((record.topic.clone(), record.partition)).or_insert((-1, false));
            // Records of a partition come in offset order.
            *slot = if *kept { (record.offset + 1, true) } else { (slot.0, false) };
        }
        next.into_iter()
            .filter(|(_, (offset, _))| *offset >= 0)
            .map(|(partition, (offset, last_kept))| {
                let position = self.positions.get(&partition).copied().filter(|p| last_kept && *p > offset);
                (partition, position.unwrap_or(offset))
            })
            .collect()
    }
}

/// Reads records into batches for a runner.
pub(crate) struct Collector {
    pub(crate) consumer: Arc<StreamConsumer<RunnerContext>>,
    pub(crate) ownership: Arc<Ownership>,
    pub(crate) max_batch: usize,
    pub(crate) max_bytes: usize,
    pub(crate) linger: Duration,
    /// A record taken from the consumer that did not fit the last batch.
    pub(crate) carried: Option<(Inbound, u64)>,
}

impl Collector {
    /// Sends batches until `stop` is cancelled or the runner stops taking them.
    pub(crate) async fn run(
        mut self,
        batches: tokio::sync::mpsc::Sender<Result<Batch, RunnerError>>,
        stop: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                batch = self.collect() => batch,
            };
            if batch.as_ref().is_ok_and(|b| b.records.is_empty()) {
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
    async fn collect(&mut self) -> Result<Batch, RunnerError> {
        use futures::StreamExt as _;
        // One stream per batch: each `recv()` would register and unregister
        // a waker with the consumer, twice a lock per record.
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        let mut topic = None;
        let first = match self.carried.take() {
            Some(record) => record,
            None => match stream.next().await {
                Some(message) => (Inbound::from_message(&message?, &mut topic), self.ownership.now()),
                None => return Ok(Batch::default()),
            },
        };
        let mut bytes = first.0.size();
        let mut batch = Batch {
            records: Vec::with_capacity(self.max_batch.min(4096)),
            stamps: Vec::with_capacity(self.max_batch.min(4096)),
            positions: HashMap::new(),
        };
        batch.records.push(first.0);
        batch.stamps.push(first.1);
        let deadline = tokio::time::Instant::now() + self.linger;
        while batch.records.len() < self.max_batch {
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
            let stamp = self.ownership.now();
            if bytes + record.size() > self.max_bytes {
                self.carried = Some((record, stamp)); // it starts the next batch
                break;
            }
            bytes += record.size();
            batch.records.push(record);
            batch.stamps.push(stamp);
        }
        if batch.records.len() >= self.max_batch && self.carried.is_none() {
            // Full: one more look at the queue serves the transaction
            // markers that follow the last record (moving the position past
            // them); a record found there starts the next batch.
            if let Some(Some(message)) = futures::FutureExt::now_or_never(stream.next()) {
                self.carried = Some((Inbound::from_message(&message?, &mut topic), self.ownership.now()));
            }
        }
        drop(stream);
        self.note_positions(&mut batch);
        Ok(batch)
    }
}

impl Collector {
    /// Notes where the consumer stands on each partition of `batch`,
    /// except one whose next record is carried to the next batch.
    fn note_positions(&self, batch: &mut Batch) {
        let Ok(positions) = self.consumer.position() else { return };
        let carried = self.carried.as_ref().map(|(r, _)| (r.topic.clone(), r.partition));
        let mut wanted: std::collections::HashSet<(Arc<str>, i32)> = std::collections::HashSet::new();
        for run in batch.records.chunk_by(|a, b| a.partition == b.partition && Arc::ptr_eq(&a.topic, &b.topic)) {
            wanted.insert((run[0].topic.clone(), run[0].partition));
        }
        for element in positions.elements() {
            let rdkafka::Offset::Offset(offset) = element.offset() else { continue };
            let Some((topic, partition)) = wanted.take(&(Arc::from(element.topic()), element.partition())) else {
                continue;
            };
            if carried.as_ref() != Some(&(topic.clone(), partition)) {
                batch.positions.insert((topic, partition), offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::Batch;
    use crate::handler::Inbound;

    fn batch(records: &[(&Arc<str>, i32, i64, u64)], positions: &[(&Arc<str>, i32, i64)]) -> Batch {
        Batch {
            records: records
                .iter()
                .map(|(topic, partition, offset, _)| Inbound {
                    topic: (*topic).clone(),
                    partition: *partition,
                    offset: *offset,
                    key: None,
                    payload: None,
                    headers: Vec::new(),
                })
                .collect(),
            stamps: records.iter().map(|r| r.3).collect(),
            positions: positions.iter().map(|(t, p, o)| (((*t).clone(), *p), *o)).collect(),
        }
    }

    #[test]
    fn the_group_goes_on_past_markers_after_the_last_record_given() {
        let t: Arc<str> = Arc::from("t");
        // Partition 0 ends at 11 (a marker at 12 read past: position 13);
        // partition 1's next record (9) was carried to the next batch: no
        // position, so the group goes on from 9.
        let b = batch(&[(&t, 0, 10, 1), (&t, 0, 11, 1), (&t, 1, 7, 1), (&t, 1, 8, 1)], &[(&t, 0, 13)]);
        let next = b.next_offsets(&[true; 4]);
        assert_eq!(next.get(&(t.clone(), 0)), Some(&13));
        assert_eq!(next.get(&(t.clone(), 1)), Some(&9));
    }

    #[test]
    fn records_of_a_partition_revoked_since_they_were_read_are_not_committed() {
        let t: Arc<str> = Arc::from("t");
        // Partition 0 held since tick 1; partition 1 revoked, then
        // assigned again at tick 3: its records read before (stamp 2) are
        // no longer this process's, the one read after (stamp 3) is.
        let b = batch(&[(&t, 0, 5, 1), (&t, 1, 20, 2), (&t, 1, 21, 2), (&t, 1, 3, 3)], &[(&t, 1, 30)]);
        let held = HashMap::from([(("t".to_owned(), 0), 1), (("t".to_owned(), 1), 3)]);
        let keep = b.held(&held);
        assert_eq!(keep, [true, false, false, true]);
        let next = b.next_offsets(&keep);
        assert_eq!(next.get(&(t.clone(), 0)), Some(&6));
        assert_eq!(next.get(&(t.clone(), 1)), Some(&30), "the last record given was kept: its position holds");
        // Nothing held: nothing committed.
        assert!(b.next_offsets(&b.held(&HashMap::new())).is_empty());
        assert_eq!(b.kept_since(&keep).into_iter().collect::<HashMap<_, _>>().get(&("t".to_owned(), 1)), Some(&3));
    }
}
