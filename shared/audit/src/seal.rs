//! What a seal is, for the sealer (`services/sealer`) and the tests: the
//! events read since the last digest ([`Pending`]), the digest that seals
//! them after the chain's last one ([`next_digest`]), which digests of a
//! chain a sealer goes on from ([`Chain`]), and where an event's hash is in
//! its bytes ([`envelope_hash_field`]).

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::Schema;
use ed25519_dalek::SigningKey;
use mend_avro::datum::StringField;
use mend_model::digest::{AuditDigest, RangeHasher};
use mend_model::events::now_millis;

use crate::keys;

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
    pub fn clear(&mut self) {
        for ((topic, partition), range) in std::mem::take(&mut self.ranges) {
            if let Some(sealed) = range.range(topic, partition) {
                self.starts.insert((topic, partition), sealed.last_offset + 1);
            }
        }
        self.events = 0;
    }
}

/// The reader of the hash in an event schema's envelope, its first field.
pub fn envelope_hash_field(schema: &Schema) -> Option<StringField> {
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

/// What the sealer knows of its chain.
#[derive(Debug, Default)]
pub struct Chain {
    /// Its last digest.
    pub last: Option<AuditDigest>,
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
    pub fn refuses(&self, digest: &AuditDigest, own: Option<&str>) -> Option<String> {
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

    /// Goes on from `digest`.
    pub fn follow(&mut self, digest: AuditDigest) {
        for range in &digest.ranges {
            let next = self.next.entry((range.topic.clone(), range.partition)).or_insert(0);
            *next = (*next).max(range.last_offset + 1);
        }
        self.last = Some(digest);
    }

    /// The first offset of `topic`'s `partition` not sealed yet, when the
    /// chain has sealed some of it.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next.get(&(topic.to_owned(), partition)).copied()
    }
}
