//! Admin routes under `/v1/admin` (see `routes`).

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::AppState;
use crate::{admin, aml, audit, auth, crypto, events, limits, listings, pricing, statements, webhooks};

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
        .route("/v1/admin/wallets", get(crypto::admin_wallets))
        .route("/v1/admin/wallets/{id}", get(crypto::admin_wallet))
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
