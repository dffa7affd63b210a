use super::*;

fn schema(fields: &str) -> Schema {
    Schema::parse_str(&format!(r#"{{"type":"record","name":"O","fields":[{fields}]}}"#)).unwrap()
}

fn kinds(old: &str, new: &str) -> Vec<(String, String)> {
    classify(&schema(old), &schema(new)).into_iter().map(|c| (c.kind.to_string(), c.field)).collect()
}

#[test]
fn classifies_top_level_changes() {
    let base = r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#;
    assert_eq!(
        kinds(base, &format!(r#"{base},{{"name":"coupon","type":["null","string"],"default":null}}"#)),
        vec![("field_added".to_owned(), "coupon".to_owned())]
    );
    assert_eq!(
        kinds(base, r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#),
        vec![("field_renamed".to_owned(), "customer_email".to_owned())]
    );
    assert_eq!(kinds(base, r#"{"name":"id","type":"long"}"#), vec![("field_removed".to_owned(), "email".to_owned())]);
    assert_eq!(
        kinds(r#"{"name":"n","type":"int"}"#, r#"{"name":"n","type":"long"}"#),
        vec![("type_widened".to_owned(), "n".to_owned())]
    );
    assert_eq!(
        kinds(r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":"string"}"#),
        vec![("type_changed".to_owned(), "n".to_owned())]
    );
    assert_eq!(
        kinds(r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":["null","long"],"default":null}"#),
        vec![("nullability_changed".to_owned(), "n".to_owned()), ("default_changed".to_owned(), "n".to_owned())]
    );
}

#[test]
fn order_and_docs_are_no_change() {
    assert!(
        kinds(
            r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#,
            r#"{"name":"b","type":"string","doc":"now documented"},{"name":"a","type":"int"}"#
        )
        .is_empty()
    );
}

#[test]
fn nested_fields_are_dotted() {
    let old = r#"{"name":"shipping","type":{"type":"record","name":"S","fields":[{"name":"street","type":"string"}]}}"#;
    let new = r#"{"name":"shipping","type":{"type":"record","name":"S","fields":[{"name":"street","type":"string"},{"name":"city","type":["null","string"],"default":null}]}}"#;
    assert_eq!(kinds(old, new), vec![("field_added".to_owned(), "shipping.city".to_owned())]);
}

#[test]
fn renames_without_alias_need_names_or_values() {
    // Same name but for case and separators: a rename on names alone.
    let renamed =
        classify(&schema(r#"{"name":"customerId","type":"long"}"#), &schema(r#"{"name":"customer_id","type":"long"}"#));
    assert_eq!(renamed.len(), 1, "{renamed:?}");
    assert_eq!(renamed[0].kind, ChangeKind::FieldRenamed);
    assert_eq!((renamed[0].from.as_deref(), renamed[0].to.as_deref()), (Some("customerId"), Some("customer_id")));
    assert!(renamed[0].confidence.unwrap_or(0.0) >= RENAME_THRESHOLD);
    assert_eq!(renamed[0].evidence["value_overlap"], "not sampled");

    // Unrelated names: a removal and an addition, never a guess.
    let (old, new) = (
        schema(r#"{"name":"id","type":"long"},{"name":"amount","type":"double"}"#),
        schema(r#"{"name":"id","type":"long"},{"name":"total","type":"double"}"#),
    );
    assert_eq!(
        classify(&old, &new).into_iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(),
        ["field_added", "field_removed"]
    );
    assert_eq!(rename_candidates(&old, &new), vec![("amount".to_owned(), "total".to_owned())]);
    // The values prove it: every sampled total was an amount.
    let evidence =
        OverlapEvidence::from([(("amount".to_owned(), "total".to_owned()), Overlap { fraction: 1.0, sampled: 50 })]);
    let proven = classify_with(&old, &new, &evidence);
    assert_eq!(proven.len(), 1, "{proven:?}");
    assert_eq!(proven[0].kind, ChangeKind::FieldRenamed);
    assert_eq!(proven[0].evidence["value_overlap"], "1.00");
    assert_eq!(proven[0].evidence["values_sampled"], "50");
    // Values that do not overlap leave it a removal and an addition.
    let disproven =
        OverlapEvidence::from([(("amount".to_owned(), "total".to_owned()), Overlap { fraction: 0.02, sampled: 50 })]);
    assert_eq!(classify_with(&old, &new, &disproven).len(), 2);
    // Types that disagree are never a rename.
    let typed = classify(&schema(r#"{"name":"email","type":"string"}"#), &schema(r#"{"name":"e_mail","type":"long"}"#));
    assert_eq!(typed.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(), ["field_added", "field_removed"]);
}

#[test]
fn value_overlap_counts_distinct_values() {
    let old: std::collections::HashSet<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let overlap = value_overlap(["a", "a", "b", "z"], &old);
    assert_eq!(overlap.sampled, 3);
    assert!((overlap.fraction - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(value_overlap([], &old).fraction, 0.0);
}

#[test]
fn enums_decimals_arrays_and_namespaces() {
    let status =
        |symbols: &str| format!(r#"{{"name":"status","type":{{"type":"enum","name":"S","symbols":[{symbols}]}}}}"#);
    let changes = classify(&schema(&status(r#""A","B""#)), &schema(&status(r#""A","C""#)));
    assert_eq!(
        changes.iter().map(|c| (c.kind.as_str(), c.evidence["symbols"].as_str())).collect::<Vec<_>>(),
        [("enum_symbols_added", "C"), ("enum_symbols_removed", "B")]
    );
    let decimal = |p: u32| {
        format!(r#"{{"name":"price","type":{{"type":"bytes","logicalType":"decimal","precision":{p},"scale":2}}}}"#)
    };
    assert_eq!(kinds(&decimal(10), &decimal(12)), vec![("type_widened".to_owned(), "price".to_owned())]);
    assert_eq!(kinds(&decimal(12), &decimal(10)), vec![("type_changed".to_owned(), "price".to_owned())]);
    let lines = |extra: &str| {
        format!(
            r#"{{"name":"lines","type":{{"type":"array","items":{{"type":"record","name":"L","fields":[{{"name":"sku","type":"string"}}{extra}]}}}}}}"#
        )
    };
    assert_eq!(
        kinds(&lines(""), &lines(r#",{"name":"qty","type":"int","default":1}"#)),
        vec![("field_added".to_owned(), "lines[].qty".to_owned())]
    );
    let old = Schema::parse_str(r#"{"type":"record","name":"O","namespace":"a","fields":[{"name":"x","type":"int"}]}"#)
        .unwrap();
    let new = Schema::parse_str(r#"{"type":"record","name":"O","namespace":"b","fields":[{"name":"x","type":"int"}]}"#)
        .unwrap();
    assert!(classify(&old, &new).is_empty(), "a namespace-only change needs nothing");
    assert_eq!(
        kinds(r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":"string"}"#),
        vec![("type_changed".to_owned(), "n".to_owned())]
    );
    assert_eq!(
        kinds(r#"{"name":"s","type":"string"}"#, r#"{"name":"s","type":"bytes"}"#),
        vec![("type_widened".to_owned(), "s".to_owned())]
    );
}

#[test]
fn a_change_inside_a_record_branch_of_a_union_is_seen() {
    let union = |qty: &str| {
        format!(
            r#"{{"name":"payment","type":[{{"type":"record","name":"Card","fields":[{{"name":"number","type":"string"}}]}},
            {{"type":"record","name":"Cash","fields":[{{"name":"qty","type":"{qty}"}}]}}]}}"#
        )
    };
    assert_eq!(kinds(&union("int"), &union("string")), [("type_changed".to_owned(), "payment<Cash>.qty".to_owned())]);
    // [null, A, B] with a field added to A.
    let nullable = |extra: &str| {
        format!(
            r#"{{"name":"p","type":["null",{{"type":"record","name":"A","fields":[{{"name":"x","type":"long"}}{extra}]}},"string"]}}"#
        )
    };
    assert_eq!(
        kinds(&nullable(""), &nullable(r#",{"name":"y","type":["null","long"],"default":null}"#)),
        [("field_added".to_owned(), "p<A>.y".to_owned())]
    );
    // A new branch the contract cannot read.
    assert_eq!(
        kinds(
            r#"{"name":"v","type":["null","string","long"]}"#,
            r#"{"name":"v","type":["null","string","long","boolean"]}"#
        ),
        [("type_changed".to_owned(), "v".to_owned())]
    );
    // A branch the writer dropped changes nothing.
    assert!(kinds(r#"{"name":"v","type":["string","long"]}"#, r#"{"name":"v","type":["string"]}"#).is_empty());
}

#[test]
fn a_record_branch_renamed_with_its_fields_is_matched_by_shape() {
    let union = |name: &str, t: &str| {
        format!(
            r#"{{"name":"p","type":["string",{{"type":"record","name":"{name}","fields":[{{"name":"a","type":"long"}},{{"name":"b","type":"{t}"}}]}}]}}"#
        )
    };
    assert_eq!(
        kinds(&union("Old", "int"), &union("New", "long")),
        [("type_widened".to_owned(), "p<New>.b".to_owned())]
    );
}

#[test]
fn a_single_branch_union_is_its_branch() {
    assert_eq!(
        kinds(r#"{"name":"n","type":["int"]}"#, r#"{"name":"n","type":["string"]}"#),
        [("type_changed".to_owned(), "n".to_owned())]
    );
    assert!(kinds(r#"{"name":"n","type":["int"]}"#, r#"{"name":"n","type":"int"}"#).is_empty());
}

#[test]
fn nullability_of_map_values_and_array_items_is_seen() {
    assert_eq!(
        kinds(
            r#"{"name":"m","type":{"type":"map","values":"string"}}"#,
            r#"{"name":"m","type":{"type":"map","values":["null","string"]}}"#
        ),
        [("nullability_changed".to_owned(), "m{}".to_owned())]
    );
    assert_eq!(
        kinds(
            r#"{"name":"a","type":{"type":"array","items":["null","long"]}}"#,
            r#"{"name":"a","type":{"type":"array","items":"long"}}"#
        ),
        [("nullability_changed".to_owned(), "a[]".to_owned())]
    );
}

#[test]
fn a_named_type_reused_by_reference_is_compared_wherever_it_appears() {
    let addresses = |extra: &str| {
        format!(
            r#"{{"name":"home","type":{{"type":"record","name":"Address","fields":[{{"name":"city","type":"string"}}{extra}]}}}},
            {{"name":"work","type":"Address"}}"#
        )
    };
    assert_eq!(
        kinds(&addresses(""), &addresses(r#",{"name":"zip","type":["null","string"],"default":null}"#)),
        [("field_added".to_owned(), "home.zip".to_owned()), ("field_added".to_owned(), "work.zip".to_owned())]
    );
}

#[test]
fn what_avro_cannot_read_is_never_no_change() {
    // A fixed renamed: the same size, so no field changed, but Avro
    // resolves fixed types by name.
    let changes = classify(
        &schema(r#"{"name":"h","type":{"type":"fixed","name":"Hash","size":4}}"#),
        &schema(r#"{"name":"h","type":{"type":"fixed","name":"Digest","size":4}}"#),
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].kind, ChangeKind::Incompatible);
    assert!(changes[0].evidence["avro"].contains("Hash") || !changes[0].evidence["avro"].is_empty());
}

#[test]
fn a_name_only_rename_is_vetoed_by_its_values() {
    // A real case: timestamp (when the event happened) and
    // produceTimestampMillis (when it was produced) are different times.
    let old =
        schema(r#"{"name":"id","type":"long"},{"name":"timestamp","type":"long","doc":"When the event happened"}"#);
    let new = schema(
        r#"{"name":"id","type":"long"},{"name":"produceTimestampMillis","type":"long","doc":"When the producer sent the record"}"#,
    );
    // A contained name proves nothing on its own.
    let kinds: Vec<&str> = classify(&old, &new).iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["field_added", "field_removed"]);
    // Names that do suggest one, with values that do not overlap: vetoed.
    let (old, new) =
        (schema(r#"{"name":"customerId","type":"long"}"#), schema(r#"{"name":"customer_id","type":"long"}"#));
    let key = ("customerId".to_owned(), "customer_id".to_owned());
    let disjoint = OverlapEvidence::from([(key.clone(), Overlap { fraction: 0.0, sampled: 8 })]);
    let changes = classify_with(&old, &new, &disjoint);
    assert_eq!(changes.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(), ["field_added", "field_removed"]);
    // Too few values to say no: the names stand.
    let few = OverlapEvidence::from([(key, Overlap { fraction: 0.0, sampled: 2 })]);
    let changes = classify_with(&old, &new, &few);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::FieldRenamed);
    assert!(changes[0].evidence.contains_key("evidence_for"));
}
