//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
//! datum) and mend's one client of a Confluent-compatible registry, both
//! through schema_registry_converter.
//!
//! Schemas are fetched once per id and cached, so the cost per record is the
//! Avro decode alone, never an HTTP call; the loader learns a subject's
//! schemas from one listing of the subject ([`Codec::live_schema_of`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_versions, get_schema_by_subject_and_version, post_schema,
};
use schema_registry_converter::error::SRCError;
pub use schema_registry_converter::schema_registry_common::RegisteredSchema;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

use mend_model::audit::AuditEvent;
use mend_model::events::Event;
use mend_model::topics;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a retryable error:
    /// try again later, the record is fine.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The payload is not what it claims to be (no magic byte, unknown schema
    /// id, bytes that do not match the schema): the record is bad input.
    #[error("{0}")]
    Invalid(String),
}

impl From<SRCError> for CodecError {
    fn from(error: SRCError) -> Self {
        let message = match &error.cause {
            Some(cause) => format!("{}: {cause}", error.error),
            None => error.error.clone(),
        };
        if error.retriable { Self::Unavailable(message) } else { Self::Invalid(message) }
    }
}

impl CodecError {
    /// Whether the registry answered 404: no such subject, version or id.
    /// (schema_registry_converter keeps the status only in its message.)
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Invalid(message) if message.contains("status 404"))
    }
}

impl mend_model::Classify for CodecError {
    fn next(&self) -> mend_model::Next {
        match self {
            Self::Unavailable(_) => mend_model::Next::Retry,
            Self::Invalid(_) => mend_model::Next::Quarantine(mend_model::QuarantineKind::Undecodable),
        }
    }
}

/// The writer schema id in a wire-format payload's 5-byte header, if the
/// payload has one. This is the detector's per-record cost: no decode.
pub fn schema_id(payload: &[u8]) -> Option<u32> {
    match payload {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// A datum reader for apache-avro that reports a datum ending early as an
/// error: apache-avro turns an unexpected end of input while reading a
/// string, a boolean or a union index into a null, which would load a
/// truncated record with NULLs. After a read, [`StrictReader::ended`] says
/// whether the datum ran out and [`StrictReader::rest`] what is left over.
pub struct StrictReader<'d> {
    rest: &'d [u8],
    ended: bool,
}

impl<'d> StrictReader<'d> {
    pub fn new(datum: &'d [u8]) -> Self {
        Self { rest: datum, ended: false }
    }

    /// Whether a read wanted more bytes than the datum has.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'d [u8] {
        self.rest
    }
}

impl std::io::Read for StrictReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rest.read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.len() > self.rest.len() {
            self.ended = true;
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the record ends before its schema does"));
        }
        self.rest.read_exact(buf)
    }
}

/// How long a subject's listing answers for an id it does not hold.
pub const RELIST_AFTER: Duration = Duration::from_secs(1);

/// A writer schema from the registry: its id, its text, parsed.
#[derive(Debug)]
pub struct WriterSchema {
    pub id: u32,
    pub raw: String,
    pub parsed: apache_avro::Schema,
}

/// Encodes and decodes Avro payloads in the Confluent wire format, caching
/// schemas per id (decode) and per subject (encode).
pub struct Codec {
    settings: SrSettings,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    cache: CacheCounters,
    /// Writer schemas by id (ids are immutable in a registry: never stale).
    schemas: Mutex<HashMap<u32, Arc<WriterSchema>>>,
    /// The ids each subject held in a version not deleted, and when it
    /// was listed.
    subjects: Mutex<HashMap<String, (Instant, HashSet<u32>)>>,
    /// The registry has no `GET /schemas` (older than Confluent 7.x).
    no_listing: AtomicBool,
    /// For the calls schema_registry_converter does not make.
    http: reqwest::Client,
    url: String,
}

/// How often a writer schema was already cached (hit) or had to be asked
/// of the registry (miss). The decoder keeps every schema it fetched, so a
/// schema id seen before, and read successfully, is a hit.
#[derive(Debug, Default)]
pub struct CacheCounters {
    seen: std::sync::Mutex<std::collections::HashSet<u32>>,
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

impl CacheCounters {
    /// Counts one look-up of `id`.
    fn look_up(&self, id: u32) {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = self.seen.lock().map(|s| s.contains(&id)).unwrap_or(false);
        if seen { &self.hits } else { &self.misses }.fetch_add(1, Relaxed);
    }

    /// Marks `id` as cached after a successful read.
    fn cached(&self, id: u32) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(id);
        }
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec talking to the registry at `registry_url`.
    pub fn new(registry_url: &str) -> Result<Arc<Self>, CodecError> {
        // A hostile length in a datum is an error, not an allocation: no
        // field of a record mend decodes is larger than the record.
        apache_avro::util::max_allocation_bytes(mend_model::MAX_RECORD_BYTES);
        let url = registry_url.trim_end_matches('/').to_owned();
        let settings = SrSettings::new_builder(url.clone())
            .set_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(CodecError::from)?;
        Ok(Arc::new(Self {
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings.clone()),
            settings,
            cache: CacheCounters::default(),
            schemas: Mutex::default(),
            subjects: Mutex::default(),
            no_listing: AtomicBool::new(false),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| CodecError::Invalid(format!("an HTTP client for the registry: {e}")))?,
            url,
        }))
    }

    /// Encodes an event with its `.avsc` schema, registering the schema under
    /// `<topic>-value` the first time.
    pub async fn encode_event<E: Event>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        self.encode_value(E::TOPIC, E::SCHEMA, event).await
    }

    /// Encodes `value` for `topic` with the `.avsc` `schema`, registered
    /// under `<topic>-value` (mend's records that are not incident events,
    /// such as audit digests).
    pub async fn encode_value<T: serde::Serialize>(
        &self,
        topic: &str,
        schema: &str,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.to_owned(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned()),
        );
        Ok(self.encoder.encode_struct(value, &strategy).await?)
    }

    /// Decodes an event published by any version of its schema.
    pub async fn decode_event<E: Event>(&self, payload: &[u8]) -> Result<E, CodecError> {
        self.decode_value(E::TOPIC, payload).await
    }

    /// Decodes a record of the audit topic `topic` into its event.
    pub async fn decode_audit(&self, topic: &str, payload: &[u8]) -> Result<AuditEvent, CodecError> {
        Ok(match topic {
            topics::QUARANTINE => AuditEvent::Quarantined(self.decode_event(payload).await?),
            topics::DETECTIONS => AuditEvent::Detection(self.decode_event(payload).await?),
            topics::DIAGNOSES => AuditEvent::Diagnosis(self.decode_event(payload).await?),
            topics::PROPOSALS => AuditEvent::Proposal(self.decode_event(payload).await?),
            topics::DECISIONS => AuditEvent::Decision(self.decode_event(payload).await?),
            topics::APPLICATIONS => AuditEvent::Application(self.decode_event(payload).await?),
            topics::AGENT_RUNS => AuditEvent::AgentRun(self.decode_event(payload).await?),
            other => return Err(CodecError::Invalid(format!("{other} is not an audit topic"))),
        })
    }

    /// Decodes a record of `topic` published by any version of its schema.
    pub async fn decode_value<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        let value = self.decode(payload).await?;
        apache_avro::from_value(&value).map_err(|e| CodecError::Invalid(format!("payload does not match {topic}: {e}")))
    }

    /// Decodes any wire-format payload with its writer schema.
    pub async fn decode(&self, payload: &[u8]) -> Result<Value, CodecError> {
        let id = schema_id(payload);
        if let Some(id) = id {
            self.cache.look_up(id);
        }
        let decoded = self.decoder.decode(Some(payload)).await;
        match (&decoded, id) {
            // A schema id unknown now may be registered a moment later (the
            // producer registers before it writes): never keep that verdict.
            (Err(_), _) => self.decoder.remove_errors_from_cache(),
            (Ok(_), Some(id)) => self.cache.cached(id),
            (Ok(_), None) => {}
        }
        Ok(decoded?.value)
    }

    /// Decodes a dataset record with its writer schema, strictly (a datum
    /// that ends early is invalid, see [`StrictReader`]).
    pub async fn decode_record(&self, payload: &[u8]) -> Result<Value, CodecError> {
        let id = schema_id(payload)
            .ok_or_else(|| CodecError::Invalid("not in the Confluent wire format (magic byte 0 + schema id)".into()))?;
        let schema = self.schema(id).await?;
        let invalid = |e: apache_avro::Error| {
            CodecError::Invalid(format!("the value does not match its writer schema {id}: {e}"))
        };
        GenericDatumReader::builder(&schema.parsed)
            .build()
            .map_err(invalid)?
            .read_value(&mut StrictReader::new(&payload[5..]))
            .map_err(invalid)
    }

    /// The subjects holding schema `id` in a version not deleted (Confluent's
    /// `GET /schemas/ids/{id}/versions`); empty when every such version was
    /// deleted. Err Invalid when the registry does not know the id.
    pub async fn live_subjects(&self, id: u32) -> Result<Vec<String>, CodecError> {
        #[derive(serde::Deserialize)]
        struct Usage {
            subject: String,
        }
        let url = format!("{}/schemas/ids/{id}/versions", self.url);
        let unavailable = |e: reqwest::Error| CodecError::Unavailable(format!("{url}: {e}"));
        let response = self.http.get(&url).send().await.map_err(unavailable)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = format!("{url}: status {status}: {body}");
            return Err(if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                CodecError::Unavailable(message)
            } else {
                CodecError::Invalid(message)
            });
        }
        let usages: Vec<Usage> = response.json().await.map_err(unavailable)?;
        let mut subjects: Vec<String> = usages.into_iter().map(|u| u.subject).collect();
        subjects.dedup();
        Ok(subjects)
    }

    /// The writer schema of `id` (cached).
    pub async fn schema(&self, id: u32) -> Result<Arc<WriterSchema>, CodecError> {
        self.cache.look_up(id);
        if let Some(schema) = self.schemas.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned() {
            self.cache.cached(id);
            return Ok(schema);
        }
        let fetched = match self.decoder.get_schema(id).await {
            Ok(fetched) => fetched,
            Err(error) => {
                self.decoder.remove_errors_from_cache();
                return Err(error.into());
            }
        };
        self.cache.cached(id);
        let schema = Arc::new(WriterSchema { id, raw: fetched.raw.clone(), parsed: fetched.parsed.clone() });
        Ok(self.schemas.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_insert(schema).clone())
    }

    /// Writer schema `id` when `subject` holds it in a version not deleted;
    /// None when it does not, or the registry cannot list a subject's
    /// schemas. One request (Confluent's `GET /schemas?subjectPrefix=`)
    /// answers for every schema of the subject, so the loader asks the
    /// registry once per subject, and again only for an id it has not seen
    /// under the subject.
    ///
    /// An id not in the listing lists the subject again (it may have been
    /// registered since), at most once a [`RELIST_AFTER`]: records of
    /// unknown ids cost one listing a second, not one each.
    pub async fn live_schema_of(&self, subject: &str, id: u32) -> Result<Option<Arc<WriterSchema>>, CodecError> {
        let listed = |codec: &Self| {
            let subjects = codec.subjects.lock().unwrap_or_else(PoisonError::into_inner);
            subjects.get(subject).map(|(when, ids)| (ids.contains(&id), when.elapsed() < RELIST_AFTER))
        };
        match listed(self) {
            Some((true, _)) => {}
            Some((false, true)) => return Ok(None),
            None | Some((false, false)) => {
                if self.no_listing.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                self.list_subject(subject).await?;
                if !listed(self).is_some_and(|(has, _)| has) {
                    return Ok(None);
                }
            }
        }
        self.schema(id).await.map(Some)
    }

    /// Lists the schemas `subject` holds in versions not deleted, keeping
    /// their ids and (unless they have references) parsed schemas.
    async fn list_subject(&self, subject: &str) -> Result<(), CodecError> {
        #[derive(serde::Deserialize)]
        struct Listed {
            subject: String,
            id: u32,
            schema: String,
            #[serde(default)]
            references: Vec<serde_json::Value>,
            #[serde(default, rename = "schemaType")]
            schema_type: Option<String>,
        }
        let url = reqwest::Url::parse_with_params(&format!("{}/schemas", self.url), [("subjectPrefix", subject)])
            .map_err(|e| CodecError::Invalid(format!("the registry's URL {}: {e}", self.url)))?;
        let unavailable = |e: reqwest::Error| CodecError::Unavailable(format!("{url}: {e}"));
        let response = self.http.get(url.clone()).send().await.map_err(unavailable)?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(CodecError::Unavailable(format!("{url}: status {status}")));
        }
        if !status.is_success() {
            tracing::info!(%url, %status, "the registry does not list schemas; asking for each schema's subjects");
            self.no_listing.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let listed: Vec<Listed> = response.json().await.map_err(unavailable)?;
        let mut ids = HashSet::new();
        for entry in listed.into_iter().filter(|l| l.subject == subject) {
            ids.insert(entry.id);
            // A schema with references is parsed by schema_registry_converter,
            // which resolves them, when it is first needed (and one not in
            // Avro is refused there).
            if entry.references.is_empty()
                && entry.schema_type.as_deref().is_none_or(|t| t == "AVRO")
                && let Ok(parsed) = apache_avro::Schema::parse_str(&entry.schema)
            {
                let schema = Arc::new(WriterSchema { id: entry.id, raw: entry.schema, parsed });
                self.schemas.lock().unwrap_or_else(PoisonError::into_inner).entry(entry.id).or_insert(schema);
            }
        }
        self.subjects.lock().unwrap_or_else(PoisonError::into_inner).insert(subject.to_owned(), (Instant::now(), ids));
        Ok(())
    }

    /// Writer-schema cache hits and misses so far.
    pub fn cache(&self) -> &CacheCounters {
        &self.cache
    }

    /// The versions registered under `subject`, ascending.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, CodecError> {
        Ok(get_all_versions(&self.settings, subject.to_owned()).await?)
    }

    /// A version of `subject` (the latest when `version` is None).
    pub async fn subject_version(&self, subject: &str, version: Option<u32>) -> Result<RegisteredSchema, CodecError> {
        Ok(get_schema_by_subject_and_version(&self.settings, subject, version).await?)
    }

    /// Registers an Avro schema (JSON text) under `subject`, or finds it
    /// registered; returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        Ok(post_schema(&self.settings, subject.to_owned(), supplied).await?.id)
    }

    /// Registers the schemas of every mend event type (idempotent), so
    /// readers of the audit topics can decode from the first event.
    pub async fn register_event_schemas(&self) -> Result<(), CodecError> {
        use mend_model::events::*;
        async fn register(encoder: &AvroEncoder, topic: &str, schema: &str) -> Result<(), CodecError> {
            let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_owned(),
                false,
                SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned()),
            );
            encoder.get_schema_and_id(&topics::value_subject(topic), strategy).await?;
            Ok(())
        }
        register(&self.encoder, Quarantined::TOPIC, Quarantined::SCHEMA).await?;
        register(&self.encoder, Detection::TOPIC, Detection::SCHEMA).await?;
        register(&self.encoder, Diagnosis::TOPIC, Diagnosis::SCHEMA).await?;
        register(&self.encoder, Proposal::TOPIC, Proposal::SCHEMA).await?;
        register(&self.encoder, Decision::TOPIC, Decision::SCHEMA).await?;
        register(&self.encoder, Application::TOPIC, Application::SCHEMA).await?;
        register(&self.encoder, AgentRun::TOPIC, AgentRun::SCHEMA).await?;
        use mend_model::digest::AuditDigest;
        register(&self.encoder, AuditDigest::TOPIC, AuditDigest::SCHEMA).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
