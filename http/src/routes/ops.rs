//! Operator and tool routes (see `routes`).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
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
        .merge(
            Router::<AppState>::new()
                .merge(
                    utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")),
                )
                .layer(axum::middleware::map_response(docs_answer)),
        )
}

/// Swagger UI's own files, served under the policy of the other pages (`/admin`, `/ops`): its
/// own scripts and styles and this origin only, never framed (a user pastes a bearer token
/// into its "Authorize"), never sniffed, no referrer. Its errors (a file it does not have, a
/// path that is not UTF-8) are problem+json like every other answer, not its empty or plain
/// text ones.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

async fn docs_answer(response: Response) -> Response {
    let status = response.status();
    let problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    let mut response = if (status.is_client_error() || status.is_server_error()) && !problem {
        let error = match status.as_u16() {
            404 => crate::problem::ApiError::not_found("documentation file"),
            405 => {
                crate::problem::ApiError::new(tally_engine::ErrorCode::ValidationError, "the docs are read with GET")
                    .with_status(status)
            }
            400..=499 => crate::problem::ApiError::new(
                tally_engine::ErrorCode::ValidationError,
                format!("the documentation path is not valid ({status})"),
            ),
            _ => crate::problem::ApiError::internal("the documentation could not be served"),
        };
        error.into_response()
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
