//! Avro in mend: the Confluent wire format and the registry client
//! ([`codec`]), schema helpers ([`schema`]), how a writer schema's records
//! become rows under a contract ([`plan`], [`values`]) and the one
//! [`loader::RecordLoader`] every stage asks, the fast path from flat Avro
//! records to PostgreSQL COPY text ([`copy`]), and the classification of
//! schema drift ([`drift`]).

pub mod agree;
pub mod codec;
pub mod copy;
pub mod datum;
pub mod drift;
#[cfg(test)]
mod fuzz;
pub mod loader;
pub mod plan;
pub mod registry;
pub mod schema;
pub mod values;

pub use codec::{Codec, CodecError};
pub use loader::{Fit, RecordLoader, RecordLoaders, Rejection, WriterPlan};
