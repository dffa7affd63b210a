//! `mend-registry`: wiring only (config → telemetry → run → exit code).

use clap::Parser;

/// A Confluent-compatible schema registry storing its state in a compacted
/// Kafka topic. Point any Confluent client at it.
#[derive(Debug, Parser)]
#[command(name = "mend-registry", version)]
struct Cli {
    #[command(flatten)]
    config: mend_registry::RegistryConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = mend_runtime::telemetry::init("registry");
    let shutdown = mend_runtime::shutdown::on_signal();
    match mend_registry::run(cli.config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("mend-registry: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
