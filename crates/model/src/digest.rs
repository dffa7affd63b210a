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
}

impl SealedRange {
    /// The hash of a range's events, given as (offset, event hash) in
    /// offset order.
    pub fn hash_events<'a>(events: impl IntoIterator<Item = (i64, &'a str)>) -> String {
        let mut digest = Sha256::new();
        for (offset, hash) in events {
            digest.update(offset.to_string().as_bytes());
            digest.update(b" ");
            digest.update(hash.as_bytes());
            digest.update(b"\n");
        }
        hex::encode(digest.finalize())
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
