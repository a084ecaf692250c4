//! `tally check`: verifies a store offline against the ledger's invariants (DESIGN.md §3, §5).
//!
//! 1. For every currency, the balances of all accounts and wallet assets sum to zero
//!    (wallets are ledger positions like accounts: a deposit credits a wallet against the
//!    settlement account of its asset, an order against FX clearing).
//! 2. Every account's balance equals the sum of its postings; its `held` equals its holds.
//!    (The SQL stores' `accounts.held` column is not compared: it is written only with the
//!    balance snapshots, which a hold alone does not bring forward, so it is as stale as the
//!    snapshot by design, and no read uses it: `held` is rebuilt from the hold rows.)
//! 3. No user account is below its credit limit.
//! 4. No hold is orphaned: every hold belongs to a transfer that is still `pending` (offline,
//!    nothing is `processing` legitimately: no saga runs).
//! 5. No transfer or crypto operation is left `processing` (a saga would have to be running
//!    to finish it).
//! 6. No credit admission is left (an atomic batch's promise to a destination lives only
//!    between the batch's phases; offline, one left would keep its account from closing until
//!    the next start's recovery withdraws it).
//! 7. A `completed` transfer's postings balance per currency and are exactly the legs its saga
//!    posts (`actors/src/saga.rs`): the source debited amount plus fee, the destination
//!    credited the destination amount, the fee account credited the fee, and for FX the
//!    destination currency's clearing account debited the destination amount and the source
//!    currency's credited the amount. A transfer that ended otherwise (failed, rejected,
//!    cancelled, expired) has no postings.
//! 8. Every posting belongs to a transfer or a crypto operation the store has (crypto
//!    operations post their account legs under their own id), and is in its account's
//!    currency.
//! 9. A `pending` transfer holds amount plus fee at its source. One whose deadline has passed
//!    may hold nothing: recovery leaves an expiry cut between its release and its outcome
//!    pending for the sweeper (`actors/src/recovery.rs`), which expires it at the next start.
//! 10. Every wallet asset's balance equals the sum of its wallet postings, and every wallet
//!     hold belongs to a withdrawal still `pending` or an operation still `processing` (which
//!     5 names) of that wallet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rust_decimal::Decimal;
use tally_engine::posting::{Unbalanced, check_balanced};
use tally_engine::{
    AccountId, CryptoOpKind, CryptoOpStatus, Currency, Direction, Posting, Transfer, TransferId, TransferStatus,
    WalletId, system_accounts,
};

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    CurrencyNotBalanced {
        currency: Currency,
        sum: Decimal,
    },
    BalanceNotPostings {
        account: AccountId,
        balance: Decimal,
        postings: Decimal,
    },
    HeldNotHolds {
        account: AccountId,
        held: Decimal,
        holds: Decimal,
    },
    Overdrawn {
        account: AccountId,
        available: Decimal,
    },
    OrphanHold {
        account: AccountId,
        transfer: TransferId,
    },
    OrphanAdmission {
        account: AccountId,
        transfer: TransferId,
    },
    TransferStuck {
        transfer: TransferId,
    },
    CryptoOpStuck {
        operation: TransferId,
    },
    /// A completed transfer whose postings do not sum to zero in `currency`.
    TransferUnbalanced {
        transfer: TransferId,
        currency: Currency,
        sum: Decimal,
    },
    /// A completed transfer whose postings balance but are not the legs it posts.
    TransferPostingsMismatch {
        transfer: TransferId,
        expected: Vec<Posting>,
        found: Vec<Posting>,
    },
    /// A transfer that ended without completing, yet moved money.
    EndedTransferMoved {
        transfer: TransferId,
        status: TransferStatus,
        postings: usize,
    },
    /// Postings (account or wallet) under an id that is neither a transfer nor a crypto
    /// operation the store has.
    OrphanPosting {
        transfer: TransferId,
    },
    /// A posting on an account the store does not have.
    PostingAccountMissing {
        account: AccountId,
        transfer: TransferId,
    },
    PostingCurrency {
        account: AccountId,
        transfer: TransferId,
        account_currency: Currency,
        posting: Currency,
    },
    /// A pending transfer whose source does not hold amount plus fee for it.
    PendingNotHeld {
        transfer: TransferId,
        source: AccountId,
        held: Option<Decimal>,
        expected: Decimal,
    },
    WalletBalanceNotPostings {
        wallet: WalletId,
        asset: Currency,
        balance: Decimal,
        postings: Decimal,
    },
    /// A wallet hold of no pending withdrawal or running operation of that wallet.
    OrphanWalletHold {
        wallet: WalletId,
        asset: Currency,
        transfer: TransferId,
    },
}

/// Postings as a short list, for a violation's text.
fn legs(postings: &[Posting]) -> String {
    let legs: Vec<String> = postings
        .iter()
        .map(|p| format!("{} {} {} on {}", p.direction.as_str(), p.amount, p.currency, p.account))
        .collect();
    format!("[{}]", legs.join(", "))
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
            Violation::TransferUnbalanced { transfer, currency, sum } => {
                write!(f, "completed transfer {transfer}: its {currency} postings sum to {sum}, not 0")
            }
            Violation::TransferPostingsMismatch { transfer, expected, found } => write!(
                f,
                "completed transfer {transfer}: postings {} are not the legs it posts {}",
                legs(found),
                legs(expected)
            ),
            Violation::EndedTransferMoved { transfer, status, postings } => {
                write!(f, "transfer {transfer} is {} but has {postings} postings", status.as_str())
            }
            Violation::OrphanPosting { transfer } => {
                write!(f, "postings under {transfer}, which is no transfer or crypto operation")
            }
            Violation::PostingAccountMissing { account, transfer } => {
                write!(f, "a posting of {transfer} on account {account}, which the store does not have")
            }
            Violation::PostingCurrency { account, transfer, account_currency, posting } => {
                write!(f, "account {account} ({account_currency}): a posting of {transfer} in {posting}")
            }
            Violation::PendingNotHeld { transfer, source, held, expected } => match held {
                Some(held) => {
                    write!(f, "pending transfer {transfer}: its source {source} holds {held}, not {expected}")
                }
                None => {
                    write!(f, "pending transfer {transfer}: its source {source} holds nothing (expected {expected})")
                }
            },
            Violation::WalletBalanceNotPostings { wallet, asset, balance, postings } => {
                write!(f, "wallet {wallet} {asset}: balance {balance} but wallet postings sum to {postings}")
            }
            Violation::OrphanWalletHold { wallet, asset, transfer } => write!(
                f,
                "wallet {wallet} {asset}: hold for {transfer}, which is no pending withdrawal or running operation of it"
            ),
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

fn overflow() -> StoreError {
    StoreError::Corrupt("balance sum overflow".into())
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
        *sum = sum.checked_add(account.balance()).ok_or_else(overflow)?;
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
    let currency_of: HashMap<AccountId, Currency> =
        accounts.iter().map(|account| (account.id, account.currency)).collect();
    let wallet_balances = store.wallet_balances().await?;
    for (_, asset, balance) in &wallet_balances {
        let sum = summary.currencies.entry(*asset).or_default();
        *sum = sum.checked_add(*balance).ok_or_else(overflow)?;
    }
    for operation in store.unfinished_crypto_ops().await? {
        if operation.status == CryptoOpStatus::Processing {
            violations.push(Violation::CryptoOpStuck { operation: operation.id });
        }
    }
    for (currency, sum) in &summary.currencies {
        if !sum.is_zero() {
            violations.push(Violation::CurrencyNotBalanced { currency: *currency, sum: *sum });
        }
    }

    let transfers = store.all_transfers().await?;
    let pending: HashSet<TransferId> =
        transfers.iter().filter(|t| t.status == TransferStatus::Pending).map(|t| t.id).collect();
    summary.pending_transfers = pending.len();
    for transfer in transfers.iter().filter(|t| t.status == TransferStatus::Processing) {
        violations.push(Violation::TransferStuck { transfer: transfer.id });
    }
    let holds = store.live_holds().await?;
    summary.holds = holds.len();
    let mut held: HashMap<(AccountId, TransferId), Decimal> = HashMap::new();
    for hold in &holds {
        if !pending.contains(&hold.transfer) {
            violations.push(Violation::OrphanHold { account: hold.account, transfer: hold.transfer });
        }
        held.insert((hold.account, hold.transfer), hold.amount);
    }
    for admission in store.live_admissions().await? {
        violations.push(Violation::OrphanAdmission { account: admission.account, transfer: admission.transfer });
    }

    // Postings: each on an account of its currency, each under a transfer or operation.
    let mut postings_of: HashMap<TransferId, Vec<Posting>> = HashMap::new();
    for posting in store.all_postings().await? {
        match currency_of.get(&posting.account) {
            None => violations
                .push(Violation::PostingAccountMissing { account: posting.account, transfer: posting.transfer }),
            Some(currency) if *currency != posting.currency => violations.push(Violation::PostingCurrency {
                account: posting.account,
                transfer: posting.transfer,
                account_currency: *currency,
                posting: posting.currency,
            }),
            Some(_) => {}
        }
        postings_of.entry(posting.transfer).or_default().push(posting);
    }
    let wallet_postings = store.all_wallet_postings().await?;
    let transfer_ids: HashSet<TransferId> = transfers.iter().map(|t| t.id).collect();
    let others: BTreeSet<TransferId> = postings_of
        .keys()
        .chain(wallet_postings.iter().map(|posting| &posting.transfer))
        .filter(|id| !transfer_ids.contains(id))
        .copied()
        .collect();
    for id in others {
        if store.load_crypto_op(id).await?.is_none() {
            violations.push(Violation::OrphanPosting { transfer: id });
        }
    }

    // Transfers: what each one's status says of its postings and holds.
    let now = crate::batch::now().max(store.last_booked_at().await?);
    for transfer in &transfers {
        let postings = postings_of.get(&transfer.id).map(Vec::as_slice).unwrap_or_default();
        match transfer.status {
            TransferStatus::Completed => match check_balanced(postings) {
                Err(Unbalanced::NonZeroSum { currency, sum }) => {
                    violations.push(Violation::TransferUnbalanced { transfer: transfer.id, currency, sum });
                }
                Err(Unbalanced::Overflow) => {
                    return Err(StoreError::Corrupt(format!("{}: postings overflow", transfer.id)));
                }
                Ok(()) => {
                    let expected = expected_postings(transfer)?;
                    if !same_postings(&expected, postings) {
                        violations.push(Violation::TransferPostingsMismatch {
                            transfer: transfer.id,
                            expected,
                            found: postings.to_vec(),
                        });
                    }
                }
            },
            TransferStatus::Failed | TransferStatus::Rejected | TransferStatus::Cancelled | TransferStatus::Expired => {
                if !postings.is_empty() {
                    violations.push(Violation::EndedTransferMoved {
                        transfer: transfer.id,
                        status: transfer.status,
                        postings: postings.len(),
                    });
                }
            }
            TransferStatus::Pending => {
                let expected = total_debited(transfer)?;
                let hold = held.get(&(transfer.source, transfer.id)).copied();
                let awaiting_expiry = hold.is_none() && transfer.pending_expires_at.is_some_and(|at| at <= now);
                if hold != Some(expected) && !awaiting_expiry {
                    violations.push(Violation::PendingNotHeld {
                        transfer: transfer.id,
                        source: transfer.source,
                        held: hold,
                        expected,
                    });
                }
            }
            TransferStatus::Processing => {}
        }
    }

    // Wallets: balances against their postings, holds against their operations.
    let mut wallet_sums: HashMap<(WalletId, Currency), Decimal> = HashMap::new();
    for posting in &wallet_postings {
        let sum = wallet_sums.entry((posting.wallet, posting.asset)).or_default();
        let signed = match posting.direction {
            Direction::Credit => posting.amount,
            Direction::Debit => -posting.amount,
        };
        *sum = sum.checked_add(signed).ok_or_else(overflow)?;
    }
    let mut wallets: BTreeSet<WalletId> = BTreeSet::new();
    for (wallet, asset, balance) in &wallet_balances {
        wallets.insert(*wallet);
        let postings = wallet_sums.remove(&(*wallet, *asset)).unwrap_or_default();
        if postings != *balance {
            violations.push(Violation::WalletBalanceNotPostings {
                wallet: *wallet,
                asset: *asset,
                balance: *balance,
                postings,
            });
        }
    }
    // Wallet postings of an asset the wallet does not have.
    for ((wallet, asset), postings) in wallet_sums {
        violations.push(Violation::WalletBalanceNotPostings { wallet, asset, balance: Decimal::ZERO, postings });
    }
    for id in wallets {
        let Some(wallet) = store.load_wallet(id).await? else { continue };
        for (asset, position) in &wallet.value.assets {
            for (transfer, _) in position.holds() {
                let live = store.load_crypto_op(transfer).await?.is_some_and(|op| {
                    op.value.wallet == id
                        && (op.value.status == CryptoOpStatus::Processing
                            || (op.value.status == CryptoOpStatus::Pending
                                && op.value.kind == CryptoOpKind::Withdrawal))
                });
                if !live {
                    violations.push(Violation::OrphanWalletHold { wallet: id, asset: *asset, transfer });
                }
            }
        }
    }
    Ok((summary, violations))
}

fn total_debited(transfer: &Transfer) -> Result<Decimal, StoreError> {
    transfer
        .total_debited()
        .map_err(|_| StoreError::Corrupt(format!("transfer {}: amount plus fee overflows", transfer.id)))
}

/// The postings a completed transfer's saga makes (`actors/src/saga.rs`, step 4).
fn expected_postings(transfer: &Transfer) -> Result<Vec<Posting>, StoreError> {
    let leg =
        |account, currency, direction, amount| Posting { transfer: transfer.id, account, currency, direction, amount };
    let mut legs = vec![
        leg(transfer.source, transfer.currency, Direction::Debit, total_debited(transfer)?),
        leg(transfer.destination, transfer.destination_currency, Direction::Credit, transfer.destination_amount),
    ];
    if !transfer.fee.is_zero() {
        legs.push(leg(system_accounts::fees(transfer.currency), transfer.currency, Direction::Credit, transfer.fee));
    }
    if transfer.is_fx() {
        let destination_currency = transfer.destination_currency;
        legs.push(leg(
            system_accounts::fx_clearing(destination_currency),
            destination_currency,
            Direction::Debit,
            transfer.destination_amount,
        ));
        legs.push(leg(
            system_accounts::fx_clearing(transfer.currency),
            transfer.currency,
            Direction::Credit,
            transfer.amount,
        ));
    }
    Ok(legs)
}

/// The same postings, in any order (amounts compared by value, not scale).
fn same_postings(expected: &[Posting], found: &[Posting]) -> bool {
    if expected.len() != found.len() {
        return false;
    }
    let mut left: Vec<&Posting> = found.iter().collect();
    expected.iter().all(|posting| match left.iter().position(|other| *other == posting) {
        Some(at) => {
            left.swap_remove(at);
            true
        }
        None => false,
    })
}

/// Every account's postings from `postings_of`: the default for stores without a query of
/// them all.
pub(crate) async fn postings_by_scan<S: Store + ?Sized>(store: &S) -> Result<Vec<Posting>, StoreError> {
    let mut postings = Vec::new();
    for account in store.all_accounts().await? {
        postings.extend(store.postings_of(account.id).await?);
    }
    Ok(postings)
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
        // Transfer 6 is no transfer the store has: its credit came from nowhere.
        assert!(violations.contains(&Violation::OrphanPosting { transfer: TransferId::from_u128(6) }));
        assert_eq!(violations.len(), 4, "{violations:?}");
    }
}
