//! Operator and tool routes (see `routes`).

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
use crate::{admin_page, health, metrics, openapi, ops, ops_page};

/// What operators and tools call: health, metrics, the actors' health API and its release
/// action, the live pages (`/ops`, the admins' console at `/admin`), the OpenAPI document and
/// its browsable docs.
pub fn ops() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin_page::page))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/ops", get(ops_page::page))
        .route("/v1/admin/actors", get(ops::actors))
        .route("/v1/admin/cluster", get(crate::cluster::admin_cluster))
        .route("/v1/admin/actors/{kind}/{id}/release", post(ops::release))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
}
