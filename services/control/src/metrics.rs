//! `GET /metrics`: OpenMetrics text (which Prometheus scrapes), written by
//! `prometheus_client`. Incidents by dataset, change
//! kind and status; rows loaded and records quarantined per dataset (from
//! the warehouse, where they are); a time-to-heal histogram; each stage's
//! records handled and quarantined, and its consumer group's lag; the
//! registry cache's hits and misses; MCP tool calls by tool and outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Api;

/// Upper bounds of the time-to-heal histogram, in seconds.
const HEAL_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0];

/// One metric's label names and values.
type Labels = Vec<(&'static str, String)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(name, value)| (name, value.to_owned())).collect()
}

/// The metrics are read when they are scraped (from the read model, the
/// warehouse, the brokers and this process's counters), so each scrape
/// fills a registry of its own and `prometheus_client` writes it out.
pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let mut registry = Registry::default();

    let incidents = api.model().incidents();
    let by_status = Family::<Labels, Gauge>::default();
    let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for incident in &incidents {
        let kinds: Vec<String> = if incident.changes.is_empty() {
            vec![incident.source.map_or_else(|| "unknown".to_owned(), |s| s.to_string())]
        } else {
            incident.changes.iter().map(|c| c.kind.to_string()).collect()
        };
        for kind in kinds {
            *counts.entry((incident.dataset.clone(), kind, incident.status.to_string())).or_default() += 1;
        }
    }
    for ((dataset, kind, status), count) in counts {
        by_status.get_or_create(&labels([("dataset", &dataset), ("kind", &kind), ("status", &status)])).set(count);
    }
    registry.register("mend_incidents", "Incidents by dataset, change kind and status", by_status);

    let rows = Family::<Labels, Gauge>::default();
    let quarantined = Family::<Labels, Gauge>::default();
    for dataset in &api.context.config.datasets {
        let Ok(warehouse) = api.context.warehouse(dataset).await else { continue };
        if let Ok(count) = warehouse.count(&dataset.table).await {
            rows.get_or_create(&labels([("dataset", &dataset.name)])).set(count);
        }
        if let Ok(per_writer) = warehouse.quarantine_counts(&dataset.name).await {
            quarantined.get_or_create(&labels([("dataset", &dataset.name)])).set(per_writer.values().sum());
        }
    }
    registry.register("mend_rows", "Rows in each dataset's table", rows);
    registry.register(
        "mend_records_quarantined",
        "Records each dataset's loader has quarantined (replayed ones included)",
        quarantined,
    );

    let heal = Histogram::new(HEAL_BUCKETS);
    for seconds in incidents.iter().filter_map(|i| i.time_to_heal_seconds) {
        heal.observe(seconds);
    }
    registry.register("mend_time_to_heal_seconds", "From detection to the healed table, per incident", heal);

    let records = Family::<Labels, Counter>::default();
    let stage_quarantined = Family::<Labels, Counter>::default();
    let lag = Family::<Labels, Gauge>::default();
    for (stage, status) in &api.health {
        records.get_or_create(&labels([("stage", stage)])).inc_by(status.records.load(Ordering::Relaxed));
        stage_quarantined.get_or_create(&labels([("stage", stage)])).inc_by(status.quarantined.load(Ordering::Relaxed));
        if status.group.is_empty() {
            continue;
        }
        let Ok(lags) = mend_runtime::kafka::lag(&api.context.connections.brokers, &status.group, &status.topics).await
        else {
            continue;
        };
        let mut per_topic: BTreeMap<String, i64> = BTreeMap::new();
        for (topic, _, behind) in lags {
            *per_topic.entry(topic).or_default() += behind;
        }
        for (topic, behind) in per_topic {
            lag.get_or_create(&labels([("stage", stage), ("topic", &topic)])).set(behind);
        }
    }
    registry.register("mend_stage_records", "Records each stage of this process handled", records);
    registry.register("mend_stage_quarantined", "Records each stage of this process quarantined", stage_quarantined);
    registry.register("mend_consumer_lag", "Records each stage's consumer group has yet to handle, per topic", lag);

    let cache = api.context.codec.cache();
    let lookups = Family::<Labels, Counter>::default();
    lookups.get_or_create(&labels([("result", "hit")])).inc_by(cache.hits.load(Ordering::Relaxed));
    lookups.get_or_create(&labels([("result", "miss")])).inc_by(cache.misses.load(Ordering::Relaxed));
    registry.register(
        "mend_registry_cache",
        "Writer-schema look-ups of this process, answered from its cache (hit) or by the registry (miss)",
        lookups,
    );

    let calls = Family::<Labels, Counter>::default();
    for ((tool, outcome), count) in api.tool_calls.snapshot() {
        calls.get_or_create(&labels([("tool", &tool), ("outcome", outcome)])).inc_by(count);
    }
    registry.register("mend_mcp_tool_calls", "MCP tool calls by tool and outcome", calls);

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}")).into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response()
}
