//! Inbound webhook routes (see `routes`).

use axum::Router;
use axum::routing::post;

use crate::AppState;
use crate::crypto;

/// What other systems call into Tally: the custodian's deposit and withdrawal notices.
pub fn webhooks() -> Router<AppState> {
    Router::new().route("/v1/webhooks/custodian", post(crypto::custodian_webhook))
}
