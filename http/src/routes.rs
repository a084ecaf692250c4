//! The routes of the API, by who calls them. `app` (lib.rs) merges the four and puts every
//! layer over all of them, so no route escapes the metrics, the audit or the limits
//! (`http_metrics.rs` checks each operation of the OpenAPI document is counted).

use axum::Router;
use axum::routing::{delete, get, patch, post, put};

use crate::AppState;
use crate::{
    accounts, accounts_summary, admin, admin_page, aml, audit, auth, batch, beneficiaries, crypto, crypto_history,
    events, health, ledger, limits, listings, metrics, openapi, ops, ops_page, point_in_time, pricing, statements,
    transfers, webhooks,
};

/// What customers and their API keys call: sign-up and sessions, their profile and second
/// factors, accounts, transfers, wallets and crypto, saved payees, limits.
pub fn customer() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(auth::routes::jwks))
        .route("/v1/accounts", post(accounts::open).get(accounts::list))
        .route("/v1/accounts/summary", get(accounts_summary::summary))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/balance", get(point_in_time::balance))
        .route("/v1/accounts/{id}/balance-history", get(ledger::balance_history))
        .route("/v1/accounts/{id}/statement", get(statements::account_statement))
        .route("/v1/accounts/{id}/transactions", get(ledger::transactions))
        .route("/v1/api-keys", get(auth::api_keys::list).post(auth::api_keys::create))
        .route("/v1/api-keys/{id}", delete(auth::api_keys::delete))
        .route("/v1/auth/login", post(auth::routes::login))
        .route("/v1/auth/logout", post(auth::sessions::logout))
        .route("/v1/auth/mfa/verify", post(auth::mfa::verify))
        .route("/v1/auth/password/forgot", post(auth::self_service::forgot_password))
        .route("/v1/auth/password/reset", post(auth::self_service::reset_password))
        .route("/v1/auth/refresh", post(auth::routes::refresh))
        .route("/v1/auth/register", post(auth::routes::register))
        .route("/v1/auth/step-up", post(auth::stepup::begin))
        .route("/v1/auth/step-up/verify", post(auth::stepup::verify))
        .route("/v1/beneficiaries", get(beneficiaries::list).post(beneficiaries::create))
        .route("/v1/beneficiaries/{id}", delete(beneficiaries::delete))
        .route("/v1/crypto/orders", post(crypto::place_order))
        .route("/v1/crypto/orders", get(crypto_history::orders))
        .route("/v1/crypto/orders/{id}", get(crypto::get_order))
        .route("/v1/crypto/quote", get(crypto::quote))
        .route("/v1/crypto/withdrawals", post(crypto::withdraw))
        .route("/v1/crypto/withdrawals", get(crypto_history::withdrawals))
        .route("/v1/crypto/withdrawals/{id}", get(crypto::get_withdrawal))
        .route("/v1/transfer-types", get(transfers::types))
        .route("/v1/transfers", post(transfers::create).get(listings::customer_transfers))
        .route("/v1/transfers/batch", post(batch::create))
        .route("/v1/transfers/quote", post(transfers::quote))
        .route("/v1/transfers/{id}", get(transfers::get))
        .route("/v1/transfers/{id}/cancel", post(transfers::cancel))
        .route("/v1/users/me", get(auth::routes::me))
        .route("/v1/users/me", patch(auth::self_service::update_me))
        .route("/v1/users/me/activity", get(auth::self_service::activity))
        .route("/v1/users/me/email/verification", post(auth::self_service::request_verification))
        .route("/v1/users/me/email/verification/confirm", post(auth::self_service::confirm_verification))
        .route("/v1/users/me/limits", get(limits::mine))
        .route("/v1/users/me/mfa", get(auth::mfa::status))
        .route("/v1/users/me/mfa/backup-codes", post(auth::mfa::regenerate_backup_codes))
        .route("/v1/users/me/mfa/totp", delete(auth::mfa::disable))
        .route("/v1/users/me/mfa/totp/confirm", post(auth::mfa::confirm))
        .route("/v1/users/me/mfa/totp/setup", post(auth::mfa::setup))
        .route("/v1/users/me/password", post(auth::self_service::change_password))
        .route("/v1/users/me/sessions", get(auth::sessions::list))
        .route("/v1/users/me/sessions", delete(auth::sessions::end_others))
        .route("/v1/users/me/sessions/{id}", delete(auth::sessions::delete))
        .route("/v1/wallets", post(crypto::open_wallet).get(crypto::list_wallets))
        .route("/v1/wallets/{id}", get(crypto::get_wallet))
        .route("/v1/wallets/{id}/transactions", get(crypto_history::wallet_transactions))
}

/// What admins call under `/v1/admin` (the operators' actor routes are in `ops`): transfers to
/// review, accounts, adjustments, pricing, AML, users and roles, audit, limits, events and
/// webhook subscriptions.
pub fn admin() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/accounts", post(admin::open_account).get(listings::admin_accounts))
        .route("/v1/admin/accounts/count", get(listings::admin_account_count))
        .route("/v1/admin/accounts/{id}", get(admin::get_account))
        .route("/v1/admin/accounts/{id}/status", post(admin::set_account_status))
        .route("/v1/admin/adjustments", post(admin::adjust))
        .route("/v1/admin/aml/flags", get(aml::list_flags))
        .route("/v1/admin/aml/flags/count", get(aml::count_flags))
        .route("/v1/admin/aml/flags/{id}", get(aml::get_flag))
        .route("/v1/admin/aml/flags/{id}/resolve", post(aml::resolve_flag))
        .route("/v1/admin/aml/rules", get(aml::list_rules).post(aml::create_rule))
        .route("/v1/admin/aml/rules/{id}", get(aml::get_rule).put(aml::put_rule).delete(aml::delete_rule))
        .route("/v1/admin/audit", get(audit::list))
        .route("/v1/admin/audit/head", get(audit::head))
        .route("/v1/admin/events", get(events::feed))
        .route("/v1/admin/fee-rules", get(pricing::list_fee_rules).post(pricing::create_fee_rule))
        .route("/v1/admin/fee-rules/{id}", get(pricing::get_fee_rule).put(pricing::put_fee_rule))
        .route("/v1/admin/fx-rates", get(pricing::list_fx_rates).put(pricing::put_fx_rate))
        .route("/v1/admin/limits", get(limits::list))
        .route("/v1/admin/limits/{level}", put(limits::put_level))
        .route("/v1/admin/permissions", get(auth::admin_users::catalog))
        .route("/v1/admin/roles", get(auth::roles::list).post(auth::roles::create))
        .route("/v1/admin/roles/{id}", get(auth::roles::get).put(auth::roles::update).delete(auth::roles::delete))
        .route("/v1/admin/statements", get(statements::statements))
        .route("/v1/admin/transfer-types", get(pricing::list_transfer_types))
        .route("/v1/admin/transfer-types/{code}", put(pricing::put_transfer_type))
        .route("/v1/admin/transfers", get(listings::admin_transfers))
        .route("/v1/admin/transfers/count", get(listings::admin_transfer_count))
        .route("/v1/admin/transfers/{id}", get(admin::get_transfer))
        .route("/v1/admin/transfers/{id}/cancel", post(admin::cancel_transfer))
        .route("/v1/admin/transfers/{id}/execute", post(admin::execute))
        .route("/v1/admin/transfers/{id}/reject", post(admin::reject))
        .route("/v1/admin/users", get(auth::admin_users::list).post(auth::admin_users::create))
        .route("/v1/admin/users/count", get(auth::admin_users::count))
        .route("/v1/admin/users/{id}", get(auth::admin_users::get_one).patch(auth::admin_users::update))
        .route("/v1/admin/users/{id}/password-reset", post(auth::admin_users::password_reset))
        .route("/v1/admin/users/{id}/permissions", post(auth::admin_users::grant).delete(auth::admin_users::revoke))
        .route("/v1/admin/users/{id}/roles", post(auth::roles::assign))
        .route("/v1/admin/users/{id}/roles/{role_id}", delete(auth::roles::unassign))
        .route("/v1/admin/users/{id}/sessions", get(auth::admin_users::sessions))
        .route("/v1/admin/users/{id}/sessions", delete(auth::admin_users::end_user_sessions))
        .route("/v1/admin/users/{id}/status", post(auth::admin_users::set_status))
        .route("/v1/admin/users/{id}/verification", post(auth::admin_users::set_verification))
        .route("/v1/admin/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/admin/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/v1/admin/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/admin/webhooks/{id}/replay", post(webhooks::replay))
}

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
        .route("/v1/admin/actors/{kind}/{id}/release", post(ops::release))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
}

/// What other systems call into Tally: the custodian's deposit and withdrawal notices.
pub fn webhooks() -> Router<AppState> {
    Router::new().route("/v1/webhooks/custodian", post(crypto::custodian_webhook))
}
