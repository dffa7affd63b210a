//! Schema bodies (parsing, references, checks) and schemas by id.

use super::*;

// ---- schema bodies -------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// A validated schema from a request: normalised text and parsed form.
pub(super) struct Candidate {
    pub(super) stored: StoredSchema,
    pub(super) parsed: Schema,
}

pub(super) fn parse_body(body: &Bytes) -> Result<SchemaBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_schema(format!("request body: {e}")))
}

/// Validates a schema (with its references resolved) and normalises it.
pub(super) fn candidate(store: &Schemas, body: &SchemaBody) -> Result<Candidate, ApiError> {
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
pub(super) fn check_union_defaults(schema: &Schema) -> Result<(), String> {
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
pub(super) fn parse_stored(store: &Schemas, schema: &StoredSchema) -> Result<Schema, String> {
    let json: Value = serde_json::from_str(&schema.schema).map_err(|e| e.to_string())?;
    let inlined = resolve(store, &json, &schema.references, 0)?;
    Schema::parse(&inlined).map_err(|e| e.to_string())
}

pub(super) fn resolve(store: &Schemas, json: &Value, references: &[Reference], depth: usize) -> Result<Value, String> {
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

pub(super) fn schema_json(schema: &StoredSchema) -> Value {
    let mut body = json!({"schema": schema.schema});
    decorate(&mut body, schema);
    body
}

/// Adds `schemaType` (when not AVRO) and `references` (when any).
pub(super) fn decorate(body: &mut Value, schema: &StoredSchema) {
    if schema.schema_type != "AVRO" {
        body["schemaType"] = json!(schema.schema_type);
    }
    if !schema.references.is_empty() {
        body["references"] = json!(schema.references);
    }
}

// ---- /schemas ------------------------------------------------------------

pub(super) fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::schema_not_found(id))
}

pub(super) async fn schema_by_id(
    State(r): Shared,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    let found = store
        .schema(id)
        .filter(|_| flag(&params, "deleted") || !store.usages(id, false).is_empty())
        .ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(schema_json(found))
}

pub(super) async fn raw_schema_by_id(State(r): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    let found = store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let raw: Value = serde_json::from_str(&found.schema).unwrap_or(Value::Null);
    ok(raw)
}

/// A schema's references, for Apicurio's readers: none (mend's registry
/// keeps none).
pub(super) async fn no_references(State(r): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    r.read().schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    ok(Value::Array(Vec::new()))
}

pub(super) async fn versions_of_id(
    State(r): Shared,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let usages = store.usages(id, flag(&params, "deleted"));
    ok(Value::Array(usages.into_iter().map(|(s, v)| json!({"subject": s, "version": v})).collect()))
}

pub(super) async fn subjects_of_id(
    State(r): Shared,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let store = r.read();
    store.schema(id).ok_or_else(|| ApiError::schema_not_found(id))?;
    let mut subjects: Vec<String> = store.usages(id, flag(&params, "deleted")).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

/// `GET /schemas`: every version (or the latest per subject with
/// `latestOnly=true`), optionally under a subject prefix.
pub(super) async fn list_schemas(State(r): Shared, Query(params): Params) -> Result<Response, ApiError> {
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

pub(super) async fn list_subjects(State(r): Shared, Query(params): Params) -> Result<Response, ApiError> {
    let prefix = params.get("subjectPrefix").cloned().unwrap_or_default();
    let subjects: Vec<String> =
        r.read().subjects(flag(&params, "deleted")).into_iter().filter(|s| s.starts_with(&prefix)).collect();
    ok(json!(subjects))
}

pub(super) async fn list_versions(
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

// Property tests in place of fuzzing (see `make fuzz`): whatever a client
// sends as a schema, and whatever the registry's log holds, is parsed or
// refused, never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 14] = [
        "type",
        "name",
        "fields",
        "items",
        "values",
        "symbols",
        "default",
        "aliases",
        "namespace",
        "logicalType",
        "size",
        "precision",
        "scale",
        "doc",
    ];
    const WORDS: [&str; 16] = [
        "record", "enum", "array", "map", "fixed", "int", "long", "string", "null", "boolean", "bytes", "double",
        "decimal", "A", "r", "x.y",
    ];

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..40).prop_map(|n| json!(n)),
            proptest::sample::select(WORDS.to_vec()).prop_map(|w| json!(w)),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(proptest::sample::select(KEYS.to_vec()), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    fn candidate_of(store: &Schemas, schema: &Value) -> Option<Candidate> {
        let body = SchemaBody { schema: schema.to_string(), schema_type: None, references: Vec::new() };
        candidate(store, &body).ok()
    }

    proptest! {
        #[test]
        fn fuzz_registry_schemas(a in json(), b in json()) {
            let store = Schemas::default();
            let (a, b) = (candidate_of(&store, &a), candidate_of(&store, &b));
            if let (Some(a), Some(b)) = (a, b) {
                for level in ["BACKWARD", "FORWARD_TRANSITIVE", "FULL", "NONE"] {
                    let level = Level::parse(level).unwrap_or_default();
                    let _ = compat::check(level, &a.parsed, &[(1, b.parsed.clone())]);
                }
                prop_assert!(compat::check(Level::parse("FULL").unwrap_or_default(), &a.parsed, &[(1, a.parsed.clone())]).is_empty());
            }
        }

        #[test]
        fn fuzz_registry_bodies(body in proptest::collection::vec(any::<u8>(), 0..200), text in "\\PC{0,120}") {
            let _ = parse_body(&Bytes::from(body));
            let _ = parse_body(&Bytes::from(text.clone()));
            let store = Schemas::default();
            let _ = candidate(&store, &SchemaBody { schema: text, schema_type: None, references: Vec::new() });
        }

        #[test]
        fn fuzz_registry_log_records(key in json(), value in json(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut store = Schemas::default();
            store.apply(key.to_string().as_bytes(), Some(value.to_string().as_bytes()));
            store.apply(key.to_string().as_bytes(), None);
            store.apply(&raw, Some(&raw));
            let _ = store.subjects(true);
        }
    }
}
