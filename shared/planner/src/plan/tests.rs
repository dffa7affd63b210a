use super::*;
use mend_avro::drift::classify;

fn schema(fields: &str) -> Schema {
    Schema::parse_str(&format!(r#"{{"type":"record","name":"O","fields":[{fields}]}}"#)).unwrap()
}

fn plan_for(old: &str, new: &str, dialect: Dialect) -> Plan {
    plan_with(old, new, dialect, &BTreeMap::new(), None)
}

fn plan_with(
    old: &str,
    new: &str,
    dialect: Dialect,
    policy: &BTreeMap<ChangeKind, Policy>,
    dbt: Option<DbtFile<'_>>,
) -> Plan {
    let (old, new) = (schema(old), schema(new));
    let (columns, mapping) = columns_for(&old, dialect, Nested::Json).unwrap();
    let key = ["id".to_owned()];
    let target = Target {
        table: "orders",
        dialect,
        columns: &columns,
        mapping: &mapping,
        key: &key,
        policy,
        nested: Nested::Json,
        dbt,
    };
    plan(&classify(&old, &new), &new, &target)
}

#[test]
fn the_dataset_policy_overrides_the_default_and_says_so() {
    let new = r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#;
    let policy = BTreeMap::from([(ChangeKind::FieldRenamed, Policy::Auto)]);
    let plan = plan_with(BASE, new, Dialect::Sqlite, &policy, None);
    assert_eq!(plan.policy, Policy::Auto);
    assert!(plan.rules[0].ends_with("=> auto (dataset policy)"), "{:?}", plan.rules);
    assert!(plan_for(BASE, new, Dialect::Sqlite).rules[0].ends_with("=> approve (default)"));
}

#[test]
fn removing_a_key_field_is_blocked_and_other_removals_keep_the_column() {
    let plan = plan_for(BASE, r#"{"name":"email","type":"string"}"#, Dialect::Postgres);
    assert_eq!(plan.policy, Policy::Block);
    let plan = plan_for(BASE, r#"{"name":"id","type":"long"}"#, Dialect::Postgres);
    assert_eq!(plan.policy, Policy::Approve);
    // email was NOT NULL on PostgreSQL: relaxed, never dropped.
    assert_eq!(plan.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "email" DROP NOT NULL"#));
    assert!(plan.steps.iter().filter_map(|s| s.sql.as_deref()).all(|sql| !sql.contains("DROP COLUMN")));
}

#[test]
fn a_type_change_offers_options_to_a_person() {
    let plan = plan_for(BASE, r#"{"name":"id","type":"long"},{"name":"email","type":"long"}"#, Dialect::Postgres);
    assert_eq!(plan.policy, Policy::Block);
    assert!(plan.rules.iter().any(|r| r.contains("add a column email_bigint BIGINT")), "{:?}", plan.rules);
    assert!(plan.rules.iter().any(|r| r.contains("cast column email to BIGINT")), "{:?}", plan.rules);
    assert!(plan.steps.iter().all(|s| s.sql.is_none()));
}

#[test]
fn nested_additions_are_columns_when_flattened_and_json_otherwise() {
    let ship = |extra: &str| {
        format!(
            r#"{{"name":"id","type":"long"}},{{"name":"ship","type":{{"type":"record","name":"S","fields":[{{"name":"city","type":"string"}}{extra}]}}}}"#
        )
    };
    let (old, new) = (schema(&ship("")), schema(&ship(r#",{"name":"zip","type":["null","string"],"default":null}"#)));
    let (columns, mapping) = columns_for(&old, Dialect::Postgres, Nested::Flatten).unwrap();
    let policy = BTreeMap::new();
    let key = ["id".to_owned()];
    let target = |nested| Target {
        table: "orders",
        dialect: Dialect::Postgres,
        columns: &columns,
        mapping: &mapping,
        key: &key,
        policy: &policy,
        nested,
        dbt: None,
    };
    let flat = plan(&classify(&old, &new), &new, &target(Nested::Flatten));
    assert_eq!(flat.policy, Policy::Auto);
    assert_eq!(flat.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ADD COLUMN "ship__zip" TEXT"#));
    assert_eq!(
        (flat.steps[1].field.as_deref(), flat.steps[1].column.as_deref()),
        (Some("ship.zip"), Some("ship__zip"))
    );
    let json = plan(&classify(&old, &new), &new, &target(Nested::Json));
    assert!(json.steps.iter().all(|s| s.sql.is_none()), "stored inside the JSON column");
    // A whole new record, flattened: one column per field.
    let bill = format!(
        r#"{},{{"name":"bill","type":["null",{{"type":"record","name":"B","fields":[{{"name":"city","type":"string"}},{{"name":"zip","type":"string"}}]}}],"default":null}}"#,
        ship("")
    );
    let with_bill = plan(&classify(&old, &schema(&bill)), &schema(&bill), &target(Nested::Flatten));
    let sql: Vec<&str> = with_bill.steps.iter().filter_map(|s| s.sql.as_deref()).collect();
    assert_eq!(
        sql,
        [r#"ALTER TABLE "orders" ADD COLUMN "bill__city" TEXT"#, r#"ALTER TABLE "orders" ADD COLUMN "bill__zip" TEXT"#]
    );
}

#[test]
fn a_dbt_file_gets_a_patch_step() {
    let text = "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n";
    let dbt = DbtFile { path: "models/schema.yml", model: "orders", text };
    let new = format!(r#"{BASE},{{"name":"coupon","type":["null","string"],"default":null,"doc":"promo"}}"#);
    let plan = plan_with(BASE, &new, Dialect::Sqlite, &BTreeMap::new(), Some(dbt));
    let patch = plan.steps.iter().find(|s| s.kind == StepKind::DbtPatch).and_then(|s| s.patch.clone()).unwrap();
    assert!(patch.contains("+      - name: coupon\n+        description: \"promo\"\n"), "{patch}");
    assert_eq!(plan.steps.last().map(|s| s.kind.as_str()), Some("replay"));
}

const BASE: &str = r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#;

#[test]
fn a_nullable_addition_is_automatic_ddl() {
    let plan = plan_for(
        BASE,
        &format!(r#"{BASE},{{"name":"coupon","type":["null","string"],"default":null}}"#),
        Dialect::Postgres,
    );
    assert_eq!(plan.policy, Policy::Auto);
    assert_eq!(plan.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#));
    assert_eq!(plan.steps.last().map(|s| s.kind.as_str()), Some("replay"));
}

#[test]
fn an_aliased_rename_maps_onto_the_old_column_and_needs_approval() {
    let plan = plan_for(
        BASE,
        r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#,
        Dialect::Sqlite,
    );
    assert_eq!(plan.policy, Policy::Approve);
    let mapping = &plan.steps[0];
    assert_eq!((mapping.field.as_deref(), mapping.column.as_deref()), (Some("customer_email"), Some("email")));
    assert!(plan.steps.iter().all(|s| s.sql.is_none()), "a rename needs no DDL");
}

#[test]
fn an_incompatible_type_change_is_blocked() {
    let plan = plan_for(BASE, r#"{"name":"id","type":"string"},{"name":"email","type":"string"}"#, Dialect::Sqlite);
    assert_eq!(plan.policy, Policy::Block);
    assert!(plan.rules[0].contains("type_changed(id"), "{:?}", plan.rules);
}

#[test]
fn widening_is_mapping_only_on_sqlite_and_ddl_on_postgres() {
    let (old, new) = (r#"{"name":"n","type":"int"}"#, r#"{"name":"n","type":"long"}"#);
    assert_eq!(plan_for(old, new, Dialect::Sqlite).policy, Policy::Auto);
    let pg = plan_for(old, new, Dialect::Postgres);
    assert_eq!(pg.policy, Policy::Approve);
    assert_eq!(pg.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "n" TYPE BIGINT"#));
}

#[test]
fn a_promotion_that_rounds_widens_to_numeric() {
    let pg = |old: &str, new: &str| plan_for(old, new, Dialect::Postgres).steps[0].sql.clone();
    let (long, double) = (r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":"double"}"#);
    assert_eq!(pg(long, double).as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "n" TYPE NUMERIC"#));
    let (int, float) = (r#"{"name":"n","type":"int"}"#, r#"{"name":"n","type":"float"}"#);
    assert_eq!(pg(int, float).as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "n" TYPE NUMERIC"#));
    // integer → double precision keeps every value: no need for numeric.
    assert_eq!(pg(int, double).as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "n" TYPE DOUBLE PRECISION"#));
}
