//! Holds the journals' writers keep back from the store (`batch`'s module comment): the hold of
//! a saga whose transfer has no row yet is not written, since after a crash recovery would only
//! delete it. While the process runs, though, an account can be loaded from the store again
//! (after passivation, or after a panic restarts its actor), and must come back with every hold
//! it had: its loader adds the ones listed here (`Journals::kept_holds_of`).
//!
//! The list changes when a batch is durable, before the journal says so
//! (`Writer::durable`): whoever waited for an account's records to be durable and then reads
//! this list and the store, in that order, sees each hold in one of them (or both, for a hold
//! whose row has just been written: the loader takes it once). Read the list first: a hold
//! leaves it only after the batch that writes its row has committed.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId};

use crate::batch::BatchPlan;

/// Each account's kept holds by transfer. A map, not a list: a hot source account can have a
/// few hundred sagas' holds kept at once, and every durable batch settles some of them.
type ByAccount = HashMap<AccountId, HashMap<TransferId, Decimal, RandomState>, RandomState>;

#[derive(Debug, Default)]
pub(crate) struct KeptHolds {
    by_account: Mutex<ByAccount>,
}

impl KeptHolds {
    /// The durable batch `plan`'s changes: the holds it kept are listed; those it settled
    /// (removed, or written with their transfer's row) and those it deleted are not.
    pub(crate) fn apply(&self, plan: &BatchPlan) {
        if plan.holds_kept.is_empty() && plan.holds_settled.is_empty() && plan.holds_removed.is_empty() {
            return;
        }
        let mut by_account = self.by_account.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if by_account.is_empty() && plan.holds_kept.is_empty() {
            return;
        }
        // A deleted hold was not kept by this journal, but might have been by another one (a
        // saga's records stay in one journal, so it should not): dropping it here too means
        // a hold the store no longer has can never come back through this list.
        for (account, transfer) in plan.holds_settled.iter().chain(&plan.holds_removed) {
            if let Some(holds) = by_account.get_mut(account) {
                holds.remove(transfer);
                if holds.is_empty() {
                    by_account.remove(account);
                }
            }
        }
        for (account, transfer, amount) in &plan.holds_kept {
            by_account.entry(*account).or_default().insert(*transfer, *amount);
        }
    }

    /// The holds kept back for `account`.
    pub(crate) fn of(&self, account: AccountId) -> Vec<(TransferId, Decimal)> {
        let by_account = self.by_account.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        by_account
            .get(&account)
            .map(|holds| holds.iter().map(|(transfer, amount)| (*transfer, *amount)).collect())
            .unwrap_or_default()
    }
}
