//! mend's schema registry: the Confluent Schema Registry REST API over a
//! compacted `_schemas` topic (Confluent's and Karapace's design).
//!
//! - input topic: `_schemas` (read from offset 0 at start and then tailed);
//! - output topic: `_schemas` (JSON key/value records, one partition);
//! - key: `{"keytype":"SCHEMA","subject":…,"version":…}` or `CONFIG`;
//! - delivery: a write is acknowledged (acks=all) and applied by this
//!   instance's reader before the HTTP answer, so it survives restarts and
//!   every instance replaying the log agrees (see [`store`]).

pub mod api;
pub mod compat;
pub mod log;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio_util::sync::CancellationToken;

use crate::log::{Log, LogError};
use crate::store::Schemas;

/// Settings of one registry instance.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryConfig {
    /// Kafka bootstrap servers holding the schema log.
    #[arg(long, env = "MEND_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,

    /// Address the REST API listens on.
    #[arg(long, env = "MEND_REGISTRY_ADDR", default_value = "127.0.0.1:18081")]
    pub listen: SocketAddr,

    /// Topic holding the registry's state.
    #[arg(long, env = "MEND_REGISTRY_TOPIC", default_value = mend_model::topics::SCHEMAS)]
    pub topic: String,
}

/// One registry instance: the replayed state, the log, and this instance's
/// writer id.
pub struct Registry {
    store: Arc<RwLock<Schemas>>,
    log: Log,
    writer_id: String,
    /// Serialises this instance's writes (other instances race through the log).
    write_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Opens the log and replays it; returns once the state is current.
    pub async fn open(config: &RegistryConfig, shutdown: CancellationToken) -> Result<Arc<Self>, LogError> {
        let store = Arc::new(RwLock::new(Schemas::default()));
        let log = Log::open(&config.brokers, &config.topic, store.clone(), shutdown).await?;
        Ok(Arc::new(Self {
            store,
            log,
            writer_id: uuid::Uuid::now_v7().to_string(),
            write_lock: tokio::sync::Mutex::new(()),
        }))
    }

    fn read(&self) -> RwLockReadGuard<'_, Schemas> {
        self.store.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Without TCP_NODELAY a response written in two parts waits for the
    // client's delayed ACK: 40 ms per schema look-up.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, api::router(registry)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Opens the registry and serves it on `config.listen` until shutdown.
pub async fn run(config: RegistryConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(topic = %config.topic, brokers = %config.brokers, "replaying the schema log");
    let registry = Registry::open(&config, shutdown.clone()).await?;
    tracing::info!(addr = %config.listen, "schema registry ready");
    serve(registry, listener, shutdown).await?;
    Ok(())
}
