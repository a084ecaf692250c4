//! Customer routes (see `routes`).

use axum::Router;
use axum::routing::{delete, get, patch, post};

use crate::AppState;
use crate::{
    accounts, accounts_summary, auth, batch, beneficiaries, crypto, crypto_history, ledger, limits, listings,
    point_in_time, statements, transfers,
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
        .route("/v1/beneficiaries/{id}", get(beneficiaries::get).delete(beneficiaries::delete))
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
