//! One answer, for every stage, to "do records of this writer schema load
//! under this dataset's contract, and as which row?". The loader, the
//! applier's replay and the detector all ask a [`RecordLoader`], so they can
//! never disagree about what fits, and each writer schema is resolved
//! against a contract once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use mend_config::{Dataset, Nested};
use mend_model::{Contract, MAX_RECORD_BYTES, QuarantineKind, SqlValue};

use crate::codec::{Codec, CodecError, StrictReader, WriterSchema, schema_id};
use crate::copy::FlatDecoder;
use crate::datum::FlatError;
use crate::plan::LoadPlan;

/// Why a record cannot be loaded: what its quarantine event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: QuarantineKind,
    pub reason: String,
}

impl Rejection {
    pub fn new(kind: QuarantineKind, reason: impl Into<String>) -> Self {
        Self { kind, reason: reason.into() }
    }
}

/// How the records of one writer schema load under a contract.
pub struct WriterPlan {
    pub load: LoadPlan,
    pub writer: Arc<WriterSchema>,
    /// For a flat writer schema: straight from Avro bytes to COPY text.
    pub flat: Option<FlatDecoder>,
    /// The dataset's key columns, as indices into `load.columns`: a row
    /// whose key is null cannot be upserted.
    pub key: Vec<usize>,
}

impl WriterPlan {
    /// A decoder of this writer's records (pair it with [`StrictReader`], so
    /// a record cut short is an error, not NULLs).
    pub fn reader(&self) -> Result<GenericDatumReader<'_>, Rejection> {
        GenericDatumReader::builder(&self.writer.parsed).build().map_err(|error| {
            Rejection::new(
                QuarantineKind::SchemaMismatch,
                format!("writer schema {} cannot be decoded: {error}", self.writer.id),
            )
        })
    }

    /// What the quarantine says of a record the flat decoder refused.
    pub fn rejection(&self, error: FlatError) -> Rejection {
        let writer = self.writer.id;
        match error {
            FlatError::Undecodable(reason) => undecodable(writer, &reason),
            FlatError::Truncated(size) => truncated(writer, size),
            FlatError::TrailingBytes(extra) => trailing_bytes(writer, extra),
            FlatError::InvalidUtf8 => invalid_utf8(writer),
            FlatError::Rejected(reason) => Rejection::new(QuarantineKind::ValueRejected, reason),
            FlatError::MissingKey(column) => missing_key(&self.load.columns[column]),
        }
    }

    /// Why `values` (a row of this plan) cannot load: a key column is null.
    pub fn missing_key(&self, values: &[SqlValue]) -> Option<Rejection> {
        let column = self.key.iter().find(|i| matches!(values.get(**i), Some(SqlValue::Null)))?;
        Some(missing_key(&self.load.columns[*column]))
    }
}

/// A keyed dataset's record whose key column `column` is null.
pub fn missing_key(column: &str) -> Rejection {
    Rejection::new(QuarantineKind::MissingKey, format!("key column {column} is null: a keyed row needs its key"))
}

/// A writer schema's plan, or why its records cannot load.
pub type Fit = Result<Arc<WriterPlan>, Rejection>;

/// A dataset's contract, its schema, and the plan of every writer schema
/// seen under it.
pub struct RecordLoader {
    contract: Contract,
    schema: Arc<WriterSchema>,
    shape: Shape,
    plans: Mutex<HashMap<u32, Fit>>,
}

/// What of a dataset's configuration decides how its records load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    nested: Nested,
    key: Vec<String>,
    subject: String,
}

impl Shape {
    fn of(dataset: &Dataset) -> Self {
        Self { nested: dataset.nested, key: dataset.key.clone(), subject: dataset.subject() }
    }
}

impl std::fmt::Debug for RecordLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLoader").field("contract", &self.contract).finish_non_exhaustive()
    }
}

impl RecordLoader {
    /// The loader of `dataset`'s records under `contract` (its schema
    /// fetched through `codec`).
    pub async fn new(codec: &Codec, dataset: &Dataset, contract: Contract) -> Result<Self, CodecError> {
        let shape = Shape::of(dataset);
        // Listing the subject finds the contract's schema and, in the same
        // request, the others its records are written with. (A contract
        // whose version was deleted since is still the contract.)
        let schema = match codec.live_schema_of(&shape.subject, contract.schema_id).await? {
            Some(schema) => schema,
            None => codec.schema(contract.schema_id).await?,
        };
        Ok(Self { contract, schema, shape, plans: Mutex::default() })
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    /// The contract's schema.
    pub fn schema(&self) -> &Schema {
        &self.schema.parsed
    }

    fn plans(&self) -> MutexGuard<'_, HashMap<u32, Fit>> {
        self.plans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether (and how) records of writer schema `writer` load under the
    /// contract; computed once per writer. Err only while the registry is
    /// unavailable.
    pub async fn fit(&self, codec: &Codec, writer: u32) -> Result<Fit, CodecError> {
        if let Some(fit) = self.plans().get(&writer) {
            return Ok(fit.clone());
        }
        let mismatch = |reason: String| Rejection::new(QuarantineKind::SchemaMismatch, reason);
        let fit = match origin(codec, writer, &self.shape.subject).await? {
            Err(rejection) => Err(rejection),
            Ok(schema) => LoadPlan::new(&schema.parsed, &self.schema.parsed, &self.contract.mapping, self.shape.nested)
                .map_err(|reason| {
                    mismatch(format!(
                        "writer schema {writer} does not match contract schema {}: {reason}",
                        self.contract.schema_id
                    ))
                })
                .and_then(|load| {
                    let flat = FlatDecoder::new(&schema.parsed, &load);
                    let key = self
                        .shape
                        .key
                        .iter()
                        .filter_map(|column| load.columns.iter().position(|c| c == column))
                        .collect();
                    let plan = WriterPlan { load, writer: schema, flat, key };
                    plan.reader()?;
                    Ok(Arc::new(plan))
                }),
        };
        self.plans().insert(writer, fit.clone());
        Ok(fit)
    }

    /// The row of one record (Confluent wire format) under the contract, or
    /// why it cannot load. Err only while the registry is unavailable.
    pub async fn row(&self, codec: &Codec, payload: &[u8]) -> Result<Result<Vec<SqlValue>, Rejection>, CodecError> {
        let writer = match frame(payload) {
            Ok(writer) => writer,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let plan = match self.fit(codec, writer).await? {
            Ok(plan) => plan,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let row = plan.reader().and_then(|reader| read_datum(&reader, writer, &payload[5..])).and_then(|value| {
            let values =
                plan.load.row(value).map_err(|reason| Rejection::new(QuarantineKind::ValueRejected, reason))?;
            plan.missing_key(&values).map_or(Ok(values), Err)
        });
        Ok(row)
    }
}

/// The writer schema of a record's header, or why the record cannot load
/// before its datum is read: too large, or not in the wire format.
pub fn frame(payload: &[u8]) -> Result<u32, Rejection> {
    if payload.len() > MAX_RECORD_BYTES {
        return Err(too_large(payload.len()));
    }
    schema_id(payload).ok_or_else(|| Rejection::new(QuarantineKind::NotWireFormat, NOT_WIRE_FORMAT))
}

/// A record of `size` bytes, over [`MAX_RECORD_BYTES`].
pub fn too_large(size: usize) -> Rejection {
    Rejection::new(
        QuarantineKind::TooLarge,
        format!(
            "the value is {size} bytes, over the {MAX_RECORD_BYTES}-byte limit: not decoded, and kept only in \
             its source topic (this event names its partition and offset)"
        ),
    )
}

/// Writer schema `writer`, or why records written with it cannot load under
/// `subject`: an id the registry does not know, one registered only under
/// versions deleted since, or one of another subject. Err only while the
/// registry is unavailable.
pub async fn origin(
    codec: &Codec,
    writer: u32,
    subject: &str,
) -> Result<Result<Arc<WriterSchema>, Rejection>, CodecError> {
    if let Some(schema) = codec.live_schema_of(subject, writer).await? {
        return Ok(Ok(schema));
    }
    // Not the subject's (or the registry cannot list it): find out why.
    let schema = match codec.schema(writer).await {
        Ok(schema) => schema,
        Err(CodecError::Invalid(reason)) => {
            let kind = if CodecError::Invalid(reason.clone()).is_not_found() {
                QuarantineKind::UnknownSchema
            } else {
                QuarantineKind::SchemaMismatch
            };
            return Ok(Err(Rejection::new(
                kind,
                format!("writer schema {writer} is unknown to the registry: {reason}"),
            )));
        }
        Err(unavailable) => return Err(unavailable),
    };
    let subjects = match codec.live_subjects(writer).await {
        Ok(subjects) => subjects,
        // Deleted for good between the two calls.
        Err(CodecError::Invalid(_)) => Vec::new(),
        Err(unavailable) => return Err(unavailable),
    };
    if subjects.is_empty() {
        return Ok(Err(Rejection::new(
            QuarantineKind::DeletedSchema,
            format!("writer schema {writer} was deleted from the registry: no version of any subject holds it now"),
        )));
    }
    if !subjects.iter().any(|s| s == subject) {
        return Ok(Err(Rejection::new(
            QuarantineKind::ForeignSchema,
            format!("writer schema {writer} is registered under {}, not under {subject}", subjects.join(", ")),
        )));
    }
    Ok(Ok(schema))
}

/// Reads one datum (without the 5-byte header) strictly, naming what is
/// wrong with bytes that do not follow writer schema `writer`.
pub fn read_datum(reader: &GenericDatumReader<'_>, writer: u32, datum: &[u8]) -> Result<Value, Rejection> {
    let mut strict = StrictReader::new(datum);
    match reader.read_value(&mut strict) {
        Ok(value) if strict.rest().is_empty() => Ok(value),
        Ok(_) => Err(trailing_bytes(writer, strict.rest().len())),
        Err(error) => Err(match error.details() {
            _ if strict.ended() => truncated(writer, datum.len()),
            Details::MemoryAllocation { .. } => truncated(writer, datum.len()),
            Details::ConvertToUtf8(_) | Details::ConvertToUtf8Error(_) => invalid_utf8(writer),
            _ => undecodable(writer, &error),
        }),
    }
}

/// Why a payload without the wire-format header cannot load.
pub const NOT_WIRE_FORMAT: &str =
    "the value is not in the Confluent wire format (magic byte 0 + 4-byte schema id + Avro datum)";

/// A record whose bytes do not match its writer schema.
pub fn undecodable(writer: u32, error: &dyn std::fmt::Display) -> Rejection {
    Rejection::new(QuarantineKind::Undecodable, format!("the value does not match its writer schema {writer}: {error}"))
}

/// A datum of `size` bytes that ends before writer schema `writer` does.
pub fn truncated(writer: u32, size: usize) -> Rejection {
    Rejection::new(
        QuarantineKind::Truncated,
        format!("the value ends after {size} bytes, before its writer schema {writer} does (cut short?)"),
    )
}

/// A datum followed by `extra` bytes its writer schema does not describe.
pub fn trailing_bytes(writer: u32, extra: usize) -> Rejection {
    Rejection::new(
        QuarantineKind::TrailingBytes,
        format!("{extra} bytes are left over after the record writer schema {writer} describes"),
    )
}

/// A string field whose bytes are not UTF-8.
pub fn invalid_utf8(writer: u32) -> Rejection {
    Rejection::new(
        QuarantineKind::InvalidUtf8,
        format!("a string of the value (writer schema {writer}) is not valid UTF-8"),
    )
}

/// Per dataset, the [`RecordLoader`] of the contract in force: replaced
/// (and its plans forgotten) when the contract moves.
#[derive(Debug, Default)]
pub struct RecordLoaders {
    by_dataset: Mutex<HashMap<String, Arc<RecordLoader>>>,
}

impl RecordLoaders {
    /// The loader of `dataset` under `contract`, reused while the dataset's
    /// contract stays the same.
    pub async fn get(
        &self,
        codec: &Codec,
        dataset: &Dataset,
        contract: Contract,
    ) -> Result<Arc<RecordLoader>, CodecError> {
        if let Some(loader) = self.lock().get(&contract.dataset)
            && loader.contract == contract
            && loader.shape == Shape::of(dataset)
        {
            return Ok(loader.clone());
        }
        let loader = Arc::new(RecordLoader::new(codec, dataset, contract).await?);
        self.lock().insert(loader.contract.dataset.clone(), loader.clone());
        Ok(loader)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RecordLoader>>> {
        self.by_dataset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
