"""Posts a dbt model's FAIL RunEvent to mend with openlineage-python's own
HttpTransport, as `dbt-ol` does: `openlineage_fail.py URL TOKEN TABLE`.
Prints what mend answered."""

import sys
import uuid
from datetime import datetime, timezone

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run, schema_dataset
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

url, token, table = sys.argv[1], sys.argv[2], sys.argv[3]
config = HttpConfig(url=url, auth=ApiKeyTokenProvider({"apiKey": token}) if token else None) if token else HttpConfig(url=url)
client = OpenLineageClient(transport=HttpTransport(config))
error = f'column "email" does not exist in {table} (did the upstream rename it to customer_email?)'
event = RunEvent(
    eventType=RunState.FAIL,
    eventTime=datetime.now(timezone.utc).isoformat(),
    producer="https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/dbt",
    run=Run(
        runId=str(uuid.uuid4()),
        facets={"errorMessage": error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="sql")},
    ),
    job=Job(namespace="dbt://analytics", name=f"analytics.{table}_summary"),
    inputs=[
        InputDataset(
            namespace="postgres://127.0.0.1:15432",
            name=f"warehouse.public.{table}",
            facets={
                "schema": schema_dataset.SchemaDatasetFacet(
                    fields=[
                        schema_dataset.SchemaDatasetFacetFields(name="id", type="bigint"),
                        schema_dataset.SchemaDatasetFacetFields(name="customer_email", type="text"),
                    ]
                )
            },
        )
    ],
)
client.emit(event)
print("emitted")
