//! Two schema texts (split at the first 0xFF byte): parsed, classified
//! both ways, and turned into table columns. A schema never drifts from
//! itself.
#![no_main]

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use mend_config::Nested;
use mend_model::Dialect;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&byte| byte == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let parse = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|text| Schema::parse_str(text).ok());
    let (Some(old), Some(new)) = (parse(a), parse(b)) else { return };
    assert!(mend_avro::drift::classify(&old, &old).is_empty(), "a schema drifted from itself");
    let _ = mend_avro::drift::classify(&old, &new);
    let _ = mend_avro::drift::classify(&new, &old);
    for dialect in [Dialect::Postgres, Dialect::Sqlite] {
        for nested in [Nested::Json, Nested::Flatten] {
            if let Ok((_, mapping)) = mend_avro::schema::columns_for(&old, dialect, nested) {
                let _ = mend_avro::plan::LoadPlan::new(&new, &old, &mapping, nested);
            }
        }
    }
});
