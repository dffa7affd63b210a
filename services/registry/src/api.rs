//! Confluent Schema Registry REST API: the endpoints, bodies, statuses and
//! error codes real clients (Confluent's, schema_registry_converter, …) use.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Registry;
use crate::compat::{self, Level};
use crate::log::LogError;
use crate::store::{ConfigValue, LogKey, Reference, SchemaValue, Schemas, StoredSchema};

mod config;
mod schemas;
mod subjects;

use config::*;
use schemas::*;
use subjects::*;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// How often a write that lost a race with another instance is retried.
const WRITE_ATTEMPTS: usize = 8;

/// An error as Confluent reports it: HTTP status plus `error_code` and `message`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn subject_not_found(subject: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."))
    }
    fn version_not_found(version: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40402, format!("Version {version} not found."))
    }
    fn schema_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, format!("Schema {what} not found"))
    }
    fn invalid_schema(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {message}"))
    }
    fn invalid_version(version: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }
    fn invalid_subject(subject: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42208,
            format!(
                "The specified subject '{}' is not a valid: {}",
                subject.escape_debug(),
                subject_problem(subject).unwrap_or_default()
            ),
        )
    }
    fn schema_too_large() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42209,
            format!("Schema too large: the request body is over {MAX_BODY_BYTES} bytes"),
        )
    }
    fn invalid_level(level: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!(
                "Invalid compatibility level '{level}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
            ),
        )
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Timeout => Self::new(StatusCode::INTERNAL_SERVER_ERROR, 50002, error.to_string()),
            LogError::Unavailable(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        respond(self.status, &json!({"error_code": self.code, "message": self.message}))
    }
}

/// The largest request body (a schema and its references): schemas are
/// records of the registry's Kafka log, whose producer takes up to 1 MB.
pub const MAX_BODY_BYTES: usize = 512 << 10;

/// How much of a too-large body is read and thrown away before the refusal
/// is sent. A server that answers while the client is still sending, and
/// closes, makes the kernel reset the connection, and the client sees a
/// broken pipe rather than the 42209. A larger body is not waited for.
const MAX_DISCARDED_BYTES: u64 = 64 << 20;

/// A request body of at most [`MAX_BODY_BYTES`]; a larger one is answered
/// with Confluent's "schema too large" (42209) and never held in memory.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        use futures::StreamExt as _;

        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_DISCARDED_BYTES) {
            return Err(ApiError::schema_too_large());
        }
        let mut chunks = request.into_body().into_data_stream();
        let mut body = Vec::new();
        let mut read: u64 = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::new(StatusCode::BAD_REQUEST, 400, format!("The request body could not be read: {error}"))
            })?;
            read = read.saturating_add(chunk.len() as u64);
            if read > MAX_DISCARDED_BYTES {
                break;
            }
            if read <= MAX_BODY_BYTES as u64 {
                body.extend_from_slice(&chunk);
            } else {
                body = Vec::new();
            }
        }
        if read > MAX_BODY_BYTES as u64 {
            return Err(ApiError::schema_too_large());
        }
        Ok(Self(Bytes::from(body)))
    }
}

/// What makes `subject` an invalid subject name, as Confluent's registry
/// judges it: empty, a control character, or a reserved name.
pub(crate) fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.trim().is_empty() {
        Some("a subject name must not be empty or blank")
    } else if subject.chars().any(char::is_control) {
        Some("a subject name must not contain control characters")
    } else if subject == "__GLOBAL" || subject == "__EMPTY" {
        Some("the name is reserved")
    } else {
        None
    }
}

/// Err 42208 when `subject` cannot name a subject.
pub(crate) fn valid_subject(subject: &str) -> Result<(), ApiError> {
    match subject_problem(subject) {
        Some(_) => Err(ApiError::invalid_subject(subject)),
        None => Ok(()),
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(respond(StatusCode::OK, &body))
}

type Shared = State<Arc<Registry>>;
type Params = Query<HashMap<String, String>>;

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The routes.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(|| async { respond(StatusCode::OK, &json!({})) }))
        .route("/schemas/types", get(|| async { respond(StatusCode::OK, &json!(["AVRO"])) }))
        .route("/mode", get(|| async { respond(StatusCode::OK, &json!({"mode": "READWRITE"})) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        // Apicurio Registry 2's reading of a schema by id, for its serdes and
        // Kafka Connect converters in their Confluent mode
        // (`apicurio.registry.as-confluent`): an id here is both its content
        // id and its global id, and no schema has references.
        .route("/apis/registry/v2/ids/contentIds/{id}", get(raw_schema_by_id))
        .route("/apis/registry/v2/ids/globalIds/{id}", get(raw_schema_by_id))
        .route("/apis/registry/v2/ids/contentIds/{id}/references", get(no_references))
        .route("/apis/registry/v2/ids/globalIds/{id}/references", get(no_references))
        .route("/schemas", get(list_schemas))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_raw_version))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/compatibility/subjects/{subject}/versions", post(check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_one))
        .route("/config", get(get_global).put(put_global).delete(delete_global))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found").into_response() })
        .with_state(registry)
}
