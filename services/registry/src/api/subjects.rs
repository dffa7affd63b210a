//! Subjects and their versions: listing, registering, looking up, deleting,
//! and compatibility checks against them.

use super::schemas::*;
use super::*;

/// A version path segment: a number, `latest` or `-1`.
pub(super) enum VersionSpec {
    Latest,
    Number(u32),
}

pub(super) fn parse_version(text: &str) -> Result<VersionSpec, ApiError> {
    if text == "latest" || text == "-1" {
        return Ok(VersionSpec::Latest);
    }
    match text.parse::<i64>() {
        Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(u32::try_from(n).unwrap_or(1))),
        _ => Err(ApiError::invalid_version(text)),
    }
}

/// Resolves a version of a subject to (version, id, deleted).
pub(super) fn find_version(
    store: &Schemas,
    subject: &str,
    text: &str,
    deleted: bool,
) -> Result<(u32, u32, bool), ApiError> {
    let spec = parse_version(text)?;
    let versions = store.versions(subject).filter(|v| deleted || v.values().any(|e| !e.deleted));
    let versions = versions.ok_or_else(|| ApiError::subject_not_found(subject))?;
    let found = match spec {
        VersionSpec::Latest => versions.iter().rev().find(|(_, e)| deleted || !e.deleted),
        VersionSpec::Number(n) => versions.get_key_value(&n).filter(|(_, e)| deleted || !e.deleted),
    };
    found.map(|(v, e)| (*v, e.id, e.deleted)).ok_or_else(|| ApiError::version_not_found(text))
}

pub(super) fn version_json(store: &Schemas, subject: &str, version: u32, id: u32) -> Result<Value, ApiError> {
    let schema = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let mut body = json!({"subject": subject, "version": version, "id": id, "schema": schema.schema});
    decorate(&mut body, schema);
    Ok(body)
}

pub(super) async fn get_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (version, id, _) = find_version(&store, &subject, &version, flag(&params, "deleted"))?;
    ok(version_json(&store, &subject, version, id)?)
}

pub(super) async fn get_raw_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (_, id, _) = find_version(&store, &subject, &version, flag(&params, "deleted"))?;
    let schema = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(serde_json::from_str(&schema.schema).unwrap_or(Value::Null))
}

pub(super) async fn referenced_by(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (version, _, _) = find_version(&store, &subject, &version, false)?;
    ok(json!(store.referenced_by(&subject, version)))
}

pub(super) async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    Body(body): Body,
) -> Result<Response, ApiError> {
    valid_subject(&subject)?;
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

pub(super) async fn register(
    State(r): Shared,
    Path(subject): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    valid_subject(&subject)?;
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
pub(super) fn against(store: &Schemas, level: Level, live: &[(u32, u32)]) -> Vec<(u32, Schema)> {
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

pub(super) async fn delete_subject(
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

pub(super) async fn delete_version(
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

pub(super) async fn check_all(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let store = r.read();
    let candidate = candidate(&store, &parse_body(&body)?)?;
    let level = store.effective_level(&subject);
    let live = store.live_versions(&subject);
    let problems = compat::check(level, &candidate.parsed, &against(&store, level, &live));
    compatibility_answer(&problems, flag(&params, "verbose"))
}

pub(super) async fn check_one(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let store = r.read();
    let (number, id, _) = find_version(&store, &subject, &version, false)?;
    let candidate = candidate(&store, &parse_body(&body)?)?;
    let level = store.effective_level(&subject);
    let problems = compat::check(level, &candidate.parsed, &against(&store, level, &[(number, id)]));
    compatibility_answer(&problems, flag(&params, "verbose"))
}

pub(super) fn compatibility_answer(problems: &[String], verbose: bool) -> Result<Response, ApiError> {
    let mut body = json!({"is_compatible": problems.is_empty()});
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

// ---- /config -------------------------------------------------------------
