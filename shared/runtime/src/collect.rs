//! Collecting records into batches for a runner.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use tokio_util::sync::CancellationToken;

use crate::handler::Inbound;
use crate::status::{RunnerContext, RunnerError};

/// Reads records into batches for a runner.
pub(crate) struct Collector {
    pub(crate) consumer: Arc<StreamConsumer<RunnerContext>>,
    pub(crate) max_batch: usize,
    pub(crate) max_bytes: usize,
    pub(crate) linger: Duration,
    /// A record taken from the consumer that did not fit the last batch.
    pub(crate) carried: Option<Inbound>,
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
        let first = match self.carried.take() {
            Some(record) => record,
            None => match stream.next().await {
                Some(message) => Inbound::from_message(&message?, &mut topic),
                None => return Ok(Vec::new()),
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
