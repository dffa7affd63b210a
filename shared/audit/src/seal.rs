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
//! per chain: a second one would fork it (verify reports the fork).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apache_avro::Schema;
use ed25519_dalek::SigningKey;
use futures::FutureExt as _;
use mend_avro::Codec;
use mend_avro::codec::{CodecError, schema_id};
use mend_avro::copy::StringField;
use mend_model::digest::{AuditDigest, RangeHasher};
use mend_model::events::now_millis;
use mend_model::topics;
use mend_runtime::runner::{RunnerStatus, retry_backoff as backoff, sleep_unless_cancelled as pause};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::{AuditError, Record, keys, read_record};

/// Events per digest by default: a digest's own cost (encoding, signing
/// and delivering it, about 150 µs of CPU) is then about a tenth of the
/// sealer's per event (pipeline bench; at 500 it was a fifth).
pub const DEFAULT_EVERY_EVENTS: usize = 1000;

/// How the sealer seals.
#[derive(Clone)]
pub struct SealerConfig {
    pub brokers: String,
    /// Its chain: the deployment's group prefix.
    pub chain: String,
    /// A digest at least every this many events…
    pub every_events: usize,
    /// …and at least this often while events arrive.
    pub every: Duration,
    /// Signs each digest; without it digests are chained but unsigned.
    pub key: Option<SigningKey>,
}

impl std::fmt::Debug for SealerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealerConfig")
            .field("chain", &self.chain)
            .field("every_events", &self.every_events)
            .field("every", &self.every)
            .field("signed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// Events read but not sealed yet, hashed as they are read: per
/// topic-partition, the range so far (nothing of the events is kept).
#[derive(Debug, Default)]
pub struct Pending {
    ranges: BTreeMap<(&'static str, i32), RangeHasher>,
    events: usize,
    /// Per topic-partition, the first offset the next range covers: right
    /// after the last one, so that ranges leave no offset out (the offsets
    /// of transaction markers between events are sealed as empty).
    starts: BTreeMap<(&'static str, i32), i64>,
}

impl Pending {
    /// The next range of `topic`'s `partition` covers the offsets from
    /// `offset` on.
    pub fn start(&mut self, topic: &'static str, partition: i32, offset: i64) {
        self.starts.insert((topic, partition), offset);
    }

    /// Adds the next event of `topic`'s `partition` (offsets ascending
    /// within a partition) and its event hash (see
    /// [`crate::Entry::sealed_hash`]).
    pub fn push(&mut self, topic: &'static str, partition: i32, offset: i64, hash: &[u8]) {
        let start = self.starts.get(&(topic, partition)).copied().filter(|start| *start <= offset);
        self.ranges
            .entry((topic, partition))
            .or_insert_with(|| start.map_or_else(RangeHasher::default, RangeHasher::covering_from))
            .push(offset, hash);
        self.events += 1;
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Forgets what was sealed; each partition's next range starts after it.
    pub(crate) fn clear(&mut self) {
        for ((topic, partition), range) in std::mem::take(&mut self.ranges) {
            if let Some(sealed) = range.range(topic, partition) {
                self.starts.insert((topic, partition), sealed.last_offset + 1);
            }
        }
        self.events = 0;
    }
}

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

/// The reader of the hash in an event schema's envelope, its first field.
pub(crate) fn envelope_hash_field(schema: &Schema) -> Option<StringField> {
    let Schema::Record(record) = schema else { return None };
    let envelope = record.fields.first().filter(|f| f.name == "envelope")?;
    StringField::new(&envelope.schema, "hash")
}

/// The digest that follows `last` in `chain` and seals `pending`, signed
/// with `key`.
pub fn next_digest(
    chain: &str,
    last: Option<&AuditDigest>,
    pending: &Pending,
    key: Option<&SigningKey>,
) -> AuditDigest {
    let ranges =
        pending.ranges.iter().filter_map(|((topic, partition), range)| range.range(topic, *partition)).collect();
    let mut digest = AuditDigest {
        digest_id: uuid::Uuid::now_v7().to_string(),
        chain: chain.to_owned(),
        sequence: last.map_or(0, |d| d.sequence + 1),
        time: now_millis(),
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
        prev_hash: last.map(|d| d.hash.clone()),
        ranges,
        key_id: None,
        hash: String::new(),
        signature: None,
    };
    keys::seal(&mut digest, key);
    digest
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
        for topic in topics::EVENT_TOPICS {
            for (partition, low, _) in mend_runtime::kafka::watermarks(&self.config.brokers, topic).await? {
                let next = chain.next.get(&(topic.to_owned(), partition)).copied().unwrap_or(low);
                assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(next))?;
                pending.start(topic, partition, next);
            }
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

/// What the sealer knows of its chain.
#[derive(Default)]
pub(crate) struct Chain {
    pub(crate) last: Option<AuditDigest>,
    /// Per (topic, partition), the first offset not sealed yet.
    next: BTreeMap<(String, i32), i64>,
}

impl Chain {
    /// Why, on start, the sealer does not go on from `digest`, a digest of
    /// its chain in the topic: anyone who may write to the topic could
    /// have put it there, and a forged digest sealing offsets far ahead
    /// would make the sealer skip them. It goes on from a digest that holds
    /// (its hash, its place after the last one) and is signed as the chain
    /// is: by the key of the digest before it, or by `own` (the sealer's
    /// key id; a new key takes over the chain), or, for the first digest,
    /// by any key. Unsigned digests follow only unsigned ones (a chain
    /// sealed unsigned may be signed from some digest on): a forged digest
    /// on an unsigned chain cannot be told.
    pub(crate) fn refuses(&self, digest: &AuditDigest, own: Option<&str>) -> Option<String> {
        let expected = self.last.as_ref().map_or(0, |l| l.sequence + 1);
        if digest.compute_hash() != digest.hash {
            return Some("its hash does not match its content".into());
        }
        if digest.sequence != expected || digest.prev_hash != self.last.as_ref().map(|l| l.hash.clone()) {
            return Some(format!("it is not #{expected} after the chain's last digest (a retried or forged one)"));
        }
        let previous = self.last.as_ref().and_then(|l| l.key_id.as_deref());
        match digest.key_id.as_deref() {
            Some(id) => {
                if !keys::named(id).is_some_and(|key| keys::signature_holds(digest, &key)) {
                    return Some(format!("its signature does not hold for the key it names ({id})"));
                }
                let continues = self.last.is_none() || previous == Some(id) || own == Some(id);
                (!continues).then(|| format!("it is signed by {id}, neither the chain's key nor this sealer's"))
            }
            None if previous.is_some() => Some("it is unsigned, after signed digests".into()),
            None => None,
        }
    }

    pub(crate) fn follow(&mut self, digest: AuditDigest) {
        for range in &digest.ranges {
            let next = self.next.entry((range.topic.clone(), range.partition)).or_insert(0);
            *next = (*next).max(range.last_offset + 1);
        }
        self.last = Some(digest);
    }
}
