//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
//! datum) through any Confluent-compatible registry.
//!
//! Schemas are fetched once per id and cached by schema_registry_converter, so
//! the cost per record is the Avro decode alone, never an HTTP call.

use std::sync::Arc;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

use crate::error::HandleError;
use crate::events::Event;
use crate::topics;

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

impl From<CodecError> for HandleError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Unavailable(message) => HandleError::Retry(message),
            CodecError::Invalid(message) => HandleError::Fatal(message),
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

/// Encodes and decodes Avro payloads in the Confluent wire format, caching
/// schemas per id (decode) and per subject (encode).
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec talking to the registry at `registry_url`.
    pub fn new(registry_url: &str) -> Result<Arc<Self>, CodecError> {
        let settings = SrSettings::new_builder(registry_url.trim_end_matches('/').to_owned())
            .set_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(CodecError::from)?;
        Ok(Arc::new(Self { encoder: AvroEncoder::new(settings.clone()), decoder: AvroDecoder::new(settings) }))
    }

    /// Encodes an event with its `.avsc` schema, registering the schema under
    /// `<topic>-value` the first time.
    pub async fn encode_event<E: Event>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            E::TOPIC.to_owned(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, E::SCHEMA.to_owned()),
        );
        Ok(self.encoder.encode_struct(event, &strategy).await?)
    }

    /// Decodes an event published by any version of its schema.
    pub async fn decode_event<E: Event>(&self, payload: &[u8]) -> Result<E, CodecError> {
        let value = self.decode(payload).await?;
        apache_avro::from_value(&value)
            .map_err(|e| CodecError::Invalid(format!("payload does not match {}: {e}", E::TOPIC)))
    }

    /// Decodes any wire-format payload with its writer schema.
    pub async fn decode(&self, payload: &[u8]) -> Result<Value, CodecError> {
        let decoded = self.decoder.decode(Some(payload)).await;
        if decoded.is_err() {
            // A schema id unknown now may be registered a moment later (the
            // producer registers before it writes): never keep that verdict.
            self.decoder.remove_errors_from_cache();
        }
        Ok(decoded?.value)
    }

    /// The writer schema of `id` (cached).
    pub async fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, CodecError> {
        let schema = self.decoder.get_schema(id).await;
        if schema.is_err() {
            self.decoder.remove_errors_from_cache();
        }
        Ok(schema?)
    }

    /// Registers the schemas of every mend event type (idempotent), so
    /// readers of the audit topics can decode from the first event.
    pub async fn register_event_schemas(&self) -> Result<(), CodecError> {
        use crate::events::*;
        async fn register<E: Event>(encoder: &AvroEncoder) -> Result<(), CodecError> {
            let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
                E::TOPIC.to_owned(),
                false,
                SuppliedSchema::new(None, SchemaType::Avro, E::SCHEMA.to_owned()),
            );
            encoder.get_schema_and_id(&topics::value_subject(E::TOPIC), strategy).await?;
            Ok(())
        }
        register::<Quarantined>(&self.encoder).await?;
        register::<Detection>(&self.encoder).await?;
        register::<Diagnosis>(&self.encoder).await?;
        register::<Proposal>(&self.encoder).await?;
        register::<Decision>(&self.encoder).await?;
        register::<Application>(&self.encoder).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_schema_id_from_the_header() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9, 9]), Some(258));
        assert_eq!(schema_id(&[0, 0, 0, 0, 7]), Some(7));
        assert_eq!(schema_id(&[1, 0, 0, 0, 7]), None, "wrong magic byte");
        assert_eq!(schema_id(&[0, 0, 0]), None, "short header");
        assert_eq!(schema_id(b"{\"json\":1}"), None);
    }
}
