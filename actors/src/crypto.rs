//! Customer wallets and crypto operations on the engine: opening a wallet for one asset,
//! custodian deposits (one credit per chain transaction), withdrawals held until the custodian
//! answers, and buy / sell orders from quotes. Each operation is a saga over the legs that
//! `tally_engine::crypto` computes, run as a task on a shard (so a client hanging up does not
//! stop it half way), recorded in the journal after every leg, and answered only once its
//! last record is durable. The legs, the pivot and the statuses are this file's; recording,
//! the durable last record, retrying a forward-only leg and counting a compensation are the
//! driver the transfer saga runs on (`saga::driver`), so both kinds of saga follow one set of
//! rules.
//!
//! Keys are claimed as transfers' are (`KeyClaim`): an order's or a withdrawal's
//! `Idempotency-Key`, and a deposit's `tx_hash` (the custodian's key for it). A request that
//! starts an operation hands the claim to the operation's task, which releases it once the
//! outcome is durable, as a transfer's saga does (`Engine::under_key`); one answered from what
//! is recorded releases it at once, since a repeat looks for the operation in the journals
//! before the store and so finds one whose records are still queued.
//!
//! A refusal at or before an operation's pivot is compensated (the holds placed so far are
//! released) and the operation ends `failed` (without its key if the refusal was an actor
//! unavailable: the client heard `503` and retries); after the pivot the saga only goes forward,
//! retrying a leg that is unavailable. One exception: a deposit whose wallet leg is merely
//! *unavailable* (overloaded, restarting, quarantined) is left `processing` and the webhook
//! answers 503: the custodian retries, and the retry (same `tx_hash`) resumes the same
//! deposit, so a transient fault never burns a chain transaction.
//!
//! Recovery (`recover_crypto`, run by `Engine::recover` after the transfers'): an operation's
//! record after leg *k* follows leg *k*'s own record in the journal, so after a crash at most
//! the one leg after the recorded step is uncertain. Holds, posts and releases are
//! recognised through the durable holds (repeating them is a no-op); a credit is recognised
//! by its posting (`postings` for accounts, `wallet_postings` for wallets). Then: a deposit,
//! or any operation past its pivot, goes forward; a withdrawal `pending` keeps its hold; any
//! other operation is undone (holds released) and recorded `failed` with `INTERNAL`: its
//! caller never heard a success. A run cut short without a restart (a record the journal
//! refused after its leg was applied: the custodian heard `503`) is driven on by the
//! custodian's retry with the same check of the uncertain leg, once everything appended is
//! durable (`resume_cut`, and `settle_withdrawal` for a confirm): a credit is never applied
//! twice because an account or wallet forgot it (loaded from the store, or credited eight
//! times since).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tally_engine::crypto::{Leg, QuoteAmount, QuoteRejection, QuoteTerms, Side};
use tally_engine::{
    AccountId, CryptoOp, CryptoOpKind, CryptoOpStatus, Currency, Direction, ErrorCode, Idempotency, Record, Timestamp,
    TransferId, UserId, Wallet, WalletId,
};
use tally_persistence::StoreError;
use tally_persistence::crypto::WalletProfile;
use uuid::Uuid;

use crate::engine::{Claim, Engine, EngineError, EngineInner, SagaPermit};
use crate::idempotency::KeyClaim;
use crate::registry::{CallError, Unavailable};
use crate::saga::driver::{self, Answer, Halt, NotApplied};

/// How long a quote may be turned into an order.
pub const QUOTE_TTL_MICROS: i64 = 30_000_000;
/// Quotes kept in memory at once: ~200 B each, so ~13 MiB at most. Expired quotes are swept
/// when the table is full; a table full of live quotes answers `503`.
pub const QUOTES_IN_MEMORY_MAX: usize = 65_536;

/// Why a wallet or crypto operation did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CryptoError {
    #[error("not found")]
    NotFound,
    /// Refused with a code of the contract; the message says why.
    #[error("{1}")]
    Refused(ErrorCode, String),
    /// The operation ran and failed (compensated); it is recorded as such.
    #[error("operation {id} failed: {code:?}", id = .0.id, code = .1)]
    Failed(Box<CryptoOp>, ErrorCode),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("unavailable: {0:?}")]
    Unavailable(Unavailable),
    #[error("internal: {0}")]
    Internal(String),
}

impl CryptoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CryptoError::NotFound => ErrorCode::NotFound,
            CryptoError::Refused(code, _) | CryptoError::Failed(_, code) => *code,
            CryptoError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            CryptoError::Unavailable(Unavailable::Quarantined) => ErrorCode::Quarantined,
            CryptoError::Unavailable(_) => ErrorCode::Overloaded,
            CryptoError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for CryptoError {
    fn from(error: StoreError) -> Self {
        CryptoError::Unavailable(Unavailable::Store(error.to_string()))
    }
}

impl From<EngineError> for CryptoError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound => CryptoError::NotFound,
            EngineError::Unavailable(unavailable) => CryptoError::Unavailable(unavailable),
            EngineError::Internal(message) => CryptoError::Internal(message),
            other => CryptoError::Refused(other.code(), other.to_string()),
        }
    }
}

impl From<Halt> for CryptoError {
    fn from(halt: Halt) -> Self {
        match halt.answer("operation") {
            Answer::Unavailable(unavailable) => CryptoError::Unavailable(unavailable),
            Answer::Internal(message) => CryptoError::Internal(message),
        }
    }
}

/// A priced offer to buy or sell, valid until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    pub id: Uuid,
    pub owner: UserId,
    pub terms: QuoteTerms,
    pub expires_at: Timestamp,
}

/// The engine's crypto state: the quotes not yet turned into orders.
#[derive(Default)]
pub(crate) struct CryptoState {
    quotes: DashMap<Uuid, Quote>,
}

/// A custodian's deposit: to a wallet named by id or by its deposit address.
#[derive(Clone, Debug)]
pub enum DepositTarget {
    Wallet(WalletId),
    Address(String),
}

/// The deposit address of a wallet: derived from its id, so every node and every restart
/// computes the same one, and unguessable without the id. `tly1` + 40 hex digits.
pub fn deposit_address(wallet: WalletId) -> String {
    let digest = Sha256::digest(format!("tally deposit address {}", wallet.as_uuid()).as_bytes());
    format!("tly1{}", data_encoding::HEXLOWER.encode(&digest[..20]))
}

/// Is `asset` one a wallet may hold? Crypto assets only: fiat lives in accounts.
pub fn is_crypto_asset(asset: Currency) -> bool {
    matches!(asset, Currency::BTC | Currency::ETH | Currency::USDC)
}

impl Engine {
    // ---- wallets ---------------------------------------------------------------------------

    /// Opens `owner`'s wallet for `asset`: one per asset per owner (`Refused(CONFLICT)` for a
    /// second). The wallet's opening is durable before its profile is stored, so a listed
    /// wallet always exists; a crash between the two leaves an empty wallet no one sees.
    pub async fn open_customer_wallet(
        &self,
        owner: UserId,
        asset: Currency,
    ) -> Result<(WalletProfile, Wallet), CryptoError> {
        if !is_crypto_asset(asset) {
            return Err(CryptoError::Refused(ErrorCode::ValidationError, format!("{asset} is not a crypto asset")));
        }
        let store = self.store();
        if store.wallet_profiles_of_owner(owner).await?.iter().any(|profile| profile.asset == asset) {
            return Err(CryptoError::Refused(ErrorCode::Conflict, format!("you already have a {asset} wallet")));
        }
        let wallet = self.open_wallet(owner).await?;
        let profile = WalletProfile {
            wallet: wallet.id,
            owner,
            asset,
            deposit_address: deposit_address(wallet.id),
            created_at: wallet.created_at,
        };
        if !store.insert_wallet_profile(&profile).await? {
            return Err(CryptoError::Refused(ErrorCode::Conflict, format!("you already have a {asset} wallet")));
        }
        Ok((profile, wallet))
    }

    /// A customer wallet with its live figures.
    pub async fn customer_wallet(&self, id: WalletId) -> Result<(WalletProfile, Wallet), CryptoError> {
        let profile = self.store().wallet_profile(id).await?.ok_or(CryptoError::NotFound)?;
        let wallet = self.wallet(id).await?;
        Ok((profile, wallet))
    }

    /// The owner's wallets, oldest first, with live figures.
    pub async fn customer_wallets(&self, owner: UserId) -> Result<Vec<(WalletProfile, Wallet)>, CryptoError> {
        let mut wallets = Vec::new();
        for profile in self.store().wallet_profiles_of_owner(owner).await? {
            let wallet = self.wallet(profile.wallet).await?;
            wallets.push((profile, wallet));
        }
        Ok(wallets)
    }

    // ---- operations ------------------------------------------------------------------------

    /// The operation as last recorded: the journal's newest copy, or the store's.
    pub async fn crypto_op(&self, id: TransferId) -> Result<Option<CryptoOp>, StoreError> {
        // The journals first, then the store: a state committed in between is read from the
        // store, which has it.
        let pending = self.journals().newest_pending(|record| match record {
            Record::CryptoOp(op) if op.id == id => Some((**op).clone()),
            _ => None,
        });
        let stored = self.store().load_crypto_op(id).await?;
        Ok(pending.or(stored.map(|loaded| loaded.value)))
    }

    async fn newest(&self, found: Option<CryptoOp>) -> Result<Option<CryptoOp>, CryptoError> {
        match found {
            Some(op) => Ok(Some(self.crypto_op(op.id).await?.unwrap_or(op))),
            None => Ok(None),
        }
    }

    /// A custodian deposit. The first report of a `tx_hash` credits the wallet; a repeat
    /// changes nothing and answers the operation as it stands (`true`: a repeat). Concurrent
    /// repeats wait for the first (a claim per hash), and the hash rides in the operation's
    /// first record, before any money moves, so the durable prefix always knows it (and a
    /// unique index proves one deposit per hash).
    pub async fn deposit(
        &self,
        target: DepositTarget,
        amount: Decimal,
        tx_hash: String,
    ) -> Result<(CryptoOp, bool), CryptoError> {
        let tx_hash = canonical_tx_hash(tx_hash);
        // The hash is the custodian's idempotency key, claimed as a client's key is
        // (`KeyClaim`): in no caller's scope (nil), in a slot whose space no client's key holds.
        // Claimed without a `0x`, so that both spellings of one hash wait for each other.
        let unprefixed = hex_digits(&tx_hash).unwrap_or(&tx_hash);
        let claim = self.claim_key(Uuid::nil(), format!("deposit {unprefixed}")).await;
        let found = self.deposit_claimed(target, amount, &tx_hash).await;
        self.under_key(found, claim).await
    }

    async fn deposit_claimed(
        &self,
        target: DepositTarget,
        amount: Decimal,
        tx_hash: &str,
    ) -> Result<Keyed, CryptoError> {
        let spellings = tx_hash_spellings(tx_hash);
        let pending = self.journals().newest_pending(|record| match record {
            Record::CryptoOp(op)
                if op.kind == CryptoOpKind::Deposit
                    && op.tx_hash.as_deref().is_some_and(|hash| spellings.iter().any(|spelling| spelling == hash)) =>
            {
                Some((**op).clone())
            }
            _ => None,
        });
        let mut existing = pending;
        for spelling in &spellings {
            if existing.is_some() {
                break;
            }
            existing = self.store().deposit_by_tx_hash(spelling).await?.map(|loaded| loaded.value);
        }
        if let Some(existing) = self.newest(existing).await? {
            // A repeat is the same report again. One that names another wallet or amount is
            // not (a second output of one chain transaction, or a custodian's mistake): it is
            // refused, so that someone sees it, rather than answered as a repeat while those
            // coins are never credited.
            let same_wallet = match &target {
                DepositTarget::Wallet(id) => *id == existing.wallet,
                DepositTarget::Address(address) => self
                    .store()
                    .wallet_profile_by_address(address)
                    .await?
                    .is_some_and(|profile| profile.wallet == existing.wallet),
            };
            if !same_wallet || amount != existing.asset_amount {
                return Ok(Keyed::Answered(Err(CryptoError::Refused(
                    ErrorCode::Conflict,
                    format!(
                        "tx_hash {tx_hash} was reported before for {} {} to wallet {}; a report of it for another wallet or amount is refused",
                        existing.asset_amount,
                        existing.asset.code(),
                        existing.wallet
                    ),
                ))));
            }
            if existing.status == CryptoOpStatus::Processing {
                // An earlier report left it unfinished (its wallet was unavailable): finish it.
                return Ok(Keyed::Answered(self.resume_cut(existing.id).await.map(|op| (op, false))));
            }
            return Ok(Keyed::Answered(Ok((existing, true))));
        }
        let profile = match target {
            DepositTarget::Wallet(id) => self.store().wallet_profile(id).await?,
            DepositTarget::Address(address) => self.store().wallet_profile_by_address(&address).await?,
        }
        .ok_or(CryptoError::NotFound)?;
        let amount = tally_engine::validate_amount(amount, profile.asset)
            .map_err(|error| CryptoError::Refused(ErrorCode::ValidationError, error.to_string()))?;
        let now = self.now();
        let op = CryptoOp {
            id: self.new_transfer_id_at(now),
            kind: CryptoOpKind::Deposit,
            status: CryptoOpStatus::Processing,
            step: 0,
            owner: profile.owner,
            wallet: profile.wallet,
            asset: profile.asset,
            asset_amount: amount,
            fiat_account: None,
            fiat_currency: None,
            fiat_amount: Decimal::ZERO,
            fee: Decimal::ZERO,
            price: None,
            address: None,
            tx_hash: Some(tx_hash.to_owned()),
            idempotency: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        Ok(Keyed::Start(op))
    }

    /// Holds `amount` on the wallet and records a withdrawal `pending` until the custodian
    /// confirms or fails it. Under an idempotency key a repeat answers the withdrawal as it
    /// stands (`true`), another body under the same key is refused.
    pub async fn withdraw(
        &self,
        owner: UserId,
        wallet: WalletId,
        amount: Decimal,
        address: String,
        key: Option<Idempotency>,
    ) -> Result<(CryptoOp, bool), CryptoError> {
        let build = |engine: Engine, key: Option<Idempotency>| async move {
            let profile = engine.store().wallet_profile(wallet).await?.ok_or(CryptoError::NotFound)?;
            if profile.owner != owner {
                return Err(CryptoError::NotFound);
            }
            let amount = tally_engine::validate_amount(amount, profile.asset)
                .map_err(|error| CryptoError::Refused(ErrorCode::ValidationError, error.to_string()))?;
            let now = engine.now();
            Ok(CryptoOp {
                id: engine.new_transfer_id_at(now),
                kind: CryptoOpKind::Withdrawal,
                status: CryptoOpStatus::Processing,
                step: 0,
                owner,
                wallet,
                asset: profile.asset,
                asset_amount: amount,
                fiat_account: None,
                fiat_currency: None,
                fiat_amount: Decimal::ZERO,
                fee: Decimal::ZERO,
                price: None,
                address: Some(address),
                tx_hash: None,
                idempotency: key,
                failure_reason: None,
                created_at: now,
                updated_at: now,
            })
        };
        self.idempotent(&[CryptoOpKind::Withdrawal], key, build).await
    }

    /// The custodian's answer to a withdrawal: `confirmed` posts the held amount to
    /// settlement, otherwise the hold is released. A repeat of the answer already applied
    /// changes nothing; the other answer after one was applied is refused (`CONFLICT`).
    pub async fn settle_withdrawal(
        &self,
        id: TransferId,
        confirmed: bool,
        tx_hash: String,
    ) -> Result<CryptoOp, CryptoError> {
        let tx_hash = canonical_tx_hash(tx_hash);
        // Held until the saga ends, like the claim below.
        let permit = self.admit_saga(id.as_uuid()).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        // Held until the saga ends: a concurrent second answer waits its turn (503, the
        // custodian retries) and then finds the first one applied.
        let claim = self.claim(id).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        let mut op = self.crypto_op(id).await?.ok_or(CryptoError::NotFound)?;
        if op.kind != CryptoOpKind::Withdrawal {
            return Err(CryptoError::NotFound);
        }
        let wanted = if confirmed { CryptoOpStatus::Completed } else { CryptoOpStatus::Failed };
        // An answer whose saga stopped short (the journal full between two records: the
        // custodian heard `503`) left the withdrawal `processing`; we hold its claim, so no
        // saga runs on it now. The same answer again resumes it, as recovery would: a confirm
        // recorded its `tx_hash` past the hold, a failure recorded step 0 (`Mode::Undo`).
        let interrupted = |op: &CryptoOp| match (op.step >= 1 && op.tx_hash.is_some(), confirmed) {
            (true, true) => op.tx_hash.as_deref() == Some(tx_hash.as_str()),
            (false, false) => true,
            _ => false,
        };
        match op.status {
            status if status == wanted => return Ok(op),
            CryptoOpStatus::Pending => {}
            CryptoOpStatus::Processing if interrupted(&op) => {
                // An interrupted failure goes back to the hold it releases (release is
                // idempotent). An interrupted confirm may have applied its next leg, a credit
                // to the settlement account, before the record that did not fit: not again.
                op.step = op.step.max(1);
                if confirmed {
                    self.durable_now().await?;
                    past_a_durable_credit(self, &mut op).await?;
                }
            }
            status => {
                return Err(CryptoError::Refused(
                    ErrorCode::Conflict,
                    format!("withdrawal {id} is already {}", status.as_str()),
                ));
            }
        }
        op.tx_hash = Some(tx_hash);
        op.status = CryptoOpStatus::Processing;
        let mode = if confirmed { Mode::Forward } else { Mode::Undo(None) };
        self.spawn_op_claimed(op, mode, claim, permit, None).await
    }

    // ---- quotes and orders -----------------------------------------------------------------

    /// Fiat per one unit of `asset`: the admin-set FX rate `asset` → `fiat`
    /// (`PUT /v1/admin/fx-rates {from: "BTC", to: "USD", rate}`), read from memory.
    fn crypto_price(&self, asset: Currency, fiat: Currency) -> Option<Decimal> {
        self.fx_rate(asset, fiat).filter(|price| *price > Decimal::ZERO)
    }

    /// Prices a buy or sell for `owner` and keeps the quote until `now + QUOTE_TTL`.
    pub fn quote(
        &self,
        owner: UserId,
        side: Side,
        asset: Currency,
        fiat: Currency,
        amount: QuoteAmount,
        now: Timestamp,
    ) -> Result<Quote, CryptoError> {
        let price = self.crypto_price(asset, fiat).ok_or_else(|| {
            CryptoError::Refused(ErrorCode::FxRateNotFound, format!("no price for {asset} in {fiat}"))
        })?;
        let terms =
            tally_engine::crypto::quote(side, asset, fiat, price, amount).map_err(|rejection| match rejection {
                QuoteRejection::TooSmall => CryptoError::Refused(ErrorCode::ValidationError, rejection.to_string()),
                QuoteRejection::TooLarge => CryptoError::Refused(ErrorCode::AmountLimitExceeded, rejection.to_string()),
            })?;
        let quotes = &self.inner.crypto.quotes;
        if quotes.len() >= QUOTES_IN_MEMORY_MAX {
            quotes.retain(|_, quote| quote.expires_at > now);
            if quotes.len() >= QUOTES_IN_MEMORY_MAX {
                return Err(CryptoError::Unavailable(Unavailable::Overloaded));
            }
        }
        let quote = Quote {
            id: self.new_transfer_id().as_uuid(),
            owner,
            terms,
            expires_at: Timestamp::from_micros(now.as_micros().saturating_add(QUOTE_TTL_MICROS)),
        };
        quotes.insert(quote.id, quote.clone());
        Ok(quote)
    }

    /// Turns a quote into an order: the buy or sell saga between `fiat_account` and the
    /// owner's wallet of the quote's asset. An unknown quote (or another user's) is
    /// `NOT_FOUND`; an expired one `QUOTE_EXPIRED`.
    pub async fn place_order(
        &self,
        owner: UserId,
        quote_id: Uuid,
        fiat_account: AccountId,
        key: Option<Idempotency>,
        now: Timestamp,
    ) -> Result<(CryptoOp, bool), CryptoError> {
        // The quote is taken out of the table (not just read) before its order is built, so two
        // concurrent orders under different keys cannot both buy at one quoted price. `taken`
        // keeps it so a refusal can put it back.
        let taken: Arc<std::sync::Mutex<Option<Quote>>> = Arc::default();
        let slot = Arc::clone(&taken);
        // The order's id once built: whether it was recorded decides whether the quote is used.
        let built: Arc<std::sync::Mutex<Option<TransferId>>> = Arc::default();
        let built_slot = Arc::clone(&built);
        let build = |engine: Engine, key: Option<Idempotency>| async move {
            let quote = engine
                .inner
                .crypto
                .quotes
                .remove_if(&quote_id, |_, quote| quote.owner == owner)
                .map(|(_, quote)| quote)
                .ok_or_else(|| CryptoError::Refused(ErrorCode::NotFound, format!("no quote {quote_id}")))?;
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(quote.clone());
            }
            if quote.expires_at <= now {
                return Err(CryptoError::Refused(ErrorCode::QuoteExpired, format!("quote {quote_id} has expired")));
            }
            // An unknown account is named as the account (as another user's is, below): the
            // plain `NotFound` would answer "no such wallet".
            let account = engine.account(fiat_account).await.map_err(|error| match error {
                EngineError::NotFound => {
                    CryptoError::Refused(ErrorCode::NotFound, format!("no account {fiat_account}"))
                }
                other => CryptoError::from(other),
            })?;
            if account.owner != Some(owner) {
                return Err(CryptoError::Refused(ErrorCode::NotFound, format!("no account {fiat_account}")));
            }
            let terms = quote.terms;
            if account.currency != terms.fiat_currency {
                return Err(CryptoError::Refused(
                    ErrorCode::CurrencyMismatch,
                    format!("the quote is in {}, the account in {}", terms.fiat_currency, account.currency),
                ));
            }
            let profile = engine
                .store()
                .wallet_profiles_of_owner(owner)
                .await?
                .into_iter()
                .find(|profile| profile.asset == terms.asset)
                .ok_or_else(|| {
                    CryptoError::Refused(ErrorCode::NotFound, format!("you have no {} wallet", terms.asset))
                })?;
            let created = engine.now();
            let id = engine.new_transfer_id_at(created);
            if let Ok(mut slot) = built_slot.lock() {
                *slot = Some(id);
            }
            Ok(CryptoOp {
                id,
                kind: terms.side.kind(),
                status: CryptoOpStatus::Processing,
                step: 0,
                owner,
                wallet: profile.wallet,
                asset: terms.asset,
                asset_amount: terms.crypto_amount,
                fiat_account: Some(fiat_account),
                fiat_currency: Some(terms.fiat_currency),
                fiat_amount: terms.fiat_amount,
                fee: terms.fee,
                price: Some(terms.price),
                address: None,
                tx_hash: None,
                idempotency: key,
                failure_reason: None,
                created_at: created,
                updated_at: created,
            })
        };
        let result = self.idempotent(&[CryptoOpKind::Buy, CryptoOpKind::Sell], key, build).await;
        let taken = taken.lock().ok().and_then(|mut slot| slot.take());
        let built = built.lock().ok().and_then(|mut slot| slot.take());
        if let (Err(error), Some(quote)) = (&result, taken)
            && !matches!(error, CryptoError::Failed(_, code) if !matches!(code, ErrorCode::Overloaded | ErrorCode::Quarantined))
            && quote.expires_at > now
            && self.order_moved_nothing(built).await
        {
            // Refused before any money moved (no account, wrong currency, no funds, store
            // unavailable), or failed because an actor was unavailable (`503`: its key was
            // given back for the retry): the quote may still be used, as before this attempt.
            // An order that ran, completed or failed for a reason, used it up: a quote buys
            // one order. So does one cut short while it runs (`503` from a journal that
            // refused its next record): it stays `processing` at the quoted price, and
            // recovery may still drive it forward.
            self.inner.crypto.quotes.insert(quote_id, quote);
        }
        result
    }

    /// Whether the order built as `id` (if it got that far) left nothing that could still
    /// move money: never recorded, or recorded `failed` (its legs undone). Unsure (the store
    /// unreadable) counts as not.
    async fn order_moved_nothing(&self, id: Option<TransferId>) -> bool {
        let Some(id) = id else { return true };
        match self.crypto_op(id).await {
            Ok(None) => true,
            Ok(Some(op)) => op.status == CryptoOpStatus::Failed,
            Err(_) => false,
        }
    }

    /// Runs `build`'s operation under an idempotency key (like `transfer_idempotent`): a
    /// repeat with the same fingerprint answers the operation as it stands, whatever it was.
    async fn idempotent<F, Fut>(
        &self,
        kinds: &[CryptoOpKind],
        key: Option<Idempotency>,
        build: F,
    ) -> Result<(CryptoOp, bool), CryptoError>
    where
        F: FnOnce(Engine, Option<Idempotency>) -> Fut,
        Fut: std::future::Future<Output = Result<CryptoOp, CryptoError>>,
    {
        let Some(key) = key else {
            let op = build(self.clone(), None).await?;
            return self.start_op(op, None).await.map(|op| (op, false));
        };
        // Orders and withdrawals each have their own key space; the space in the slot's key
        // keeps them apart from transfers' keys, which never hold one.
        let space = if kinds.contains(&CryptoOpKind::Withdrawal) { "withdrawal" } else { "order" };
        let claim = self.claim_key(key.scope, format!("{space} {}", key.key)).await;
        let found = async {
            let mut existing = self.journals().newest_pending(|record| match record {
                Record::CryptoOp(op)
                    if kinds.contains(&op.kind)
                        && op.idempotency.as_ref().is_some_and(|i| i.scope == key.scope && i.key == key.key) =>
                {
                    Some((**op).clone())
                }
                _ => None,
            });
            for kind in kinds {
                if existing.is_some() {
                    break;
                }
                existing =
                    self.store().crypto_op_by_idempotency(*kind, key.scope, &key.key).await?.map(|loaded| loaded.value);
            }
            if let Some(existing) = self.newest(existing).await? {
                if existing.idempotency.as_ref().is_none_or(|i| i.fingerprint != key.fingerprint) {
                    return Err(CryptoError::IdempotencyKeyReused);
                }
                return Ok(Keyed::Answered(match (existing.status, existing.failure_reason) {
                    (CryptoOpStatus::Failed, Some(code)) => Err(CryptoError::Failed(Box::new(existing), code)),
                    _ => Ok((existing, true)),
                }));
            }
            Ok(Keyed::Start(build(self.clone(), Some(key.clone())).await?))
        }
        .await;
        self.under_key(found, claim).await
    }

    /// Finishes a keyed request with what it found under its key (`claim`). A new operation
    /// takes the key to its task, which releases it once the operation's records are durable:
    /// held by the request, it would be freed by a client that went away before the task
    /// appended its first record, and a retry would start a second operation under the same
    /// key (which the store's unique index refuses at commit, stopping the journal). An answer
    /// from what is recorded (a repeat looks in the journals before the store, so it finds an
    /// operation whose records are still queued), or a refusal before anything was recorded,
    /// releases it at once.
    async fn under_key(
        &self,
        found: Result<Keyed, CryptoError>,
        claim: KeyClaim,
    ) -> Result<(CryptoOp, bool), CryptoError> {
        match found {
            Ok(Keyed::Start(op)) => self.start_op(op, Some(claim)).await.map(|op| (op, false)),
            Ok(Keyed::Answered(answer)) => {
                claim.release(true).await;
                answer
            }
            Err(error) => {
                claim.release(true).await;
                Err(error)
            }
        }
    }

    // ---- the saga --------------------------------------------------------------------------

    /// Starts a new operation; `key`, the claim of the key it runs under, is the operation's
    /// task's to release (`spawn_op_claimed`).
    async fn start_op(&self, op: CryptoOp, key: Option<KeyClaim>) -> Result<CryptoOp, CryptoError> {
        match self.admit_op(&op) {
            Ok((claim, permit)) => self.spawn_op_claimed(op, Mode::Forward, claim, permit, key).await,
            Err(error) => {
                // Refused before anything was recorded.
                if let Some(key) = key {
                    key.release(true).await;
                }
                Err(error)
            }
        }
    }

    /// Counts a withdrawal against its owner's limits and admits the operation (a place under
    /// its shard journal's admission bound and a saga permit, held until its saga ends): what
    /// it must pass before its saga runs.
    fn admit_op(&self, op: &CryptoOp) -> Result<(Claim, SagaPermit), CryptoError> {
        // A withdrawal counts against its owner's verification limits (limits.rs), checked
        // and counted before anything is held; given back if it ends `failed` (`finish`).
        let reservation = if op.kind == CryptoOpKind::Withdrawal {
            let limits = &self.inner.limits;
            let level = limits.level_of(op.owner);
            let reserved = limits.reserve(op.owner, level, op.asset, op.asset_amount, op.created_at);
            Some(reserved.map_err(|refused| CryptoError::Refused(refused.code(), refused.to_string()))?)
        } else {
            None
        };
        let permit = self.admit_saga(op.id.as_uuid()).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        let claim = self.claim(op.id).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        // From here the saga runs.
        if let Some(reservation) = reservation {
            reservation.commit();
        }
        Ok((claim, permit))
    }

    /// Drives on an operation a run left `processing` (its custodian's retry: a deposit whose
    /// wallet was unavailable, or whose run was cut short by a record the journal refused after
    /// a leg was applied). Under the operation's claim no other run moves it; its state is read
    /// again under it (a run that finished meanwhile is answered as it stands), and a credit
    /// that run applied is not applied again (`past_a_durable_credit`).
    async fn resume_cut(&self, id: TransferId) -> Result<CryptoOp, CryptoError> {
        let claim = self.claim(id).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        let permit = self.saga_permit().map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        let mut op = self.crypto_op(id).await?.ok_or(CryptoError::NotFound)?;
        if op.status != CryptoOpStatus::Processing {
            return Ok(op);
        }
        self.durable_now().await?;
        past_a_durable_credit(self, &mut op).await?;
        self.spawn_op_claimed(op, Mode::Forward, claim, permit, None).await
    }

    /// Waits until everything appended so far is durable, so the store can say which of a cut
    /// run's legs happened.
    async fn durable_now(&self) -> Result<(), CryptoError> {
        self.journals().barrier().await.map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))
    }

    /// Runs the saga of an operation already recorded (recovery; a deposit an earlier report
    /// left unfinished) as a task on a shard and waits for its answer: a saga permit, but no
    /// place under the admission bound, since the work was admitted when it was recorded.
    async fn spawn_op(&self, op: CryptoOp, mode: Mode) -> Result<CryptoOp, CryptoError> {
        let claim = self.claim(op.id).map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        let permit = self.saga_permit().map_err(|_| CryptoError::Unavailable(Unavailable::Overloaded))?;
        self.spawn_op_claimed(op, mode, claim, permit, None).await
    }

    async fn spawn_op_claimed(
        &self,
        op: CryptoOp,
        mode: Mode,
        claim: Claim,
        permit: SagaPermit,
        key: Option<KeyClaim>,
    ) -> Result<CryptoOp, CryptoError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let id = op.id;
        // What `admit_op` counted, should no thread take the saga (`!spawned` below).
        let unstarted = op.clone();
        let thread = self.inner.shared.thread_of(id.as_uuid());
        let spawned = self.inner.shared.runtime.spawn_on(thread, async move {
            let result = drive(&inner, op, mode).await;
            drop(claim);
            drop(permit);
            // An outcome the caller hears is durable; any other end may leave records queued.
            let settled = matches!(result, Ok(_) | Err(CryptoError::Failed(..)));
            let _ = sender.send(result);
            if let Some(key) = key {
                key.release(settled).await;
            }
        });
        if !spawned {
            give_back_unstarted(&self.inner, &unstarted);
            return Err(CryptoError::Unavailable(Unavailable::Overloaded));
        }
        receiver.await.map_err(|_| CryptoError::Internal("crypto saga ended without an answer".to_owned()))?
    }

    /// Finishes what the last run left of crypto operations (see the module's comment).
    pub(crate) async fn recover_crypto(&self) -> Result<(usize, usize), StoreError> {
        let store = self.store().clone();
        let (mut forward, mut undone) = (0, 0);
        for mut op in store.unfinished_crypto_ops().await? {
            if op.status == CryptoOpStatus::Pending {
                continue;
            }
            let legs = op.legs();
            past_a_durable_credit(self, &mut op).await?;
            let goes_forward = op.kind == CryptoOpKind::Deposit
                || op.step > op.pivot()
                || (op.kind == CryptoOpKind::Withdrawal && op.step >= 1 && op.tx_hash.is_some());
            let mode = if goes_forward {
                forward += 1;
                Mode::Forward
            } else {
                undone += 1;
                // The uncertain leg may have placed a hold: undo it too (a release of a hold
                // that does not exist is a no-op).
                let done = (op.step + 1).min(legs.len() as u32);
                Mode::UndoFrom(done, ErrorCode::Internal)
            };
            match self.spawn_op_for_recovery(op, mode).await {
                // Undone as intended: recorded `failed`.
                Ok(_) | Err(CryptoError::Failed(..)) => {}
                Err(error) => {
                    tracing::error!(?error, "a recovered crypto operation did not finish; it stays for the next start")
                }
            }
        }
        Ok((forward, undone))
    }

    async fn spawn_op_for_recovery(&self, op: CryptoOp, mode: Mode) -> Result<CryptoOp, CryptoError> {
        loop {
            match self.spawn_op(op.clone(), mode).await {
                Err(CryptoError::Unavailable(Unavailable::Overloaded)) if !self.inner.shared.journals.has_failed() => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }
}

/// After a run cut short (a crash, or a record the journal refused after its leg was
/// applied) at most the leg at `op.step` is uncertain: its record comes after it. Holds, posts
/// and releases repeat as no-ops; a credit does not (an account or wallet loaded from the
/// store, or one credited eight times since, no longer knows it), so a credit whose posting is
/// durable is counted done. Everything the run appended must be durable first (at start-up it
/// is; `Engine::durable_now` on a live path).
/// A chain transaction's hash as Tally keeps it: a hexadecimal hash (64 hex digits, with or
/// without `0x`: Bitcoin's and Ethereum's) in lower case, since `0x5C50…` and `0x5c50…` name
/// the same transaction and a deposit is credited once per hash. Anything else is kept as
/// sent: other chains' hashes (base58, for one) are case-sensitive.
pub fn canonical_tx_hash(tx_hash: String) -> String {
    if hex_digits(&tx_hash).is_some() { tx_hash.to_ascii_lowercase() } else { tx_hash }
}

/// The 64 hex digits of a hexadecimal chain hash, without its `0x` if it has one; `None` for
/// any other hash.
fn hex_digits(tx_hash: &str) -> Option<&str> {
    let digits = tx_hash.strip_prefix("0x").or_else(|| tx_hash.strip_prefix("0X")).unwrap_or(tx_hash);
    (digits.len() == 64 && digits.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(digits)
}

/// Every spelling under which a canonical hash (`canonical_tx_hash`) may have been stored: a
/// hexadecimal hash with and without `0x`, since custodians differ on the prefix (Ethereum's
/// tools write it, Bitcoin's do not) and both name one transaction. A hash is kept as it was
/// first reported; a repeat in the other spelling is found under either. Any other hash: itself.
pub fn tx_hash_spellings(canonical: &str) -> Vec<String> {
    match hex_digits(canonical) {
        Some(digits) => vec![digits.to_owned(), format!("0x{digits}")],
        None => vec![canonical.to_owned()],
    }
}

async fn past_a_durable_credit(engine: &Engine, op: &mut CryptoOp) -> Result<(), StoreError> {
    let legs = op.legs();
    if let Some(leg) = legs.get(op.step as usize)
        && leg.is_credit()
        && credit_happened(engine, op, leg).await?
    {
        op.step += 1;
    }
    Ok(())
}

/// Did this credit leg of `op` happen? Its posting says.
async fn credit_happened(engine: &Engine, op: &CryptoOp, leg: &Leg) -> Result<bool, StoreError> {
    Ok(match leg {
        Leg::Account { account, .. } => engine
            .store()
            .postings_of_transfer(op.id)
            .await?
            .iter()
            .any(|posting| posting.account == *account && posting.direction == Direction::Credit),
        Leg::Wallet { wallet, .. } => engine
            .store()
            .wallet_postings_of_transfer(op.id)
            .await?
            .iter()
            .any(|posting| posting.wallet == *wallet && posting.direction == Direction::Credit),
    })
}

/// What a keyed request found under its key: an answer from what is recorded, or a new
/// operation to start (which then holds the key until it is durable).
enum Keyed {
    Answered(Result<(CryptoOp, bool), CryptoError>),
    Start(CryptoOp),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Run the legs from the operation's step.
    Forward,
    /// The custodian failed a pending withdrawal (or a code says why): release and fail.
    Undo(Option<ErrorCode>),
    /// Recovery: undo the first n legs and fail with the code.
    UndoFrom(u32, ErrorCode),
}

enum LegError {
    Refused(ErrorCode),
    Unavailable(Unavailable),
}

/// Sends one leg of operation `op`; its record goes to the operation's journal, with the
/// operation's own records (see `journals` in `tally_persistence::journal`).
async fn send_leg(inner: &EngineInner, op: TransferId, leg: Leg) -> Result<(), LegError> {
    let journal = Some(inner.shared.shard_of(op.as_uuid()));
    match leg {
        Leg::Account { account, command } => match inner.accounts.command_on(account, command, journal).await {
            Ok(_) => Ok(()),
            Err(CallError::NotFound) => Err(LegError::Refused(ErrorCode::NotFound)),
            Err(CallError::Rejected(rejection)) => Err(LegError::Refused(rejection.code())),
            Err(CallError::Unavailable(unavailable)) => Err(LegError::Unavailable(unavailable)),
        },
        Leg::Wallet { wallet, command } => match inner.wallets.command_on(wallet, command, journal).await {
            Ok(_) => Ok(()),
            Err(CallError::NotFound) => Err(LegError::Refused(ErrorCode::NotFound)),
            Err(CallError::Rejected(rejection)) => {
                Err(LegError::Refused(<Wallet as crate::entity::Entity>::rejection_code(&rejection)))
            }
            Err(CallError::Unavailable(unavailable)) => Err(LegError::Unavailable(unavailable)),
        },
    }
}

impl driver::StepFailure for LegError {
    type Refusal = ErrorCode;

    fn refusal(self) -> Option<ErrorCode> {
        match self {
            LegError::Refused(code) => Some(code),
            LegError::Unavailable(_) => None,
        }
    }
}

/// A leg that cannot be refused (a post, a release, a system account's credit): retried
/// while its actor is unavailable (`driver::forward`).
async fn forward_leg(inner: &EngineInner, op: &CryptoOp, leg: Leg) -> Result<(), CryptoError> {
    driver::forward(inner, || send_leg(inner, op.id, leg)).await.map_err(|error| match error {
        NotApplied::Halted(halt) => halt.into(),
        NotApplied::Refused(code) => {
            tracing::error!(op = %op.id, ?leg, ?code, "forward-only crypto leg refused");
            CryptoError::Internal(format!("forward-only leg refused: {code:?}"))
        }
    })
}

/// A new withdrawal (step 0, `processing`: nothing of it recorded yet) that `admit_op` counted
/// against its owner's limits, ended before its first record (refused by a full journal) or
/// before any thread took it: it moved nothing, and its amount goes back. A resumed one
/// (confirmation, recovery) is past step 0 or recorded, and is left alone.
fn give_back_unstarted(inner: &EngineInner, op: &CryptoOp) {
    if op.kind == CryptoOpKind::Withdrawal && op.status == CryptoOpStatus::Processing && op.step == 0 {
        inner.limits.give_back(op.owner, op.asset, op.asset_amount, op.created_at);
    }
}

fn record(inner: &EngineInner, op: &CryptoOp) -> Result<(), CryptoError> {
    let journal = inner.shared.journal_of(op.id.as_uuid());
    driver::record(journal, Record::CryptoOp(Box::new(op.clone()))).map_err(CryptoError::from)
}

/// Records the operation's state and waits until it (and every record before it) is durable.
async fn finish(inner: &EngineInner, op: &mut CryptoOp) -> Result<(), CryptoError> {
    op.updated_at = inner.clock.now();
    let journal = inner.shared.journal_of(op.id.as_uuid());
    let outcome = &*op;
    let appended = driver::append_final(journal, || Record::CryptoOp(Box::new(outcome.clone())), None).await?;
    if op.kind == CryptoOpKind::Withdrawal && op.status == CryptoOpStatus::Failed {
        // A failed withdrawal moved nothing: its amount no longer counts against the limits.
        // Once its outcome is appended: before, a refused append returned the amount of a
        // withdrawal still holding it.
        inner.limits.give_back(op.owner, op.asset, op.asset_amount, op.created_at);
    }
    appended.durable().await.map_err(CryptoError::from)
}

async fn compensate(
    inner: &EngineInner,
    mut op: CryptoOp,
    done: u32,
    code: Option<ErrorCode>,
) -> Result<CryptoOp, CryptoError> {
    driver::compensate(inner, op.undo_legs(done), |undo| forward_leg(inner, &op, undo)).await?;
    op.status = CryptoOpStatus::Failed;
    op.failure_reason = code;
    finish(inner, &mut op).await?;
    Ok(op)
}

async fn drive(inner: &EngineInner, mut op: CryptoOp, mode: Mode) -> Result<CryptoOp, CryptoError> {
    match mode {
        Mode::Undo(code) => {
            // Recorded first as `processing` with no leg counted as done: should the process
            // die before the release, recovery undoes it (it never drives a step-0 withdrawal
            // forward), and a late `confirmed` finds it no longer pending.
            let done = op.step;
            op.step = 0;
            record(inner, &op)?;
            return compensate(inner, op, done, code).await;
        }
        Mode::UndoFrom(done, code) => {
            let failed = compensate(inner, op, done, Some(code)).await?;
            return Err(CryptoError::Failed(Box::new(failed), code));
        }
        Mode::Forward => {}
    }
    let legs = op.legs();
    // Recorded before any leg runs: the operation (a deposit's tx_hash, a confirmation's
    // `processing`) is in the journal before the money it moves, so recovery always knows it.
    if let Err(error) = record(inner, &op) {
        give_back_unstarted(inner, &op);
        return Err(error);
    }
    loop {
        if Some(op.step) == op.pauses_after() && op.tx_hash.is_none() {
            op.status = CryptoOpStatus::Pending;
            finish(inner, &mut op).await?;
            return Ok(op);
        }
        let Some(leg) = legs.get(op.step as usize).copied() else {
            op.status = CryptoOpStatus::Completed;
            finish(inner, &mut op).await?;
            inner.sagas_completed.fetch_add(1, Ordering::Relaxed);
            return Ok(op);
        };
        if op.step <= op.pivot() {
            match send_leg(inner, op.id, leg).await {
                Ok(()) => {}
                Err(LegError::Unavailable(unavailable)) if op.kind == CryptoOpKind::Deposit => {
                    // Left `processing`: the custodian's retry resumes it (module comment).
                    finish(inner, &mut op).await?;
                    return Err(CryptoError::Unavailable(unavailable));
                }
                Err(error) => {
                    let code = match error {
                        LegError::Refused(code) => code,
                        LegError::Unavailable(unavailable) => {
                            // Only a client's request runs these legs forward (recovery
                            // undoes an operation at or before its pivot), and it hears `503`:
                            // its key goes back, so a retry runs afresh instead of replaying
                            // the `503` for ever (as a transfer's does, `saga::give_key_back`).
                            op.idempotency = None;
                            match unavailable {
                                Unavailable::Quarantined => ErrorCode::Quarantined,
                                _ => ErrorCode::Overloaded,
                            }
                        }
                    };
                    let step = op.step;
                    let failed = compensate(inner, op, step, Some(code)).await?;
                    return Err(CryptoError::Failed(Box::new(failed), code));
                }
            }
        } else {
            forward_leg(inner, &op, leg).await?;
        }
        op.step += 1;
        op.updated_at = inner.clock.now();
        record(inner, &op)?;
    }
}
