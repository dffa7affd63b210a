//! One answer, for every stage, to "do records of this writer schema load
//! under this dataset's contract, and as which row?". The loader, the
//! applier's replay and the detector all ask a [`RecordLoader`], so they can
//! never disagree about what fits, and each writer schema is resolved
//! against a contract once per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use mend_config::Nested;
use mend_model::{Contract, QuarantineKind, SqlValue};
use schema_registry_converter::avro_common::AvroSchema;

use crate::codec::{Codec, CodecError, StrictReader, schema_id};
use crate::copy::FlatDecoder;
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
    pub writer: Arc<AvroSchema>,
    /// For a flat writer schema: straight from Avro bytes to COPY text.
    pub flat: Option<FlatDecoder>,
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
}

/// A writer schema's plan, or why its records cannot load.
pub type Fit = Result<Arc<WriterPlan>, Rejection>;

/// A dataset's contract, its schema, and the plan of every writer schema
/// seen under it.
pub struct RecordLoader {
    contract: Contract,
    schema: Arc<AvroSchema>,
    nested: Nested,
    plans: Mutex<HashMap<u32, Fit>>,
}

impl std::fmt::Debug for RecordLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLoader").field("contract", &self.contract).finish_non_exhaustive()
    }
}

impl RecordLoader {
    /// The loader of `contract` (its schema fetched through `codec`).
    pub async fn new(codec: &Codec, contract: Contract, nested: Nested) -> Result<Self, CodecError> {
        let schema = codec.schema(contract.schema_id).await?;
        Ok(Self { contract, schema, nested, plans: Mutex::default() })
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
        let fit = match codec.schema(writer).await {
            Ok(schema) => LoadPlan::new(&schema.parsed, &self.schema.parsed, &self.contract.mapping, self.nested)
                .map_err(|reason| {
                    mismatch(format!(
                        "writer schema {writer} does not match contract schema {}: {reason}",
                        self.contract.schema_id
                    ))
                })
                .and_then(|load| {
                    let flat = FlatDecoder::new(&schema.parsed, &load);
                    let plan = WriterPlan { load, writer: schema, flat };
                    plan.reader()?;
                    Ok(Arc::new(plan))
                }),
            Err(CodecError::Invalid(reason)) => {
                Err(mismatch(format!("writer schema {writer} is unknown to the registry: {reason}")))
            }
            Err(unavailable) => return Err(unavailable),
        };
        self.plans().insert(writer, fit.clone());
        Ok(fit)
    }

    /// The row of one record (Confluent wire format) under the contract, or
    /// why it cannot load. Err only while the registry is unavailable.
    pub async fn row(&self, codec: &Codec, payload: &[u8]) -> Result<Result<Vec<SqlValue>, Rejection>, CodecError> {
        let Some(writer) = schema_id(payload) else {
            return Ok(Err(Rejection::new(QuarantineKind::Undecodable, NOT_WIRE_FORMAT)));
        };
        let plan = match self.fit(codec, writer).await? {
            Ok(plan) => plan,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let value = plan.reader().and_then(|reader| {
            reader.read_value(&mut StrictReader(&payload[5..])).map_err(|error| undecodable(writer, &error))
        });
        Ok(value.and_then(|value| {
            plan.load.row(value).map_err(|reason| Rejection::new(QuarantineKind::ValueRejected, reason))
        }))
    }
}

/// Why a payload without the wire-format header cannot load.
pub const NOT_WIRE_FORMAT: &str = "the value is not in the Confluent wire format (magic byte 0 + schema id)";

/// A record whose bytes do not match its writer schema.
pub fn undecodable(writer: u32, error: &dyn std::fmt::Display) -> Rejection {
    Rejection::new(QuarantineKind::Undecodable, format!("the value does not match its writer schema {writer}: {error}"))
}

/// Per dataset, the [`RecordLoader`] of the contract in force: replaced
/// (and its plans forgotten) when the contract moves.
#[derive(Debug, Default)]
pub struct RecordLoaders {
    by_dataset: Mutex<HashMap<String, Arc<RecordLoader>>>,
}

impl RecordLoaders {
    /// The loader of `contract`, reused while the dataset's contract stays
    /// the same.
    pub async fn get(
        &self,
        codec: &Codec,
        contract: Contract,
        nested: Nested,
    ) -> Result<Arc<RecordLoader>, CodecError> {
        if let Some(loader) = self.lock().get(&contract.dataset)
            && loader.contract == contract
            && loader.nested == nested
        {
            return Ok(loader.clone());
        }
        let loader = Arc::new(RecordLoader::new(codec, contract, nested).await?);
        self.lock().insert(loader.contract.dataset.clone(), loader.clone());
        Ok(loader)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RecordLoader>>> {
        self.by_dataset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
