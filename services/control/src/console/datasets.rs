//! Datasets: each one's table and contract, its registry history with a
//! diff of any two versions, what is held in quarantine and why, and its
//! time to heal (p50, p90) with a plot over time. The warehouse and the
//! registry are read through the same functions as the MCP tools.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mend_avro::drift::classify;
use mend_mcp::read::{self, QuarantinedRecord, TableDescription};
use mend_model::api::{Incident, quantile};
use serde::Deserialize;

use super::session::Signed;
use super::view::{Chip, change_class, change_words, chips, count, span};
use super::{Page, message, not_warm, page};
use crate::Api;

/// The page saying there is no dataset `name`.
fn no_dataset(session: &super::session::Session, name: &str) -> Response {
    message(Some(session), StatusCode::NOT_FOUND, "No such dataset", &format!("mend has no dataset {name}."))
}

/// One dataset in the list.
struct Summary {
    name: String,
    table: String,
    incidents: usize,
    waiting: usize,
    heal_p50: String,
    heal_p90: String,
}

/// The healed incidents' times to heal, ascending.
fn heal_times(incidents: &[&Incident]) -> Vec<f64> {
    let mut times: Vec<f64> = incidents.iter().filter_map(|i| i.time_to_heal_seconds).collect();
    times.sort_by(f64::total_cmp);
    times
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), span)
}

#[derive(Template)]
#[template(path = "datasets.html")]
struct List<'a> {
    page: Page<'a>,
    datasets: Vec<Summary>,
}

pub(crate) async fn list(State(api): State<Arc<Api>>, Signed(session): Signed) -> Response {
    if let Some(busy) = not_warm(&api, &session).await {
        return busy;
    }
    let incidents = api.model().incidents();
    let mut by_dataset: BTreeMap<String, Vec<&Incident>> =
        api.context.config.datasets.iter().map(|d| (d.name.clone(), Vec::new())).collect();
    for incident in &incidents {
        by_dataset.entry(incident.dataset.clone()).or_default().push(incident);
    }
    let datasets = by_dataset
        .into_iter()
        .map(|(name, list)| {
            let times = heal_times(&list);
            Summary {
                table: api.context.dataset(&name).map_or_else(String::new, |d| d.table.clone()),
                incidents: list.len(),
                waiting: list.iter().filter(|i| i.status == mend_model::IncidentStatus::AwaitingApproval).count(),
                heal_p50: seconds(quantile(&times, 0.5)),
                heal_p90: seconds(quantile(&times, 0.9)),
                name,
            }
        })
        .collect();
    page(&List { page: Page::of("Datasets", &session), datasets })
}

/// A registry version with what changed from the one before.
struct Version {
    version: i64,
    id: i64,
    chips: Vec<Chip>,
}

/// One row of a two-version diff.
struct DiffRow {
    class: &'static str,
    words: &'static str,
    field: String,
    detail: String,
}

/// A quarantined record as shown.
struct Held {
    position: String,
    writer: String,
    reason: String,
    value: String,
}

fn held(record: &QuarantinedRecord) -> Held {
    Held {
        position: format!("{}:{}", record.partition, record.offset),
        writer: record.writer_schema_id.map_or_else(|| "-".into(), |w| w.to_string()),
        reason: record.reason.clone(),
        value: record.value.as_ref().map_or_else(|| "(not decodable)".into(), |v| v.to_string()),
    }
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct Show<'a> {
    page: Page<'a>,
    name: String,
    table: Option<TableDescription>,
    table_error: Option<String>,
    subject: String,
    versions: Vec<Version>,
    history_error: Option<String>,
    /// The two versions compared, and what changed between them.
    compare: Option<(i64, i64)>,
    diff: Vec<DiffRow>,
    diff_error: Option<String>,
    quarantine_counts: Vec<(String, String)>,
    quarantined: Vec<Held>,
    quarantine_error: Option<String>,
    heal_p50: String,
    heal_p90: String,
    healed: usize,
    plot: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Compare {
    a: Option<i64>,
    b: Option<i64>,
}

/// What changed from version `a` to version `b` of `subject`.
async fn diff(api: &Api, subject: &str, a: i64, b: i64) -> Result<Vec<DiffRow>, String> {
    let mut schemas = Vec::new();
    for version in [a, b] {
        let number = u32::try_from(version).map_err(|_| format!("no version {version}"))?;
        let registered = api
            .context
            .codec
            .subject_version(subject, Some(number))
            .await
            .map_err(|e| format!("version {version} of {subject}: {e}"))?;
        schemas.push(
            apache_avro::Schema::parse_str(&registered.schema)
                .map_err(|e| format!("version {version} is not a readable Avro schema: {e}"))?,
        );
    }
    Ok(classify(&schemas[0], &schemas[1])
        .into_iter()
        .map(|c| {
            let detail = match (&c.from, &c.to, &c.old_type, &c.new_type) {
                (Some(from), Some(to), _, _) if from != to => format!("{from} → {to}"),
                (_, _, Some(old), Some(new)) => format!("{old} → {new}"),
                (_, _, None, Some(new)) => new.clone(),
                (_, _, Some(old), None) => format!("was {old}"),
                _ => String::new(),
            };
            DiffRow { class: change_class(c.kind), words: change_words(c.kind), field: c.field, detail }
        })
        .collect())
}

/// Time to heal over time, as SVG: one point per healed incident (when it
/// healed, how long it took), with the p50 and p90 as lines.
fn heal_plot(incidents: &[&Incident], p50: Option<f64>, p90: Option<f64>) -> Result<String, String> {
    use plotters::prelude::*;
    let points: Vec<(f64, f64)> =
        incidents.iter().filter_map(|i| Some((i.healed_at? as f64 / 1000.0, i.time_to_heal_seconds?))).collect();
    if points.is_empty() {
        return Ok(String::new());
    }
    let (first, last) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (t, _)| (lo.min(*t), hi.max(*t)));
    let span_x = (last - first).max(60.0);
    // The x axis in the unit that keeps its labels apart.
    let (unit, per) = match span_x {
        ..=600.0 => ("seconds", 1.0),
        ..=21_600.0 => ("minutes", 60.0),
        ..=1_209_600.0 => ("hours", 3600.0),
        _ => ("days", 86_400.0),
    };
    let x_desc = format!("{unit} since the first heal");
    let top = points.iter().map(|(_, s)| *s).fold(p90.unwrap_or(0.0), f64::max).max(1.0) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 240)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..span_x, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc("seconds to heal")
            .x_label_formatter(&|x| format!("{:.0}", x / per))
            .light_line_style(RGBColor(238, 241, 245))
            .draw()
            .map_err(|e| e.to_string())?;
        for (value, colour) in [(p50, RGBColor(31, 122, 61)), (p90, RGBColor(161, 92, 0))] {
            if let Some(value) = value {
                chart
                    .draw_series(LineSeries::new([(0.0, value), (span_x, value)], colour.stroke_width(1)))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .draw_series(points.iter().map(|(t, s)| Circle::new((t - first, *s), 3, RGBColor(36, 87, 197).filled())))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Signed(session): Signed,
    Path(name): Path<String>,
    Query(compare): Query<Compare>,
) -> Response {
    if let Some(busy) = not_warm(&api, &session).await {
        return busy;
    }
    let Some(dataset) = api.context.dataset(&name) else {
        return no_dataset(&session, &name);
    };
    let subject = dataset.subject();
    let (table, table_error) = match read::describe_table(&api.context, &name).await {
        Ok(table) => (Some(table), None),
        Err(e) => (None, Some(e)),
    };
    let (versions, history_error) = match read::registry_history(&api.context, Some(&name), None).await {
        Ok(history) => (
            history
                .versions
                .into_iter()
                .map(|v| Version { version: v.version, id: v.id, chips: chips(&v.changes) })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    // By default the two newest versions are compared.
    let newest = versions.iter().rev().map(|v| v.version).collect::<Vec<_>>();
    let compare = match (compare.a, compare.b, newest.as_slice()) {
        (Some(a), Some(b), _) => Some((a, b)),
        (_, _, [b, a, ..]) => Some((*a, *b)),
        _ => None,
    };
    let (diff, diff_error) = match compare {
        Some((a, b)) => match diff(&api, &subject, a, b).await {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(e)),
        },
        None => (Vec::new(), None),
    };
    let mut quarantine_error = None;
    let (quarantine_counts, quarantined) = match read::quarantined_records(&api.context, &name, None, Some(20)).await {
        Ok(q) => {
            let shown = q.records.iter().map(held).collect();
            (q.counts.into_iter().map(|(writer, n)| (writer, count(n))).collect(), shown)
        }
        Err(e) => {
            quarantine_error = Some(e);
            (Vec::new(), Vec::new())
        }
    };
    let incidents = api.model().incidents();
    let ours: Vec<&Incident> = incidents.iter().filter(|i| i.dataset == name).collect();
    let times = heal_times(&ours);
    let (p50, p90) = (quantile(&times, 0.5), quantile(&times, 0.9));
    let plot = heal_plot(&ours, p50, p90).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "drawing the time-to-heal plot failed");
        String::new()
    });
    page(&Show {
        page: Page::of("Dataset", &session),
        name,
        table,
        table_error,
        subject,
        versions,
        history_error,
        compare,
        diff,
        diff_error,
        quarantine_counts,
        quarantined,
        quarantine_error,
        heal_p50: seconds(p50),
        heal_p90: seconds(p90),
        healed: times.len(),
        plot,
    })
}

/// One record of the topic, as the registry's writer schema decodes it.
struct Sample {
    position: String,
    writer: String,
    value: String,
    error: String,
}

#[derive(Template)]
#[template(path = "samples.html")]
struct Samples<'a> {
    page: Page<'a>,
    name: String,
    topic: String,
    samples: Vec<Sample>,
    error: Option<String>,
}

/// Records the samples page shows.
const SAMPLES: i64 = 20;

/// The latest records of a dataset's topic, decoded (as the MCP tool
/// `sample_records` reads them): what producers write now.
pub(crate) async fn samples(
    State(api): State<Arc<Api>>,
    Signed(session): Signed,
    Path(name): Path<String>,
) -> Response {
    let Some(dataset) = api.context.dataset(&name) else {
        return no_dataset(&session, &name);
    };
    let topic = dataset.topic.clone();
    let (samples, error) = match read::sample_records(&api.context, &name, Some(SAMPLES), None, None).await {
        Ok(found) => (
            found
                .records
                .iter()
                .rev()
                .map(|r| Sample {
                    position: format!("{}:{}", r.partition, r.offset),
                    writer: r.writer_schema_id.map_or_else(|| "-".into(), |w| w.to_string()),
                    value: r.value.as_ref().map_or_else(String::new, ToString::to_string),
                    error: r.error.clone().unwrap_or_default(),
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    page(&Samples { page: Page::of("Latest records", &session), name, topic, samples, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_svg_of_numbers_only() {
        let healed = |at: i64, seconds: f64| Incident {
            healed_at: Some(at),
            time_to_heal_seconds: Some(seconds),
            ..Incident::default()
        };
        let incidents = [healed(1_000_000, 0.5), healed(1_060_000, 2.0), healed(1_200_000, 30.0)];
        let refs: Vec<&Incident> = incidents.iter().collect();
        let svg = heal_plot(&refs, Some(2.0), Some(30.0)).unwrap_or_default();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(heal_plot(&[], None, None).unwrap_or_default().is_empty(), "no heal, no plot");
    }
}
