//! The generator's one error type: every failure says which step failed and why.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{step}: unexpected status {status}: {body}")]
    Unexpected { step: String, status: u16, body: String },
    #[error("{step}: the answer lacks a valid `{field}`")]
    Missing { step: String, field: String },
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}
