//! Evidence-gathering functions: what a senior engineer would look at. The
//! diagnoser calls them, and the control plane exposes them as MCP tools, so
//! both see exactly the same evidence.

use crate::warehouse::{Column, Warehouse, WarehouseError};

/// Why evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("schema registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

/// The versions registered under a subject (ascending).
pub async fn registry_versions(registry_url: &str, subject: &str) -> Result<Vec<u32>, ToolError> {
    let url = format!("{}/subjects/{subject}/versions", registry_url.trim_end_matches('/'));
    let response = reqwest::get(&url).await.map_err(|e| ToolError::Registry(e.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !response.status().is_success() {
        return Err(ToolError::Registry(format!("{url}: {}", response.status())));
    }
    response.json().await.map_err(|e| ToolError::Registry(e.to_string()))
}

/// The destination table's columns, from the database catalog.
pub async fn table_columns(warehouse: &Warehouse, table: &str) -> Result<Vec<Column>, ToolError> {
    Ok(warehouse.columns(table).await?)
}

/// `name TYPE [NULL]` per column, for evidence maps and people.
pub fn describe_columns(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}{}", c.name, c.sql_type, if c.nullable { " NULL" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}
