//! Tally's HTTP API (axum). `app(state)` builds the router so tests can drive it in process
//! with `tower::ServiceExt::oneshot`; `tally serve` runs the same router on a socket.
//!
//! Architecture invariant: only this crate knows JSON and HTTP. Engine errors become
//! `application/problem+json` in one place (`problem.rs`); bad input never reaches a handler
//! (`json.rs`, `input.rs`).
//!
//! Following a transfer: `transfers::create` takes a `Caller` (`auth/caller.rs`: the bearer
//! token verified by `auth/tokens.rs`, from its cache when it can), the body through
//! `ApiJson`, resolves it into an engine `TransferRequest` (`plan`: ownership, currency,
//! amount), and hands it to `run_transfer`, the one call into the engine's saga. The answer
//! is rendered by `views.rs`: money as strings at the currency's scale, RFC 3339 times.
//! Admin routes (`admin.rs`) name their permission in their signature (`Authorized<P>`).
//! Identity (`auth/`) keeps users, signing keys and refresh tokens in the `UserStore`, in the
//! ledger's database.

pub mod accounts;
pub mod accounts_summary;
pub mod admin;
pub mod admin_page;
pub mod aml;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod beneficiaries;
pub mod crypto;
pub mod crypto_history;
pub mod digest;
pub mod events;
pub mod health;
pub mod iban;
pub mod input;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod listings;
pub mod logging;
pub mod mail;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod ops_page;
pub mod pagination;
pub mod point_in_time;
pub mod pricing;
pub mod problem;
pub mod query;
pub mod request_stats;
pub mod server;
pub mod state;
pub mod statements;
pub mod transfers;
pub mod views;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
pub use state::AppState;

/// Largest request body. A batch of 8,190 transfers at ~400 bytes each is ~3.3 MB; nothing
/// else comes close. Larger bodies get `413` before they are read.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Requests served at once. Beyond it requests wait in the listener's backlog: two cores
/// gain nothing from more concurrency, and memory stays bounded.
pub const CONCURRENT_REQUESTS_MAX: usize = 4_096;

/// A request that takes longer than this gets `503`: a saga still finishes, and the client
/// retries with its idempotency key.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    // Installs the process's metrics recorder before the first request is counted.
    metrics::handle();
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/.well-known/jwks.json", get(auth::routes::jwks))
        .route("/v1/auth/register", post(auth::routes::register))
        .route("/v1/auth/login", post(auth::routes::login))
        .route("/v1/auth/refresh", post(auth::routes::refresh))
        .route("/v1/auth/logout", post(auth::sessions::logout))
        .route("/v1/users/me", get(auth::routes::me))
        .route("/v1/auth/mfa/verify", post(auth::mfa::verify))
        .route("/v1/auth/step-up", post(auth::stepup::begin))
        .route("/v1/auth/step-up/verify", post(auth::stepup::verify))
        .route("/v1/users/me/mfa/totp/setup", post(auth::mfa::setup))
        .route("/v1/users/me/mfa/totp/confirm", post(auth::mfa::confirm))
        .route("/v1/api-keys", get(auth::api_keys::list).post(auth::api_keys::create))
        .route("/v1/api-keys/{id}", axum::routing::delete(auth::api_keys::delete))
        .route("/v1/users/me/sessions", get(auth::sessions::list))
        .route("/v1/users/me/sessions/{id}", delete(auth::sessions::delete))
        .route("/v1/accounts", post(accounts::open).get(accounts::list))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/summary", get(accounts_summary::summary))
        .route("/v1/accounts/{id}/transactions", get(ledger::transactions))
        .route("/v1/accounts/{id}/balance-history", get(ledger::balance_history))
        .route("/v1/transfer-types", get(transfers::types))
        .route("/v1/transfers", post(transfers::create).get(listings::customer_transfers))
        .route("/v1/transfers/quote", post(transfers::quote))
        .route("/v1/transfers/batch", post(batch::create))
        .route("/v1/transfers/{id}", get(transfers::get))
        .route("/v1/transfers/{id}/cancel", post(transfers::cancel))
        .route("/v1/admin/adjustments", post(admin::adjust))
        .route("/v1/admin/transfers", get(listings::admin_transfers))
        .route("/v1/admin/transfers/count", get(listings::admin_transfer_count))
        .route("/v1/admin/transfers/{id}", get(admin::get_transfer))
        .route("/v1/admin/transfers/{id}/execute", post(admin::execute))
        .route("/v1/admin/transfers/{id}/reject", post(admin::reject))
        .route("/v1/admin/transfers/{id}/cancel", post(admin::cancel_transfer))
        .route("/v1/admin/accounts", post(admin::open_account).get(listings::admin_accounts))
        .route("/v1/admin/accounts/count", get(listings::admin_account_count))
        .route("/v1/admin/accounts/{id}", get(admin::get_account))
        .route("/v1/admin/accounts/{id}/status", post(admin::set_account_status))
        .route("/v1/admin/statements", get(statements::statements))
        .route("/v1/admin/fx-rates", get(pricing::list_fx_rates).put(pricing::put_fx_rate))
        .route("/v1/admin/fee-rules", get(pricing::list_fee_rules).post(pricing::create_fee_rule))
        .route("/v1/admin/fee-rules/{id}", get(pricing::get_fee_rule).put(pricing::put_fee_rule))
        .route("/v1/admin/transfer-types", get(pricing::list_transfer_types))
        .route("/v1/admin/transfer-types/{code}", put(pricing::put_transfer_type))
        .route("/v1/admin/actors", get(ops::actors))
        .route("/v1/admin/aml/rules", get(aml::list_rules).post(aml::create_rule))
        .route("/v1/admin/aml/rules/{id}", get(aml::get_rule).put(aml::put_rule).delete(aml::delete_rule))
        .route("/v1/admin/aml/flags", get(aml::list_flags))
        .route("/v1/admin/aml/flags/count", get(aml::count_flags))
        .route("/v1/admin/aml/flags/{id}", get(aml::get_flag))
        .route("/v1/admin/aml/flags/{id}/resolve", post(aml::resolve_flag))
        .route("/v1/admin/actors/{kind}/{id}/release", post(ops::release))
        .route("/v1/wallets", post(crypto::open_wallet).get(crypto::list_wallets))
        .route("/v1/wallets/{id}", get(crypto::get_wallet))
        .route("/v1/crypto/quote", get(crypto::quote))
        .route("/v1/crypto/orders", post(crypto::place_order))
        .route("/v1/crypto/orders/{id}", get(crypto::get_order))
        .route("/v1/crypto/withdrawals", post(crypto::withdraw))
        .route("/v1/crypto/withdrawals/{id}", get(crypto::get_withdrawal))
        .route("/v1/webhooks/custodian", post(crypto::custodian_webhook))
        .route("/ops", get(ops_page::page))
        .route("/admin", get(admin_page::page))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .route("/metrics", get(metrics::scrape))
        // Issue 14 (identity): self-service, admin user views, roles and the audit log, then the
        // two route layers over every route above: the audit of admin changes made outside the
        // identity store (`audit.rs`), and the verified-email gate of money-moving routes.
        .route("/v1/users/me", patch(auth::self_service::update_me))
        .route("/v1/users/me/password", post(auth::self_service::change_password))
        .route("/v1/auth/password/forgot", post(auth::self_service::forgot_password))
        .route("/v1/auth/password/reset", post(auth::self_service::reset_password))
        .route("/v1/users/me/email/verification", post(auth::self_service::request_verification))
        .route("/v1/users/me/email/verification/confirm", post(auth::self_service::confirm_verification))
        .route("/v1/users/me/activity", get(auth::self_service::activity))
        .route("/v1/users/me/mfa", get(auth::mfa::status))
        .route("/v1/users/me/mfa/totp", delete(auth::mfa::disable))
        .route("/v1/users/me/mfa/backup-codes", post(auth::mfa::regenerate_backup_codes))
        .route("/v1/users/me/sessions", delete(auth::sessions::end_others))
        .route("/v1/admin/users/count", get(auth::admin_users::count))
        .route("/v1/admin/users/{id}", get(auth::admin_users::get_one).patch(auth::admin_users::update))
        .route("/v1/admin/users/{id}/password-reset", post(auth::admin_users::password_reset))
        .route("/v1/admin/users/{id}/sessions", get(auth::admin_users::sessions))
        .route("/v1/admin/users/{id}/sessions", delete(auth::admin_users::end_user_sessions))
        .route("/v1/admin/users/{id}/verification", post(auth::admin_users::set_verification))
        .route("/v1/admin/users/{id}/roles", post(auth::roles::assign))
        .route("/v1/admin/users/{id}/roles/{role_id}", delete(auth::roles::unassign))
        .route("/v1/admin/roles", get(auth::roles::list).post(auth::roles::create))
        .route("/v1/admin/roles/{id}", get(auth::roles::get).put(auth::roles::update).delete(auth::roles::delete))
        .route("/v1/admin/audit", get(audit::list))
        .route("/v1/admin/audit/head", get(audit::head))
        // Issue 15 (ledger views): saved beneficiaries, the crypto histories, the owner's
        // statement, and verification limits (configuration and display). Before the route
        // layer, so the admin route is audited and every route counted.
        .route("/v1/beneficiaries", get(beneficiaries::list).post(beneficiaries::create))
        .route("/v1/beneficiaries/{id}", delete(beneficiaries::delete))
        .route("/v1/crypto/orders", get(crypto_history::orders))
        .route("/v1/crypto/withdrawals", get(crypto_history::withdrawals))
        .route("/v1/wallets/{id}/transactions", get(crypto_history::wallet_transactions))
        .route("/v1/accounts/{id}/statement", get(statements::account_statement))
        .route("/v1/accounts/{id}/balance", get(point_in_time::balance))
        .route("/v1/admin/limits", get(limits::list))
        .route("/v1/admin/limits/{level}", put(limits::put_level))
        .route("/v1/users/me/limits", get(limits::mine))
        // Issue 16 (events): the feed and webhook subscriptions.
        .route("/v1/admin/events", get(events::feed))
        .route("/v1/admin/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/admin/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/v1/admin/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/admin/webhooks/{id}/replay", post(webhooks::replay))
        .route("/v1/admin/users", get(auth::admin_users::list).post(auth::admin_users::create))
        .route("/v1/admin/users/{id}/permissions", post(auth::admin_users::grant).delete(auth::admin_users::revoke))
        .route("/v1/admin/users/{id}/status", post(auth::admin_users::set_status))
        .route("/v1/admin/permissions", get(auth::admin_users::catalog))
        // A route layer, so each request's route template (`MatchedPath`) is known; after every
        // route, so every route is counted (`http_metrics.rs` checks each operation of the
        // OpenAPI document). The identity routes mark their answers `Audited`, so the audit
        // part of the layer adds no second entry for them.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), route_policies))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(timeout))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(CONCURRENT_REQUESTS_MAX))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives each request an id (or keeps the client's `X-Request-Id`), makes it available to
/// error answers and logs, echoes it in the response, and logs one line per request.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 64)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut response = problem::REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    tracing::info!(
        request_id = %id,
        %method,
        path = %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// The per-route policies, in one layer because each `from_fn` layer clones the route's boxed
/// service and boxes a future on every request (three layers were ~2 % of the server's samples
/// under load): metrics around everything, then the verified-email gate of money routes, then
/// the audit of admin changes around the handler.
async fn route_policies(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let tracking = metrics::Tracking::start(&request);
    let response = match auth::verified_email::admit(&state, request).await {
        Ok(request) => audit::after_admin_change(axum::extract::State(state), request, next).await,
        Err(refusal) => refusal,
    };
    tracking.finish(&response);
    response
}

async fn timeout(request: Request, next: Next) -> Response {
    // The event feed's long-poll may wait up to `FEED_WAIT_MAX_SECS` by design; its own reads
    // get the usual time on top.
    let limit = if request.uri().path() == "/v1/admin/events" {
        REQUEST_TIMEOUT + Duration::from_secs(events::FEED_WAIT_MAX_SECS)
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(problem::ApiError::new(
            tally_engine::ErrorCode::Overloaded,
            "the request timed out; retry with the same Idempotency-Key",
        )),
    }
}
