use super::*;

/// A manifest of `models` (name, SQL, parents by name) over the source
/// `shop.orders`.
fn project(models: &[(&str, &str, &[&str])]) -> Project {
    let id = |name: &str| if name == "orders" { "source.p.shop.orders".to_owned() } else { format!("model.p.{name}") };
    let mut nodes = serde_json::Map::new();
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, sql, parents) in models {
        let parents: Vec<String> = parents.iter().map(|p| id(p)).collect();
        for parent in &parents {
            children.entry(parent.clone()).or_default().push(id(name));
        }
        nodes.insert(
            id(name),
            serde_json::json!({
                "resource_type": "model", "name": name, "language": "sql", "compiled_code": sql,
                "relation_name": format!("\"db\".\"analytics\".\"{name}\""), "depends_on": {"nodes": parents},
            }),
        );
    }
    let manifest = serde_json::json!({
        "nodes": nodes,
        "sources": {"source.p.shop.orders": {"resource_type": "source", "name": "orders", "schema": "public",
            "identifier": "orders", "relation_name": "\"db\".\"public\".\"orders\""}},
        "child_map": children,
    });
    Project::parse(&manifest.to_string()).expect("a manifest")
}

fn verdicts(project: &Project, effects: &[Effect]) -> BTreeMap<String, (Impact, Vec<String>)> {
    let sources = project.sources(Some("public"), "orders");
    assert_eq!(sources, ["source.p.shop.orders"]);
    project.downstream(&sources, effects).into_iter().map(|d| (d.name, (d.impact, d.reasons))).collect()
}

fn renamed(column: &str, to: &str) -> Effect {
    Effect { column: column.into(), change: Change::Renamed { to: to.into() } }
}

#[test]
fn a_star_cte_is_followed_to_the_source() {
    let staging = "with source as (select * from \"db\".\"public\".\"orders\"), \
                   renamed as (select id as order_id, email, amount from source) select * from renamed";
    let project = project(&[
        ("stg", staging, &["orders"]),
        ("ids", "select order_id from \"db\".\"analytics\".\"stg\"", &["stg"]),
        ("raw", "select * from \"db\".\"public\".\"orders\"", &["orders"]),
    ]);
    let v = verdicts(&project, &[renamed("email", "contact")]);
    assert_eq!(v["stg"].0, Impact::Breaking, "{v:?}");
    assert!(
        v["stg"].1[0].contains("reads orders.email (email in CTE renamed, output email), which is renamed to contact"),
        "{v:?}"
    );
    assert_eq!(v["ids"].0, Impact::Breaking, "built on a broken model: {v:?}");
    assert_eq!(v["raw"].0, Impact::Partial, "{v:?}");

    // A change of a column the staging model reads and passes on.
    let v = verdicts(&project, &[Effect { column: "amount".into(), change: Change::Nulls }]);
    assert_eq!(v["stg"].0, Impact::Partial, "{v:?}");
    assert_eq!(v["ids"].0, Impact::None, "reads order_id only: {v:?}");
}

#[test]
fn clause_uses_are_verdicts_too() {
    let project = project(&[
        ("f", "select id from \"db\".\"public\".\"orders\" where status = 'paid'", &["orders"]),
        ("g", "select status, sum(amount) as total from \"db\".\"public\".\"orders\" o group by status", &["orders"]),
        (
            "w",
            "select id, row_number() over (partition by email order by id) as n from \"db\".\"public\".\"orders\"",
            &["orders"],
        ),
    ]);
    let v = verdicts(&project, &[renamed("status", "state")]);
    assert_eq!((v["f"].0, v["g"].0, v["w"].0), (Impact::Breaking, Impact::Breaking, Impact::None), "{v:?}");
    assert!(v["f"].1.iter().any(|r| r.contains("(filter)")), "{v:?}");
    let bytes = Effect {
        column: "email".into(),
        change: Change::Retyped { from: "text".into(), to: "bytea".into(), widening: false },
    };
    let v = verdicts(&project, &[bytes]);
    assert_eq!(v["w"].0, Impact::Breaking, "{v:?}");
    assert!(v["w"].1.iter().any(|r| r.contains("window partition")), "{v:?}");
}

#[test]
fn what_cannot_be_read_is_unknown_never_none() {
    let project = project(&[
        ("bad", "select from where", &["orders"]),
        ("after", "select id from \"db\".\"analytics\".\"bad\"", &["bad"]),
    ]);
    let v = verdicts(&project, &[renamed("email", "contact")]);
    assert_eq!((v["bad"].0, v["after"].0), (Impact::Unknown, Impact::Unknown), "{v:?}");
    let radius = blast_radius(Path::new("/nonexistent/manifest.json"), None, "orders", &[]);
    assert_eq!(radius.worst(), Impact::Unknown);
    assert!(radius.summary().contains("cannot read /nonexistent/manifest.json"), "{}", radius.summary());
}

#[test]
fn last_part_unquotes() {
    assert_eq!(sql::last_part("\"db\".\"s\".\"Odd.Name\""), "Odd.Name");
    assert_eq!(sql::last_part("public.orders"), "orders");
}
