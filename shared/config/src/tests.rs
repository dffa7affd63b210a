use super::*;

#[test]
fn parses_datasets_with_defaults() -> anyhow::Result<()> {
    let config = FileConfig::parse(
        Path::new("mend.toml"),
        r#"
        [[dataset]]
        name = "orders"
        topic = "shop.orders"
        table = "orders"
        key = ["id"]
        "#,
    )?;
    let orders = config.dataset("orders").ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(orders.key, vec!["id".to_owned()]);
    assert_eq!(orders.subject(), "shop.orders-value");
    Ok(())
}

#[test]
fn a_topic_pattern_declares_a_dataset_per_matching_topic() -> anyhow::Result<()> {
    let mut config = FileConfig::parse(
        Path::new("mend.toml"),
        r#"
        [[dataset]]
        name = "orders"
        topic = "shop.orders"
        table = "orders_by_hand"

        [[dataset]]
        topic_pattern = "shop\\..*"
        key = ["id"]
        [dataset.policy]
        field_added = "auto"
        "#,
    )?;
    assert_eq!(config.datasets.len(), 1, "the pattern is not a dataset itself");
    let topics =
        ["shop.orders", "shop.payments", "shop.2024-refunds", "shopping.carts", "mend.detections"].map(String::from);
    let (added, refused) = config.expand(&topics);
    assert_eq!(added, vec!["shop.2024-refunds".to_owned(), "shop.payments".to_owned()]);
    assert!(refused.is_empty());
    let payments = config.dataset("shop.payments").ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!((payments.topic.as_str(), payments.table.as_str()), ("shop.payments", "shop_payments"));
    assert_eq!(payments.key, vec!["id".to_owned()]);
    assert_eq!(payments.policy.get(&ChangeKind::FieldAdded), Some(&Policy::Auto));
    assert_eq!(config.dataset("shop.2024-refunds").map(|d| d.table.as_str()), Some("shop_2024_refunds"));
    assert_eq!(config.dataset("orders").map(|d| d.table.as_str()), Some("orders_by_hand"), "declared wins");
    // Expanding again adds only what is new.
    let (again, _) = config.expand(&[topics.to_vec(), vec!["shop.returns".into()]].concat());
    assert_eq!(again, vec!["shop.returns".to_owned()]);
    assert_eq!(table_of("7days"), "t_7days");
    Ok(())
}

#[test]
fn a_topic_pattern_must_be_a_regex_without_name_topic_or_table() {
    for bad in [
        "[[dataset]]\ntopic_pattern = 'shop\\.('\n",
        "[[dataset]]\ntopic_pattern = 'shop\\..*'\ntable = 'orders'\n",
        "[[dataset]]\ntopic_pattern = 'shop\\..*'\nname = 'orders'\n",
    ] {
        let parsed = FileConfig::parse(Path::new("m.toml"), bad);
        assert!(matches!(parsed, Err(ConfigError::Invalid { .. })), "{bad}: {parsed:?}");
    }
}

#[test]
fn rejects_unknown_fields_and_duplicates() {
    let unknown = FileConfig::parse(Path::new("m.toml"), "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\ntabel='x'\n");
    assert!(matches!(unknown, Err(ConfigError::Parse { .. })));
    let twice = FileConfig::parse(
        Path::new("m.toml"),
        "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\n[[dataset]]\nname='a'\ntopic='u'\ntable='u'\n",
    );
    assert!(matches!(twice, Err(ConfigError::Invalid { .. })));
}

#[test]
fn reads_policy_nesting_and_dbt() -> anyhow::Result<()> {
    let config = FileConfig::parse(
        Path::new("mend.toml"),
        "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\nnested='flatten'\n\
         dbt={schema='models/schema.yml'}\n[dataset.policy]\nfield_renamed='auto'\ntype_changed='approve'\n",
    )?;
    let a = config.dataset("a").ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(a.policy.get(&ChangeKind::FieldRenamed), Some(&Policy::Auto));
    assert_eq!(a.nested, Nested::Flatten);
    assert_eq!(a.dbt.as_ref().map(|d| d.schema.clone()), Some(PathBuf::from("models/schema.yml")));
    let unknown = FileConfig::parse(
        Path::new("m.toml"),
        "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\n[dataset.policy]\nfield_moved='auto'\n",
    );
    // An unknown change kind is refused, naming the known ones.
    let Err(ConfigError::Parse { source, .. }) = unknown else { panic!("{unknown:?}") };
    assert!(source.to_string().contains("field_added, field_removed"), "{source}");
    let bad = FileConfig::parse(
        Path::new("m.toml"),
        "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\n[dataset.policy]\nfield_added='sometimes'\n",
    );
    assert!(matches!(bad, Err(ConfigError::Parse { .. })), "{bad:?}");
    Ok(())
}

#[test]
fn api_tokens_from_the_file_and_the_environment() -> anyhow::Result<()> {
    let hash = sha256_hex("s3cret");
    let config = FileConfig::parse(
        Path::new("m.toml"),
        &format!("[[api.token]]\nname='alice'\nrole='approver'\nsha256='{hash}'\n"),
    )?;
    assert_eq!(config.api.token[0].role, Role::Approver);
    assert!(FileConfig::parse(Path::new("m.toml"), "[[api.token]]\nname='a'\nrole='admin'\nsha256='x'\n").is_err());
    let listed = ApiToken::parse_list("bob:viewer:tok1, carol:admin:a:b").map_err(anyhow::Error::msg)?;
    assert_eq!(listed[0], ApiToken { name: "bob".into(), role: Role::Viewer, sha256: sha256_hex("tok1") });
    assert_eq!(listed[1].sha256, sha256_hex("a:b"));
    assert!(ApiToken::parse_list("bob:owner:x").is_err());
    assert!(ApiToken::parse_list("bob").is_err());
    Ok(())
}

#[test]
fn durations_are_parsed_once_and_a_bad_one_is_an_error() -> anyhow::Result<()> {
    let config = FileConfig::parse(
        Path::new("mend.toml"),
        "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\napproval_timeout='1h 30m'\n[supervisor]\ndeadline='90s'\n",
    )?;
    assert_eq!(config.datasets[0].approval_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(config.supervisor.deadline, Duration::from_secs(90));
    assert_eq!(FileConfig::parse(Path::new("m.toml"), "")?.supervisor.deadline, Duration::from_secs(180));
    for text in
        ["[supervisor]\ndeadline='soon'\n", "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\napproval_timeout='2'\n"]
    {
        let bad = FileConfig::parse(Path::new("m.toml"), text);
        let Err(ConfigError::Parse { source, .. }) = bad else { panic!("{bad:?}") };
        let message = source.to_string();
        assert!(message.contains("deadline") || message.contains("approval_timeout"), "{message}");
    }
    Ok(())
}

#[test]
fn a_missing_optional_file_is_empty() -> anyhow::Result<()> {
    let config = FileConfig::load(Path::new("/nonexistent/mend.toml"), false)?;
    assert!(config.datasets.is_empty());
    assert!(FileConfig::load(Path::new("/nonexistent/mend.toml"), true).is_err());
    Ok(())
}

// Property tests in place of fuzzing (see `make fuzz`): any text, and
// valid files with a line changed, parse or fail with an error.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "[[dataset]]\nname = \"orders\"\ntopic = \"shop.orders\"\ntable = \"orders\"\nkey = [\"id\"]\n\
        nested = \"flatten\"\napproval_timeout = \"2h\"\n[dataset.policy]\nfield_added = \"auto\"\n\
        [supervisor]\ndeadline = \"2m\"\n[[api.token]]\nname = \"ci\"\nrole = \"operator\"\n\
        sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            "[a-z_]{1,12} = \"[ -~]{0,12}\"",
            "[a-z_]{1,12} = [0-9-]{1,6}",
            "\\[\\[?[a-z_.]{1,16}\\]\\]?",
            "[a-z_]{1,12} = \\[(\"[a-z]{0,4}\", ?){0,3}\\]",
        ]
    }

    proptest! {
        #[test]
        fn fuzz_config_text(text in "\\PC{0,200}") {
            let _ = FileConfig::parse(Path::new("mend.toml"), &text);
        }

        #[test]
        fn fuzz_config_lines_changed(at in 0usize..16, replacement in line(), extra in proptest::collection::vec(line(), 0..4)) {
            let mut lines: Vec<String> = VALID.lines().map(str::to_owned).collect();
            let at = at % lines.len();
            lines[at] = replacement;
            lines.extend(extra);
            if let Ok(config) = FileConfig::parse(Path::new("mend.toml"), &lines.join("\n")) {
                // Whatever parses was validated.
                for dataset in &config.datasets {
                    prop_assert!(!dataset.name.is_empty() && !dataset.topic.is_empty() && !dataset.table.is_empty());
                }
            }
        }
    }
}
