//! Graceful shutdown: one cancellation token per process, cancelled on
//! SIGTERM or Ctrl-C. Services stop fetching, finish in-flight work, flush and
//! commit; the caller bounds that with [`DEFAULT_GRACE`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long in-flight work may take after a shutdown signal.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
