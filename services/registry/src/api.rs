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
use crate::store::{ConfigValue, LogKey, Reference, SchemaValue, Store, StoredSchema};

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

// ---- schema bodies -------------------------------------------------------

#[derive(Debug, Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// A validated schema from a request: normalised text and parsed form.
struct Candidate {
    stored: StoredSchema,
    parsed: Schema,
}

fn parse_body(body: &Bytes) -> Result<SchemaBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_schema(format!("request body: {e}")))
}

/// Validates a schema (with its references resolved) and normalises it.
fn candidate(store: &Store, body: &SchemaBody) -> Result<Candidate, ApiError> {
    let schema_type = body.schema_type.clone().unwrap_or_else(|| "AVRO".into()).to_ascii_uppercase();
    if schema_type != "AVRO" {
        return Err(ApiError::invalid_schema(format!("schema type {schema_type} is not supported; only AVRO is")));
    }
    let json: Value = serde_json::from_str(&body.schema).map_err(|e| ApiError::invalid_schema(e.to_string()))?;
    let stored = StoredSchema { schema: json.to_string(), schema_type, references: body.references.clone() };
    let parsed = parse_stored(store, &stored).map_err(ApiError::invalid_schema)?;
    check_union_defaults(&parsed).map_err(ApiError::invalid_schema)?;
    Ok(Candidate { stored, parsed })
}

/// The Avro specification (and Java's parser, hence Confluent) requires a
/// union field's default to match the union's first branch; apache-avro
/// accepts any branch, so check it here.
fn check_union_defaults(schema: &Schema) -> Result<(), String> {
    fn walk(schema: &Schema, seen: &mut Vec<String>) -> Result<(), String> {
        match schema {
            Schema::Record(record) => {
                if seen.contains(&record.name.fullname(None)) {
                    return Ok(());
                }
                seen.push(record.name.fullname(None));
                for field in &record.fields {
                    if let (Schema::Union(union), Some(default)) = (&field.schema, &field.default)
                        && let Some(first) = union.variants().first()
                    {
                        let fits = apache_avro::types::Value::try_from(default.clone())
                            .ok()
                            .and_then(|value| value.resolve(first).ok())
                            .is_some();
                        if !fits {
                            return Err(format!(
                                "the default of field {} ({default}) does not match the first branch of its union",
                                field.name
                            ));
                        }
                    }
                    walk(&field.schema, seen)?;
                }
                Ok(())
            }
            Schema::Union(union) => union.variants().iter().try_for_each(|v| walk(v, seen)),
            Schema::Array(array) => walk(&array.items, seen),
            Schema::Map(map) => walk(&map.types, seen),
            _ => Ok(()),
        }
    }
    walk(schema, &mut Vec::new())
}

/// Parses a stored schema, inlining its references (transitively).
fn parse_stored(store: &Store, schema: &StoredSchema) -> Result<Schema, String> {
    let json: Value = serde_json::from_str(&schema.schema).map_err(|e| e.to_string())?;
    let inlined = resolve(store, &json, &schema.references, 0)?;
    Schema::parse(&inlined).map_err(|e| e.to_string())
}

fn resolve(store: &Store, json: &Value, references: &[Reference], depth: usize) -> Result<Value, String> {
    if references.is_empty() {
        return Ok(json.clone());
    }
    if depth > 32 {
        return Err("references nest too deeply (or form a cycle)".into());
    }
    let mut named = HashMap::new();
    for reference in references {
        let versions = store.live_versions(&reference.subject);
        let id = if reference.version == -1 {
            versions.last().map(|(_, id)| *id)
        } else {
            versions.iter().find(|(v, _)| i64::from(*v) == i64::from(reference.version)).map(|(_, id)| *id)
        }
        .ok_or_else(|| {
            format!(
                "reference {} not found: subject {} version {}",
                reference.name, reference.subject, reference.version
            )
        })?;
        let target = store.schema(id).ok_or_else(|| format!("reference {} has no schema", reference.name))?;
        let target_json: Value = serde_json::from_str(&target.schema).map_err(|e| e.to_string())?;
        named.insert(reference.name.clone(), resolve(store, &target_json, &target.references, depth + 1)?);
    }
    Ok(compat::inline_references(json, &named))
}

fn schema_json(schema: &StoredSchema) -> Value {
    let mut body = json!({"schema": schema.schema});
    decorate(&mut body, schema);
    body
}

/// Adds `schemaType` (when not AVRO) and `references` (when any).
fn decorate(body: &mut Value, schema: &StoredSchema) {
    if schema.schema_type != "AVRO" {
        body["schemaType"] = json!(schema.schema_type);
    }
    if !schema.references.is_empty() {
        body["references"] = json!(schema.references);
    }
}

// ---- /schemas ------------------------------------------------------------

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::schema_not_found(id))
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>, Query(params): Params) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    let found = store
        .schema(id)
        .filter(|_| flag(&params, "deleted") || !store.usages(id, false).is_empty())
        .ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(schema_json(found))
}

async fn raw_schema_by_id(State(r): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    let found = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let raw: Value = serde_json::from_str(&found.schema).unwrap_or(Value::Null);
    ok(raw)
}

async fn versions_of_id(State(r): Shared, Path(id): Path<String>, Query(params): Params) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let usages = store.usages(id, flag(&params, "deleted"));
    ok(Value::Array(usages.into_iter().map(|(s, v)| json!({"subject": s, "version": v})).collect()))
}

async fn subjects_of_id(State(r): Shared, Path(id): Path<String>, Query(params): Params) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let mut subjects: Vec<String> = store.usages(id, flag(&params, "deleted")).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

/// `GET /schemas`: every version (or the latest per subject with
/// `latestOnly=true`), optionally under a subject prefix.
async fn list_schemas(State(r): Shared, Query(params): Params) -> Result<Response, ApiError> {
    let store = r.read();
    let prefix = params.get("subjectPrefix").cloned().unwrap_or_default();
    let deleted = flag(&params, "deleted");
    let mut out = Vec::new();
    for subject in store.subjects(deleted).into_iter().filter(|s| s.starts_with(&prefix)) {
        let Some(versions) = store.versions(&subject) else { continue };
        let chosen: Vec<(&u32, &crate::store::VersionEntry)> =
            versions.iter().filter(|(_, e)| deleted || !e.deleted).collect();
        let chosen = if flag(&params, "latestOnly") { chosen.into_iter().last().into_iter().collect() } else { chosen };
        for (version, entry) in chosen {
            out.push(version_json(&store, &subject, *version, entry.id)?);
        }
    }
    ok(Value::Array(out))
}

// ---- /subjects -----------------------------------------------------------

async fn list_subjects(State(r): Shared, Query(params): Params) -> Result<Response, ApiError> {
    let prefix = params.get("subjectPrefix").cloned().unwrap_or_default();
    let subjects: Vec<String> =
        r.read().subjects(flag(&params, "deleted")).into_iter().filter(|s| s.starts_with(&prefix)).collect();
    ok(json!(subjects))
}

async fn list_versions(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let versions: Vec<u32> = match store.versions(&subject) {
        Some(all) if flag(&params, "deleted") => all.keys().copied().collect(),
        _ => store.live_versions(&subject).into_iter().map(|(v, _)| v).collect(),
    };
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(&subject));
    }
    ok(json!(versions))
}

/// A version path segment: a number, `latest` or `-1`.
enum VersionSpec {
    Latest,
    Number(u32),
}

fn parse_version(text: &str) -> Result<VersionSpec, ApiError> {
    if text == "latest" || text == "-1" {
        return Ok(VersionSpec::Latest);
    }
    match text.parse::<i64>() {
        Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(u32::try_from(n).unwrap_or(1))),
        _ => Err(ApiError::invalid_version(text)),
    }
}

/// Resolves a version of a subject to (version, id, deleted).
fn find_version(store: &Store, subject: &str, text: &str, deleted: bool) -> Result<(u32, u32, bool), ApiError> {
    let spec = parse_version(text)?;
    let versions = store.versions(subject).filter(|v| deleted || v.values().any(|e| !e.deleted));
    let versions = versions.ok_or_else(|| ApiError::subject_not_found(subject))?;
    let found = match spec {
        VersionSpec::Latest => versions.iter().rev().find(|(_, e)| deleted || !e.deleted),
        VersionSpec::Number(n) => versions.get_key_value(&n).filter(|(_, e)| deleted || !e.deleted),
    };
    found.map(|(v, e)| (*v, e.id, e.deleted)).ok_or_else(|| ApiError::version_not_found(text))
}

fn version_json(store: &Store, subject: &str, version: u32, id: u32) -> Result<Value, ApiError> {
    let schema = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let mut body = json!({"subject": subject, "version": version, "id": id, "schema": schema.schema});
    decorate(&mut body, schema);
    Ok(body)
}

async fn get_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (version, id, _) = find_version(&store, &subject, &version, flag(&params, "deleted"))?;
    ok(version_json(&store, &subject, version, id)?)
}

async fn get_raw_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (_, id, _) = find_version(&store, &subject, &version, flag(&params, "deleted"))?;
    let schema = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(serde_json::from_str(&schema.schema).unwrap_or(Value::Null))
}

async fn referenced_by(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (version, _, _) = find_version(&store, &subject, &version, false)?;
    ok(json!(store.referenced_by(&subject, version)))
}

async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = r.read();
    let deleted = flag(&params, "deleted");
    let versions = store.versions(&subject).filter(|v| deleted || v.values().any(|e| !e.deleted));
    let versions = versions.ok_or_else(|| ApiError::subject_not_found(&subject))?;
    let candidate = candidate(&store, &parse_body(&body)?)?;
    let id = store.id_of(&candidate.stored).ok_or_else(|| ApiError::schema_not_found("not found"))?;
    let (version, _) = versions
        .iter()
        .rfind(|(_, e)| e.id == id && (deleted || !e.deleted))
        .ok_or_else(|| ApiError::schema_not_found("not found"))?;
    ok(version_json(&store, &subject, *version, id)?)
}

async fn register(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    // Fast path: a schema this instance already holds for the subject is
    // durable in the log; answering needs no write and no catch-up.
    {
        let store = r.read();
        let known = candidate(&store, &body)?;
        if let Some(id) = store.id_of(&known.stored)
            && store.live_versions(&subject).iter().any(|(_, v)| *v == id)
        {
            return ok(json!({"id": id}));
        }
    }
    let _writer = r.write_lock.lock().await;
    for _ in 0..WRITE_ATTEMPTS {
        r.log.catch_up().await?;
        let (value, key) = {
            let store = r.read();
            let candidate = candidate(&store, &body)?;
            let live = store.live_versions(&subject);
            if let Some(id) = store.id_of(&candidate.stored)
                && live.iter().any(|(_, v)| *v == id)
            {
                return ok(json!({"id": id}));
            }
            let level = store.effective_level(&subject);
            let problems = compat::check(level, &candidate.parsed, &against(&store, level, &live));
            if !problems.is_empty() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    409,
                    format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {problems:?}"
                    ),
                ));
            }
            let id = store.id_of(&candidate.stored).unwrap_or_else(|| store.next_id());
            let version = store.next_version(&subject);
            let value = SchemaValue {
                subject: subject.clone(),
                version,
                id,
                schema: candidate.stored.schema.clone(),
                schema_type: candidate.stored.schema_type.clone(),
                references: candidate.stored.references.clone(),
                deleted: false,
            };
            (value, LogKey::schema(&subject, version, &r.writer_id))
        };
        r.log.append(&key, Some(&value)).await?;
        if r.read().version_written_by(&subject, value.version, &r.writer_id) {
            return ok(json!({"id": value.id}));
        }
        // Another instance won this version or id: withdraw our record so a
        // compacted log cannot resurrect it, and try again on the new state.
        tracing::info!(%subject, version = value.version, id = value.id, "lost a registration race; retrying");
        r.log.append::<SchemaValue>(&key, None).await?;
    }
    Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, "could not register: too many concurrent writers"))
}

/// The versions a new schema is checked against under `level`.
fn against(store: &Store, level: Level, live: &[(u32, u32)]) -> Vec<(u32, Schema)> {
    if level == Level::None {
        return Vec::new();
    }
    let chosen: Vec<&(u32, u32)> =
        if level.transitive() { live.iter().collect() } else { live.last().into_iter().collect() };
    chosen
        .into_iter()
        .filter_map(|(version, id)| {
            let parsed = store.schema(*id).and_then(|s| parse_stored(store, s).ok())?;
            Some((*version, parsed))
        })
        .collect()
}

async fn delete_subject(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let permanent = flag(&params, "permanent");
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let (keys, values, deleted): (Vec<LogKey>, Vec<Option<SchemaValue>>, Vec<u32>) = {
        let store = r.read();
        let versions = store.versions(&subject).ok_or_else(|| ApiError::subject_not_found(&subject))?;
        let live: Vec<u32> = versions.iter().filter(|(_, e)| !e.deleted).map(|(v, _)| *v).collect();
        if permanent {
            if !live.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    40405,
                    format!("Subject '{subject}' was not deleted first before being permanently deleted"),
                ));
            }
            let all: Vec<u32> = versions.keys().copied().collect();
            let keys = all.iter().filter_map(|v| store.version_key(&subject, *v)).map(LogKey::Schema).collect();
            (keys, vec![None; all.len()], all)
        } else {
            if live.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    40404,
                    format!("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"),
                ));
            }
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for version in &live {
                let (Some(key), Some(id)) =
                    (store.version_key(&subject, *version), versions.get(version).map(|e| e.id))
                else {
                    continue;
                };
                let schema = store.schema(id).cloned().ok_or_else(|| ApiError::schema_not_found(id))?;
                keys.push(LogKey::Schema(key));
                values.push(Some(SchemaValue {
                    subject: subject.clone(),
                    version: *version,
                    id,
                    schema: schema.schema,
                    schema_type: schema.schema_type,
                    references: schema.references,
                    deleted: true,
                }));
            }
            (keys, values, live)
        }
    };
    for (key, value) in keys.iter().zip(values) {
        r.log.append(key, value.as_ref()).await?;
    }
    if permanent {
        r.log.append::<ConfigValue>(&LogKey::config(Some(&subject)), None).await?;
    }
    ok(json!(deleted))
}

async fn delete_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let permanent = flag(&params, "permanent");
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let (key, value, number) = {
        let store = r.read();
        let (number, id, deleted) = find_version(&store, &subject, &version, permanent)?;
        if permanent && !deleted {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                40407,
                format!("Subject '{subject}' Version {number} was not deleted first before being permanently deleted"),
            ));
        }
        if !store.referenced_by(&subject, number).is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                42206,
                format!("One or more references exist to the schema {{subject={subject},version={number}}}."),
            ));
        }
        let key = store.version_key(&subject, number).ok_or_else(|| ApiError::version_not_found(&version))?;
        let value = if permanent {
            None
        } else {
            let schema = store.schema(id).cloned().ok_or_else(|| ApiError::schema_not_found(id))?;
            Some(SchemaValue {
                subject: subject.clone(),
                version: number,
                id,
                schema: schema.schema,
                schema_type: schema.schema_type,
                references: schema.references,
                deleted: true,
            })
        };
        (LogKey::Schema(key), value, number)
    };
    r.log.append(&key, value.as_ref()).await?;
    ok(json!(number))
}

// ---- /compatibility ------------------------------------------------------

async fn check_all(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = r.read();
    let candidate = candidate(&store, &parse_body(&body)?)?;
    let level = store.effective_level(&subject);
    let live = store.live_versions(&subject);
    let problems = compat::check(level, &candidate.parsed, &against(&store, level, &live));
    compatibility_answer(&problems, flag(&params, "verbose"))
}

async fn check_one(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (number, id, _) = find_version(&store, &subject, &version, false)?;
    let candidate = candidate(&store, &parse_body(&body)?)?;
    let level = store.effective_level(&subject);
    let problems = compat::check(level, &candidate.parsed, &against(&store, level, &[(number, id)]));
    compatibility_answer(&problems, flag(&params, "verbose"))
}

fn compatibility_answer(problems: &[String], verbose: bool) -> Result<Response, ApiError> {
    let mut body = json!({"is_compatible": problems.is_empty()});
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

// ---- /config -------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn parse_level(body: &Bytes) -> Result<Level, ApiError> {
    let parsed: ConfigBody = serde_json::from_slice(body).map_err(|e| ApiError::invalid_level(&e.to_string()))?;
    let text = parsed.compatibility.or(parsed.compatibility_level).unwrap_or_default();
    Level::parse(&text).ok_or_else(|| ApiError::invalid_level(&text))
}

async fn get_global(State(r): Shared) -> Result<Response, ApiError> {
    ok(json!({"compatibilityLevel": r.read().global_level().name()}))
}

async fn put_global(State(r): Shared, body: Bytes) -> Result<Response, ApiError> {
    let level = parse_level(&body)?;
    let _writer = r.write_lock.lock().await;
    r.log.append(&LogKey::config(None), Some(&ConfigValue { compatibility_level: level })).await?;
    ok(json!({"compatibility": level.name()}))
}

async fn delete_global(State(r): Shared) -> Result<Response, ApiError> {
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let previous = r.read().global_level();
    r.log.append::<ConfigValue>(&LogKey::config(None), None).await?;
    ok(json!({"compatibilityLevel": previous.name()}))
}

async fn get_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let level = match store.subject_level(&subject) {
        Some(level) => level,
        None if flag(&params, "defaultToGlobal") => store.global_level(),
        None => return Err(no_subject_config(&subject)),
    };
    ok(json!({"compatibilityLevel": level.name()}))
}

fn no_subject_config(subject: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        40408,
        format!("Subject '{subject}' does not have subject-level compatibility configured"),
    )
}

async fn put_subject_config(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let level = parse_level(&body)?;
    let _writer = r.write_lock.lock().await;
    r.log.append(&LogKey::config(Some(&subject)), Some(&ConfigValue { compatibility_level: level })).await?;
    ok(json!({"compatibility": level.name()}))
}

async fn delete_subject_config(State(r): Shared, Path(subject): Path<String>) -> Result<Response, ApiError> {
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let previous = {
        let store = r.read();
        match store.subject_level(&subject) {
            Some(level) => level,
            None if store.versions(&subject).is_none() => return Err(ApiError::subject_not_found(&subject)),
            None => return Err(no_subject_config(&subject)),
        }
    };
    r.log.append::<ConfigValue>(&LogKey::config(Some(&subject)), None).await?;
    ok(json!({"compatibilityLevel": previous.name()}))
}
