//! mend's shared library: typed events and their Avro contracts, the
//! Confluent wire-format codec, the Kafka runner every service uses,
//! configuration, telemetry and graceful shutdown. Services depend on this
//! crate and never on each other.

pub mod codec;
pub mod config;
pub mod context;
pub mod copy;
pub mod drift;
pub mod error;
pub mod events;
pub mod fault;
pub mod github;
pub mod guard;
pub mod kafka;
pub mod mapping;
pub mod runner;
pub mod shutdown;
pub mod slack;
pub mod telemetry;
pub mod tools;
pub mod topics;
pub mod warehouse;

pub use codec::Codec;
pub use error::HandleError;
