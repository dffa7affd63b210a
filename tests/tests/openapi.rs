//! The control API as its OpenAPI document says, judged by a third-party
//! tool: schemathesis (PyPI) reads `/api/v1/openapi.json`, generates
//! requests for every route from the document's schemas (valid ones and
//! not), sends them to a running `mend up` with an incident waiting for a
//! decision, and checks each answer: no server error, a status code the
//! document lists, the content type it names, and a body that matches its
//! schema.

use mend_tests::Deployment;
use mend_tests::story::{POLICY, expected, record, schema};
use mend_tests::{eventually, produce_avro, producer, register_schema};

#[tokio::test]
async fn schemathesis_finds_the_control_api_as_its_openapi_document_says() -> anyhow::Result<()> {
    let deployment = Deployment::new("sqlite", POLICY)?;
    let _up = deployment.up("up.log").await?;
    // An incident, so that listing and reading have something to answer.
    let producer = producer()?;
    for version in 1..=2 {
        let text = schema(version).to_string();
        let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
        let parsed = apache_avro::Schema::parse_str(&text)?;
        let order = i64::from(version);
        produce_avro(
            &producer,
            &deployment.topic(),
            &order.to_string(),
            id,
            &parsed,
            record(version, order, &expected(version, order)),
        )
        .await?;
    }
    let url = format!("http://{}/incidents", deployment.api);
    eventually("an incident", || {
        let url = url.clone();
        async move {
            let incidents: Vec<mend_model::api::Incident> = reqwest::get(&url).await?.json().await?;
            Ok((!incidents.is_empty()).then_some(()))
        }
    })
    .await?;

    let python = std::env::var("MEND_PYTHON").unwrap_or_else(|_| "../.mend/venv/bin/python".into());
    let output = tokio::process::Command::new(&python)
        .args([
            "-m",
            "schemathesis.cli",
            "run",
            &format!("http://{}/api/v1/openapi.json", deployment.api),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "20",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await?;
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    anyhow::ensure!(
        output.status.success(),
        "schemathesis found the API unlike its document:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
