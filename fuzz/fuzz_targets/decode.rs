//! A record of the wire format read against its contract: the first byte
//! picks a (writer, contract) pair, the rest is the record. The header is
//! checked, and the flat COPY decoder and the generic path must judge the
//! datum alike (`mend_avro::agree`).
#![no_main]

use std::sync::LazyLock;

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;

/// Every leaf type the flat decoder reads, nullable or not, and an enum.
const FLAT: &str = r#"{"type":"record","name":"Flat","fields":[
  {"name":"id","type":"long"},{"name":"n","type":"int"},{"name":"f","type":"float"},
  {"name":"d","type":["null","double"],"default":null},{"name":"b","type":"boolean"},
  {"name":"s","type":"string"},{"name":"raw","type":["bytes","null"]},
  {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}},
  {"name":"day","type":{"type":"int","logicalType":"date"}},
  {"name":"at","type":["null",{"type":"long","logicalType":"timestamp-millis"}]}]}"#;
/// The same record before drift: `n` was an int (now read as a long), no `at`.
const FLAT_BEFORE: &str = r#"{"type":"record","name":"Flat","fields":[
  {"name":"id","type":"long"},{"name":"n","type":"long"},{"name":"f","type":"double"},
  {"name":"d","type":["null","double"],"default":null},{"name":"b","type":"boolean"},
  {"name":"s","type":"string"},{"name":"raw","type":["bytes","null"]},
  {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C","D"]}},
  {"name":"day","type":{"type":"int","logicalType":"date"}}]}"#;
/// Nested records, arrays, maps, fixed, decimal and uuid: the generic path.
const NESTED: &str = r#"{"type":"record","name":"Order","fields":[
  {"name":"id","type":["null","long"]},
  {"name":"ship","type":{"type":"record","name":"Ship","fields":[
    {"name":"city","type":"string"},{"name":"zip","type":["null","string"],"default":null}]}},
  {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
    {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
  {"name":"tags","type":{"type":"map","values":"string"}},
  {"name":"code","type":{"type":"fixed","name":"Code","size":4}},
  {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
  {"name":"ref","type":{"type":"string","logicalType":"uuid"}}]}"#;

static PAIRS: LazyLock<Vec<(Schema, Schema)>> = LazyLock::new(|| {
    // A fixed schema that stopped parsing would leave nothing fuzzed: fail loudly.
    let parse = |text: &str| Schema::parse_str(text).unwrap_or_else(|e| panic!("a fixed schema: {e}"));
    vec![(parse(FLAT), parse(FLAT)), (parse(FLAT), parse(FLAT_BEFORE)), (parse(NESTED), parse(NESTED))]
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    if let Ok(id) = mend_avro::loader::frame(payload) {
        assert_eq!(id, u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]));
    }
    let (writer, contract) = &PAIRS[usize::from(pick) % PAIRS.len()];
    if let Err(disagreement) = mend_avro::agree::judge(writer, contract, &[payload]) {
        panic!("{disagreement}");
    }
});
