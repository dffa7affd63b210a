//! The sealer: reads every event topic-partition in order and, every
//! `every_events` events or `every` (whichever comes first, and only when
//! something new was written), writes a digest of what it read since the
//! previous one to `mend.audit.digests`, chained and signed.
//!
//! Input: mend's event topics (assigned, no consumer group). Output:
//! `mend.audit.digests`, keyed by the chain. Its state is the chain itself:
//! on start it reads its chain's last digest and goes on right after the
//! ranges sealed so far, so a crash neither skips nor seals twice (a digest
//! whose delivery was not confirmed is found there on restart). One sealer
//! per chain: a second one would fork it (verify reports the fork). What a
//! digest holds and how a chain goes on are `mend_audit::seal`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;
use mend_audit::seal::{Chain, Pending, SealerConfig, envelope_hash_field, next_digest};
use mend_audit::{AuditError, Record, keys, read_record};
use mend_avro::Codec;
use mend_avro::codec::{CodecError, schema_id};
use mend_avro::datum::StringField;
use mend_model::digest::AuditDigest;
use mend_model::topics;
use mend_runtime::runner::{RunnerStatus, retry_backoff as backoff, sleep_unless_cancelled as pause};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Readers of the envelope's hash by writer schema id (None: that
/// schema's first field is not an envelope that reads so).
type Envelopes = BTreeMap<u32, Option<StringField>>;

/// The hash an event carries, read from its envelope alone. Every event's
/// first field is its envelope, so the envelope's bytes begin the datum:
/// the hash is read in place, the fields before it skipped, the rest of the
/// event left unread (a quarantined record's bytes, a plan's steps). None
/// when the payload is not so, or the registry is away: the whole record is
/// read then (with its retries, and the raw hash of a payload that does not
/// decode). A payload whose envelope reads but whose rest does not is
/// sealed with its envelope's hash; verify reports it as unreadable all the
/// same.
async fn envelope_hash<'p>(codec: &Codec, envelopes: &mut Envelopes, payload: &'p [u8]) -> Option<&'p str> {
    let id = schema_id(payload)?;
    if let std::collections::btree_map::Entry::Vacant(entry) = envelopes.entry(id) {
        entry.insert(envelope_hash_field(&codec.schema(id).await.ok()?.parsed));
    }
    envelopes.get(&id)?.as_ref()?.read(payload.get(5..)?)
}

/// The sealer of one chain.
pub struct Sealer {
    config: SealerConfig,
    codec: Arc<Codec>,
    producer: FutureProducer,
    status: Arc<RunnerStatus>,
}

impl Sealer {
    pub fn new(config: SealerConfig, codec: Arc<Codec>, producer: FutureProducer) -> Self {
        Self { config, codec, producer, status: Arc::default() }
    }

    /// Its counters (records: events sealed).
    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Seals until `shutdown`, then seals what it has read and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AuditError> {
        let Some(mut last) = self.recover(&shutdown).await? else { return Ok(()) };
        let mut pending = Pending::default();
        let consumer = self.consumer(&last, &mut pending).await?;
        self.status.consuming.store(true, Ordering::Relaxed);
        let mut envelopes = Envelopes::new();
        let mut tick = tokio::time::interval(self.config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if !pending.is_empty() && !self.seal(&mut last, &mut pending, &shutdown).await? {
                        return Ok(());
                    }
                    continue;
                }
                message = consumer.recv() => message?,
            };
            // The message that woke it, then those already fetched, without
            // setting up the select again for each; at most a digest's
            // worth, so that the clock and shutdown get their turn.
            let mut next = Some(message);
            let mut taken = 0;
            while let Some(message) = next {
                if !self.take(&message, &mut pending, &mut envelopes, &shutdown).await? {
                    return Ok(());
                }
                if pending.len() >= self.config.every_events && !self.seal(&mut last, &mut pending, &shutdown).await? {
                    return Ok(());
                }
                taken += 1;
                next = if taken < self.config.every_events && !shutdown.is_cancelled() {
                    consumer.recv().now_or_never().transpose()?
                } else {
                    None
                };
            }
        }
        // Shutting down: seal what was read, under the grace period.
        if !pending.is_empty() {
            self.seal(&mut last, &mut pending, &CancellationToken::new()).await?;
        }
        Ok(())
    }

    /// Adds one event read to `pending` with its hash. False when shut
    /// down while the registry was away.
    async fn take(
        &self,
        message: &BorrowedMessage<'_>,
        pending: &mut Pending,
        envelopes: &mut Envelopes,
        shutdown: &CancellationToken,
    ) -> Result<bool, AuditError> {
        let name = message.topic();
        let Some(topic) = topics::EVENT_TOPICS.iter().copied().find(|t| *t == name) else { return Ok(true) };
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        if let Some(hash) = envelope_hash(&self.codec, envelopes, payload).await {
            pending.push(topic, partition, offset, hash.as_bytes());
            return Ok(true);
        }
        let hash = match self.read(topic, payload, shutdown).await? {
            None => return Ok(false),
            Some(Record::Event(event)) => event.envelope().hash.clone(),
            Some(Record::Unreadable { hash, .. } | Record::Redacted { hash, .. }) => hash,
            Some(Record::Digest(_)) => return Ok(true),
        };
        pending.push(topic, partition, offset, hash.as_bytes());
        Ok(true)
    }

    /// The chain's last digest and where each partition continues, from
    /// the digests topic. None when shut down while the broker was away.
    async fn recover(&self, shutdown: &CancellationToken) -> Result<Option<Chain>, AuditError> {
        let mut backoff = backoff();
        loop {
            match self.read_chain().await {
                Ok(chain) => return Ok(Some(chain)),
                Err(error @ (AuditError::Topic(_) | AuditError::Registry(CodecError::Unavailable(_)))) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, ?delay, "cannot read the audit chain yet; retrying");
                    if !pause(delay, shutdown).await {
                        return Ok(None);
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn read_chain(&self) -> Result<Chain, AuditError> {
        let mut chain = Chain::default();
        let own = self.config.key.as_ref().map(|k| keys::key_id(&k.verifying_key()));
        let own = own.as_deref();
        let mut messages = mend_runtime::kafka::read_to_end(&self.config.brokers, topics::DIGESTS).await?;
        messages.sort_by_key(|m| (m.partition(), m.offset()));
        for message in messages {
            if message.key() != Some(self.config.chain.as_bytes()) {
                continue;
            }
            match read_record(&self.codec, topics::DIGESTS, message.payload().unwrap_or_default()).await? {
                Record::Digest(digest) if digest.chain == self.config.chain => match chain.refuses(&digest, own) {
                    None => chain.follow(*digest),
                    Some(reason) => tracing::warn!(
                        offset = message.offset(), sequence = digest.sequence, %reason,
                        "a digest of the chain this sealer does not go on from; skipped (mend audit verify reports it)"
                    ),
                },
                _ => tracing::warn!(offset = message.offset(), "a record of the chain that is not a digest; skipped"),
            }
        }
        tracing::info!(
            chain = %self.config.chain, digests = chain.last.as_ref().map_or(0, |d| d.sequence + 1),
            signed = self.config.key.is_some(), "sealing the audit log"
        );
        Ok(chain)
    }

    /// A consumer of every event partition, right after what is sealed
    /// (where `pending`'s ranges start).
    async fn consumer(&self, chain: &Chain, pending: &mut Pending) -> Result<StreamConsumer, AuditError> {
        let consumer: StreamConsumer = mend_runtime::kafka::reader_config(&self.config.brokers)
            .set("group.id", format!("{}-sealer", self.config.chain))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        for ends in mend_runtime::kafka::topic_ends(&self.config.brokers, &topics::EVENT_TOPICS).await? {
            let next = chain.next_offset(ends.topic, ends.partition).unwrap_or(ends.low);
            assignment.add_partition_offset(ends.topic, ends.partition, rdkafka::Offset::Offset(next))?;
            pending.start(ends.topic, ends.partition, next);
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    }

    /// Reads one event, retrying while the registry is away. None when
    /// shut down meanwhile.
    async fn read(
        &self,
        topic: &str,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> Result<Option<Record>, AuditError> {
        let mut backoff = backoff();
        loop {
            match read_record(&self.codec, topic, payload).await {
                Ok(record) => return Ok(Some(record)),
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, ?delay, "registry unavailable while sealing; retrying");
                    if !pause(delay, shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Writes the digest of `pending` after `last` and waits until it is
    /// delivered. False when shut down before it was.
    async fn seal(
        &self,
        chain: &mut Chain,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> Result<bool, AuditError> {
        let digest = next_digest(&self.config.chain, chain.last.as_ref(), pending, self.config.key.as_ref());
        let mut backoff = backoff();
        let payload = loop {
            match self.codec.encode_value(AuditDigest::TOPIC, AuditDigest::SCHEMA, &digest).await {
                Ok(payload) => break payload,
                Err(CodecError::Unavailable(reason)) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%reason, ?delay, "registry unavailable; retrying the digest");
                    if !pause(delay, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(invalid) => return Err(invalid.into()),
            }
        };
        loop {
            let record = FutureRecord::to(topics::DIGESTS).key(self.config.chain.as_bytes()).payload(&payload);
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => break,
                Err((error, _)) => {
                    let error = mend_runtime::kafka::ProduceError(error);
                    if !mend_model::Classify::is_retryable(&error) {
                        return Err(AuditError::Other(format!("delivering a digest: {error}")));
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, ?delay, "digest not delivered; resending");
                    if !pause(delay, shutdown).await {
                        return Ok(false);
                    }
                }
            }
        }
        tracing::debug!(sequence = digest.sequence, events = pending.len(), "sealed");
        self.status.records.fetch_add(pending.len() as u64, Ordering::Relaxed);
        pending.clear();
        chain.follow(digest);
        Ok(true)
    }
}
