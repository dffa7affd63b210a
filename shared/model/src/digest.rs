//! Digests over the audit log, as AWS CloudTrail's log file integrity
//! validation does for its logs: every so often the sealer writes, for each
//! event topic-partition, the offset range it has read since its previous
//! digest and a hash over the range's events (offset and event hash, in
//! order), chains the digest to the previous one of its chain and signs it
//! (Ed25519). A verifier with the public key then finds an event removed,
//! reordered or replaced inside a sealed range, a digest removed, and a log
//! rebuilt consistently by someone without the key.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::topics;

/// One topic-partition's events covered by a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// Events in the range (fewer than the offsets it spans when the log
    /// had gaps when it was sealed).
    pub count: i64,
    /// SHA-256 (hex) over `"{offset} {event hash}\n"` of each event, in
    /// offset order: see [`SealedRange::hash_events`].
    pub hash: String,
    /// The first offset the range covers when it is before `first_offset`:
    /// the sealer read on from the previous range, and the offsets between
    /// held no event a reader is given (transaction markers, aborted
    /// records). None in digests sealed before mend wrote transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers_from: Option<i64>,
}

impl SealedRange {
    /// The first offset the range covers.
    pub fn start(&self) -> i64 {
        self.covers_from.unwrap_or(self.first_offset).min(self.first_offset)
    }

    /// The hash of a range's events, given as (offset, event hash) in
    /// offset order.
    pub fn hash_events<'a>(events: impl IntoIterator<Item = (i64, &'a str)>) -> String {
        let mut range = RangeHasher::default();
        for (offset, hash) in events {
            range.push(offset, hash.as_bytes());
        }
        range.hash()
    }
}

/// A range's hash, count and offsets, taken one event at a time as they
/// are read (nothing of the events is kept): [`SealedRange::hash_events`]
/// over what was pushed.
#[derive(Debug, Clone, Default)]
pub struct RangeHasher {
    digest: Sha256,
    first: Option<i64>,
    last: i64,
    count: i64,
    covers_from: Option<i64>,
}

impl RangeHasher {
    /// A range that covers the offsets from `offset` on, whether or not an
    /// event is there (see [`SealedRange::covers_from`]).
    pub fn covering_from(offset: i64) -> Self {
        Self { covers_from: Some(offset), ..Self::default() }
    }

    /// Adds the next event (offsets ascending) and its hash.
    pub fn push(&mut self, offset: i64, hash: &[u8]) {
        use std::io::Write as _;
        let mut line = [0u8; 20];
        let mut cursor = std::io::Cursor::new(&mut line[..]);
        // An i64 has at most 20 characters: this write cannot fail.
        let _ = write!(cursor, "{offset}");
        let written = usize::try_from(cursor.position()).unwrap_or(0);
        self.digest.update(&line[..written]);
        self.digest.update(b" ");
        self.digest.update(hash);
        self.digest.update(b"\n");
        self.first.get_or_insert(offset);
        self.last = offset;
        self.count += 1;
    }

    /// Events pushed so far.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The hash (hex) of what was pushed so far.
    pub fn hash(&self) -> String {
        hex::encode(self.digest.clone().finalize())
    }

    /// The sealed range of `topic`'s `partition` that this covers (None
    /// when nothing was pushed).
    pub fn range(&self, topic: &str, partition: i32) -> Option<SealedRange> {
        Some(SealedRange {
            topic: topic.to_owned(),
            partition,
            first_offset: self.first?,
            last_offset: self.last,
            count: self.count,
            hash: self.hash(),
            covers_from: self.covers_from.filter(|from| Some(*from) < self.first),
        })
    }
}

/// A signed digest of the audit log (topic `mend.audit.digests`, keyed by
/// its chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDigest {
    pub digest_id: String,
    /// The sealer's chain (its deployment's group prefix): one chain per
    /// deployment, each covering the whole log.
    pub chain: String,
    /// 0 for a chain's first digest, then one more each time.
    pub sequence: i64,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    pub service_version: String,
    /// `hash` of the chain's previous digest.
    pub prev_hash: Option<String>,
    pub ranges: Vec<SealedRange>,
    /// Hex of the Ed25519 public key that signed it; None when unsigned.
    pub key_id: Option<String>,
    /// SHA-256 (hex) over the digest serialised with `hash` and `signature`
    /// empty.
    pub hash: String,
    /// Ed25519 signature (hex) of the 32 bytes of `hash`.
    pub signature: Option<String>,
}

impl AuditDigest {
    pub const TOPIC: &'static str = topics::DIGESTS;
    pub const SCHEMA: &'static str = include_str!("../../../schemas/digest.avsc");

    /// The hash this digest should carry.
    pub fn compute_hash(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.hash.clear();
        unsealed.signature = None;
        hex::encode(Sha256::digest(serde_json::to_vec(&unsealed).unwrap_or_default()))
    }

    /// Events it covers.
    pub fn events(&self) -> i64 {
        self.ranges.iter().map(|r| r.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::{RangeHasher, SealedRange};

    #[test]
    fn a_range_hashed_event_by_event_is_the_range_hashed_at_once() {
        let events = [(0, "a1"), (7, "b2"), (i64::MAX, "c3"), (i64::MIN, ""), (-1, "d4")];
        let mut whole = Sha256::new();
        for (offset, hash) in events {
            whole.update(format!("{offset} {hash}\n").as_bytes());
        }
        assert_eq!(SealedRange::hash_events(events), hex::encode(whole.finalize()));
        let mut range = RangeHasher::default();
        assert_eq!(range.range("t", 0), None);
        for (offset, hash) in &events[..2] {
            range.push(*offset, hash.as_bytes());
        }
        let sealed = range.range("t", 3).expect("two events pushed");
        assert_eq!((sealed.first_offset, sealed.last_offset, sealed.count), (0, 7, 2));
        assert_eq!(sealed.hash, SealedRange::hash_events(events[..2].iter().copied()));
    }
}
