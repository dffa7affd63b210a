//! The judge alone: records in, verdicts and bookkeeping out, no broker,
//! registry or database.

use std::collections::{BTreeMap, HashMap, HashSet};

use mend_avro::loader::Rejection;
use mend_config::Dataset;
use mend_model::{Dialect, MAX_RECORD_BYTES, Position, QuarantineKind};
use mend_runtime::handler::{Disposition, Inbound};
use mend_store::{Advance, Bookkeeping};

use super::Judge;

fn record(partition: i32, offset: i64, payload: Option<Vec<u8>>) -> Inbound {
    Inbound { topic: "shop.orders".into(), partition, offset, key: None, payload, headers: Vec::new() }
}

/// Confluent's frame: magic byte 0, then the writer schema id.
fn framed(writer: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&writer.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

struct Judged {
    out: Vec<Option<Disposition>>,
    bookkeeping: Bookkeeping,
    next: BTreeMap<i32, Advance>,
}

fn judge_all(judge: &Judge<'_>, records: &[Inbound]) -> Judged {
    let indices: Vec<usize> = (0..records.len()).collect();
    let (mut out, mut bookkeeping, mut next) = (vec![None; records.len()], Bookkeeping::default(), BTreeMap::new());
    judge.chunk(records, &indices, &mut out, &mut bookkeeping, &mut next);
    Judged { out, bookkeeping, next }
}

/// The kind a record was quarantined with; None when it was not.
fn kind(disposition: Option<&Disposition>) -> Option<QuarantineKind> {
    match disposition {
        Some(Disposition::Quarantine(reason)) => Some(reason.kind),
        _ => None,
    }
}

fn dataset() -> Dataset {
    Dataset { name: "orders".into(), topic: "shop.orders".into(), table: "orders".into(), ..Dataset::default() }
}

#[test]
fn records_written_before_are_skipped_unless_they_went_to_quarantine() {
    let (dataset, refused) = (dataset(), HashMap::new());
    let judge = Judge {
        dataset: &dataset,
        dialect: Dialect::Sqlite,
        writers: HashMap::new(),
        stored: HashMap::from([(0, 10)]),
        requarantine: HashMap::from([(0, HashSet::from([4]))]),
        refused: &refused,
    };
    // Offsets 3 and 4 were written by an earlier delivery; 4 went to
    // quarantine then (a tombstone), so it is judged, and quarantined, again.
    let judged = judge_all(&judge, &[record(0, 3, None), record(0, 4, None), record(0, 10, None)]);
    assert!(matches!(judged.out[0], Some(Disposition::Emit(ref outputs)) if outputs.is_empty()));
    assert_eq!(kind(judged.out[1].as_ref()), Some(QuarantineKind::NullValue));
    assert_eq!(kind(judged.out[2].as_ref()), Some(QuarantineKind::NullValue));
    let positions: Vec<Position> = judged.bookkeeping.quarantined.iter().map(|q| q.position).collect();
    assert_eq!(positions, [Position { partition: 0, offset: 4 }, Position { partition: 0, offset: 10 }]);
    // The partition moves from what was stored to past the batch.
    assert_eq!(judged.next.get(&0), Some(&Advance { partition: 0, from: Some(10), to: 11 }));
}

#[test]
fn each_bad_record_is_quarantined_with_its_kind_and_kept_when_it_fits() {
    let dataset = dataset();
    let refused = HashMap::from([(0, "value too long for type character varying(3)".to_owned())]);
    let mismatch = Rejection::new(QuarantineKind::SchemaMismatch, "field amount is a string in the record");
    let judge = Judge {
        dataset: &dataset,
        dialect: Dialect::Postgres,
        writers: HashMap::from([(8, Err(mismatch))]),
        stored: HashMap::new(),
        requarantine: HashMap::new(),
        refused: &refused,
    };
    let too_large = framed(8, &vec![0; MAX_RECORD_BYTES]);
    let records = [
        record(1, 0, Some(framed(7, b"x"))), // the warehouse refused a value of it
        record(1, 1, Some(vec![1, 2])),      // not in Confluent's frame
        record(1, 2, Some(framed(8, b"x"))), // its writer does not fit the contract
        record(1, 3, Some(framed(9, b"x"))), // a writer the batch did not look up
        record(1, 4, Some(too_large)),       // too large to load, and to keep
    ];
    let judged = judge_all(&judge, &records);
    let kinds: Vec<Option<QuarantineKind>> = judged.out.iter().map(|d| kind(d.as_ref())).collect();
    assert_eq!(
        kinds,
        [
            Some(QuarantineKind::ValueRejected),
            Some(QuarantineKind::NotWireFormat),
            Some(QuarantineKind::SchemaMismatch),
            Some(QuarantineKind::SchemaMismatch),
            Some(QuarantineKind::TooLarge),
        ]
    );
    let Some(Disposition::Quarantine(refusal)) = &judged.out[0] else { panic!("{:?}", judged.out[0]) };
    assert!(refusal.reason.contains("character varying(3)"), "{}", refusal.reason);
    assert_eq!(refusal.dataset.as_deref(), Some("orders"));
    let kept: Vec<(i64, Option<u32>, bool)> =
        judged.bookkeeping.quarantined.iter().map(|q| (q.position.offset, q.writer, q.payload.is_some())).collect();
    assert_eq!(
        kept,
        [(0, Some(7), true), (1, None, true), (2, Some(8), true), (3, Some(9), true), (4, Some(8), false)]
    );
    assert_eq!(judged.next.get(&1), Some(&Advance { partition: 1, from: None, to: 5 }));
}
