//! The `Engine`: the facade the HTTP layer, the benchmarks and the tests use. It owns the
//! actix shards, the registries, the journal, and the admission bounds, and runs sagas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rust_decimal::Decimal;
use tally_engine::system_accounts;
use tally_engine::wallet::WalletRejection;
use tally_engine::{
    Account, AccountCommand, AccountId, AccountKind, AccountRejection, AuditRecord, CreateTransferRejection, Currency,
    ErrorCode, Record, StatusAction, Transfer, TransferId, TransferKind, TransferRequest, TransferStatus,
    TransferTypeSettings, TransitionRejection, UserId, Wallet, WalletId,
};
use tally_persistence::{JournalConfig, Journals, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::IdMap;
use crate::clock::{Clock, IdSource, RandomIds, SystemClock};
use crate::entity::ActorKind;
use crate::faults::FaultInjector;
use crate::health::{HealthReport, KindStats};
use crate::idempotency::KeyClaim;
use crate::registry::{CallError, Registry, Unavailable};
use crate::runtime::{Placement, RunToEnd, Runtime};
use crate::saga::{self, Intent};
pub use crate::shared::ActorConfig;
use crate::shared::Shared;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub actors: ActorConfig,
    pub journal: JournalConfig,
    /// Sagas running at once. Each may append up to nine records after admission (an FX
    /// transfer with a fee: its states, both legs, the fee and the clearing legs), so the
    /// journal's gap between admission and hard bound (300,000) covers 32,768 × 9. A saga's
    /// records all go to one journal, so the bound holds per journal.
    pub sagas_in_flight_max: usize,
    /// Pending transfers past their deadline wait for `Engine::release_expiries` before they
    /// expire. The server sets it: an expiry gives its amount back to the verification limits'
    /// usage, which the server installs from the store after the engine has started; one that
    /// ran before would be given back to nothing and, if its record was not yet durable when
    /// the usage was read, stay counted as used for the rest of the month.
    pub hold_expiries: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            actors: ActorConfig::default(),
            journal: JournalConfig::default(),
            sagas_in_flight_max: 32_768,
            hold_expiries: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("threads: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal stopped during start-up")]
    Journal,
}

/// Why a transfer, or an action on one, did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error("rejected: {0}")]
    Rejected(CreateTransferRejection),
    #[error("{0}")]
    Transition(TransitionRejection),
    /// A transfer with this id is already running.
    #[error("a transfer with this id is in flight")]
    Duplicate,
    /// The idempotency key was used before with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("unavailable: {0:?}")]
    Unavailable(Unavailable),
    #[error("internal: {0}")]
    Internal(String),
    /// The amount does not fit the initiating user's verification limits (`limits.rs`).
    #[error("verification limit: {0}")]
    Limit(tally_engine::limits::LimitRejection),
}

impl TransferError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TransferError::Rejected(rejection) => rejection.code(),
            TransferError::Transition(rejection) => rejection.code(),
            TransferError::Duplicate => ErrorCode::Conflict,
            TransferError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            TransferError::Unavailable(Unavailable::Quarantined) => ErrorCode::Quarantined,
            TransferError::Unavailable(_) => ErrorCode::Overloaded,
            TransferError::Internal(_) => ErrorCode::Internal,
            TransferError::Limit(rejection) => rejection.code(),
        }
    }
}

/// Why an account or wallet operation did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("not found")]
    NotFound,
    #[error("rejected: {0}")]
    Rejected(AccountRejection),
    #[error("wallet rejected: {0}")]
    WalletRejected(WalletRejection),
    #[error("already exists")]
    Conflict,
    #[error("unavailable: {0:?}")]
    Unavailable(Unavailable),
    #[error("internal: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotFound => ErrorCode::NotFound,
            EngineError::Rejected(rejection) => rejection.code(),
            EngineError::WalletRejected(rejection) => <Wallet as crate::entity::Entity>::rejection_code(rejection),
            EngineError::Conflict => ErrorCode::Conflict,
            EngineError::Unavailable(Unavailable::Quarantined) => ErrorCode::Quarantined,
            EngineError::Unavailable(_) => ErrorCode::Overloaded,
            EngineError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl<R> From<CallError<R>> for EngineError
where
    EngineError: From<R>,
{
    fn from(error: CallError<R>) -> Self {
        match error {
            CallError::NotFound => EngineError::NotFound,
            CallError::Rejected(rejection) => EngineError::from(rejection),
            CallError::Unavailable(unavailable) => EngineError::Unavailable(unavailable),
        }
    }
}

impl From<AccountRejection> for EngineError {
    fn from(rejection: AccountRejection) -> Self {
        EngineError::Rejected(rejection)
    }
}

impl From<WalletRejection> for EngineError {
    fn from(rejection: WalletRejection) -> Self {
        EngineError::WalletRejected(rejection)
    }
}

pub(crate) struct EngineInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) accounts: Arc<Registry<Account>>,
    pub(crate) wallets: Arc<Registry<Wallet>>,
    pub(crate) clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    saga_permits: Arc<Semaphore>,
    /// The permits `saga_permits` started with: when all are back, no saga is running.
    sagas_in_flight_max: usize,
    /// Idempotency keys (and deposits' chain transactions) being worked on right now: a
    /// duplicate waits for the first request and then finds what it recorded.
    pub(crate) idempotency_claims: DashMap<(uuid::Uuid, Arc<str>), Arc<tokio::sync::Mutex<()>>>,
    /// Every idempotency key the store holds or a request has claimed (`idempotency.rs`).
    pub(crate) keys: crate::idempotency::KeyFilter,
    /// Transfers a saga is working on right now; a second saga for the same id is refused.
    /// With the shard of the journal each one's records go to (`saga::journal_of`;
    /// `UNCHOSEN` until step 1 picks it).
    pub(crate) claims: IdMap<TransferId, u16>,
    transfer_types: RwLock<HashMap<TransferKind, TransferTypeSettings>>,
    /// FX rates and fee rules in memory (`pricing.rs`).
    pub(crate) pricing: crate::pricing::Pricing,
    pub(crate) shutting_down: AtomicBool,
    ready: AtomicBool,
    /// Expiries wait while set (`EngineConfig::hold_expiries`, `Engine::release_expiries`).
    pub(crate) expiries_held: AtomicBool,
    pub(crate) sagas_completed: AtomicU64,
    pub(crate) sagas_paused: AtomicU64,
    pub(crate) sagas_failed: AtomicU64,
    pub(crate) sagas_compensated: AtomicU64,
    /// AML rules and velocity windows (`aml.rs`).
    pub(crate) aml: crate::aml::Aml,
    /// The quotes of the crypto flows (`crypto.rs`).
    pub(crate) crypto: crate::crypto::CryptoState,
    /// Verification limits and usage (`limits.rs`); configured by `Limits::install`.
    pub(crate) limits: crate::limits::Limits,
    /// Pending transfers by deadline, for the expiry sweeper (`expiry.rs`).
    pub(crate) expiry: crate::expiry::ExpiryQueue,
}

/// A cheap, clonable handle to a running engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A UUIDv7 of time `at` (see `Engine::new_id_at`) with the variable bits of `random`.
pub(crate) fn time_ordered_id(at: tally_engine::Timestamp, random: uuid::Uuid) -> uuid::Uuid {
    let micros = u64::try_from(at.as_micros()).unwrap_or(0);
    let millis = micros / 1_000;
    let sub_millis = (micros % 1_000) as u16;
    let random = random.as_u128();
    let bits = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7_u128 << 76)
        | (u128::from(sub_millis & 0x0FFF) << 64)
        | (0x2_u128 << 62)
        | (random & ((1_u128 << 62) - 1));
    uuid::Uuid::from_u128(bits)
}

/// Starts each shard's journal writer on the thread that serves the shard, on connections it
/// opens there (so their I/O never depends on another thread), and waits until they run.
async fn start_journal_writers(
    runtime: &Arc<Runtime>,
    store: &Arc<dyn Store>,
    journals: &Journals,
    placement: Placement,
) -> Result<(), StartError> {
    let mut started = Vec::with_capacity(journals.shards());
    for journal in journals.iter() {
        let journal = journal.clone();
        let store = Arc::clone(store);
        let (ready, answer) = oneshot::channel();
        let thread = placement.thread_of_shard(usize::from(journal.shard()));
        let spawned = runtime.spawn_on(thread, async move {
            match store.journal_writers(journal.shard()).await {
                Ok(writers) => {
                    let _ = ready.send(Ok(()));
                    journal.run_writer(writers).await;
                }
                Err(error) => {
                    // No writer: the journal fails its appends and its waiters.
                    journal.run_writer(Vec::new()).await;
                    let _ = ready.send(Err(error));
                }
            }
        });
        if !spawned {
            return Err(StartError::Journal);
        }
        started.push(answer);
    }
    for answer in started {
        answer.await.map_err(|_| StartError::Journal)??;
    }
    Ok(())
}

/// A running saga's hold on the engine, given back when the saga ends: one of the
/// `sagas_in_flight_max` permits and, for new work, a place under its shard journal's
/// admission bound (`Engine::admit_saga`).
pub(crate) struct SagaPermit {
    _admitted: Option<tally_persistence::Admitted>,
    _permit: OwnedSemaphorePermit,
}

/// Removes a transfer's claim when the work on it ends, however it ends.
pub(crate) struct Claim {
    inner: Arc<EngineInner>,
    id: TransferId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.inner.claims.remove(&self.id);
    }
}

/// An admin's decision on a pending transfer (`Engine::decide_pending_audited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingDecision {
    Execute,
    Reject,
    Cancel,
}

/// An actor an operator may release from quarantine (`Engine::release_quarantine_audited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantinedActor {
    Account(AccountId),
    Wallet(WalletId),
}

impl Engine {
    /// Starts the engine on `store` with the production clock and ids.
    pub async fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, StartError> {
        Engine::start_with(store, config, Arc::new(SystemClock), Arc::new(RandomIds)).await
    }

    /// Starts the engine with a given clock and id source (tests and simulations), on a
    /// runtime of its own with `config.actors.shards` threads.
    pub async fn start_with(
        store: Arc<dyn Store>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Engine, StartError> {
        let runtime = Runtime::start(config.actors.shards)?;
        Engine::start_on(runtime, store, config, clock, ids).await
    }

    /// Starts the engine on `runtime`, whose threads it shares with whatever else runs there
    /// (`tally serve`'s HTTP listeners). Shutting the engine down stops the runtime.
    pub async fn start_on(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Engine, StartError> {
        let threads = runtime.threads();
        // One shard per thread: a shard is the unit that owns actors and a journal, and one
        // thread serves each (DESIGN.md §2).
        let wanted = u16::try_from(threads).unwrap_or(u16::MAX);
        let committed_seqs = store.open_shards(wanted).await?;
        let aml = crate::aml::Aml::load(store.as_ref()).await?;
        let booking_clock = Arc::clone(&clock);
        let journals = Journals::new(&committed_seqs, config.journal.clone(), Arc::new(move || booking_clock.now()));
        journals.book_no_earlier_than(store.last_booked_at().await?);
        let placement = Placement::new(journals.shards(), threads);
        start_journal_writers(&runtime, &store, &journals, placement).await?;
        let shared = Arc::new(Shared {
            store,
            journals,
            runtime,
            placement,
            faults: Arc::new(FaultInjector::default()),
            stats: std::array::from_fn(|_| KindStats::default()),
            config: config.actors.clone(),
            started: Instant::now(),
        });
        let (pricing, stored_types) = crate::pricing::Pricing::load(shared.store.as_ref()).await?;
        let mut transfer_types = HashMap::from([
            (TransferKind::Internal, TransferTypeSettings::internal_default()),
            (TransferKind::External, TransferTypeSettings::external_default()),
            (TransferKind::AdminCredit, TransferTypeSettings::adjustment_default()),
            (TransferKind::AdminDebit, TransferTypeSettings::adjustment_default()),
        ]);
        // An admin's stored settings replace the defaults.
        transfer_types.extend(stored_types);
        let inner = Arc::new(EngineInner {
            accounts: Registry::new(Arc::clone(&shared)),
            wallets: Registry::new(Arc::clone(&shared)),
            shared,
            clock,
            ids,
            saga_permits: Arc::new(Semaphore::new(config.sagas_in_flight_max)),
            sagas_in_flight_max: config.sagas_in_flight_max,
            idempotency_claims: DashMap::new(),
            keys: crate::idempotency::KeyFilter::new(),
            claims: IdMap::default(),
            transfer_types: RwLock::new(transfer_types),
            pricing,
            shutting_down: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            expiries_held: AtomicBool::new(config.hold_expiries),
            sagas_completed: AtomicU64::new(0),
            sagas_paused: AtomicU64::new(0),
            sagas_failed: AtomicU64::new(0),
            sagas_compensated: AtomicU64::new(0),
            aml,
            crypto: crate::crypto::CryptoState::default(),
            limits: crate::limits::Limits::default(),
            expiry: crate::expiry::ExpiryQueue::default(),
        });
        let engine = Engine { inner };
        engine.ensure_system_accounts().await?;
        engine.start_passivation_sweeper();
        engine.start_expiry_sweeper();
        engine.recover().await?;
        let keys = engine.load_keys().await?;
        tracing::info!(keys, "idempotency keys loaded into the filter");
        Ok(engine)
    }

    async fn ensure_system_accounts(&self) -> Result<(), StartError> {
        let shared = &self.inner.shared;
        let mut acks = Vec::new();
        for account in system_accounts::all_system_accounts(self.inner.clock.now()) {
            if shared.store.load_account(account.id).await?.is_none() {
                let journal = shared.journal_of(account.id.as_uuid());
                let (_, ack) =
                    journal.append_acked(Record::AccountOpened(Box::new(account))).map_err(|_| StartError::Journal)?;
                acks.push(ack);
            }
        }
        for ack in acks {
            ack.wait().await.map_err(|_| StartError::Journal)?;
        }
        Ok(())
    }

    fn start_passivation_sweeper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.shared.config.passivation_sweep_interval;
        self.inner.shared.runtime.spawn_on(0, async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                inner.accounts.sweep_idle();
                inner.wallets.sweep_idle();
            }
        });
    }

    pub fn now(&self) -> tally_engine::Timestamp {
        self.inner.clock.now()
    }

    pub fn new_transfer_id(&self) -> TransferId {
        TransferId::from_uuid(self.new_id_at(self.inner.clock.now()))
    }

    /// A new id for a transfer created at `at`. Made from the same instant as the transfer's
    /// `created_at`, ids order exactly as (created_at, id) does, which the listings rely on to
    /// page newest first by the key alone.
    pub fn new_transfer_id_at(&self, at: tally_engine::Timestamp) -> TransferId {
        TransferId::from_uuid(self.new_id_at(at))
    }

    /// A new id ordered by `at`: a UUIDv7 whose time fields are `at` (milliseconds, then the
    /// microseconds within it in the 12 bits UUIDv7 leaves for sub-millisecond order, RFC
    /// 9562 §6.2 method 3) and whose remaining bits come from the id source. Ids made at the
    /// creation time of what they name sort as that time does, so a table keyed by them grows
    /// at its right edge, and the primary key alone pages a listing newest first.
    pub fn new_id_at(&self, at: tally_engine::Timestamp) -> uuid::Uuid {
        time_ordered_id(at, self.inner.ids.next_uuid())
    }

    pub fn faults(&self) -> &FaultInjector {
        &self.inner.shared.faults
    }

    /// How many shards this engine serves (one journal each).
    pub fn shards(&self) -> usize {
        self.inner.shared.placement.shards()
    }

    /// The shard of the entity (or the saga, keyed by its source) whose id is `id`: its
    /// records, and a saga's, go to that shard's journal.
    pub fn shard_of(&self, id: uuid::Uuid) -> u16 {
        self.inner.shared.shard_of(id)
    }

    /// The runtime thread that serves `id`'s shard (where its actor lives, and where a saga
    /// keyed to it runs).
    pub fn thread_of(&self, id: uuid::Uuid) -> usize {
        self.inner.shared.thread_of(id)
    }

    /// Every shard's journal.
    pub fn journals(&self) -> &Journals {
        &self.inner.shared.journals
    }

    /// The runtime the engine runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.shared.runtime
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.shared.store
    }

    pub fn accounts(&self) -> &Arc<Registry<Account>> {
        &self.inner.accounts
    }

    pub fn wallets(&self) -> &Arc<Registry<Wallet>> {
        &self.inner.wallets
    }

    /// Admits new work whose records go to the journal of the shard keyed by `id` (a saga's
    /// source, an account being opened): refused while that journal is past its admission
    /// bound, or the engine is shutting down.
    pub(crate) fn admit(&self, id: uuid::Uuid) -> Result<(), Unavailable> {
        self.admit_new_work().map_err(|_| Unavailable::Overloaded)?;
        self.inner.shared.journal_of(id).admit().map_err(|_| Unavailable::Overloaded)
    }

    /// Refuses new work (`Overloaded`) once shutdown has begun.
    fn admit_new_work(&self) -> Result<(), TransferError> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(TransferError::Unavailable(Unavailable::Overloaded));
        }
        Ok(())
    }

    // ---- accounts -------------------------------------------------------------------------

    /// Opens a user account. Returns once the opening is durable.
    pub async fn open_account(
        &self,
        owner: UserId,
        currency: Currency,
        credit_limit: Decimal,
    ) -> Result<Account, EngineError> {
        self.open_account_audited(owner, currency, credit_limit, None).await
    }

    /// `open_account` for an admin: `audit` is appended in one group with the opening, so one
    /// batch transaction commits both (docs/audit.md). The account's id is chosen here, so
    /// the record's target id is set to it.
    pub async fn open_account_audited(
        &self,
        owner: UserId,
        currency: Currency,
        credit_limit: Decimal,
        audit: Option<AuditRecord>,
    ) -> Result<Account, EngineError> {
        if credit_limit.is_sign_negative() {
            return Err(EngineError::Rejected(AccountRejection::NegativeCreditLimit));
        }
        let now = self.inner.clock.now();
        let id = AccountId::from_uuid(self.new_id_at(now));
        self.admit(id.as_uuid()).map_err(EngineError::Unavailable)?;
        let account = Account::open(id, Some(owner), currency, AccountKind::User, credit_limit, now);
        let journal = self.inner.shared.journal_of(id.as_uuid());
        let opening = Record::AccountOpened(Box::new(account.clone()));
        let appended = match audit {
            None => journal.append_acked(opening),
            Some(mut audit) => {
                audit.target_id = Some(id.to_string());
                journal.append_group_positioned(vec![opening, Record::Audit(Box::new(audit))])
            }
        };
        let (opened, ack) = appended.map_err(|_| EngineError::Unavailable(Unavailable::Overloaded))?;
        if !self.inner.accounts.insert_new(account.clone(), opened) {
            return Err(EngineError::Conflict);
        }
        ack.wait().await.map_err(|_| EngineError::Internal("journal stopped".to_owned()))?;
        Ok(account)
    }

    /// The account as its actor sees it now.
    pub async fn account(&self, id: AccountId) -> Result<Account, EngineError> {
        Ok(self.inner.accounts.read(id).await?)
    }

    /// Blocks, unblocks or closes an account. Returns once the change is durable.
    pub async fn set_account_status(&self, id: AccountId, action: StatusAction) -> Result<Account, EngineError> {
        self.set_account_status_audited(id, action, None).await
    }

    /// `set_account_status` for an admin: `audit` is appended in one group with the status
    /// change (one batch transaction commits both). A status the account already has changes
    /// nothing, yet the request is answered as done, so its record is committed alone.
    pub async fn set_account_status_audited(
        &self,
        id: AccountId,
        action: StatusAction,
        audit: Option<AuditRecord>,
    ) -> Result<Account, EngineError> {
        self.admit(id.as_uuid()).map_err(EngineError::Unavailable)?;
        match audit {
            None => {
                self.inner.accounts.command(id, AccountCommand::SetStatus { action }).await?;
            }
            Some(audit) => {
                let changed = self
                    .inner
                    .accounts
                    .command_audited(id, AccountCommand::SetStatus { action }, audit.clone())
                    .await?;
                if changed.is_none() {
                    self.audit_alone(id.as_uuid(), audit).await?;
                }
            }
        }
        self.durable().await?;
        self.account(id).await
    }

    pub async fn set_credit_limit(&self, id: AccountId, credit_limit: Decimal) -> Result<Account, EngineError> {
        self.admit(id.as_uuid()).map_err(EngineError::Unavailable)?;
        self.inner.accounts.command(id, AccountCommand::SetCreditLimit { credit_limit }).await?;
        self.durable().await?;
        self.account(id).await
    }

    /// Commits an admin's audit record on its own, in the journal of the shard keyed by `key`
    /// (what the request was about), and waits until it is durable: for a request answered as
    /// done that changed nothing (an idempotent replay, a status already set).
    pub(crate) async fn audit_alone(&self, key: uuid::Uuid, audit: AuditRecord) -> Result<(), EngineError> {
        let journal = self.inner.shared.journal_of(key);
        let ack = journal
            .append_group_acked(vec![Record::Audit(Box::new(audit))])
            .map_err(|_| EngineError::Unavailable(Unavailable::Overloaded))?;
        ack.wait().await.map_err(|_| EngineError::Internal("journal stopped".to_owned()))
    }

    /// Waits until every record appended so far, in every journal, is durable.
    async fn durable(&self) -> Result<(), EngineError> {
        self.inner.shared.journals.barrier().await.map_err(|_| EngineError::Internal("journal stopped".to_owned()))
    }

    // ---- wallets --------------------------------------------------------------------------

    pub async fn open_wallet(&self, owner: UserId) -> Result<Wallet, EngineError> {
        let now = self.inner.clock.now();
        let wallet = Wallet::open(WalletId::from_uuid(self.new_id_at(now)), owner, now);
        self.admit(wallet.id.as_uuid()).map_err(EngineError::Unavailable)?;
        let (opened, ack) = self
            .inner
            .shared
            .journal_of(wallet.id.as_uuid())
            .append_acked(Record::WalletOpened(Box::new(wallet.clone())))
            .map_err(|_| EngineError::Unavailable(Unavailable::Overloaded))?;
        if !self.inner.wallets.insert_new(wallet.clone(), opened) {
            return Err(EngineError::Conflict);
        }
        ack.wait().await.map_err(|_| EngineError::Internal("journal stopped".to_owned()))?;
        Ok(wallet)
    }

    pub async fn wallet(&self, id: WalletId) -> Result<Wallet, EngineError> {
        Ok(self.inner.wallets.read(id).await?)
    }

    // ---- transfer types -------------------------------------------------------------------

    pub fn transfer_type(&self, kind: TransferKind) -> TransferTypeSettings {
        let types = self.inner.transfer_types.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        types.get(&kind).cloned().unwrap_or_else(TransferTypeSettings::internal_default)
    }

    pub fn set_transfer_type(&self, kind: TransferKind, settings: TransferTypeSettings) {
        let mut types = self.inner.transfer_types.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        types.insert(kind, settings);
    }

    // ---- transfers ------------------------------------------------------------------------

    /// An admin credit or debit of `account` against the settlement account of its currency.
    pub async fn adjust(
        &self,
        kind: TransferKind,
        account: AccountId,
        amount: Decimal,
        reference: Option<String>,
        description: Option<String>,
        initiated_by: Option<UserId>,
    ) -> Result<Transfer, TransferError> {
        let currency = match self.account(account).await {
            Ok(account) => account.currency,
            // The adjusted account is the destination of a credit and the source of a debit.
            Err(EngineError::NotFound) if kind == TransferKind::AdminDebit => {
                return Err(TransferError::Rejected(CreateTransferRejection::SourceNotFound));
            }
            Err(EngineError::NotFound) => {
                return Err(TransferError::Rejected(CreateTransferRejection::DestinationNotFound));
            }
            Err(EngineError::Unavailable(unavailable)) => return Err(TransferError::Unavailable(unavailable)),
            Err(other) => return Err(TransferError::Internal(other.to_string())),
        };
        let settlement = system_accounts::settlement(currency);
        let (source, destination) = match kind {
            TransferKind::AdminCredit => (settlement, account),
            TransferKind::AdminDebit => (account, settlement),
            other => return Err(TransferError::Internal(format!("{other:?} is not an adjustment"))),
        };
        let now = self.now();
        self.transfer(TransferRequest {
            id: self.new_transfer_id_at(now),
            kind,
            source,
            destination,
            amount,
            currency,
            fee: Decimal::ZERO,
            reference: reference.map(Into::into),
            description: description.map(Into::into),
            beneficiary: None,
            initiated_by,
            created_at: now,
            metadata: Default::default(),
        })
        .await
    }

    /// An admin executes a pending transfer: the saga resumes at step 3.
    pub async fn execute(&self, id: TransferId) -> Result<Transfer, TransferError> {
        self.resume(id, Intent::Execute, false, None).await
    }

    /// An admin rejects a pending transfer: the hold is released.
    pub async fn reject(&self, id: TransferId) -> Result<Transfer, TransferError> {
        self.resume(id, Intent::Undo { outcome: TransferStatus::Rejected }, false, None).await
    }

    /// The owner or an admin cancels a pending transfer: the hold is released.
    pub async fn cancel(&self, id: TransferId) -> Result<Transfer, TransferError> {
        self.resume(id, Intent::Undo { outcome: TransferStatus::Cancelled }, true, None).await
    }

    /// `execute`, `reject` or `cancel` asked for by an admin (`action`): `audit` is committed in
    /// one batch with the transfer's outcome (`saga::finish`), and not at all if the request is
    /// refused (not pending, unknown) or the transfer fails.
    pub async fn decide_pending_audited(
        &self,
        id: TransferId,
        action: PendingDecision,
        audit: AuditRecord,
    ) -> Result<Transfer, TransferError> {
        let (intent, cancelling) = match action {
            PendingDecision::Execute => (Intent::Execute, false),
            PendingDecision::Reject => (Intent::Undo { outcome: TransferStatus::Rejected }, false),
            PendingDecision::Cancel => (Intent::Undo { outcome: TransferStatus::Cancelled }, true),
        };
        self.resume(id, intent, cancelling, Some(audit)).await
    }

    async fn resume(
        &self,
        id: TransferId,
        intent: Intent,
        cancelling: bool,
        audit: Option<AuditRecord>,
    ) -> Result<Transfer, TransferError> {
        let not_pending = |status| {
            TransferError::Transition(if cancelling {
                TransitionRejection::NotCancellable { status }
            } else {
                TransitionRejection::NotPending { status }
            })
        };
        // A saga already working on it means it is not pending (it is being executed,
        // rejected or cancelled right now).
        let claim = self.claim(id).map_err(|_| not_pending(TransferStatus::Processing))?;
        let transfer = self
            .load_transfer(id)
            .await
            .map_err(|error| TransferError::Internal(error.to_string()))?
            .ok_or(TransferError::Transition(TransitionRejection::NotFound))?;
        if transfer.status != TransferStatus::Pending {
            return Err(not_pending(transfer.status));
        }
        let permit = self.admit_saga(transfer.source.as_uuid())?;
        let expiring = intent == Intent::Undo { outcome: TransferStatus::Expired };
        if !expiring && transfer.pending_expires_at.is_some_and(|at| at <= self.now()) {
            // Past its deadline, the transfer is no longer the admin's (or its owner's) to
            // decide, even if the sweeper has not reached it yet: it expires now, under the
            // claim this decision took, and the decision gets the answer a decided transfer
            // gives. So the outcome depends on the clock alone, never on the sweeper's timing.
            let expired = self
                .spawn_saga(transfer, Intent::Undo { outcome: TransferStatus::Expired }, permit, claim, None, None)
                .await?;
            return Err(not_pending(expired.status));
        }
        self.spawn_saga(transfer, intent, permit, claim, None, audit).await
    }

    /// Runs the expiry of a pending transfer (`expiry.rs`) as a decision like the others.
    pub(crate) async fn resume_expiring(&self, id: TransferId) -> Result<Transfer, TransferError> {
        self.resume(id, Intent::Undo { outcome: TransferStatus::Expired }, false, None).await
    }

    /// Runs a saga recovery reconstructed (see `recovery.rs`).
    pub(crate) async fn recover_saga(&self, transfer: Transfer, intent: Intent) -> Result<Transfer, TransferError> {
        let permit = loop {
            match self.saga_permit() {
                Ok(permit) => break permit,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let claim = self.claim(transfer.id)?;
        self.spawn_saga(transfer, intent, permit, claim, None, None).await
    }

    /// Recovers the last run's unfinished sagas and dangling holds, then marks the engine
    /// ready. `tally serve` answers `/health/ready` with 503 until this has returned.
    pub async fn recover(&self) -> Result<crate::recovery::RecoveryReport, StoreError> {
        let report = crate::recovery::recover(self).await?;
        let (crypto_forward, crypto_undone) = self.recover_crypto().await?;
        tracing::info!(crypto_forward, crypto_undone, "crypto operations recovered");
        self.inner.ready.store(true, Ordering::SeqCst);
        tracing::info!(?report, "recovery done");
        Ok(report)
    }

    /// Lets pending transfers past their deadline expire (`EngineConfig::hold_expiries`).
    pub fn release_expiries(&self) {
        self.inner.expiries_held.store(false, Ordering::SeqCst);
    }

    /// True once recovery has finished.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// A saga's permit, for work the store already holds (recovery): one of the engine's
    /// `sagas_in_flight_max` places, not counted against a journal's admission bound.
    pub(crate) fn saga_permit(&self) -> Result<SagaPermit, TransferError> {
        Ok(SagaPermit { _admitted: None, _permit: self.semaphore_permit()? })
    }

    fn semaphore_permit(&self) -> Result<OwnedSemaphorePermit, TransferError> {
        Arc::clone(&self.inner.saga_permits)
            .try_acquire_owned()
            .map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))
    }

    /// Admits a new saga keyed by `source`: a place under its shard journal's admission bound
    /// for as long as it runs (refused with `Overloaded` past the bound, or while shutting
    /// down), and a saga permit.
    pub(crate) fn admit_saga(&self, source: uuid::Uuid) -> Result<SagaPermit, TransferError> {
        self.admit_new_work()?;
        let admitted = self
            .inner
            .shared
            .journal_of(source)
            .admit_held()
            .map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))?;
        Ok(SagaPermit { _admitted: Some(admitted), _permit: self.semaphore_permit()? })
    }

    /// `admit_saga` for sagas that start together or not at all (an atomic batch's items,
    /// keyed by their sources): each journal they use is asked once for all of its items
    /// (`Journal::admit_held_many`), so a batch is admitted whole while its journals are under
    /// the bound, and refused whole otherwise. The permits come back in `sources`' order.
    pub(crate) fn admit_sagas(&self, sources: &[uuid::Uuid]) -> Result<Vec<SagaPermit>, TransferError> {
        self.admit_new_work()?;
        let shared = &self.inner.shared;
        let mut per_journal: Vec<usize> = vec![0; shared.journals.shards()];
        for source in sources {
            per_journal[usize::from(shared.shard_of(*source))] += 1;
        }
        let mut tickets = Vec::with_capacity(per_journal.len());
        for (shard, count) in per_journal.into_iter().enumerate() {
            let journal = shared.journals.shard(u16::try_from(shard).unwrap_or(u16::MAX));
            let admitted = if count == 0 { Ok(Vec::new()) } else { journal.admit_held_many(count) };
            tickets.push(admitted.map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))?);
        }
        sources
            .iter()
            .map(|source| {
                let admitted = tickets[usize::from(shared.shard_of(*source))].pop();
                Ok(SagaPermit { _admitted: admitted, _permit: self.semaphore_permit()? })
            })
            .collect()
    }

    pub(crate) fn claim(&self, id: TransferId) -> Result<Claim, TransferError> {
        match self.inner.claims.entry(id) {
            dashmap::Entry::Occupied(_) => Err(TransferError::Duplicate),
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(crate::saga::UNCHOSEN);
                Ok(Claim { inner: Arc::clone(&self.inner), id })
            }
        }
    }

    pub(crate) async fn spawn_saga(
        &self,
        transfer: Transfer,
        intent: Intent,
        permit: SagaPermit,
        claim: Claim,
        key: Option<KeyClaim>,
        audit: Option<AuditRecord>,
    ) -> Result<Transfer, TransferError> {
        let inner = Arc::clone(&self.inner);
        let thread = self.inner.shared.thread_of(transfer.source.as_uuid());
        // What step 1 counted, should no thread take the saga (`!spawned` below). Only a saga
        // that has not begun: an atomic batch's item also runs as `Intent::Run`, but from its
        // hold, which stands (the batch's intent is recorded) and keeps its amount counted.
        let counted = (matches!(intent, Intent::Run { .. })
            && transfer.step == tally_engine::transfer::SagaStep::Started)
            .then(|| crate::limits::Counted::of(&transfer));
        let saga = async move {
            let shutting_down = Arc::clone(&inner);
            let result = saga::run(inner, transfer, intent, audit).await;
            drop(claim);
            drop(permit);
            // The idempotency key the saga runs under is the saga's to release, not its
            // caller's: a caller that went away must not free it while records are queued.
            // A saga that ended early (a panic past the quarantine bound, a refused forward
            // step, a shutdown) may leave its records, with the key, still in the journal:
            // the key waits until they are durable. Every other end came after its last
            // record was durable.
            if let Some(key) = key {
                let ended_early = matches!(
                    result,
                    Err(TransferError::Internal(_) | TransferError::Unavailable(Unavailable::Quarantined))
                ) || shutting_down.shutting_down.load(Ordering::Relaxed);
                key.release(!ended_early).await;
            }
            result
        };
        // Boxed once here: the saga's future is large, and on its way to another thread it is
        // moved into an inbox job and then into a task (memmove was 3.5 % of the in-process
        // bench's samples in those two places).
        let saga = Box::pin(saga);
        let runtime = &self.inner.shared.runtime;
        // On the source's thread already (an HTTP request served there, the common case): the
        // saga runs in the caller's own task, which saves the task, the inbox job, the reply
        // channel and two trips through the thread's run queue per transfer. If the caller
        // goes away first (its client disconnected), the rest of the saga goes on as a task
        // of its own (`RunToEnd`): its outcome stands either way.
        if runtime.current_thread() == Some(thread) {
            return RunToEnd::new(saga, Arc::clone(runtime), thread).await;
        }
        let (sender, receiver) = oneshot::channel();
        let spawned = runtime.spawn_on(thread, async move {
            // The caller may be gone (client disconnected); the saga's outcome stands.
            let _ = sender.send(saga.await);
        });
        if !spawned {
            if let Some(counted) = counted {
                counted.give_back(&self.inner.limits);
            }
            return Err(TransferError::Unavailable(Unavailable::Overloaded));
        }
        receiver.await.map_err(|_| TransferError::Internal("saga task ended without an answer".to_owned()))?
    }

    /// The transfer as last recorded: a newer state still in a journal, or the store's copy.
    pub async fn load_transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        // The journals first, then the store: a state committed in between is then read from
        // the store, which has it; the other order could see neither.
        let pending = self.inner.shared.journals.pending_transfer(id);
        let stored = self.inner.shared.store.load_transfer(id).await?;
        Ok(pending.or(stored.map(|loaded| loaded.value)))
    }

    // ---- operations -----------------------------------------------------------------------

    pub fn health(&self, worst_max: usize) -> HealthReport {
        let shared = &self.inner.shared;
        let (account_depth, account_deepest, mut worst) = self.inner.accounts.survey(worst_max);
        let (wallet_depth, wallet_deepest, worst_wallets) = self.inner.wallets.survey(worst_max);
        worst.extend(worst_wallets);
        worst.sort_by(|a, b| {
            (b.quarantined, b.mailbox_depth, b.restarts).cmp(&(a.quarantined, a.mailbox_depth, a.restarts))
        });
        worst.truncate(worst_max);
        let kinds = ActorKind::ALL
            .into_iter()
            .map(|kind| {
                let mut health = shared.stats(kind).snapshot(kind);
                (health.mailbox_depth, health.mailbox_depth_max) = match kind {
                    ActorKind::Account => {
                        (i64::try_from(account_depth).unwrap_or(i64::MAX), i64::from(account_deepest))
                    }
                    ActorKind::Wallet => (i64::try_from(wallet_depth).unwrap_or(i64::MAX), i64::from(wallet_deepest)),
                    ActorKind::Session | ActorKind::TransferSaga => (0, 0),
                };
                health
            })
            .collect();
        let journals = &shared.journals;
        let totals = journals.totals();
        let inbox = shared.runtime.inbox_stats();
        HealthReport {
            kinds,
            sagas_in_flight: shared.stats(ActorKind::TransferSaga).active.load(Ordering::Relaxed).max(0) as u64,
            sagas_completed: self.inner.sagas_completed.load(Ordering::Relaxed),
            sagas_failed: self.inner.sagas_failed.load(Ordering::Relaxed),
            sagas_compensated: self.inner.sagas_compensated.load(Ordering::Relaxed),
            pending_expiries_scheduled: self.expiries_scheduled() as u64,
            journal_depth: journals.depth(),
            journal_committed_seq: totals.committed_records,
            journal_durable_lag_micros: journals.durable_lag().as_micros() as u64,
            journal_last_flush_micros: totals.last_flush_micros,
            journal_flush_errors: totals.flush_errors,
            journal_dependency_waits: totals.dependency_waits,
            inbox_wakeups: inbox.wakeups,
            inbox_jobs: inbox.jobs,
            worst,
        }
    }

    /// Lifts an account actor's quarantine. Returns false if it was not quarantined.
    pub fn release_account_quarantine(&self, id: AccountId) -> bool {
        self.inner.accounts.release_quarantine(id)
    }

    /// Lifts a wallet actor's quarantine. Returns false if it was not quarantined.
    pub fn release_wallet_quarantine(&self, id: WalletId) -> bool {
        self.inner.wallets.release_quarantine(id)
    }

    /// An operator lifts a quarantine (`release_account_quarantine` or
    /// `release_wallet_quarantine`), with `audit` committed through the journal before this
    /// answers. A quarantine is this process's memory, never written anywhere, so there is no
    /// transaction to share: the record is committed alone, right after the release, and only
    /// if something was released. `Ok(false)`: nothing was quarantined, nothing recorded.
    pub async fn release_quarantine_audited(
        &self,
        actor: QuarantinedActor,
        audit: AuditRecord,
    ) -> Result<bool, EngineError> {
        let (released, key) = match actor {
            QuarantinedActor::Account(id) => (self.release_account_quarantine(id), id.as_uuid()),
            QuarantinedActor::Wallet(id) => (self.release_wallet_quarantine(id), id.as_uuid()),
        };
        if released {
            self.audit_alone(key, audit).await?;
        }
        Ok(released)
    }

    /// Stops at once, as `kill -9` would: the journal commits nothing more and the actor
    /// threads stop. What the store holds is exactly the durable prefix. For crash tests.
    pub async fn halt(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.shared.journals.halt().await;
        let shared = Arc::clone(&self.inner.shared);
        let _ = tokio::task::spawn_blocking(move || shared.runtime.stop()).await;
    }

    /// Stops admitting work, waits (up to `grace`) for running sagas, makes every appended
    /// record durable, and stops the actor threads.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let permits = Arc::clone(&self.inner.saga_permits);
        let total = self.inner.sagas_in_flight_max;
        // Every permit back means no saga is running. A saga still running after the grace is
        // finished by the next start's recovery.
        let all_back = async move {
            while permits.available_permits() < total {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(grace, all_back).await.is_err() {
            tracing::warn!("shutdown grace ended with sagas still running; recovery will finish them");
        }
        self.inner.shared.journals.shutdown().await;
        let shared = Arc::clone(&self.inner.shared);
        let _ = tokio::task::spawn_blocking(move || shared.runtime.stop()).await;
    }
}
