//! Wallets and crypto flows (API.md "Wallets (multi-asset) and crypto flows"):
//! `/v1/wallets`, `/v1/crypto/quote`, `/v1/crypto/orders`, `/v1/crypto/withdrawals` and the
//! custodian's webhook `/v1/webhooks/custodian`. The money logic is the engine's
//! (`tally_actors::crypto`); this file parses, authorises and renders.
//!
//! A wallet holds one crypto asset (BTC, ETH, USDC; fiat lives in accounts), one per asset
//! per user, and shows its deposit address: `tly1` + 40 hex digits derived from the wallet
//! id, which the custodian names in `deposit` events. Another user's wallet, order or
//! withdrawal answers `404`, as for accounts.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_actors::crypto::{CryptoError, DepositTarget, Quote};
use tally_engine::crypto::{QuoteAmount, Side};
use tally_engine::{
    AccountId, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, ErrorCode, Idempotency, TransferId, UserId, Wallet,
    WalletId,
};
use tally_persistence::crypto::WalletProfile;

use crate::accounts::created;
use crate::auth::Caller;
use crate::auth::stepup::{StepUp, WithdrawalsCreate};
use crate::digest::sha256_hex;
use crate::input::{self, IdPath};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::transfers::body_id;
use crate::views::{money, rfc3339};

/// Longest withdrawal address: far beyond any chain's (Bitcoin bech32 is at most 90).
pub const ADDRESS_LENGTH_MAX: usize = 128;
/// Longest chain transaction hash the webhook accepts (a hex SHA-256 is 64, 0x-prefixed 66).
pub const TX_HASH_LENGTH_MAX: usize = 128;

impl From<CryptoError> for ApiError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::Internal(detail) => ApiError::internal(detail),
            CryptoError::NotFound => ApiError::not_found("wallet"),
            CryptoError::Unavailable(_) => {
                let code = error.code();
                ApiError::new(code, "temporarily unavailable; retry later")
            }
            CryptoError::Failed(op, code) => {
                ApiError::new(code, format!("{} {} failed: {}", op.kind.as_str(), op.id, code.as_str()))
            }
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

// ---- views ---------------------------------------------------------------------------------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalletView {
    pub id: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub asset: &'static str,
    pub balance: String,
    pub held: String,
    pub available_balance: String,
    pub status: &'static str,
    /// Where the custodian credits deposits to this wallet.
    pub deposit_address: String,
    pub created_at: String,
}

impl WalletView {
    pub fn of(profile: &WalletProfile, wallet: &Wallet) -> Result<WalletView, ApiError> {
        let asset = profile.asset;
        let (balance, held) =
            wallet.position(asset).map_or((Decimal::ZERO, Decimal::ZERO), |position| (position.balance, position.held));
        let available = balance
            .checked_sub(held)
            .ok_or_else(|| ApiError::internal(format!("wallet {}: available overflows", wallet.id)))?;
        Ok(WalletView {
            id: wallet.id.to_string(),
            asset: asset.code(),
            balance: money(balance, asset),
            held: money(held, asset),
            available_balance: money(available, asset),
            status: wallet.status.as_str(),
            deposit_address: profile.deposit_address.clone(),
            created_at: rfc3339(wallet.created_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalletList {
    items: Vec<WalletView>,
}

/// A buy or sell order, a withdrawal or a deposit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CryptoOpView {
    pub id: String,
    /// `buy`, `sell`, `withdrawal` or `deposit`.
    pub kind: &'static str,
    /// `processing`, `pending` (a withdrawal awaiting the custodian), `completed` or `failed`.
    pub status: &'static str,
    pub wallet_id: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub asset: &'static str,
    /// The crypto amount into (buy, deposit) or out of (sell, withdrawal) the wallet.
    pub crypto_amount: String,
    pub fiat_account_id: Option<String>,
    #[schema(value_type = Option<crate::openapi::CurrencyCode>)]
    pub fiat_currency: Option<&'static str>,
    /// What the crypto is worth at `price`; the fee comes on top of a buy, off a sell.
    pub fiat_amount: Option<String>,
    pub fee: Option<String>,
    pub price: Option<String>,
    pub address: Option<String>,
    pub tx_hash: Option<String>,
    pub failure_reason: Option<&'static str>,
    pub created_at: String,
    pub updated_at: String,
}

impl CryptoOpView {
    pub fn of(op: &CryptoOp) -> Result<CryptoOpView, ApiError> {
        let fiat = op.fiat_currency;
        Ok(CryptoOpView {
            id: op.id.to_string(),
            kind: op.kind.as_str(),
            status: op.status.as_str(),
            wallet_id: op.wallet.to_string(),
            asset: op.asset.code(),
            crypto_amount: money(op.asset_amount, op.asset),
            fiat_account_id: op.fiat_account.map(|account| account.to_string()),
            fiat_currency: fiat.map(Currency::code),
            fiat_amount: fiat.map(|fiat| money(op.fiat_amount, fiat)),
            fee: fiat.map(|fiat| money(op.fee, fiat)),
            price: op.price.map(|price| price.normalize().to_string()),
            address: op.address.clone(),
            tx_hash: op.tx_hash.clone(),
            failure_reason: op.failure_reason.map(ErrorCode::as_str),
            created_at: rfc3339(op.created_at)?,
            updated_at: rfc3339(op.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuoteView {
    pub quote_id: String,
    /// `buy` or `sell`.
    pub side: &'static str,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub asset: &'static str,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub fiat_currency: &'static str,
    /// Fiat per one unit of the asset.
    pub price: String,
    pub fiat_amount: String,
    pub crypto_amount: String,
    pub fee: String,
    pub expires_at: String,
}

impl QuoteView {
    fn of(quote: &Quote) -> Result<QuoteView, ApiError> {
        let terms = &quote.terms;
        Ok(QuoteView {
            quote_id: quote.id.to_string(),
            side: terms.side.as_str(),
            asset: terms.asset.code(),
            fiat_currency: terms.fiat_currency.code(),
            price: terms.price.normalize().to_string(),
            fiat_amount: money(terms.fiat_amount, terms.fiat_currency),
            crypto_amount: money(terms.crypto_amount, terms.asset),
            fee: money(terms.fee, terms.fiat_currency),
            expires_at: rfc3339(quote.expires_at)?,
        })
    }
}

fn asset_field(field: &str, code: &str) -> Result<Currency, ApiError> {
    let asset = input::currency(field, code)?;
    if !tally_actors::crypto::is_crypto_asset(asset) {
        return Err(ApiError::field(field, format!("{code} is not a crypto asset (BTC, ETH or USDC)")));
    }
    Ok(asset)
}

fn fingerprint(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_vec(value).map(|bytes| sha256_hex(&bytes)).map_err(ApiError::internal)
}

fn key(headers: &HeaderMap, caller: UserId, canonical: &impl Serialize) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = input::idempotency_key(headers)? else { return Ok(None) };
    Ok(Some(Idempotency { scope: caller.as_uuid(), key, fingerprint: fingerprint(canonical)?.into() }))
}

fn replayed(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    response
}

// ---- wallets -------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenWalletBody {
    /// A crypto asset: BTC, ETH or USDC.
    #[schema(value_type = crate::openapi::CurrencyCode, examples("BTC"))]
    pub asset: String,
}

/// `POST /v1/wallets {asset}` → `201 wallet`; a second wallet of the same asset → `409`.
#[utoipa::path(
    post,
    path = "/v1/wallets",
    tag = "wallets",
    request_body = OpenWalletBody,
    responses((status = 201, body = WalletView)),
    security(("bearer" = []))
)]
pub async fn open_wallet(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<OpenWalletBody>,
) -> Result<Response, ApiError> {
    let asset = asset_field("asset", &body.asset)?;
    let engine = state.engine()?;
    let (profile, wallet) = engine.open_customer_wallet(caller.user_id, asset).await?;
    Ok(created(format!("/v1/wallets/{}", wallet.id), WalletView::of(&profile, &wallet)?))
}

/// `GET /v1/wallets` → `{items: [wallet]}`, oldest first, with live balances.
#[utoipa::path(
    get,
    path = "/v1/wallets",
    tag = "wallets",
    responses((status = 200, body = WalletList)),
    security(("bearer" = []))
)]
pub async fn list_wallets(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<WalletList>, ApiError> {
    let engine = state.engine()?;
    let mut items = Vec::new();
    for (profile, wallet) in engine.customer_wallets(caller.user_id).await? {
        items.push(WalletView::of(&profile, &wallet)?);
    }
    Ok(axum::Json(WalletList { items }))
}

pub(crate) async fn owned_wallet(
    state: &AppState,
    id: WalletId,
    owner: UserId,
) -> Result<(WalletProfile, Wallet), ApiError> {
    match state.engine()?.customer_wallet(id).await {
        Ok((profile, wallet)) if profile.owner == owner => Ok((profile, wallet)),
        Ok(_) | Err(CryptoError::NotFound) => Err(ApiError::not_found("wallet")),
        Err(other) => Err(other.into()),
    }
}

/// `GET /v1/wallets/{id}` → the caller's wallet, or `404`.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}",
    tag = "wallets",
    params(("id" = uuid::Uuid, Path, description = "The wallet id")),
    responses((status = 200, body = WalletView)),
    security(("bearer" = []))
)]
pub async fn get_wallet(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<WalletView>, ApiError> {
    let (profile, wallet) = owned_wallet(&state, WalletId::from_uuid(id), caller.user_id).await?;
    Ok(axum::Json(WalletView::of(&profile, &wallet)?))
}

// ---- admins' view of wallets ---------------------------------------------------------------

/// A wallet as admins see it: the owner's view, the owner, and every live hold (a pending
/// withdrawal's, an order's in flight).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminWalletView {
    #[serde(flatten)]
    pub wallet: WalletView,
    pub owner_id: String,
    pub holds: Vec<crate::views::HoldView>,
}

impl AdminWalletView {
    fn of(profile: &WalletProfile, wallet: &Wallet) -> Result<AdminWalletView, ApiError> {
        let mut holds: Vec<crate::views::HoldView> = wallet
            .position(profile.asset)
            .into_iter()
            .flat_map(|position| position.holds())
            .map(|(transfer, amount)| crate::views::HoldView {
                transfer_id: transfer.to_string(),
                amount: money(amount, profile.asset),
            })
            .collect();
        // Holds live in a map; a stable order keeps the answer reproducible.
        holds.sort_by(|a, b| a.transfer_id.cmp(&b.transfer_id));
        Ok(AdminWalletView { wallet: WalletView::of(profile, wallet)?, owner_id: profile.owner.to_string(), holds })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminWalletQuery {
    /// Only wallets of this asset (BTC, ETH or USDC).
    pub asset: Option<String>,
    /// Only this user's wallets.
    pub user_id: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<String>,
}

const WALLETS_TAG: &str = "wallets";

/// `GET /v1/admin/wallets?asset&user_id&cursor&limit` (`accounts:read`) → every customer's
/// wallets, newest first, with live balances and holds.
#[utoipa::path(
    get,
    path = "/v1/admin/wallets",
    tag = "admin",
    params(AdminWalletQuery),
    responses((status = 200, body = crate::listings::Page<AdminWalletView>)),
    security(("bearer" = []))
)]
pub async fn admin_wallets(
    State(state): State<AppState>,
    _admin: crate::auth::Authorized<crate::auth::permissions::AccountsRead>,
    ApiQuery(params): ApiQuery<AdminWalletQuery>,
) -> Result<axum::Json<crate::listings::Page<AdminWalletView>>, ApiError> {
    let asset = params.asset.as_deref().map(|code| asset_field("asset", code)).transpose()?;
    let owner = params
        .user_id
        .as_deref()
        .map(|text| {
            uuid::Uuid::try_parse(text).map(UserId::from_uuid).map_err(|_| ApiError::field("user_id", "must be a UUID"))
        })
        .transpose()?;
    let limit = crate::pagination::limit(params.limit.as_deref())?;
    let before = crate::pagination::parse_position_cursor(WALLETS_TAG, params.cursor.as_deref())?;
    let engine = state.engine()?;
    let filter = tally_persistence::crypto::WalletFilter { asset, owner };
    let mut profiles = engine.store().wallet_profiles_page(filter, before, limit + 1).await?;
    let more = profiles.len() > limit as usize;
    profiles.truncate(limit as usize);
    let next_cursor = if more {
        profiles.last().map(|profile| {
            let position = tally_persistence::reads::listing::Position {
                created_at: profile.created_at.as_micros(),
                id: profile.wallet.as_uuid(),
            };
            crate::pagination::position_cursor(WALLETS_TAG, position)
        })
    } else {
        None
    };
    let wallets = futures::future::join_all(profiles.iter().map(|profile| engine.wallet(profile.wallet))).await;
    let mut items = Vec::with_capacity(wallets.len());
    for (profile, wallet) in profiles.iter().zip(wallets) {
        items.push(AdminWalletView::of(profile, &wallet.map_err(CryptoError::from)?)?);
    }
    Ok(axum::Json(crate::listings::Page { items, next_cursor }))
}

/// `GET /v1/admin/wallets/{id}` (`accounts:read`) → any customer's wallet with its holds, or
/// `404`.
#[utoipa::path(
    get,
    path = "/v1/admin/wallets/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The wallet id")),
    responses((status = 200, body = AdminWalletView)),
    security(("bearer" = []))
)]
pub async fn admin_wallet(
    State(state): State<AppState>,
    _admin: crate::auth::Authorized<crate::auth::permissions::AccountsRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AdminWalletView>, ApiError> {
    match state.engine()?.customer_wallet(WalletId::from_uuid(id)).await {
        Ok((profile, wallet)) => Ok(axum::Json(AdminWalletView::of(&profile, &wallet)?)),
        Err(CryptoError::NotFound) => Err(ApiError::not_found("wallet")),
        Err(other) => Err(other.into()),
    }
}

// ---- quotes and orders ---------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    /// `buy` or `sell`.
    pub side: Option<String>,
    /// BTC, ETH or USDC.
    pub asset: Option<String>,
    pub fiat_currency: Option<String>,
    /// Exactly one of `fiat_amount` and `crypto_amount`.
    pub fiat_amount: Option<String>,
    pub crypto_amount: Option<String>,
}

fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| ApiError::field(field, "is required"))
}

/// `GET /v1/crypto/quote` → a quote valid for 30 seconds. Prices come from the price table;
/// rounding never favours the customer (see `tally_engine::crypto::quote`).
#[utoipa::path(
    get,
    path = "/v1/crypto/quote",
    tag = "crypto",
    params(QuoteQuery),
    responses((status = 200, body = QuoteView)),
    security(("bearer" = []))
)]
pub async fn quote(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<QuoteQuery>,
) -> Result<axum::Json<QuoteView>, ApiError> {
    let side =
        Side::parse(required("side", &params.side)?).ok_or_else(|| ApiError::field("side", "must be buy or sell"))?;
    let asset = asset_field("asset", required("asset", &params.asset)?)?;
    let fiat = input::currency("fiat_currency", required("fiat_currency", &params.fiat_currency)?)?;
    if tally_actors::crypto::is_crypto_asset(fiat) {
        return Err(ApiError::field("fiat_currency", "must be a fiat currency"));
    }
    let amount = match (&params.fiat_amount, &params.crypto_amount) {
        (Some(fiat_amount), None) => QuoteAmount::Fiat(input::amount("fiat_amount", fiat_amount, fiat)?),
        (None, Some(crypto_amount)) => QuoteAmount::Crypto(input::amount("crypto_amount", crypto_amount, asset)?),
        _ => return Err(ApiError::field("fiat_amount", "give exactly one of fiat_amount and crypto_amount")),
    };
    let engine = state.engine()?;
    let quote = engine.quote(caller.user_id, side, asset, fiat, amount, state.identity().now())?;
    Ok(axum::Json(QuoteView::of(&quote)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    #[schema(format = Uuid)]
    pub quote_id: String,
    /// The caller's account in the quote's fiat currency: debited for a buy, credited for a sell.
    #[schema(format = Uuid)]
    pub fiat_account_id: String,
}

/// `POST /v1/crypto/orders` → `201 order`, completed: a saga between the fiat account and
/// the wallet of the quote's asset. An expired quote is `422 QUOTE_EXPIRED`.
#[utoipa::path(
    post,
    path = "/v1/crypto/orders",
    tag = "crypto",
    request_body = OrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer as the first time; a different body is 409 IDEMPOTENCY_KEY_REUSED. A 503 that moved no money (the wallet or account unavailable) keeps neither the key nor the quote: a retry under it runs afresh")),
    responses((status = 201, body = CryptoOpView)),
    security(("bearer" = []))
)]
pub async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OrderBody>,
) -> Result<Response, ApiError> {
    let quote_id = body_id("quote_id", &body.quote_id)?;
    let fiat_account = AccountId::from_uuid(body_id("fiat_account_id", &body.fiat_account_id)?);
    let key =
        key(&headers, caller.user_id, &("POST /v1/crypto/orders", quote_id.to_string(), fiat_account.to_string()))?;
    let engine = state.engine()?;
    let (op, was_replayed) =
        engine.place_order(caller.user_id, quote_id, fiat_account, key, state.identity().now()).await?;
    Ok(replayed(created(format!("/v1/crypto/orders/{}", op.id), CryptoOpView::of(&op)?), was_replayed))
}

async fn owned_op(
    state: &AppState,
    id: uuid::Uuid,
    owner: UserId,
    kinds: &[CryptoOpKind],
    what: &str,
) -> Result<CryptoOp, ApiError> {
    match state.engine()?.crypto_op(TransferId::from_uuid(id)).await? {
        Some(op) if op.owner == owner && kinds.contains(&op.kind) => Ok(op),
        _ => Err(ApiError::not_found(what)),
    }
}

/// `GET /v1/crypto/orders/{id}` → the caller's order, or `404`.
#[utoipa::path(
    get,
    path = "/v1/crypto/orders/{id}",
    tag = "crypto",
    params(("id" = uuid::Uuid, Path, description = "The order id")),
    responses((status = 200, body = CryptoOpView)),
    security(("bearer" = []))
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<CryptoOpView>, ApiError> {
    let op = owned_op(&state, id, caller.user_id, &[CryptoOpKind::Buy, CryptoOpKind::Sell], "order").await?;
    Ok(axum::Json(CryptoOpView::of(&op)?))
}

// ---- withdrawals ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalBody {
    #[schema(format = Uuid)]
    pub wallet_id: String,
    /// In the wallet's asset, as a string.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0.015"))]
    pub amount: String,
    /// The destination on chain.
    pub address: String,
}

/// `POST /v1/crypto/withdrawals` ★ → `202` pending: the amount is held on the wallet until
/// the custodian confirms (posted to settlement) or fails it (released).
#[utoipa::path(
    post,
    path = "/v1/crypto/withdrawals",
    tag = "crypto",
    request_body = WithdrawalBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer as the first time; a different body is 409 IDEMPOTENCY_KEY_REUSED. A 503 that moved no money (the wallet unavailable) keeps no key: a retry under it runs afresh")),
    responses((status = 202, description = "Held, pending the custodian", body = CryptoOpView)),
    security(("bearer" = []))
)]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    _step_up: StepUp<WithdrawalsCreate>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<WithdrawalBody>,
) -> Result<Response, ApiError> {
    let wallet = WalletId::from_uuid(body_id("wallet_id", &body.wallet_id)?);
    let address = input::required_text("address", &body.address, ADDRESS_LENGTH_MAX)?;
    if address.chars().any(char::is_whitespace) {
        return Err(ApiError::field("address", "must not contain spaces"));
    }
    let (profile, _) = owned_wallet(&state, wallet, caller.user_id).await?;
    let amount = input::amount("amount", &body.amount, profile.asset)?;
    let canonical = ("POST /v1/crypto/withdrawals", wallet.to_string(), money(amount, profile.asset), &address);
    let key = key(&headers, caller.user_id, &canonical)?;
    let engine = state.engine()?;
    let (op, was_replayed) = engine.withdraw(caller.user_id, wallet, amount, address, key).await?;
    withdrawal_answer(&op, was_replayed)
}

fn withdrawal_answer(op: &CryptoOp, was_replayed: bool) -> Result<Response, ApiError> {
    if let (CryptoOpStatus::Failed, Some(code)) = (op.status, op.failure_reason) {
        return Err(ApiError::new(code, format!("withdrawal {} failed: {}", op.id, code.as_str())));
    }
    let mut response = (StatusCode::ACCEPTED, axum::Json(CryptoOpView::of(op)?)).into_response();
    if let Ok(location) = axum::http::HeaderValue::from_str(&format!("/v1/crypto/withdrawals/{}", op.id)) {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    Ok(replayed(response, was_replayed))
}

/// `GET /v1/crypto/withdrawals/{id}` → the caller's withdrawal as it stands, or `404`.
#[utoipa::path(
    get,
    path = "/v1/crypto/withdrawals/{id}",
    tag = "crypto",
    params(("id" = uuid::Uuid, Path, description = "The withdrawal id")),
    responses((status = 200, body = CryptoOpView)),
    security(("bearer" = []))
)]
pub async fn get_withdrawal(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<CryptoOpView>, ApiError> {
    let op = owned_op(&state, id, caller.user_id, &[CryptoOpKind::Withdrawal], "withdrawal").await?;
    Ok(axum::Json(CryptoOpView::of(&op)?))
}

// ---- the custodian's webhook ---------------------------------------------------------------

/// The environment variable holding the webhook's HMAC secret. Unset (or empty): the webhook
/// refuses every event `401`, since no signature can be checked; the server logs why.
pub const CUSTODIAN_SECRET_ENV: &str = "TALLY_CUSTODIAN_SECRET";

static CUSTODIAN_SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the webhook secret for this process, ahead of `TALLY_CUSTODIAN_SECRET` (in-process
/// servers: tests cannot set environment variables safely). The first value set stays.
pub fn set_custodian_secret(secret: &str) {
    let _ = CUSTODIAN_SECRET.set(secret.to_owned());
}

fn custodian_secret() -> Option<String> {
    CUSTODIAN_SECRET
        .get()
        .cloned()
        .or_else(|| std::env::var(CUSTODIAN_SECRET_ENV).ok())
        .filter(|secret| !secret.is_empty())
}

/// The `X-Custodian-Signature` value for `body` under `secret`: what a custodian sends.
pub fn custodian_signature(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let hex: String = data_encoding::HEXLOWER.encode(tag.as_ref());
    format!("sha256={hex}")
}

/// A custodian event. Documentation of the body; the handler reads the raw bytes first (the
/// signature covers them exactly) and parses them only once the signature holds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustodianEvent {
    /// `deposit`, `withdrawal.confirmed` or `withdrawal.failed`.
    pub event: String,
    /// Deposit: the wallet's deposit address (or `wallet_id`).
    pub address: Option<String>,
    #[schema(format = Uuid)]
    pub wallet_id: Option<String>,
    /// Deposit: in the wallet's asset, as a string.
    pub amount: Option<String>,
    /// The chain transaction: a deposit is credited once per hash.
    pub tx_hash: String,
    #[schema(format = Uuid)]
    pub withdrawal_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustodianAnswer {
    /// The operation the event created or settled.
    pub operation: CryptoOpView,
    /// True when the event had been applied before and changed nothing now.
    pub duplicate: bool,
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body` under `secret`, in constant time
/// (aws-lc-rs's `hmac::verify`). Anything malformed is simply not a match.
pub fn signature_holds(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|value| value.trim().strip_prefix("sha256=")) else { return false };
    if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return false;
    }
    let tag: Vec<u8> =
        (0..32).filter_map(|at| u8::from_str_radix(hex.get(at * 2..at * 2 + 2).unwrap_or("zz"), 16).ok()).collect();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    tag.len() == 32 && aws_lc_rs::hmac::verify(&key, body, &tag).is_ok()
}

/// `POST /v1/webhooks/custodian`: no bearer token; the `X-Custodian-Signature` header proves
/// the custodian sent the exact body. A bad or missing signature is `401` and changes
/// nothing. `deposit` credits the wallet once per `tx_hash`; the withdrawal events settle a
/// pending withdrawal. A repeat answers `200` with `duplicate: true`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/custodian",
    tag = "crypto",
    request_body = CustodianEvent,
    params(("X-Custodian-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body under TALLY_CUSTODIAN_SECRET>")),
    responses((status = 200, body = CustodianAnswer)),
)]
pub async fn custodian_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    crate::input::RawBody(body): crate::input::RawBody,
) -> Result<axum::Json<CustodianAnswer>, ApiError> {
    let Some(secret) = custodian_secret() else {
        tracing::warn!("custodian webhook refused: {CUSTODIAN_SECRET_ENV} is not set");
        return Err(ApiError::new(ErrorCode::Unauthenticated, "the custodian webhook is not configured"));
    };
    let signature = headers.get("x-custodian-signature").and_then(|value| value.to_str().ok());
    if !signature_holds(secret.as_bytes(), &body, signature) {
        return Err(ApiError::new(ErrorCode::Unauthenticated, "bad or missing X-Custodian-Signature"));
    }
    let event: CustodianEvent = serde_json::from_slice(&body)
        .map_err(|error| ApiError::new(ErrorCode::ValidationError, format!("invalid event: {error}")))?;
    let tx_hash = input::required_text("tx_hash", &event.tx_hash, TX_HASH_LENGTH_MAX)?;
    let engine = state.engine()?;
    let (op, duplicate) = match event.event.as_str() {
        "deposit" => {
            let target = match (&event.wallet_id, &event.address) {
                (Some(id), None) => DepositTarget::Wallet(WalletId::from_uuid(body_id("wallet_id", id)?)),
                (None, Some(address)) => DepositTarget::Address(address.trim().to_owned()),
                _ => return Err(ApiError::field("address", "give exactly one of address and wallet_id")),
            };
            let amount_text = required("amount", &event.amount)?;
            // Parsed as a plain decimal here, exactly (more digits than a `Decimal` holds are
            // refused, not rounded: `parse` would credit 0.999…9 with 29 nines as 1); the
            // wallet's asset scale is checked by the engine.
            let amount = Decimal::from_str_exact(amount_text)
                .ok()
                .filter(|_| amount_text.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.'))
                .ok_or_else(|| ApiError::field("amount", "must be a positive decimal string"))?;
            engine.deposit(target, amount, tx_hash).await.map_err(|error| match error {
                CryptoError::NotFound => ApiError::not_found("wallet"),
                other => other.into(),
            })?
        }
        "withdrawal.confirmed" | "withdrawal.failed" => {
            let id = body_id("withdrawal_id", required("withdrawal_id", &event.withdrawal_id)?)?;
            let confirmed = event.event == "withdrawal.confirmed";
            let before = engine.crypto_op(TransferId::from_uuid(id)).await?;
            let wanted = if confirmed { CryptoOpStatus::Completed } else { CryptoOpStatus::Failed };
            let duplicate = before.as_ref().is_some_and(|op| op.status == wanted);
            let op =
                engine.settle_withdrawal(TransferId::from_uuid(id), confirmed, tx_hash).await.map_err(|error| {
                    match error {
                        CryptoError::NotFound => ApiError::not_found("withdrawal"),
                        other => other.into(),
                    }
                })?;
            (op, duplicate)
        }
        other => return Err(ApiError::field("event", format!("unknown event {other:?}"))),
    };
    Ok(axum::Json(CustodianAnswer { operation: CryptoOpView::of(&op)?, duplicate }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_secret_and_exact_body() {
        let body = br#"{"event":"deposit"}"#;
        let signature = custodian_signature(b"secret", body);
        assert!(signature_holds(b"secret", body, Some(&signature)));
        assert!(!signature_holds(b"other", body, Some(&signature)));
        assert!(!signature_holds(b"secret", br#"{"event":"deposit" }"#, Some(&signature)));
        assert!(!signature_holds(b"secret", body, Some(signature.trim_start_matches("sha256="))));
        assert!(!signature_holds(b"secret", body, Some("sha256=zz")));
        assert!(!signature_holds(b"secret", body, None));
        // RFC 4231 test case 2.
        assert_eq!(
            custodian_signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
