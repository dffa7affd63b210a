//! Logging and tracing. Logs go to stderr (`RUST_LOG` filters, `MEND_LOG_FORMAT=json`
//! for JSON lines); spans carry OpenTelemetry trace ids and are exported
//! over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard
//! `OTEL_EXPORTER_OTLP_*` variables apply).
//!
//! One incident is one trace: its trace id is the incident id (a UUID,
//! 16 bytes), and every event is a span whose id is derived from the event
//! id and whose parent is the span of the event it answers. Any stage, in
//! any process, names the same ids without asking anyone, so a decision
//! made through the API or Slack joins the trace as surely as the stages
//! that read the event's `traceparent` Kafka header.

use mend_model::events::Envelope;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sha2::{Digest as _, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; flushes spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The W3C header that carries trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Installs the global subscriber for `service`. Call once, from `main`.
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
/// set, spans are exported there over OTLP/HTTP (protobuf), in batches.
pub fn init(service: &'static str) -> Telemetry {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource).with_id_generator(EventIds::default());
    let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    let mut export_error = None;
    if let Some(endpoint) = &endpoint {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(format!("cannot export traces to {endpoint}: {error}")),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx::postgres::notice=warn"));
    let json = std::env::var("MEND_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    if let Some(error) = export_error {
        tracing::warn!("{error}");
    } else if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

thread_local! {
    /// The ids [`EventIds`] hands out next, on this thread.
    static NEXT_IDS: std::cell::Cell<Option<(TraceId, SpanId)>> = const { std::cell::Cell::new(None) };
}

/// Span and trace ids: the ones [`event_headers`] derived for the span it
/// is building on this thread, random ones for every other span.
#[derive(Debug, Default)]
struct EventIds(opentelemetry_sdk::trace::RandomIdGenerator);

impl opentelemetry_sdk::trace::IdGenerator for EventIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS.with(|next| next.get()).map_or_else(|| self.0.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS.with(|next| next.get()).map_or_else(|| self.0.new_span_id(), |(_, span)| span)
    }
}

/// The trace of an incident: its id's 16 bytes (a hash of it when it is
/// not a UUID).
pub fn trace_id(incident: &str) -> TraceId {
    match uuid::Uuid::parse_str(incident) {
        Ok(id) => TraceId::from_bytes(*id.as_bytes()),
        Err(_) => {
            let digest = Sha256::digest(incident.as_bytes());
            TraceId::from_bytes(digest[..16].try_into().unwrap_or_default())
        }
    }
}

/// The span of an event: the first 8 bytes of its id's SHA-256.
pub fn span_id(event_id: &str) -> SpanId {
    let digest = Sha256::digest(event_id.as_bytes());
    SpanId::from_bytes(digest[..8].try_into().unwrap_or_default())
}

/// Records the span of an event about to be published on `topic` (from
/// its creation until now, a child of the span of the event it answers)
/// and returns the Kafka headers that carry its trace context.
pub fn event_headers(envelope: &Envelope, topic: &str) -> Vec<(String, Vec<u8>)> {
    let (trace, span) = (trace_id(&envelope.incident_id.0), span_id(&envelope.event_id));
    let tracer = global::tracer("mend");
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(envelope.time).unwrap_or(0));
    let builder = tracer
        .span_builder(format!("{} {topic}", envelope.service))
        .with_kind(SpanKind::Producer)
        .with_start_time(start.min(std::time::SystemTime::now()))
        .with_attributes([
            KeyValue::new("mend.incident_id", envelope.incident_id.0.clone()),
            KeyValue::new("mend.event_id", envelope.event_id.clone()),
            KeyValue::new("mend.dataset", envelope.dataset.clone()),
            KeyValue::new("mend.service", envelope.service.clone()),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
        ]);
    let parent = match &envelope.causation_id {
        Some(cause) => opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace,
            span_id(cause),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )),
        None => opentelemetry::Context::new(),
    };
    NEXT_IDS.with(|next| next.set(Some((trace, span))));
    tracer.build_with_context(builder, &parent).end();
    NEXT_IDS.with(|next| next.set(None));
    vec![(TRACEPARENT.to_owned(), format!("00-{trace}-{span}-01").into_bytes())]
}

struct HeaderExtractor<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context found in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &[(String, Vec<u8>)]) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}
