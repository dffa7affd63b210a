//! What to do after a failure: every error type of mend says it once
//! ([`Classify`]), and the runner, the applier and the CLI act on the answer
//! instead of each guessing from the error's text.

use crate::protocol::QuarantineKind;

/// What to do next about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Something outside mend is unavailable (broker, registry, database):
    /// try again with backoff; nothing is lost meanwhile.
    Retry,
    /// The input is bad: quarantine it with this reason kind and go on.
    Quarantine(QuarantineKind),
    /// Retrying cannot help (configuration, a refused statement, a bug):
    /// stop, or report the failure, without skipping anything.
    Fatal,
}

/// An error that knows what should happen next.
pub trait Classify {
    fn next(&self) -> Next;

    fn is_retryable(&self) -> bool {
        self.next() == Next::Retry
    }
}
