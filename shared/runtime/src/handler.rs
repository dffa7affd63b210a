//! What a service implements: a [`Handler`] that decides, per consumed
//! record, what becomes of it ([`Disposition`]). The runner owns the loop.

use std::sync::Arc;

use mend_avro::codec::{Codec, CodecError};
use mend_avro::loader::Rejection;
use mend_model::QuarantineKind;
use mend_model::events::Event;
use rdkafka::message::{Headers, Message};

use crate::error::HandleError;

/// Header of a quarantine record naming its incident.
pub const INCIDENT_HEADER: &str = "mend-incident";
/// Header of a quarantine record naming its source `partition:offset`.
pub const SOURCE_HEADER: &str = "mend-source";

/// A consumed record, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Shared by the records of a batch from one topic.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Inbound {
    /// Copies what the handler needs out of the consumer's buffer (once);
    /// `topic` is the name of the previous record's topic, reused when the
    /// same.
    pub(crate) fn from_message<M: Message>(message: &M, topic: &mut Option<Arc<str>>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
            })
            .unwrap_or_default();
        let topic = match topic {
            Some(same) if **same == *message.topic() => same.clone(),
            _ => topic.insert(Arc::from(message.topic())).clone(),
        };
        Self {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

impl Inbound {
    /// Bytes of its key and value.
    pub(crate) fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outbound {
    /// `event` for its topic, keyed by its dataset (one dataset's events
    /// stay in order), carrying its incident's trace context.
    pub async fn event<E: Event>(codec: &Codec, event: &E) -> Result<Self, CodecError> {
        let envelope = event.envelope();
        Ok(Self {
            topic: E::TOPIC.to_owned(),
            key: envelope.dataset.clone().into_bytes(),
            payload: codec.encode_event(event).await?,
            headers: crate::telemetry::event_headers(envelope, E::TOPIC),
        })
    }
}

/// What became of one inbound record.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// Handled; these records are its outputs (possibly none).
    Emit(Vec<Outbound>),
    /// Bad input: publish it to `mend.quarantine` with this reason.
    Quarantine(QuarantineReason),
}

/// Why a record goes to quarantine, and for which dataset.
#[derive(Debug, Clone)]
pub struct QuarantineReason {
    /// The dataset the record belongs to, when known (it keys the event).
    pub dataset: Option<String>,
    pub kind: QuarantineKind,
    /// The explanation a person reads.
    pub reason: String,
}

impl QuarantineReason {
    /// A record of `dataset` that the dataset's contract rejected.
    pub fn of(dataset: &str, rejection: Rejection) -> Self {
        Self { dataset: Some(dataset.to_owned()), kind: rejection.kind, reason: rejection.reason }
    }
}

/// A service's logic. The runner owns the loop; handlers only decide.
pub trait Handler: Send + Sync {
    /// Handles a batch; returns one disposition per record, in order. May be
    /// called again with the same batch after a retryable error or a crash,
    /// so its effects must be idempotent.
    fn handle(
        &self,
        batch: &[Inbound],
    ) -> impl std::future::Future<Output = Result<Vec<Disposition>, HandleError>> + Send;
}

/// A stage that answers each of mend's events of one type with events of
/// its own (the diagnoser, the proposer, the supervisor). Every such stage
/// is a [`Handler`] by the same loop: each record decoded (an undecodable
/// one to quarantine), an event of a dataset this deployment does not
/// manage passed over, each other event answered.
pub trait EventHandler: Send + Sync {
    /// The event it consumes.
    type Event: Event;

    /// The deployment: its codec and the datasets it manages.
    fn context(&self) -> &crate::Context;

    /// The events answering `event` (none: nothing to say).
    fn answer(
        &self,
        event: Self::Event,
    ) -> impl std::future::Future<Output = Result<Vec<Outbound>, HandleError>> + Send;
}

impl<H: EventHandler> Handler for H {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            let event: H::Event = match decode_event(&self.context().codec, record).await? {
                Ok(event) => event,
                Err(bad) => {
                    out.push(bad);
                    continue;
                }
            };
            if !self.context().manages(&event.envelope().dataset) {
                out.push(Disposition::Emit(Vec::new())); // another deployment's dataset
                continue;
            }
            out.push(Disposition::Emit(self.answer(event).await?));
        }
        Ok(out)
    }
}

/// Decodes one of mend's own events from a consumed record. `Ok(Err(_))` is
/// bad input, already turned into its quarantine disposition; `Err` is a
/// registry outage (retry).
pub async fn decode_event<E: Event>(codec: &Codec, record: &Inbound) -> Result<Result<E, Disposition>, HandleError> {
    match codec.decode_event(record.payload.as_deref().unwrap_or_default()).await {
        Ok(event) => Ok(Ok(event)),
        Err(CodecError::Invalid(reason)) => Ok(Err(Disposition::Quarantine(QuarantineReason {
            dataset: None,
            kind: QuarantineKind::Undecodable,
            reason: format!("not a valid {} event: {reason}", E::TOPIC),
        }))),
        Err(unavailable) => Err(unavailable.into()),
    }
}
