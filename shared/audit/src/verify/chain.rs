//! The chain of digests: which digests are the chain's, each one's own
//! checks and its link to the one before, and the ranges they seal.

use std::collections::{HashMap, HashSet};

use mend_model::digest::AuditDigest;

use super::{Options, Partition, Scope};
use crate::{Entry, LogPosition, keys};

/// The digests of the chain to check, in log order: the one named (or the
/// export's, or the only one in the log), each once, without the forged.
pub(super) fn the_chain<'a>(
    mut digests: Vec<(&'a LogPosition, &'a AuditDigest)>,
    options: &Options,
    found: &mut dyn FnMut(&LogPosition, String),
    notes: &mut Vec<String>,
) -> Vec<(&'a LogPosition, &'a AuditDigest)> {
    let chain = options
        .chain
        .clone()
        .or_else(|| match &options.scope {
            Scope::Export(header) => header.chain.clone(),
            Scope::Live { .. } => None,
        })
        .or_else(|| {
            let mut chains: Vec<&str> = digests.iter().map(|(_, d)| d.chain.as_str()).collect();
            chains.dedup();
            (chains.len() == 1).then(|| chains[0].to_owned())
        });
    let others: std::collections::BTreeSet<&str> =
        digests.iter().map(|(_, d)| d.chain.as_str()).filter(|c| Some(*c) != chain.as_deref()).collect();
    if !others.is_empty() {
        notes.push(format!(
            "digests of other chains in the log, not checked: {}",
            others.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    digests.retain(|(_, d)| Some(d.chain.as_str()) == chain.as_deref());
    // A digest whose delivery was not confirmed is sent again: the same one.
    let mut seen = HashSet::new();
    let written = digests.len();
    digests.retain(|(_, d)| seen.insert(d.hash.as_str()));
    if digests.len() < written {
        notes.push(format!("{} digests are written twice, the same (a delivery retried)", written - digests.len()));
    }
    // A digest written beside a signed one of the same sequence, whose
    // signature does not hold: forged into the topic. It is named, and
    // left out of the chain (as the sealer leaves it), so the chain and
    // its ranges are checked as the sealer wrote them.
    if let Some(key) = &options.public_key {
        let holds: Vec<bool> = digests.iter().map(|(_, d)| keys::signature_holds(d, key)).collect();
        let signed: HashSet<i64> =
            digests.iter().zip(&holds).filter(|(_, holds)| **holds).map(|((_, d), _)| d.sequence).collect();
        let mut kept = holds.iter();
        digests.retain(|(position, d)| {
            let keep = kept.next().copied().unwrap_or(true) || !signed.contains(&d.sequence);
            if !keep {
                found(
                    position,
                    format!(
                        "digest #{n}: its signature does not hold for the public key, beside a signed digest #{n}: \
                         forged and written into the topic (left out of the chain)",
                        n = d.sequence
                    ),
                );
            }
            keep
        });
    }
    digests
}

/// Each digest's hash, signature, sequence and link to the previous one.
pub(super) fn check_digests(
    digests: &[(&LogPosition, &AuditDigest)],
    options: &Options,
    found: &mut dyn FnMut(&LogPosition, String),
    notes: &mut Vec<String>,
) {
    let mut unsigned = 0usize;
    let mut previous: Option<&AuditDigest> = None;
    for (position, digest) in digests {
        let n = digest.sequence;
        if digest.compute_hash() != digest.hash {
            found(position, format!("digest #{n} edited: its hash does not match its content"));
        }
        match (&options.public_key, &digest.signature) {
            (Some(_), None) => found(position, format!("digest #{n} is not signed, but a public key was given")),
            (Some(key), Some(_)) if !keys::signature_holds(digest, key) => found(
                position,
                format!(
                    "digest #{n}: its signature does not hold for the public key: forged (rebuilt without the \
                     signing key) or edited"
                ),
            ),
            (_, None) => unsigned += 1,
            _ => {}
        }
        match previous {
            None if n != 0 => found(position, format!("digests #0..#{} are missing (removed?)", n - 1)),
            None if digest.prev_hash.is_some() => found(position, "the first digest names a previous one".to_owned()),
            Some(before) if n != before.sequence + 1 => found(
                position,
                if n > before.sequence + 1 {
                    format!("digests #{}..#{} are missing (removed?)", before.sequence + 1, n - 1)
                } else {
                    format!("digest #{n} comes after #{}: replayed or reordered", before.sequence)
                },
            ),
            Some(before) if digest.prev_hash.as_deref() != Some(before.hash.as_str()) => found(
                position,
                format!(
                    "digest #{n}: its prev_hash is not the hash of digest #{}: the chain was rewritten",
                    before.sequence
                ),
            ),
            _ => {}
        }
        previous = Some(digest);
    }
    if let Some(last) = previous {
        notes.push(format!("the last digest, #{}, was sealed at {}", last.sequence, crate::format_time(last.time)));
    }
    if digests.is_empty() {
        notes.push("no digests: nothing is sealed (is the sealer running?)".to_owned());
    } else if options.public_key.is_none() {
        notes.push(
            "signatures not checked: no public key given (--public-key or MEND_AUDIT_PUBLIC_KEY); a log rebuilt \
             with new digests would not be noticed"
                .to_owned(),
        );
    }
    if unsigned > 0 {
        notes.push(format!(
            "{unsigned} digests are unsigned (sealed without MEND_AUDIT_SIGNING_KEY): chained, but anyone could rebuild them"
        ));
    }
}

/// Which digests' ranges the log must hold in full: all of them, or in an
/// export with a time window those that may seal an event of the window
/// (sealed at or after its start, and the one before sealed at or before
/// its end).
pub(crate) fn selected_times(digests: &[&AuditDigest], from: Option<i64>, to: Option<i64>) -> Vec<bool> {
    let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    digests.iter().enumerate().map(|(i, d)| d.time >= from && (i == 0 || digests[i - 1].time <= to)).collect()
}

/// Every sealed range of a chain, per partition, in offset order.
pub(crate) struct SealedIndex<'a> {
    ranges: HashMap<Partition<'a>, Vec<(i64, i64, usize)>>,
}

impl<'a> SealedIndex<'a> {
    /// The ranges of `digests` (each with the index of its digest).
    pub(crate) fn new(digests: &[&'a AuditDigest]) -> Self {
        let mut ranges: HashMap<Partition<'a>, Vec<(i64, i64, usize)>> = HashMap::new();
        for (index, digest) in digests.iter().enumerate() {
            for r in &digest.ranges {
                ranges.entry((&r.topic, r.partition)).or_default().push((r.start(), r.last_offset, index));
            }
        }
        for list in ranges.values_mut() {
            list.sort_unstable();
        }
        Self { ranges }
    }

    /// A partition's ranges, in offset order.
    pub(crate) fn of(&self, topic: &'a str, partition: i32) -> &[(i64, i64, usize)] {
        self.ranges.get(&(topic, partition)).map(Vec::as_slice).unwrap_or_default()
    }

    /// The digest (index) whose range holds `offset`.
    pub(crate) fn covering(&self, topic: &'a str, partition: i32, offset: i64) -> Option<usize> {
        let list = self.of(topic, partition);
        let at = list.partition_point(|r| r.0 <= offset);
        let range = list.get(at.checked_sub(1)?)?;
        (offset <= range.1).then_some(range.2)
    }

    /// Each offset two digests both seal.
    pub(super) fn check_overlaps(&self, digests: &[&AuditDigest], found: &mut dyn FnMut(&LogPosition, String)) {
        for ((topic, partition), ranges) in &self.ranges {
            for pair in ranges.windows(2) {
                let ((_, last, a), (first, _, b)) = (pair[0], pair[1]);
                if first <= last {
                    let at = LogPosition { topic: (*topic).to_owned(), partition: *partition, offset: first };
                    let (a, b) = (digests[a].sequence, digests[b].sequence);
                    found(&at, format!("sealed twice: digests #{a} and #{b} both cover offset {first}"));
                }
            }
        }
    }

    /// The partition's last sealed offset.
    pub(crate) fn last(&self, topic: &'a str, partition: i32) -> Option<i64> {
        self.of(topic, partition).iter().map(|r| r.1).max()
    }
}

/// One sealed range against the records of its partition.
pub(super) fn check_range(
    range: &mend_model::digest::SealedRange,
    sequence: i64,
    digest_at: &LogPosition,
    records: Option<&Vec<(i64, &Entry)>>,
    found: &mut dyn FnMut(&LogPosition, String),
) {
    let at = |offset: i64| LogPosition { topic: range.topic.clone(), partition: range.partition, offset };
    let present: Vec<(i64, &str)> = records
        .map(|r| {
            // From the range's start: an event put where the range says
            // there was none changes its count or its hash.
            let from = r.partition_point(|(o, _)| *o < range.start());
            r[from..]
                .iter()
                .take_while(|(o, _)| *o <= range.last_offset)
                .filter_map(|(o, e)| Some((*o, e.sealed_hash()?)))
                .collect()
        })
        .unwrap_or_default();
    let span = range.last_offset - range.first_offset + 1;
    let count = i64::try_from(present.len()).unwrap_or(i64::MAX);
    if count < range.count {
        if range.count == span {
            // The range was whole when sealed: name each missing offset.
            let have: std::collections::HashSet<i64> = present.iter().map(|(o, _)| *o).collect();
            let mut missing = (range.first_offset..=range.last_offset).filter(|o| !have.contains(o)).peekable();
            while let Some(start) = missing.next() {
                let mut end = start;
                while missing.peek() == Some(&(end + 1)) {
                    end = missing.next().unwrap_or(end);
                }
                let which = if start == end { format!("offset {start}") } else { format!("offsets {start}..{end}") };
                found(
                    &at(start),
                    format!("removed: {which} sealed by digest #{sequence} (at {digest_at}) not in the log"),
                );
            }
        } else {
            found(
                &at(range.first_offset),
                format!(
                    "{} of the {} events digest #{sequence} sealed here are not in the log (removed?)",
                    range.count - count,
                    range.count
                ),
            );
        }
        return;
    }
    if mend_model::digest::SealedRange::hash_events(present.iter().copied()) != range.hash {
        found(
            &at(range.first_offset),
            format!(
                "offsets {}..{} do not hash to what digest #{sequence} sealed: an event was edited, replaced or reordered",
                range.first_offset, range.last_offset
            ),
        );
    }
}
