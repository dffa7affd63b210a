//! `GET /metrics`: Prometheus' text format. Incidents by dataset, change
//! kind and status; rows loaded and records quarantined per dataset (from
//! the warehouse, where they are); a time-to-heal histogram; each stage's
//! records handled and quarantined, and its consumer group's lag; the
//! registry cache's hits and misses; MCP tool calls by tool and outcome.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Api;

/// Upper bounds of the time-to-heal histogram, in seconds.
const HEAL_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0];

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let incidents = api.model().incidents();
    let mut out = String::new();
    let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
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
    let _ = writeln!(out, "# HELP mend_incidents Incidents by dataset, change kind and status.");
    let _ = writeln!(out, "# TYPE mend_incidents gauge");
    for ((dataset, kind, status), count) in counts {
        let _ = writeln!(
            out,
            "mend_incidents{{dataset=\"{}\",kind=\"{kind}\",status=\"{status}\"}} {count}",
            label(&dataset)
        );
    }
    let _ = writeln!(out, "# HELP mend_rows Rows in each dataset's table.");
    let _ = writeln!(out, "# TYPE mend_rows gauge");
    let mut quarantined = String::new();
    for dataset in &api.context.config.datasets {
        let Ok(warehouse) = api.context.warehouse(dataset).await else { continue };
        if let Ok(rows) = warehouse.count(&dataset.table).await {
            let _ = writeln!(out, "mend_rows{{dataset=\"{}\"}} {rows}", label(&dataset.name));
        }
        if let Ok(per_writer) = warehouse.quarantine_counts(&dataset.name).await {
            let total: i64 = per_writer.values().sum();
            let _ = writeln!(quarantined, "mend_records_quarantined{{dataset=\"{}\"}} {total}", label(&dataset.name));
        }
    }
    let _ = writeln!(
        out,
        "# HELP mend_records_quarantined Records each dataset's loader has quarantined (replayed ones included)."
    );
    let _ = writeln!(out, "# TYPE mend_records_quarantined gauge");
    out.push_str(&quarantined);
    let heals: Vec<f64> = incidents.iter().filter_map(|i| i.time_to_heal_seconds).collect();
    let _ = writeln!(out, "# HELP mend_time_to_heal_seconds From detection to the healed table, per incident.");
    let _ = writeln!(out, "# TYPE mend_time_to_heal_seconds histogram");
    for bound in HEAL_BUCKETS {
        let count = heals.iter().filter(|h| **h <= bound).count();
        let _ = writeln!(out, "mend_time_to_heal_seconds_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "mend_time_to_heal_seconds_bucket{{le=\"+Inf\"}} {}", heals.len());
    let _ = writeln!(out, "mend_time_to_heal_seconds_sum {}", heals.iter().sum::<f64>());
    let _ = writeln!(out, "mend_time_to_heal_seconds_count {}", heals.len());
    let _ = writeln!(out, "# HELP mend_stage_records_total Records each stage of this process handled.");
    let _ = writeln!(out, "# TYPE mend_stage_records_total counter");
    for (stage, status) in &api.health {
        let _ =
            writeln!(out, "mend_stage_records_total{{stage=\"{stage}\"}} {}", status.records.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP mend_stage_quarantined_total Records each stage of this process quarantined.");
    let _ = writeln!(out, "# TYPE mend_stage_quarantined_total counter");
    for (stage, status) in &api.health {
        let _ = writeln!(
            out,
            "mend_stage_quarantined_total{{stage=\"{stage}\"}} {}",
            status.quarantined.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP mend_consumer_lag Records each stage's consumer group has yet to handle, per topic.");
    let _ = writeln!(out, "# TYPE mend_consumer_lag gauge");
    for (stage, status) in &api.health {
        if status.group.is_empty() {
            continue;
        }
        let Ok(lags) = mend_runtime::kafka::lag(&api.context.connections.brokers, &status.group, &status.topics).await
        else {
            continue;
        };
        let mut per_topic: BTreeMap<String, i64> = BTreeMap::new();
        for (topic, _, lag) in lags {
            *per_topic.entry(topic).or_default() += lag;
        }
        for (topic, lag) in per_topic {
            let _ = writeln!(out, "mend_consumer_lag{{stage=\"{stage}\",topic=\"{}\"}} {lag}", label(&topic));
        }
    }
    let cache = api.context.codec.cache();
    let _ = writeln!(
        out,
        "# HELP mend_registry_cache_total Writer-schema look-ups of this process, answered from its cache (hit) or by the registry (miss)."
    );
    let _ = writeln!(out, "# TYPE mend_registry_cache_total counter");
    let _ = writeln!(out, "mend_registry_cache_total{{result=\"hit\"}} {}", cache.hits.load(Ordering::Relaxed));
    let _ = writeln!(out, "mend_registry_cache_total{{result=\"miss\"}} {}", cache.misses.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP mend_mcp_tool_calls_total MCP tool calls by tool and outcome.");
    let _ = writeln!(out, "# TYPE mend_mcp_tool_calls_total counter");
    for ((tool, outcome), count) in api.tool_calls.snapshot() {
        let _ = writeln!(out, "mend_mcp_tool_calls_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} {count}");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
