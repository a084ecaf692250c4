//! `tally check`: verifies a store offline against the ledger's invariants (DESIGN.md §3, §5).
//!
//! 1. For every currency, the balances of all accounts and wallet assets sum to zero
//!    (wallets are ledger positions like accounts: a deposit credits a wallet against the
//!    settlement account of its asset, an order against FX clearing).
//! 2. Every account's balance equals the sum of its postings; its `held` equals its holds.
//! 3. No user account is below its credit limit.
//! 4. No hold is orphaned: every hold belongs to a transfer that is still `pending` (offline,
//!    nothing is `processing` legitimately: no saga runs).
//! 5. No transfer or crypto operation is left `processing` (a saga would have to be running
//!    to finish it).
//! 6. No credit admission is left (an atomic batch's promise to a destination lives only
//!    between the batch's phases; offline, one left would keep its account from closing until
//!    the next start's recovery withdraws it).

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::Decimal;
use tally_engine::{AccountId, Currency, TransferId, TransferStatus};

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    CurrencyNotBalanced { currency: Currency, sum: Decimal },
    BalanceNotPostings { account: AccountId, balance: Decimal, postings: Decimal },
    HeldNotHolds { account: AccountId, held: Decimal, holds: Decimal },
    Overdrawn { account: AccountId, available: Decimal },
    OrphanHold { account: AccountId, transfer: TransferId },
    OrphanAdmission { account: AccountId, transfer: TransferId },
    TransferStuck { transfer: TransferId },
    CryptoOpStuck { operation: TransferId },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::CurrencyNotBalanced { currency, sum } => write!(f, "{currency}: balances sum to {sum}, not 0"),
            Violation::BalanceNotPostings { account, balance, postings } => {
                write!(f, "account {account}: balance {balance} but postings sum to {postings}")
            }
            Violation::HeldNotHolds { account, held, holds } => {
                write!(f, "account {account}: held {held} but holds sum to {holds}")
            }
            Violation::Overdrawn { account, available } => write!(f, "account {account}: available {available} < 0"),
            Violation::OrphanHold { account, transfer } => {
                write!(f, "account {account}: hold for transfer {transfer}, which is not pending")
            }
            Violation::OrphanAdmission { account, transfer } => {
                write!(f, "account {account}: credit admission for transfer {transfer}, with no batch running")
            }
            Violation::TransferStuck { transfer } => write!(f, "transfer {transfer} is processing with no saga"),
            Violation::CryptoOpStuck { operation } => {
                write!(f, "crypto operation {operation} is processing with no saga")
            }
        }
    }
}

/// What `check` looked at, for its report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub accounts: usize,
    pub currencies: BTreeMap<Currency, Decimal>,
    pub holds: usize,
    pub pending_transfers: usize,
}

/// Checks the store. `Ok` with an empty list means every invariant holds.
pub async fn check(store: &dyn Store) -> Result<(CheckSummary, Vec<Violation>), StoreError> {
    let mut violations = Vec::new();
    let mut summary = CheckSummary::default();
    let accounts = store.all_accounts().await?;
    let posting_sums = store.posting_sums().await?;
    summary.accounts = accounts.len();
    for account in &accounts {
        let sum = summary.currencies.entry(account.currency).or_default();
        *sum = sum.checked_add(account.balance()).ok_or_else(|| StoreError::Corrupt("balance sum overflow".into()))?;
        let postings = posting_sums.get(&account.id).copied().unwrap_or_default();
        if postings != account.balance() {
            violations.push(Violation::BalanceNotPostings {
                account: account.id,
                balance: account.balance(),
                postings,
            });
        }
        let holds: Decimal = account.position.holds().map(|(_, amount)| amount).sum();
        if holds != account.held() {
            violations.push(Violation::HeldNotHolds { account: account.id, held: account.held(), holds });
        }
        let available = account.available().map_err(|_| StoreError::Corrupt("available overflow".into()))?;
        if !account.kind.is_system() && available.is_sign_negative() {
            violations.push(Violation::Overdrawn { account: account.id, available });
        }
    }
    for (_, asset, balance) in store.wallet_balances().await? {
        let sum = summary.currencies.entry(asset).or_default();
        *sum = sum.checked_add(balance).ok_or_else(|| StoreError::Corrupt("balance sum overflow".into()))?;
    }
    for operation in store.unfinished_crypto_ops().await? {
        if operation.status == tally_engine::CryptoOpStatus::Processing {
            violations.push(Violation::CryptoOpStuck { operation: operation.id });
        }
    }
    for (currency, sum) in &summary.currencies {
        if !sum.is_zero() {
            violations.push(Violation::CurrencyNotBalanced { currency: *currency, sum: *sum });
        }
    }
    let unfinished = store.non_terminal_transfers().await?;
    let pending: HashSet<TransferId> =
        unfinished.iter().filter(|t| t.status == TransferStatus::Pending).map(|t| t.id).collect();
    summary.pending_transfers = pending.len();
    for transfer in unfinished.iter().filter(|t| t.status == TransferStatus::Processing) {
        violations.push(Violation::TransferStuck { transfer: transfer.id });
    }
    let holds = store.live_holds().await?;
    summary.holds = holds.len();
    for hold in holds {
        if !pending.contains(&hold.transfer) {
            violations.push(Violation::OrphanHold { account: hold.account, transfer: hold.transfer });
        }
    }
    for admission in store.live_admissions().await? {
        violations.push(Violation::OrphanAdmission { account: admission.account, transfer: admission.transfer });
    }
    Ok((summary, violations))
}

/// Sums postings per account from `postings_of`: the default for stores without an
/// aggregate query.
pub(crate) async fn posting_sums_by_scan<S: Store + ?Sized>(
    store: &S,
) -> Result<HashMap<AccountId, Decimal>, StoreError> {
    let mut sums = HashMap::new();
    for account in store.all_accounts().await? {
        let sum: Decimal = store.postings_of(account.id).await?.iter().map(|posting| posting.signed_amount()).sum();
        sums.insert(account.id, sum);
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;
    use tally_engine::{
        Account, AccountEvent, AccountKind, Record, Timestamp, Transfer, TransferKind, TransferRequest,
    };

    use super::*;
    use crate::memory::MemoryStore;
    use crate::store::SequencedRecord;

    #[tokio::test]
    async fn check_names_money_from_nowhere_an_orphan_hold_and_a_stuck_transfer() {
        let store = MemoryStore::new();
        let mut account = Account::open(
            AccountId::from_u128(1),
            None,
            Currency::USD,
            AccountKind::User,
            dec!(0),
            Timestamp::default(),
        );
        let opened = Record::AccountOpened(Box::new(account.clone()));
        let orphan = TransferId::from_u128(7);
        let mut records = vec![opened];
        // A credit with no matching debit anywhere: money from nowhere. And a credit of a
        // transfer still `processing` (money moved, so it is written, then nothing finished it).
        for event in [
            AccountEvent::Credited { transfer: TransferId::from_u128(6), amount: dec!(10), admitted: false },
            AccountEvent::Held { transfer: orphan, amount: dec!(4) },
            AccountEvent::Credited { transfer: TransferId::from_u128(8), amount: dec!(1), admitted: false },
        ] {
            account.apply(&event).unwrap();
            records.push(Record::Account {
                account: account.id,
                currency: Currency::USD,
                event,
                after: account.snapshot(),
            });
        }
        let stuck = Transfer::start(TransferRequest {
            id: TransferId::from_u128(8),
            kind: TransferKind::Internal,
            source: account.id,
            destination: AccountId::from_u128(2),
            amount: dec!(1),
            currency: Currency::USD,
            fee: dec!(0),
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: Timestamp::default(),
            metadata: Default::default(),
        });
        records.insert(1, Record::Transfer(Box::new(stuck)));
        let sequenced: Vec<SequencedRecord> =
            records.into_iter().enumerate().map(|(i, record)| SequencedRecord { seq: i as u64 + 1, record }).collect();
        store.commit(0, &sequenced).await.unwrap();

        let (summary, violations) = check(&store).await.unwrap();

        assert_eq!(summary.accounts, 1);
        assert!(violations.contains(&Violation::CurrencyNotBalanced { currency: Currency::USD, sum: dec!(11) }));
        assert!(violations.contains(&Violation::OrphanHold { account: account.id, transfer: orphan }));
        assert!(violations.contains(&Violation::TransferStuck { transfer: TransferId::from_u128(8) }));
        assert_eq!(violations.len(), 3, "{violations:?}");
    }
}
