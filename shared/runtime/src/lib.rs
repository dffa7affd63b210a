//! What every stage runs on: Kafka clients ([`kafka`]) and the one consumer
//! loop ([`runner`]) that calls a service's [`handler::Handler`], the
//! process's shared clients ([`context`]), connection settings
//! ([`settings`]), failures classified for retry or stop ([`error`]), telemetry, graceful
//! shutdown and the crash tests' fault points.

mod collect;
pub mod context;
pub mod error;
pub mod exactly;
pub mod fault;
pub mod handler;
pub mod kafka;
pub mod runner;
pub mod settings;
pub mod shutdown;
mod status;
pub mod telemetry;

pub use context::Context;
pub use error::HandleError;
pub use settings::Connections;
