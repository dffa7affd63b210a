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
