//! `mend replay --incident ID`: finds the incident's dataset and writer
//! schema on `mend.detections`, then runs the applier's replay.

use mend_model::events::Detection;
use mend_model::topics;
use mend_runtime::{Context, kafka};
use rdkafka::message::Message;

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The incident (from `mend incidents`).
    #[arg(long)]
    incident: String,
}

pub async fn run(args: Args, global: Global) -> anyhow::Result<()> {
    let incident = args.incident.as_str();
    let config = global.load_config()?;
    let context = Context::new(global.connections, config, global.warehouse)?;
    let mut found = None;
    for message in kafka::read_to_end(&context.connections.brokers, topics::DETECTIONS).await? {
        if let Ok(detection) = context.codec.decode_event::<Detection>(message.payload().unwrap_or_default()).await
            && detection.envelope.incident_id.0 == incident
        {
            found = Some(detection);
            break;
        }
    }
    let detection = found.ok_or_else(|| anyhow::anyhow!("no incident {incident} on mend.detections"))?;
    let name = &detection.envelope.dataset;
    let dataset = context
        .dataset(name)
        .ok_or_else(|| {
            anyhow::anyhow!("incident {incident} is about dataset {name}, which is not in the configuration")
        })?
        .clone();
    let writer = detection
        .writer_schema_id
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| anyhow::anyhow!("incident {incident} names no writer schema"))?;
    let warehouse = context.warehouse(&dataset).await?;
    println!("replaying incident {incident} (dataset {name}, writer schema {writer}) from mend.quarantine");
    let applier = mend_applier::Applier::new(context.clone());
    let counts = applier.replay(&dataset, &warehouse, writer).await?;
    println!("replayed {}, loaded {}, still quarantined {}", counts.replayed, counts.loaded, counts.still_quarantined);
    Ok(())
}
