//! Turns one journal batch into the writes a SQL store makes, coalesced: one snapshot row per
//! account and per wallet asset (the last state in the batch), the net holds placed and
//! removed (a hold placed and removed in the same batch never touches the database), every
//! posting, and one row per transfer (its last state in the batch). Pure: both SQL stores
//! write the same plan, so they cannot disagree about what a batch means.
//!
//! A store applies a plan's hold removals before its hold placements: a hold placed before the
//! batch, removed, and placed again (same transfer) within it is in both lists, and its new
//! row replaces the old one.

use std::collections::HashMap;

use rust_decimal::Decimal;
use tally_engine::aml::AmlFlag;
use tally_engine::{
    Account, AccountEvent, AccountId, AccountSnapshot, AccountStatus, CryptoOp, Currency, Direction, Posting, Record,
    Transfer, TransferId, Wallet, WalletEvent, WalletId,
};

use crate::store::SequencedRecord;

#[derive(Debug, Default)]
pub struct BatchPlan {
    pub first_seq: u64,
    pub last_seq: u64,
    pub accounts_opened: Vec<(u64, Account)>,
    /// The last snapshot of each account changed in the batch, with its record's seq.
    pub account_snapshots: Vec<(AccountId, AccountSnapshot, u64)>,
    pub holds_placed: Vec<(AccountId, TransferId, Decimal, u64)>,
    pub holds_removed: Vec<(AccountId, TransferId)>,
    /// Postings with their seq and the account's balance after them.
    pub postings: Vec<(u64, Posting, Decimal)>,
    /// The last state of each transfer recorded in the batch.
    pub transfers: Vec<(u64, Transfer)>,
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

impl BatchPlan {
    pub fn new(records: &[SequencedRecord]) -> BatchPlan {
        let mut plan = BatchPlan {
            first_seq: records.first().map_or(0, |record| record.seq),
            last_seq: records.last().map_or(0, |record| record.seq),
            ..BatchPlan::default()
        };
        // Insertion-ordered maps: index into the output vectors by key.
        let mut snapshot_index: HashMap<AccountId, usize> = HashMap::new();
        let mut transfer_index: HashMap<TransferId, usize> = HashMap::new();
        let mut crypto_index: HashMap<TransferId, usize> = HashMap::new();
        let mut asset_index: HashMap<(WalletId, Currency), usize> = HashMap::new();
        let mut status_index: HashMap<WalletId, usize> = HashMap::new();
        // What the batch does to each hold it touches, in the order it first touches them.
        let mut holds: HashMap<(AccountId, TransferId), HoldChange> = HashMap::new();
        let mut hold_order: Vec<(AccountId, TransferId)> = Vec::new();
        let mut wallet_holds: HashMap<(WalletId, Currency, TransferId), HoldChange> = HashMap::new();
        let mut wallet_hold_order: Vec<(WalletId, Currency, TransferId)> = Vec::new();

        for SequencedRecord { seq, record } in records {
            let seq = *seq;
            match record {
                Record::AccountOpened(account) => plan.accounts_opened.push((seq, (**account).clone())),
                Record::Account { account, currency, event, after } => {
                    upsert(&mut plan.account_snapshots, &mut snapshot_index, *account, (*account, *after, seq));
                    match event {
                        AccountEvent::Held { transfer, amount } => {
                            note_hold(&mut holds, &mut hold_order, (*account, *transfer), Some((*amount, seq)));
                        }
                        AccountEvent::Released { transfer, .. } | AccountEvent::Posted { transfer, .. } => {
                            note_hold(&mut holds, &mut hold_order, (*account, *transfer), None);
                        }
                        _ => {}
                    }
                    if let Some(posting) = Posting::from_event(*account, *currency, event) {
                        plan.postings.push((seq, posting, after.balance));
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
                    upsert(&mut plan.transfers, &mut transfer_index, transfer.id, (seq, (**transfer).clone()));
                }
                Record::AmlFlag(flag) => plan.aml_flags.push((seq, (**flag).clone())),
                Record::CryptoOp(op) => {
                    upsert(&mut plan.crypto_ops, &mut crypto_index, op.id, (seq, (**op).clone()));
                }
            }
        }
        for key in hold_order {
            let Some(change) = holds.get(&key) else { continue };
            if change.removes_earlier {
                plan.holds_removed.push(key);
            }
            if let Some((amount, seq)) = change.placed {
                plan.holds_placed.push((key.0, key.1, amount, seq));
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
        plan
    }
}

fn upsert<K: std::hash::Hash + Eq, V>(values: &mut Vec<V>, index: &mut HashMap<K, usize>, key: K, value: V) {
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
    holds: &mut HashMap<K, HoldChange>,
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
mod tests {
    use rust_decimal_macros::dec;
    use tally_engine::{AccountKind, Timestamp};

    use super::*;

    fn event(seq: u64, account: u128, event: AccountEvent, balance: Decimal, held: Decimal) -> SequencedRecord {
        SequencedRecord {
            seq,
            record: Record::Account {
                account: AccountId::from_u128(account),
                currency: Currency::USD,
                event,
                after: AccountSnapshot { balance, held, credit_limit: dec!(0), status: AccountStatus::Active },
            },
        }
    }

    #[test]
    fn a_batch_coalesces_snapshots_nets_out_holds_and_keeps_every_posting() {
        let t = |n| TransferId::from_u128(n);
        let opened = Account::open(
            AccountId::from_u128(1),
            None,
            Currency::USD,
            AccountKind::User,
            dec!(0),
            Timestamp::default(),
        );
        let records = vec![
            SequencedRecord { seq: 10, record: Record::AccountOpened(Box::new(opened)) },
            event(11, 1, AccountEvent::Credited { transfer: t(1), amount: dec!(100) }, dec!(100), dec!(0)),
            event(12, 1, AccountEvent::Held { transfer: t(2), amount: dec!(30) }, dec!(100), dec!(30)),
            event(13, 1, AccountEvent::Posted { transfer: t(2), amount: dec!(30) }, dec!(70), dec!(0)),
            event(14, 1, AccountEvent::Held { transfer: t(3), amount: dec!(5) }, dec!(70), dec!(5)),
            event(15, 2, AccountEvent::Released { transfer: t(9), amount: dec!(1) }, dec!(0), dec!(0)),
        ];
        let plan = BatchPlan::new(&records);
        assert_eq!((plan.first_seq, plan.last_seq), (10, 15));
        assert_eq!(plan.accounts_opened.len(), 1);
        assert_eq!(plan.account_snapshots.len(), 2, "one snapshot per account");
        assert_eq!(plan.account_snapshots[0].1.balance, dec!(70));
        assert_eq!(plan.account_snapshots[0].2, 14);
        assert_eq!(plan.holds_placed, vec![(AccountId::from_u128(1), t(3), dec!(5), 14)]);
        assert_eq!(plan.holds_removed, vec![(AccountId::from_u128(2), t(9))], "hold 2 netted out");
        assert_eq!(plan.postings.len(), 2);
        assert_eq!(plan.postings[1].2, dec!(70), "balance after the debit");
    }

    #[test]
    fn a_hold_removed_and_placed_again_in_one_batch_is_deleted_then_written_anew() {
        let t = TransferId::from_u128(7);
        let records = vec![
            // The hold was placed in an earlier batch; this one releases it and places it again.
            event(20, 1, AccountEvent::Released { transfer: t, amount: dec!(10) }, dec!(100), dec!(0)),
            event(21, 1, AccountEvent::Held { transfer: t, amount: dec!(12) }, dec!(100), dec!(12)),
            // Placed, removed and placed again within the batch: only the last placement is new.
            event(22, 2, AccountEvent::Held { transfer: t, amount: dec!(1) }, dec!(100), dec!(1)),
            event(23, 2, AccountEvent::Released { transfer: t, amount: dec!(1) }, dec!(100), dec!(0)),
            event(24, 2, AccountEvent::Held { transfer: t, amount: dec!(2) }, dec!(100), dec!(2)),
        ];
        let plan = BatchPlan::new(&records);
        assert_eq!(plan.holds_removed, vec![(AccountId::from_u128(1), t)]);
        assert_eq!(
            plan.holds_placed,
            vec![(AccountId::from_u128(1), t, dec!(12), 21), (AccountId::from_u128(2), t, dec!(2), 24)]
        );
    }
}
