//! An in-memory store. It keeps everything a database would, applies commits with the same
//! engine `apply` functions recovery uses, and answers the same reads. It is what the
//! in-process engine, its benchmarks and the simulation tests run on; it is not durable, so
//! `tally serve` never uses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::Arc;

use async_trait::async_trait;
use tally_engine::{
    Account, AccountId, CryptoOp, CryptoOpKind, Currency, Posting, Record, Timestamp, Transfer, TransferId, UserId,
    Wallet, WalletId,
};

use crate::batch::{BatchPlan, DirectCommits, PostingRow, TransferRow, WalletPosting};
use crate::crypto::WalletProfile;

use tally_engine::aml::{AmlFlag, AmlRule, FlagStatus};

use crate::aml::{AmlStore, FlagFilter, Resolution, Resolved, newest_first};
use crate::audit::AuditRecord;
use crate::reads::listing::Position;
use crate::store::{JournalWriter, LiveHold, Loaded, SequencedRecord, Store, StoreError, plan_writer};

/// The store's maps, keyed by ids the engine made, hashed with a fast seeded hasher.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct State {
    /// Each shard's committed sequence number (index = shard).
    committed_seqs: Vec<u64>,
    /// The latest booking time committed (`Store::last_booked_at`).
    last_booked_at: Timestamp,
    /// Accounts as their durable records leave them (the memory store never needs a snapshot:
    /// it keeps every account current, as an SQL store's snapshot plus postings reads).
    accounts: Map<AccountId, Account>,
    wallets: HashMap<WalletId, Loaded<Wallet>>,
    /// Transfer rows as the batch plans write them (final or pending state, or `processing`
    /// with the legs made so far).
    /// Boxed: the map grows for as long as the process runs, and growing it moves every entry.
    transfers: Map<TransferId, Box<TransferRow>>,
    /// Posting rows per account, in version order.
    postings: Map<AccountId, Vec<PostingRow>>,
    /// AML rules in insertion order, and flags by id (`aml.rs`).
    aml_rules: Vec<tally_engine::aml::AmlRule>,
    aml_flags: HashMap<uuid::Uuid, tally_engine::aml::AmlFlag>,
    /// FX rates, fee rules and transfer-type settings (`save_pricing`), like their SQL tables.
    pricing: crate::finance::PricingTables,
    crypto_ops: HashMap<TransferId, Loaded<CryptoOp>>,
    wallet_postings: Vec<(u64, WalletPosting)>,
    wallet_profiles: Vec<WalletProfile>,
    /// Audit records committed with journal batches, in commit order (`Record::Audit`).
    audit_records: Vec<tally_engine::AuditRecord>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    direct: DirectCommits,
    /// Lets journal tests simulate an outage: while false, every call is `Unavailable`.
    available: AtomicBool,
    /// While false, only commits are `Unavailable` (reads still answer): records stay in the
    /// journal, not yet durable, while everything else works.
    commits_available: AtomicBool,
    /// Journals (bit = shard, below 64) whose commits are refused while the others commit: a
    /// record in one journal stays not yet durable while another journal's become durable.
    journals_paused: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::default()),
            direct: DirectCommits::default(),
            available: AtomicBool::new(true),
            commits_available: AtomicBool::new(true),
            journals_paused: AtomicU64::new(0),
        }
    }

    /// Simulates the database going away (`false`) and coming back (`true`).
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::SeqCst);
    }

    /// Refuses commits (`false`) and takes them again (`true`); reads are unaffected.
    pub fn set_commits_available(&self, available: bool) {
        self.commits_available.store(available, Ordering::SeqCst);
    }

    /// Refuses commits of one journal (`false`) and takes them again (`true`); the other
    /// journals commit as usual.
    pub fn set_journal_commits_available(&self, shard: u16, available: bool) {
        assert!(shard < 64, "a paused journal is a bit of a u64");
        let bit = 1u64 << shard;
        if available {
            self.journals_paused.fetch_and(!bit, Ordering::SeqCst);
        } else {
            self.journals_paused.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// The audit records committed so far with journal batches, oldest first.
    pub fn audit_records(&self) -> Vec<tally_engine::AuditRecord> {
        self.state.lock().map(|state| state.audit_records.clone()).unwrap_or_default()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        if !self.available.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store switched off".to_owned()));
        }
        self.state.lock().map_err(|_| StoreError::Corrupt("memory store lock poisoned".to_owned()))
    }

    /// Every account's (transfer, amount) pairs that `of` picks from its position: its holds,
    /// or its credit admissions.
    fn per_transfer_amounts(
        &self,
        of: impl Fn(&tally_engine::Position) -> Vec<(TransferId, rust_decimal::Decimal)>,
    ) -> Result<Vec<LiveHold>, StoreError> {
        let state = self.state()?;
        Ok(state
            .accounts
            .values()
            .flat_map(|stored| {
                let account = stored.id;
                of(&stored.position).into_iter().map(move |(transfer, amount)| LiveHold { account, transfer, amount })
            })
            .collect())
    }
}

/// Applies one record's effect on accounts, wallets, crypto operations and AML flags, with
/// the same `apply` functions the actors use. Transfers and postings come from the plan.
fn apply(state: &mut State, sequenced: &SequencedRecord) -> Result<(), StoreError> {
    let seq = sequenced.seq;
    match &sequenced.record {
        Record::AccountOpened(account) => {
            state.accounts.insert(account.id, (**account).clone());
        }
        Record::Account { account, event, .. } => {
            let stored = state
                .accounts
                .get_mut(account)
                .ok_or_else(|| StoreError::Corrupt(format!("record for unknown account {account}")))?;
            stored.apply(event).map_err(|_| StoreError::Corrupt(format!("overflow replaying {account}")))?;
        }
        Record::WalletOpened(wallet) => {
            state.wallets.insert(wallet.id, Loaded { value: (**wallet).clone(), seq });
        }
        Record::Wallet { wallet, event, .. } => {
            let loaded = state
                .wallets
                .get_mut(wallet)
                .ok_or_else(|| StoreError::Corrupt(format!("record for unknown wallet {wallet}")))?;
            loaded.value.apply(event).map_err(|_| StoreError::Corrupt(format!("overflow replaying {wallet}")))?;
            loaded.seq = seq;
        }
        Record::CryptoOp(op) => {
            state.crypto_ops.insert(op.id, Loaded { value: (**op).clone(), seq });
        }
        Record::Transfer(_) => {}
        Record::AmlFlag(flag) => {
            state.aml_flags.entry(flag.id).or_insert_with(|| (**flag).clone());
        }
        // This store has no audit chain (the identity store, which has, is always an SQL one);
        // it keeps the records as committed so engine tests can see which batch carried them.
        Record::Audit(record) => state.audit_records.push((**record).clone()),
    }
    Ok(())
}

/// The row `row` would collide with on the idempotency key (another transfer's), if any.
fn key_taken_by_another(state: &State, row: &TransferRow) -> bool {
    let Some(key) = row.transfer.idempotency.as_ref() else { return false };
    state.transfers.values().any(|other| {
        other.transfer.id != row.transfer.id
            && other.transfer.idempotency.as_ref().is_some_and(|i| i.scope == key.scope && i.key == key.key)
    })
}

#[async_trait]
impl Store for MemoryStore {
    async fn commit_plan(&self, plan: &BatchPlan) -> Result<(), StoreError> {
        let paused = plan.shard < 64 && self.journals_paused.load(Ordering::SeqCst) & (1u64 << plan.shard) != 0;
        if !self.commits_available.load(Ordering::SeqCst) || paused {
            return Err(StoreError::Unavailable("memory store refuses commits".to_owned()));
        }
        let mut state = self.state()?;
        let shard = usize::from(plan.shard);
        if !plan.records.is_empty() {
            if state.committed_seqs.len() <= shard {
                state.committed_seqs.resize(shard + 1, 0);
            }
            if state.committed_seqs[shard] + 1 != plan.first_seq {
                return Err(StoreError::Corrupt(format!(
                    "journal gap on shard {shard}: committed {} then got {}",
                    state.committed_seqs[shard], plan.first_seq
                )));
            }
        }
        for row in &plan.transfers_new {
            if state.transfers.contains_key(&row.transfer.id) {
                return Err(StoreError::Corrupt(format!("transfer {} written as new twice", row.transfer.id)));
            }
        }
        if let Some(row) =
            plan.transfers_new.iter().chain(&plan.transfers_upsert).find(|row| key_taken_by_another(&state, row))
        {
            return Err(StoreError::Corrupt(format!("idempotency key of transfer {} is another's", row.transfer.id)));
        }
        // All or nothing: apply to a copy only when a record could fail half way. Records
        // from the journal are well formed, so apply in place and treat a failure as corruption.
        for record in plan.records.iter() {
            apply(&mut state, record)?;
        }
        for row in plan.transfers_new.iter().chain(&plan.transfers_upsert) {
            state.transfers.insert(row.transfer.id, Box::new(row.clone()));
        }
        for posting in &plan.postings {
            state.postings.entry(posting.account).or_default().push(posting.clone());
        }
        for (seq, posting, _) in &plan.wallet_postings {
            state.wallet_postings.push((*seq, posting.clone()));
        }
        if let Some(last) = plan.records.last() {
            state.committed_seqs[shard] = last.seq;
            state.last_booked_at = state.last_booked_at.max(plan.booked_at);
        }
        Ok(())
    }

    async fn commit(&self, shard: u16, records: &[SequencedRecord]) -> Result<(), StoreError> {
        let plan = self.direct.plan(shard, records, crate::batch::now());
        self.commit_plan(&plan).await
    }

    async fn journal_writers(self: Arc<Self>, shard: u16) -> Result<Vec<Box<dyn JournalWriter>>, StoreError> {
        Ok(vec![plan_writer(self, shard)])
    }

    async fn open_shards(&self, wanted: u16) -> Result<Vec<u64>, StoreError> {
        let mut state = self.state()?;
        let wanted = usize::from(wanted.max(1));
        if state.committed_seqs.len() < wanted {
            state.committed_seqs.resize(wanted, 0);
        }
        Ok(state.committed_seqs[..wanted].to_vec())
    }

    async fn transfer_by_idempotency(
        &self,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<Transfer>>, StoreError> {
        // A scan: the memory store serves tests and benchmarks; SQL stores use a unique index.
        Ok(self
            .state()?
            .transfers
            .values()
            .find(|row| row.transfer.idempotency.as_ref().is_some_and(|i| i.scope == scope && *i.key == *key))
            .map(|row| Loaded { value: row.transfer.clone(), seq: row.seq }))
    }

    async fn postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<Posting>, StoreError> {
        let state = self.state()?;
        // A scan: the memory store serves tests and benchmarks, where this is rare and small.
        let mut postings: Vec<&PostingRow> =
            state.postings.values().flatten().filter(|posting| posting.transfer == transfer).collect();
        postings.sort_by_key(|posting| (posting.booked_at, posting.shard, posting.seq));
        Ok(postings.into_iter().map(PostingRow::posting).collect())
    }

    async fn all_postings(&self) -> Result<Vec<Posting>, StoreError> {
        Ok(self.state()?.postings.values().flatten().map(PostingRow::posting).collect())
    }

    async fn all_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        let state = self.state()?;
        let mut rows: Vec<&TransferRow> = state.transfers.values().map(|row| &**row).collect();
        rows.sort_by_key(|row| row.transfer.id);
        Ok(rows.into_iter().map(|row| row.transfer.clone()).collect())
    }

    async fn all_wallet_postings(&self) -> Result<Vec<WalletPosting>, StoreError> {
        Ok(self.state()?.wallet_postings.iter().map(|(_, posting)| posting.clone()).collect())
    }

    fn aml(&self) -> Option<&dyn AmlStore> {
        Some(self)
    }
}

#[async_trait]
impl crate::store::PricingStore for MemoryStore {
    async fn load_pricing(&self) -> Result<crate::finance::PricingTables, StoreError> {
        Ok(self.state()?.pricing.clone())
    }

    async fn save_pricing(
        &self,
        change: &crate::finance::PricingChange,
        _audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        use crate::finance::PricingChange;
        let mut state = self.state()?;
        let pricing = &mut state.pricing;
        match change {
            PricingChange::FxRate(rate) => {
                pricing.fx_rates.retain(|old| (old.from, old.to) != (rate.from, rate.to));
                pricing.fx_rates.push(rate.clone());
            }
            PricingChange::FeeRule(rule) => match pricing.fee_rules.iter_mut().find(|old| old.id == rule.id) {
                Some(old) => *old = rule.clone(),
                None => pricing.fee_rules.push(rule.clone()),
            },
            PricingChange::TransferType(kind, settings) => {
                pricing.transfer_types.retain(|(old, _)| old != kind);
                pricing.transfer_types.push((*kind, settings.clone()));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl crate::store::StoreReads for MemoryStore {
    async fn committed_seqs(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.state()?.committed_seqs.clone())
    }

    async fn last_booked_at(&self) -> Result<Timestamp, StoreError> {
        Ok(self.state()?.last_booked_at)
    }

    async fn load_account(&self, id: AccountId) -> Result<Option<Loaded<Account>>, StoreError> {
        Ok(self
            .state()?
            .accounts
            .get(&id)
            .map(|account| Loaded { value: account.clone(), seq: account.position.version }))
    }

    async fn load_wallet(&self, id: WalletId) -> Result<Option<Loaded<Wallet>>, StoreError> {
        Ok(self.state()?.wallets.get(&id).cloned())
    }

    async fn load_transfer(&self, id: TransferId) -> Result<Option<Loaded<Transfer>>, StoreError> {
        Ok(self.state()?.transfers.get(&id).map(|row| Loaded { value: row.transfer.clone(), seq: row.seq }))
    }

    async fn idempotency_keys_after(
        &self,
        after: Option<(uuid::Uuid, String)>,
        limit: u32,
    ) -> Result<Vec<(uuid::Uuid, String)>, StoreError> {
        let mut keys: Vec<(uuid::Uuid, String)> = self
            .state()?
            .transfers
            .values()
            .filter_map(|row| row.transfer.idempotency.as_ref().map(|i| (i.scope, i.key.to_string())))
            .filter(|key| after.as_ref().is_none_or(|after| key > after))
            .collect();
        keys.sort();
        keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(keys)
    }

    async fn non_terminal_transfers(&self) -> Result<Vec<Transfer>, StoreError> {
        let state = self.state()?;
        let mut rows: Vec<&TransferRow> =
            state.transfers.values().map(|row| &**row).filter(|row| !row.transfer.status.is_terminal()).collect();
        rows.sort_by_key(|row| row.transfer.id);
        Ok(rows.into_iter().map(|row| row.transfer.clone()).collect())
    }

    async fn all_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut accounts: Vec<Account> = self.state()?.accounts.values().cloned().collect();
        accounts.sort_by_key(|account| account.id);
        Ok(accounts)
    }

    async fn postings_of(&self, account: AccountId) -> Result<Vec<Posting>, StoreError> {
        let state = self.state()?;
        Ok(state
            .postings
            .get(&account)
            .map(|postings| postings.iter().map(PostingRow::posting).collect())
            .unwrap_or_default())
    }

    async fn live_holds(&self) -> Result<Vec<LiveHold>, StoreError> {
        self.per_transfer_amounts(|position| position.holds().collect())
    }

    async fn live_admissions(&self) -> Result<Vec<LiveHold>, StoreError> {
        self.per_transfer_amounts(|position| position.admitted_credits().collect())
    }
}

#[async_trait]
impl crate::store::WalletStore for MemoryStore {
    async fn load_crypto_op(&self, id: TransferId) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Ok(self.state()?.crypto_ops.get(&id).cloned())
    }

    async fn deposit_by_tx_hash(&self, tx_hash: &str) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Ok(self
            .state()?
            .crypto_ops
            .values()
            .find(|op| op.value.kind == CryptoOpKind::Deposit && op.value.tx_hash.as_deref() == Some(tx_hash))
            .cloned())
    }

    async fn crypto_op_by_idempotency(
        &self,
        kind: CryptoOpKind,
        scope: uuid::Uuid,
        key: &str,
    ) -> Result<Option<Loaded<CryptoOp>>, StoreError> {
        Ok(self
            .state()?
            .crypto_ops
            .values()
            .find(|op| {
                op.value.kind == kind
                    && op.value.idempotency.as_ref().is_some_and(|i| i.scope == scope && *i.key == *key)
            })
            .cloned())
    }

    async fn unfinished_crypto_ops(&self) -> Result<Vec<CryptoOp>, StoreError> {
        let state = self.state()?;
        let mut ops: Vec<&Loaded<CryptoOp>> =
            state.crypto_ops.values().filter(|op| !op.value.status.is_terminal()).collect();
        ops.sort_by_key(|op| op.seq);
        Ok(ops.into_iter().map(|op| op.value.clone()).collect())
    }

    async fn wallet_postings_of_transfer(&self, transfer: TransferId) -> Result<Vec<WalletPosting>, StoreError> {
        Ok(self
            .state()?
            .wallet_postings
            .iter()
            .filter(|(_, posting)| posting.transfer == transfer)
            .map(|(_, posting)| posting.clone())
            .collect())
    }

    async fn wallet_balances(&self) -> Result<Vec<(WalletId, Currency, rust_decimal::Decimal)>, StoreError> {
        let state = self.state()?;
        Ok(state
            .wallets
            .values()
            .flat_map(|wallet| {
                wallet.value.assets.iter().map(|(asset, position)| (wallet.value.id, *asset, position.balance))
            })
            .collect())
    }

    async fn insert_wallet_profile(&self, profile: &WalletProfile) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        if state.wallet_profiles.iter().any(|p| p.owner == profile.owner && p.asset == profile.asset) {
            return Ok(false);
        }
        state.wallet_profiles.push(profile.clone());
        Ok(true)
    }

    async fn wallet_profile(&self, wallet: WalletId) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.state()?.wallet_profiles.iter().find(|p| p.wallet == wallet).cloned())
    }

    async fn wallet_profile_by_address(&self, address: &str) -> Result<Option<WalletProfile>, StoreError> {
        Ok(self.state()?.wallet_profiles.iter().find(|p| p.deposit_address == address).cloned())
    }

    async fn wallet_profiles_of_owner(&self, owner: UserId) -> Result<Vec<WalletProfile>, StoreError> {
        Ok(self.state()?.wallet_profiles.iter().filter(|p| p.owner == owner).cloned().collect())
    }

    async fn wallet_profiles_page(
        &self,
        filter: crate::crypto::WalletFilter,
        before: Option<crate::reads::listing::Position>,
        limit: u32,
    ) -> Result<Vec<WalletProfile>, StoreError> {
        let key = |p: &WalletProfile| (p.created_at.as_micros(), p.wallet.as_uuid());
        let mut page: Vec<WalletProfile> = self
            .state()?
            .wallet_profiles
            .iter()
            .filter(|p| filter.matches(p) && before.is_none_or(|before| key(p) < (before.created_at, before.id)))
            .cloned()
            .collect();
        page.sort_by_key(|p| std::cmp::Reverse(key(p)));
        page.truncate(limit as usize);
        Ok(page)
    }
}

fn flag_matches(flag: &AmlFlag, filter: FlagFilter) -> bool {
    filter.status.is_none_or(|status| flag.status == status)
        && filter.account.is_none_or(|account| flag.account == account)
        && filter.transfer.is_none_or(|transfer| flag.transfer == transfer)
}

#[async_trait]
impl AmlStore for MemoryStore {
    async fn aml_rules(&self) -> Result<Vec<AmlRule>, StoreError> {
        Ok(self.state()?.aml_rules.clone())
    }

    async fn insert_aml_rule(&self, rule: &AmlRule, _audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if state.aml_rules.iter().any(|stored| stored.id == rule.id) {
            // As the SQL stores' primary key refuses it.
            return Err(StoreError::Corrupt(format!("AML rule {} exists", rule.id)));
        }
        state.aml_rules.push(rule.clone());
        Ok(())
    }

    async fn replace_aml_rule(&self, rule: &AmlRule, _audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        match state.aml_rules.iter_mut().find(|stored| stored.id == rule.id) {
            Some(stored) => {
                // The creation time is the stored one, as the SQL stores' UPDATE leaves it.
                *stored = AmlRule { created_at: stored.created_at, ..rule.clone() };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete_aml_rule(&self, id: uuid::Uuid, _audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        let before = state.aml_rules.len();
        state.aml_rules.retain(|rule| rule.id != id);
        Ok(state.aml_rules.len() < before)
    }

    async fn aml_flag(&self, id: uuid::Uuid) -> Result<Option<AmlFlag>, StoreError> {
        Ok(self.state()?.aml_flags.get(&id).cloned())
    }

    async fn aml_flag_page(
        &self,
        filter: FlagFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<AmlFlag>, StoreError> {
        let state = self.state()?;
        let mut flags: Vec<AmlFlag> = state
            .aml_flags
            .values()
            .filter(|flag| flag_matches(flag, filter))
            .filter(|flag| {
                after.is_none_or(|after| (flag.created_at.as_micros(), flag.id) < (after.created_at, after.id))
            })
            .cloned()
            .collect();
        flags.sort_by(newest_first);
        flags.truncate(limit as usize);
        Ok(flags)
    }

    async fn count_aml_flags(&self, filter: FlagFilter) -> Result<u64, StoreError> {
        Ok(self.state()?.aml_flags.values().filter(|flag| flag_matches(flag, filter)).count() as u64)
    }

    async fn resolve_aml_flag(
        &self,
        id: uuid::Uuid,
        resolution: &Resolution,
        _audit: Option<&AuditRecord>,
    ) -> Result<Resolved, StoreError> {
        let mut state = self.state()?;
        let Some(flag) = state.aml_flags.get_mut(&id) else { return Ok(Resolved::NotFound) };
        if flag.status != FlagStatus::Open {
            return Ok(Resolved::AlreadyResolved);
        }
        flag.status = resolution.status;
        flag.notes = resolution.notes.clone();
        flag.resolved_at = Some(resolution.at);
        flag.resolved_by = Some(resolution.by);
        Ok(Resolved::Resolved)
    }
}
