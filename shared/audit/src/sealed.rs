//! The log as its digests seal it: where the event partitions end now (a
//! [`Cut`]), what of that the sealer has not sealed yet, the entries as of
//! a cut, and the export's wait until every event is sealed.

use std::collections::HashMap;

use mend_avro::Codec;
use mend_model::digest::AuditDigest;
use mend_model::topics;

use crate::log::{AuditError, Entry, Record, read_digests, read_topics};
use crate::verify;

/// Where each event partition that holds records ended at one moment:
/// its next offset.
pub type Cut = HashMap<(String, i32), i64>;

/// The end of every event partition that holds records, now.
pub async fn cut(brokers: &str) -> Result<Cut, AuditError> {
    let ends = mend_runtime::kafka::topic_ends(brokers, &topics::EVENT_TOPICS).await?;
    Ok(ends.into_iter().filter(|e| e.holds_records()).map(|e| ((e.topic.to_owned(), e.partition), e.high)).collect())
}

/// The digests of `chain` among `entries`.
pub(crate) fn digests_of<'e>(entries: &'e [Entry], chain: &str) -> Vec<&'e AuditDigest> {
    entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Digest(d) if d.chain == chain => Some(&**d),
            _ => None,
        })
        .collect()
}

/// Where the events of `cut`'s partitions end before it: the offset after
/// each partition's last event. A partition written in transactions ends
/// with its commit marker, an offset that holds no event and that no digest
/// seals until the next event comes.
pub fn event_ends(entries: &[Entry], cut: &Cut) -> Cut {
    let mut ends = Cut::new();
    for entry in entries.iter().filter(|e| !matches!(e.record, Record::Digest(_))) {
        let key = (entry.position.topic.clone(), entry.position.partition);
        if cut.get(&key).is_some_and(|end| entry.position.offset < *end) {
            let end = ends.entry(key).or_insert(0);
            *end = (*end).max(entry.position.offset + 1);
        }
    }
    ends
}

/// How many partitions of `cut` hold events before it that no digest of
/// `chain` among `digests` seals yet (0: the sealer has sealed the cut).
/// `cut` ends each partition after its last event ([`event_ends`]).
pub fn unsealed_partitions(digests: &[Entry], chain: &str, cut: &Cut) -> usize {
    let chain_digests = digests_of(digests, chain);
    let sealed = verify::SealedIndex::new(&chain_digests);
    cut.iter().filter(|((topic, partition), end)| sealed.last(topic, *partition).is_none_or(|l| l < **end - 1)).count()
}

/// `entries` (read after `cut` was taken) as of the cut, for `chain`: the
/// digests, the events written before the cut, and the later ones a digest
/// already seals. Later events no digest seals are left for a later export.
pub fn as_of(mut entries: Vec<Entry>, chain: &str, cut: &Cut) -> Vec<Entry> {
    let digests = digests_of(&entries, chain);
    let sealed = verify::SealedIndex::new(&digests);
    let keep: Vec<bool> = entries
        .iter()
        .map(|entry| {
            let p = &entry.position;
            matches!(entry.record, Record::Digest(_))
                || sealed.covering(&p.topic, p.partition, p.offset).is_some()
                || cut.get(&(p.topic.clone(), p.partition)).is_some_and(|end| p.offset < *end)
        })
        .collect();
    let mut keep = keep.into_iter();
    entries.retain(|_| keep.next().unwrap_or(true));
    entries
}

/// What waiting for the sealer came to, for a reader to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Events of this many partitions wait for the sealer.
    Waiting { unsealed: usize },
    /// The wait is over and events of this many partitions are not sealed:
    /// they are left as they are (verify reports them).
    GaveUp { unsealed: usize },
}

/// The live log as of the call, once every event written before it is
/// sealed by `chain`'s sealer (or `wait` has passed: then as it is, after
/// telling `progress`). Events written since and not sealed yet are left
/// out: an export holds what its digests seal. It reads the log once to
/// know where its events end, then only the digests, twice a second, while
/// it waits, then the log as of the cut.
pub async fn sealed_log(
    brokers: &str,
    codec: &Codec,
    chain: &str,
    wait: std::time::Duration,
    mut progress: impl FnMut(Sealing),
) -> Result<Vec<Entry>, AuditError> {
    let deadline = tokio::time::Instant::now() + wait;
    let cut = cut(brokers).await?;
    // What must be sealed: every event before the cut (not the commit
    // markers after the last ones).
    let events = event_ends(&read_topics(brokers, codec).await?, &cut);
    let mut announced = false;
    loop {
        let unsealed = unsealed_partitions(&read_digests(brokers, codec).await?, chain, &events);
        if unsealed == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            progress(Sealing::GaveUp { unsealed });
            break;
        }
        if !announced {
            progress(Sealing::Waiting { unsealed });
            announced = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(as_of(read_topics(brokers, codec).await?, chain, &cut))
}
