//! The runner's view of a failure: retry with backoff or stop. Each error
//! type of mend classifies itself once ([`mend_model::Classify`]); anything
//! that reaches the runner becomes a [`HandleError`] through that
//! classification, keeping its source. Bad input never reaches the runner as
//! an error: handlers return a quarantine disposition for it, so an error
//! classified as bad input that gets here anyway is a bug, and stops.

use mend_model::{Classify, Next};

/// Any error, kept as the source of a failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What failed, with the error that made it fail.
#[derive(Debug)]
pub struct Failure {
    pub context: String,
    pub source: Option<BoxError>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) if self.context.is_empty() => write!(f, "{source}"),
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl From<String> for Failure {
    fn from(context: String) -> Self {
        Self { context, source: None }
    }
}

impl From<&str> for Failure {
    fn from(context: &str) -> Self {
        context.to_owned().into()
    }
}

/// A failure while handling a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Something outside mend is unavailable (broker, registry, database):
    /// the batch is retried with backoff and no offset moves meanwhile.
    #[error("{0} (retrying)")]
    Retry(Failure),
    /// Retrying cannot help (configuration, a refused statement, a bug): the
    /// service stops without storing the batch's offsets, so nothing is
    /// skipped.
    #[error("{0}")]
    Fatal(Failure),
}

impl HandleError {
    pub fn retry(context: &str, error: impl Into<BoxError>) -> Self {
        Self::Retry(Failure { context: context.to_owned(), source: Some(error.into()) })
    }

    pub fn fatal(context: &str, error: impl Into<BoxError>) -> Self {
        Self::Fatal(Failure { context: context.to_owned(), source: Some(error.into()) })
    }

    /// `error`, with `context`, as its own classification says.
    pub fn classified<E>(context: &str, error: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        match error.next() {
            Next::Retry => Self::retry(context, error),
            Next::Fatal | Next::Quarantine(_) => Self::fatal(context, error),
        }
    }
}

/// Every classified error converts as its classification says (so `?`
/// works in handlers).
impl<E> From<E> for HandleError
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::classified("", error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::ProduceError;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn each_error_converts_as_it_classifies_itself_and_keeps_its_source() {
        let unavailable = mend_avro::CodecError::Unavailable("registry down".into());
        let error = HandleError::from(unavailable);
        assert!(matches!(&error, HandleError::Retry(f) if f.source.is_some()), "{error:?}");
        assert_eq!(error.to_string(), "schema registry unavailable: registry down (retrying)");
        // Bad input that reaches the runner as an error is a bug: stop.
        let invalid = mend_avro::CodecError::Invalid("not Avro".into());
        assert!(matches!(HandleError::from(invalid), HandleError::Fatal(_)));
        let context = HandleError::classified("loading orders", mend_store::StoreError::Invalid("refused".into()));
        assert_eq!(context.to_string(), "loading orders: warehouse: refused");
    }

    #[test]
    fn a_record_the_broker_refuses_for_good_is_not_resent_forever() {
        let too_large = ProduceError(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge));
        assert_eq!(mend_model::Classify::next(&too_large), Next::Fatal);
        let denied = ProduceError(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert_eq!(mend_model::Classify::next(&denied), Next::Fatal);
        let timeout = ProduceError(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
        assert_eq!(mend_model::Classify::next(&timeout), Next::Retry);
        let down = ProduceError(KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown));
        assert_eq!(mend_model::Classify::next(&down), Next::Retry);
    }
}
