//! Turns one journal batch into the writes a SQL store makes, so that each fact is written
//! once (DESIGN.md §5). Pure but for the writer's `PlanState`, which carries what one batch
//! leaves to the next: both SQL stores write the same plan, so they cannot disagree about what
//! a batch means.
//!
//! What a batch writes:
//! - **Postings**, append-only: one row per balance change, keyed by (account, booked at,
//!   version). The account's `version` numbers its postings 1, 2, 3, … in the order it
//!   applied them, so a history, a statement's running balance and a point-in-time balance
//!   all come from one index range.
//! - **Transfers**: one row, in its final state, when the saga finished inside the batch (the
//!   common case: a saga's records all go to one journal and take microseconds). Written as
//!   `new` (a bulk copy: the row cannot exist yet) when the batch also holds the transfer's
//!   first record, else as an `upsert`. A saga cut by a batch boundary after an irreversible
//!   step (a posting) is written `processing` with the legs it made so far (`legs`), so
//!   recovery can finish it; its final state then replaces that row. A saga cut before any
//!   posting writes nothing for its transfer (and, in a journal, nothing for its hold: below).
//! - **Holds**, netted: a hold placed and removed in the same batch never touches the store;
//!   one still placed at the end of the batch is written, and deleted by the batch that
//!   removes it. Removals go before placements: a hold removed and placed again (same
//!   transfer) within a batch is in both lists. A journal's writer goes further
//!   (`PlanState::for_journal`): the hold of a saga whose transfer has no row yet (cut by a
//!   commit before any posting, about one transfer in seven at saturation) is *kept*, not
//!   written: it goes to the store with the transfer's row (a posting made, or the transfer
//!   pending or final), or never, when the saga releases or posts it first. A crash loses
//!   nothing by it: recovery releases a hold whose transfer has no row, so such a hold was
//!   only ever written to be deleted. While the process runs, an account loaded from the store
//!   (after passivation or a panic) adds the holds its journals keep (`KeptHolds`), which
//!   `BatchPlan::holds_kept` and `holds_settled` maintain once the batch is durable.
//! - **Credit admissions** (an atomic batch's promises, `credit_admissions`), netted like holds
//!   but never kept back: a row is written with its admission and deleted with the credit that
//!   keeps it (`AccountEvent::Credited { admitted: true }`) or its withdrawal. Atomic batches
//!   are rare, so this costs the hot path nothing; recovery withdraws the admissions of a batch
//!   whose intent never became durable.
//! - **Account snapshots, coalesced over time**: a posting carries the balance after it, so a
//!   snapshot only spares readers the postings before it. The writer remembers each changed
//!   account's newest balance (`PlanState`). When a flush is due
//!   (`JournalConfig::snapshot_interval`) those balances are set aside as one flush, and the
//!   batches that follow write it a slice at a time (`JournalConfig::snapshot_rows_per_batch`),
//!   one row per account: written all at once, the 10,000 rows of a busy interval were one
//!   statement of ~130 ms that every commit behind it waited for. A store reads an account as
//!   its snapshot and the newest posting after it (whose balance is the account's), so a
//!   snapshot written late or in any slice is never wrong, only older. Opening an account,
//!   and a change of its status or credit limit, are written with their batch.
//! - Wallets, AML flags and crypto operations as before: one row per change, coalesced per
//!   batch.
//! - **Audit entries** (`Record::Audit`, an admin change's entry riding with the change):
//!   appended to the audit chain last in the batch's transaction.
//! - **Events** (`crate::events`): one row per record that describes a change a client cares
//!   about, keyed by that record's (shard, seq), new rows like postings; and each batch of
//!   records links the journal's hash chain (`events::chain`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;

use rust_decimal::Decimal;
use smallvec::SmallVec;
use tally_engine::aml::AmlFlag;
use tally_engine::transfer::SagaStep;
use tally_engine::{
    Account, AccountEvent, AccountId, AccountStatus, AuditRecord, CryptoOp, Currency, Direction, Posting, Record,
    Timestamp, Transfer, TransferId, TransferStatus, Wallet, WalletEvent, WalletId,
};

use crate::events::EventRow;
use crate::store::SequencedRecord;

/// One posting row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostingRow {
    pub account: AccountId,
    /// The account's posting number (`Position::version`) after this posting.
    pub version: u64,
    /// When the batch holding it was committed (monotonic across journals).
    pub booked_at: Timestamp,
    pub transfer: TransferId,
    pub currency: Currency,
    pub direction: Direction,
    pub amount: Decimal,
    pub balance_after: Decimal,
    /// The journal position of the record (shard, seq), for tracing a row back to its batch.
    pub shard: u16,
    pub seq: u64,
}

impl PostingRow {
    pub fn posting(&self) -> Posting {
        Posting {
            transfer: self.transfer,
            account: self.account,
            currency: self.currency,
            direction: self.direction,
            amount: self.amount,
        }
    }
}

/// An account's balance as of one of its postings: what a snapshot row stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceSnapshot {
    pub account: AccountId,
    pub balance: Decimal,
    pub held: Decimal,
    pub version: u64,
    pub booked_at: Timestamp,
}

/// A transfer row written in a non-final state, with the postings its saga made so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub transfer: Transfer,
    /// (account, posting version) of every posting of this transfer made so far: recovery
    /// reads which legs happened from here. Empty for final and pending rows.
    pub legs: Vec<(AccountId, u64)>,
    pub seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct BatchPlan {
    /// The records the plan was made from (shared with the journal, not copied): a store that
    /// keeps state by replaying records (the in-memory one) reads them.
    pub records: Arc<Vec<SequencedRecord>>,
    pub shard: u16,
    /// First and last sequence number of the batch's records (0 for a batch of none: a
    /// snapshot flush alone, which advances no sequence).
    pub first_seq: u64,
    pub last_seq: u64,
    pub booked_at: Timestamp,
    pub accounts_opened: Vec<(u64, Account)>,
    /// Status and credit limit of accounts changed in the batch (the last of each).
    pub account_settings: Vec<(AccountId, AccountStatus, Decimal, u64)>,
    /// Balance snapshots to write (a flush), newest per account.
    pub snapshots: Vec<BalanceSnapshot>,
    pub holds_placed: Vec<(AccountId, TransferId, Decimal, u64)>,
    pub holds_removed: Vec<(AccountId, TransferId)>,
    /// Holds placed in this batch and kept back, not written (their transfer has no row yet):
    /// the journal's `KeptHolds` lists them once the batch is durable.
    pub holds_kept: Vec<(AccountId, TransferId, Decimal)>,
    /// Holds kept by earlier batches that this one settles: removed (never written), or
    /// written with their transfer's row (in `holds_placed`). `KeptHolds` drops them once the
    /// batch is durable, and every hold in `holds_removed` too.
    pub holds_settled: Vec<(AccountId, TransferId)>,
    /// Credits promised by an atomic batch's first phase (`credit_admissions`), netted like
    /// holds: one admitted and kept or withdrawn in the same batch touches nothing. Removals
    /// go before placements.
    pub admissions_placed: Vec<(AccountId, TransferId, Decimal, u64)>,
    pub admissions_removed: Vec<(AccountId, TransferId)>,
    pub postings: Vec<PostingRow>,
    /// Transfers whose row cannot exist yet (final, or `processing` with legs): written by
    /// bulk copy.
    pub transfers_new: Vec<TransferRow>,
    /// Transfers whose row may exist: inserted or replaced.
    pub transfers_upsert: Vec<TransferRow>,
    pub wallets_opened: Vec<(u64, Wallet)>,
    pub wallet_statuses: Vec<(WalletId, AccountStatus, u64)>,
    /// The last figures of each (wallet, asset) changed in the batch.
    pub wallet_assets: Vec<(WalletId, Currency, Decimal, Decimal, u64)>,
    pub wallet_holds_placed: Vec<(WalletId, Currency, TransferId, Decimal, u64)>,
    pub wallet_holds_removed: Vec<(WalletId, Currency, TransferId)>,
    /// AML flags raised in the batch, with their seq (inserted once; a repeat is ignored).
    pub aml_flags: Vec<(u64, AmlFlag)>,
    /// Every wallet credit and debit with its seq and the asset's balance after it.
    pub wallet_postings: Vec<(u64, WalletPosting, Decimal)>,
    /// The last state of each crypto operation recorded in the batch.
    pub crypto_ops: Vec<(u64, CryptoOp)>,
    /// The events its records make (`events`), in seq order: new rows, written with the rest.
    pub events: Vec<EventRow>,
    /// Audit entries of admin changes the batch makes (`Record::Audit`), in seq order:
    /// appended to the audit chain last in the batch's transaction (docs/audit.md), so the
    /// audit head row is held only from there to the commit. Empty for ordinary traffic, which
    /// then pays one emptiness check.
    pub audits: Vec<AuditRecord>,
}

/// A wallet asset's credit or debit: the wallet side of double entry (`postings` is the
/// account side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletPosting {
    pub transfer: TransferId,
    pub wallet: WalletId,
    pub asset: Currency,
    pub direction: Direction,
    pub amount: Decimal,
}

impl WalletPosting {
    /// The posting a wallet event makes, if it moves a balance (holds and releases do not).
    pub fn from_event(wallet: WalletId, event: &WalletEvent) -> Option<WalletPosting> {
        let (transfer, asset, direction, amount) = match event {
            WalletEvent::Posted { transfer, asset, amount } => (*transfer, *asset, Direction::Debit, *amount),
            WalletEvent::Credited { transfer, asset, amount } => (*transfer, *asset, Direction::Credit, *amount),
            _ => return None,
        };
        Some(WalletPosting { transfer, wallet, asset, direction, amount })
    }
}

/// What a journal's writer carries from one batch to the next. Lives as long as the writer
/// (a process's run): after a crash, recovery starts from the store alone.
#[derive(Debug, Default)]
pub struct PlanState {
    /// Transfers with records in this journal whose final row is not written yet.
    in_flight: Map<TransferId, InFlight>,
    /// Accounts whose balance changed since their snapshot was last set aside for a flush.
    dirty: Map<AccountId, BalanceSnapshot>,
    /// The flush under way: snapshots set aside and not yet planned, sorted by account,
    /// descending, so that the next slice is split off the end. Every one of them is older
    /// than any balance of the same account in `dirty`, and is written first: a flush starts
    /// only when the one before has been planned whole, and batches commit in order.
    flushing: Vec<BalanceSnapshot>,
    /// Keep back the holds of transfers with no row yet (a journal's writer), instead of
    /// writing them (direct commits, which nothing reads a kept hold from).
    keeps_holds: bool,
    /// The holds kept back, by transfer: (account, amount, seq that placed it).
    kept: Map<TransferId, Vec<(AccountId, Decimal, u64)>>,
}

#[derive(Debug)]
struct InFlight {
    transfer: Transfer,
    /// The seq of the record of `transfer`'s latest state.
    seq: u64,
    /// A row of this transfer exists in the store (written `processing`, or it existed before
    /// this writer saw it: a pending transfer resumed).
    row_written: bool,
    legs: Vec<(AccountId, u64)>,
}

impl PlanState {
    /// The state of a journal's writer, which keeps back the holds of transfers with no row
    /// yet (the module's comment).
    pub fn for_journal() -> PlanState {
        PlanState { keeps_holds: true, ..PlanState::default() }
    }

    /// Holds kept back, not written, so far.
    pub fn holds_kept(&self) -> usize {
        self.kept.values().map(Vec::len).sum()
    }

    /// Takes the kept hold (account, transfer), if it is one.
    fn take_kept(&mut self, account: AccountId, transfer: TransferId) -> bool {
        let Some(holds) = self.kept.get_mut(&transfer) else { return false };
        let before = holds.len();
        holds.retain(|(held, _, _)| *held != account);
        let taken = holds.len() != before;
        if holds.is_empty() {
            self.kept.remove(&transfer);
        }
        taken
    }

    /// Whether a hold of `transfer` placed now is kept back: its saga runs in this journal and
    /// its row is not written.
    fn keeps_hold_of(&self, transfer: TransferId) -> bool {
        self.keeps_holds && self.in_flight.get(&transfer).is_some_and(|entry| !entry.row_written)
    }

    /// Some balance snapshot waits to be written (changed, or set aside in a flush).
    pub fn has_dirty_snapshots(&self) -> bool {
        !self.dirty.is_empty() || !self.flushing.is_empty()
    }

    /// How many snapshots wait, changed or set aside.
    pub fn dirty_snapshots(&self) -> usize {
        self.dirty.len() + self.flushing.len()
    }

    /// A flush is under way: batches planned now take a slice of it.
    pub fn flush_under_way(&self) -> bool {
        !self.flushing.is_empty()
    }

    /// Sets aside every balance changed so far as a flush, for the batches that follow to
    /// write. A flush still under way is folded in (its rows first, a newer balance of the
    /// same account winning), so it is the same call whether one is under way or not.
    pub fn begin_flush(&mut self) {
        for snapshot in self.flushing.drain(..) {
            self.dirty.entry(snapshot.account).or_insert(snapshot);
        }
        self.flushing = self.dirty.drain().map(|(_, snapshot)| snapshot).collect();
        self.flushing.sort_unstable_by_key(|snapshot| std::cmp::Reverse(snapshot.account));
    }

    /// The next `rows` snapshots of the flush under way, in ascending account order: two
    /// writes of the same accounts lock their rows in one order.
    fn next_flush_slice(&mut self, rows: usize) -> Vec<BalanceSnapshot> {
        let at = self.flushing.len().saturating_sub(rows);
        let mut slice = self.flushing.split_off(at);
        slice.reverse();
        slice
    }

    /// The batch holding `plan` is durable.
    pub fn committed(&mut self, _plan: &BatchPlan) {}

    /// A flush that could not be written: its snapshots wait for the next one (unless a newer
    /// balance of the same account is already waiting).
    pub fn restore_snapshots(&mut self, plan: &BatchPlan) {
        // Back into the flush under way when there is one (it is written before anything in
        // `dirty`); otherwise with the changed balances, a newer one winning.
        if self.flushing.is_empty() {
            for snapshot in &plan.snapshots {
                self.dirty.entry(snapshot.account).or_insert(*snapshot);
            }
        } else {
            self.flushing.extend_from_slice(&plan.snapshots);
            self.flushing.sort_unstable_by_key(|snapshot| std::cmp::Reverse(snapshot.account));
        }
    }

    /// Transfers this writer has seen and not yet written in a final state.
    pub fn transfers_in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

impl BatchPlan {
    /// The writes of `records` (a batch of `shard`'s journal, committed at `booked_at`), given
    /// what earlier batches left in `state`, and the next `snapshot_rows` snapshots of the
    /// flush under way (`PlanState::begin_flush`; none if there is none).
    pub fn build(
        shard: u16,
        records: &Arc<Vec<SequencedRecord>>,
        state: &mut PlanState,
        booked_at: Timestamp,
        snapshot_rows: usize,
    ) -> BatchPlan {
        let mut plan = BatchPlan {
            records: Arc::clone(records),
            shard,
            first_seq: records.first().map_or(0, |record| record.seq),
            last_seq: records.last().map_or(0, |record| record.seq),
            booked_at,
            events: crate::events::events_of(records),
            ..BatchPlan::default()
        };
        // Sized for a batch of transfers (about five records each: two states, a hold, a
        // credit, a post): growing these maps and vectors record by record, and hashing with
        // SipHash, were about half of this function's samples in the in-process bench.
        let transfers_max = records.len() / 2 + 1;
        plan.postings.reserve(transfers_max);
        // Insertion-ordered maps: index into the output vectors by key.
        let mut settings_index: Map<AccountId, usize> = Map::default();
        let mut crypto_index: Map<TransferId, usize> = Map::default();
        let mut asset_index: Map<(WalletId, Currency), usize> = Map::default();
        let mut status_index: Map<WalletId, usize> = Map::default();
        // What the batch does to each hold it touches, in the order it first touches them.
        let mut holds: Map<(AccountId, TransferId), HoldChange> = map_with_capacity(transfers_max);
        let mut hold_order: Vec<(AccountId, TransferId)> = Vec::with_capacity(transfers_max);
        let mut admissions: Map<(AccountId, TransferId), HoldChange> = Map::default();
        let mut admission_order: Vec<(AccountId, TransferId)> = Vec::new();
        let mut wallet_holds: Map<(WalletId, Currency, TransferId), HoldChange> = Map::default();
        let mut wallet_hold_order: Vec<(WalletId, Currency, TransferId)> = Vec::new();
        // Transfers the batch touches (a state or a posting), in first-touch order, with the
        // seq of their last record here and whether the batch holds their first record.
        let mut touched: Vec<TransferId> = Vec::with_capacity(transfers_max);
        let mut touched_index: Map<TransferId, Touch<'_>> = map_with_capacity(transfers_max);

        for SequencedRecord { seq, record } in records.iter() {
            let seq = *seq;
            match record {
                Record::AccountOpened(account) => plan.accounts_opened.push((seq, (**account).clone())),
                Record::Account { account, currency, event, after } => {
                    match event {
                        AccountEvent::Held { transfer, amount } => {
                            note_hold(&mut holds, &mut hold_order, (*account, *transfer), Some((*amount, seq)));
                        }
                        AccountEvent::Released { transfer, .. } | AccountEvent::Posted { transfer, .. } => {
                            note_hold(&mut holds, &mut hold_order, (*account, *transfer), None);
                        }
                        AccountEvent::CreditAdmitted { transfer, amount } => {
                            let key = (*account, *transfer);
                            note_hold(&mut admissions, &mut admission_order, key, Some((*amount, seq)));
                        }
                        AccountEvent::CreditWithdrawn { transfer, .. }
                        | AccountEvent::Credited { transfer, admitted: true, .. } => {
                            note_hold(&mut admissions, &mut admission_order, (*account, *transfer), None);
                        }
                        AccountEvent::StatusChanged { .. } | AccountEvent::CreditLimitChanged { .. } => {
                            upsert(
                                &mut plan.account_settings,
                                &mut settings_index,
                                *account,
                                (*account, after.status, after.credit_limit, seq),
                            );
                        }
                        _ => {}
                    }
                    if let Some(posting) = Posting::from_event(*account, *currency, event) {
                        plan.postings.push(PostingRow {
                            account: *account,
                            version: after.version,
                            booked_at,
                            transfer: posting.transfer,
                            currency: *currency,
                            direction: posting.direction,
                            amount: posting.amount,
                            balance_after: after.balance,
                            shard,
                            seq,
                        });
                        state.dirty.insert(
                            *account,
                            BalanceSnapshot {
                                account: *account,
                                balance: after.balance,
                                held: after.held,
                                version: after.version,
                                booked_at,
                            },
                        );
                        let touch = touched_index.entry(posting.transfer).or_insert_with(|| {
                            touched.push(posting.transfer);
                            Touch::default()
                        });
                        touch.legs.push((*account, after.version));
                    }
                }
                Record::WalletOpened(wallet) => plan.wallets_opened.push((seq, (**wallet).clone())),
                Record::Wallet { wallet, event, after } => {
                    upsert(&mut plan.wallet_statuses, &mut status_index, *wallet, (*wallet, after.status, seq));
                    if let Some(asset) = after.asset {
                        let key = (*wallet, asset.asset);
                        upsert(
                            &mut plan.wallet_assets,
                            &mut asset_index,
                            key,
                            (*wallet, asset.asset, asset.balance, asset.held, seq),
                        );
                    }
                    if let (Some(posting), Some(asset)) = (WalletPosting::from_event(*wallet, event), after.asset) {
                        plan.wallet_postings.push((seq, posting, asset.balance));
                    }
                    match event {
                        WalletEvent::Held { transfer, asset, amount } => note_hold(
                            &mut wallet_holds,
                            &mut wallet_hold_order,
                            (*wallet, *asset, *transfer),
                            Some((*amount, seq)),
                        ),
                        WalletEvent::Released { transfer, asset, .. } | WalletEvent::Posted { transfer, asset, .. } => {
                            note_hold(&mut wallet_holds, &mut wallet_hold_order, (*wallet, *asset, *transfer), None);
                        }
                        _ => {}
                    }
                }
                Record::Transfer(transfer) => {
                    let touch = touched_index.entry(transfer.id).or_insert_with(|| {
                        touched.push(transfer.id);
                        Touch::default()
                    });
                    if touch.state.is_none() && !state.in_flight.contains_key(&transfer.id) {
                        // The first record this writer sees of the transfer: a new saga starts
                        // at `Started`; anything else resumes a transfer the store already has.
                        touch.fresh = transfer.step == SagaStep::Started;
                    }
                    // Borrowed: only the last state of the batch is cloned (`place_transfer`).
                    touch.state = Some((&**transfer, seq));
                }
                Record::AmlFlag(flag) => plan.aml_flags.push((seq, (**flag).clone())),
                Record::CryptoOp(op) => {
                    upsert(&mut plan.crypto_ops, &mut crypto_index, op.id, (seq, (**op).clone()));
                }
                Record::Audit(record) => plan.audits.push((**record).clone()),
            }
        }
        for key in admission_order {
            let Some(change) = admissions.get(&key) else { continue };
            if change.removes_earlier {
                plan.admissions_removed.push(key);
            }
            if let Some((amount, seq)) = change.placed {
                plan.admissions_placed.push((key.0, key.1, amount, seq));
            }
        }
        for key in wallet_hold_order {
            let Some(change) = wallet_holds.get(&key) else { continue };
            if change.removes_earlier {
                plan.wallet_holds_removed.push(key);
            }
            if let Some((amount, seq)) = change.placed {
                plan.wallet_holds_placed.push((key.0, key.1, key.2, amount, seq));
            }
        }
        // Transfers first, so a hold knows whether its transfer's row is written by now. The
        // transfers whose first row this batch writes matter only for holds kept by earlier
        // batches (a hold kept in this one has no row behind it), so they are collected only
        // while some are kept.
        let mut rows_now: Vec<TransferId> = Vec::new();
        for id in touched {
            let Some(touch) = touched_index.remove(&id) else { continue };
            if plan.place_transfer(id, touch, state) && !state.kept.is_empty() {
                rows_now.push(id);
            }
        }
        for (account, transfer) in hold_order {
            let Some(change) = holds.get(&(account, transfer)) else { continue };
            if change.removes_earlier {
                if state.take_kept(account, transfer) {
                    plan.holds_settled.push((account, transfer));
                } else {
                    plan.holds_removed.push((account, transfer));
                }
            }
            if let Some((amount, seq)) = change.placed {
                if state.keeps_hold_of(transfer) {
                    let kept = state.kept.entry(transfer).or_default();
                    // Two kept holds of one key would be two rows of one primary key when
                    // their transfer's row is written, which the store refuses.
                    debug_assert!(kept.iter().all(|(held, _, _)| *held != account), "hold kept twice");
                    kept.push((account, amount, seq));
                    plan.holds_kept.push((account, transfer, amount));
                } else {
                    plan.holds_placed.push((account, transfer, amount, seq));
                }
            }
        }
        // A transfer whose first row this batch writes takes its kept holds with it: recovery
        // needs the hold of a saga that moved money, and a pending transfer keeps its hold.
        for transfer in rows_now {
            for (account, amount, seq) in state.kept.remove(&transfer).unwrap_or_default() {
                plan.holds_placed.push((account, transfer, amount, seq));
                plan.holds_settled.push((account, transfer));
            }
        }
        // After the records: a balance this batch changed goes to `dirty`, never into a
        // flush already set aside (which it would then overtake).
        if snapshot_rows > 0 && state.flush_under_way() {
            plan.snapshots = state.next_flush_slice(snapshot_rows);
        }
        plan
    }

    /// Decides what the batch writes for one transfer it touched. True if this is the first
    /// row of it the writer writes.
    fn place_transfer(&mut self, id: TransferId, touch: Touch<'_>, state: &mut PlanState) -> bool {
        let entry = match (state.in_flight.remove(&id), touch.state) {
            (Some(mut entry), Some((transfer, seq))) => {
                entry.transfer = transfer.clone();
                entry.seq = seq;
                entry
            }
            (Some(entry), None) => entry,
            (None, Some((transfer, seq))) => {
                InFlight { transfer: transfer.clone(), seq, row_written: !touch.fresh, legs: Vec::new() }
            }
            // Postings of something that is not a transfer saga of this journal (a crypto
            // operation, an FX clearing leg of another journal's saga): the postings alone.
            (None, None) => return false,
        };
        let mut entry = entry;
        let seq = entry.seq;
        let status = entry.transfer.status;
        let finished = status.is_terminal() || status == TransferStatus::Pending;
        if finished {
            let row = TransferRow { transfer: entry.transfer, legs: Vec::new(), seq };
            if entry.row_written {
                self.transfers_upsert.push(row);
                return false;
            }
            self.transfers_new.push(row);
            return true;
        }
        // Still running: the legs it made so far matter (a finished one's row needs none).
        if entry.legs.is_empty() {
            entry.legs = touch.legs.into_vec();
        } else {
            entry.legs.extend(touch.legs);
        }
        // Its row is needed once money moved (a posting) or if it exists: a new row if this
        // writer never wrote it, else a replacement.
        let mut first_row = false;
        if !entry.legs.is_empty() || entry.row_written {
            let row = TransferRow { transfer: entry.transfer.clone(), legs: entry.legs.clone(), seq };
            if entry.row_written {
                self.transfers_upsert.push(row);
            } else {
                self.transfers_new.push(row);
                first_row = true;
            }
            entry.row_written = true;
            if entry.legs.is_empty() {
                // The row says all there is: a later record, here or in another journal (an
                // atomic batch records its items' intent in one journal, their sagas go on in
                // their sources'), replaces it. Nothing to carry, so nothing is kept.
                return first_row;
            }
        }
        state.in_flight.insert(id, entry);
        first_row
    }
}

/// A store's memory of its direct commits (`Store::commit`), per shard: tools and tests commit
/// batches without a journal, and each batch is planned against the ones before it.
#[derive(Debug, Default)]
pub struct DirectCommits {
    states: Mutex<HashMap<u16, PlanState>>,
}

impl DirectCommits {
    /// Plans `records` as the next batch of `shard`, booked at `booked_at`, writing every
    /// pending snapshot (a direct commit leaves the store's snapshots current).
    pub fn plan(&self, shard: u16, records: &[SequencedRecord], booked_at: Timestamp) -> BatchPlan {
        let mut states = self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = states.entry(shard).or_default();
        let records = Arc::new(records.to_vec());
        // Plan the records first, so that the flush includes the balances they change.
        let mut plan = BatchPlan::build(shard, &records, state, booked_at, 0);
        state.begin_flush();
        plan.snapshots = state.next_flush_slice(usize::MAX);
        plan
    }
}

/// The system clock as a booking time, for direct commits.
pub fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros)
}

/// A map keyed by ids the engine made (transfer and account ids, not a client's choice), with
/// a fast hasher seeded per process.
type Map<K, V> = HashMap<K, V, RandomState>;

fn map_with_capacity<K, V>(capacity: usize) -> Map<K, V> {
    Map::with_capacity_and_hasher(capacity, RandomState::default())
}

#[derive(Debug, Default)]
struct Touch<'a> {
    /// The transfer's last state in the batch, with its seq.
    state: Option<(&'a Transfer, u64)>,
    /// The batch holds the transfer's first record (`Started`): its row cannot exist yet.
    fresh: bool,
    /// Inline: a transfer has two to four legs, and most finish in the batch that made them,
    /// whose row needs none (a `Vec` here was an allocation and a copy per transfer).
    legs: SmallVec<[(AccountId, u64); 4]>,
}

fn upsert<K: std::hash::Hash + Eq, V>(values: &mut Vec<V>, index: &mut Map<K, usize>, key: K, value: V) {
    match index.get(&key) {
        Some(&at) => values[at] = value,
        None => {
            index.insert(key, values.len());
            values.push(value);
        }
    }
}

/// What one batch does to one hold.
#[derive(Clone, Copy, Debug, Default)]
struct HoldChange {
    /// The batch removes a hold placed before it (its first step on the hold is a removal).
    removes_earlier: bool,
    /// The hold the batch leaves placed, with the seq that placed it.
    placed: Option<(Decimal, u64)>,
}

/// Records a hold placed (`Some`) or removed (`None`). A removal of a hold placed in the same
/// batch cancels it out, so nothing is written for it; a placement after a removal of an
/// earlier hold is a new hold, written after the old one is deleted.
fn note_hold<K: std::hash::Hash + Eq + Copy>(
    holds: &mut Map<K, HoldChange>,
    order: &mut Vec<K>,
    key: K,
    placed: Option<(Decimal, u64)>,
) {
    match holds.get_mut(&key) {
        None => {
            holds.insert(key, HoldChange { removes_earlier: placed.is_none(), placed });
            order.push(key);
        }
        Some(change) => match (change.placed, placed) {
            (Some(_), None) => change.placed = None,
            (None, Some(placed)) => change.placed = Some(placed),
            // A repeat of the same step: the first one stands.
            (Some(_), Some(_)) | (None, None) => {}
        },
    }
}

#[cfg(test)]
mod tests;
