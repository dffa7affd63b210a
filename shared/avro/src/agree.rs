//! One record through both decoders, as the property tests (`fuzz.rs`) and
//! the coverage-guided fuzz targets (`fuzz/`) drive them: the flat COPY
//! decoder must refuse a record exactly when, and for the same reason as,
//! the generic path (apache-avro, then the load plan).

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use mend_config::Nested;
use mend_model::{Dialect, Position, QuarantineKind, SqlValue};

use crate::copy::FlatDecoder;
use crate::loader::read_datum;
use crate::plan::LoadPlan;
use crate::schema::columns_for;

/// What the flat decoder makes of `datum`.
pub fn flat_kind(decoder: &FlatDecoder, datum: &[u8], key: &[usize]) -> Result<(), QuarantineKind> {
    let mut out = Vec::new();
    decoder.decode(datum, Position { partition: 0, offset: 0 }, key, &mut out).map_err(|e| e.kind())
}

/// What the generic path makes of `datum`.
pub fn generic_kind(
    reader: &GenericDatumReader<'_>,
    plan: &LoadPlan,
    datum: &[u8],
    key: &[usize],
) -> Result<(), QuarantineKind> {
    let value = read_datum(reader, 1, datum).map_err(|r| r.kind)?;
    let values = plan.row(value).map_err(|_| QuarantineKind::ValueRejected)?;
    match key.iter().any(|i| values[*i] == SqlValue::Null) {
        true => Err(QuarantineKind::MissingKey),
        false => Ok(()),
    }
}

/// Reads each of `datums` of `writer` against `contract` (a table made
/// from it, keyed by its `id` column if any) in both dialects and both
/// nestings. Err names a record the two decoders judge differently.
/// Returns how many records were judged.
pub fn judge(writer: &Schema, contract: &Schema, datums: &[&[u8]]) -> Result<usize, String> {
    let mut judged = 0;
    for nested in [Nested::Json, Nested::Flatten] {
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let Ok((_, mapping)) = columns_for(contract, dialect, nested) else { continue };
            let Ok(plan) = LoadPlan::new(writer, contract, &mapping, nested) else { continue };
            let key: Vec<usize> = plan.columns.iter().position(|c| c == "id").into_iter().collect();
            let reader = GenericDatumReader::builder(writer).build().map_err(|e| format!("no reader: {e}"))?;
            let flat = FlatDecoder::new(writer, &plan);
            for datum in datums {
                let generic = generic_kind(&reader, &plan, datum, &key);
                if let Some(flat) = &flat {
                    let fast = flat_kind(flat, datum, &key);
                    if fast != generic {
                        return Err(format!("datum {datum:?}: flat {fast:?}, generic {generic:?} ({nested:?})"));
                    }
                }
                judged += 1;
            }
        }
    }
    Ok(judged)
}
