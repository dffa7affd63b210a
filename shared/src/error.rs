//! Errors classified by what to do next. Every error that reaches the runner
//! is one of these; bad input never reaches it as an error (handlers return a
//! quarantine disposition for it).

/// A failure while handling a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Something outside mend is unavailable (broker, registry, database):
    /// the batch is retried with backoff and no offset moves meanwhile.
    #[error("{0} (retrying)")]
    Retry(String),
    /// Retrying cannot help (configuration, a bug): the service stops without
    /// storing the batch's offsets, so nothing is skipped.
    #[error("{0}")]
    Fatal(String),
}

impl HandleError {
    pub fn retry(context: &str, error: impl std::fmt::Display) -> Self {
        Self::Retry(format!("{context}: {error}"))
    }

    pub fn fatal(context: &str, error: impl std::fmt::Display) -> Self {
        Self::Fatal(format!("{context}: {error}"))
    }
}
