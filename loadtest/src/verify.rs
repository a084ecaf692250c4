//! The verification phase. Every acknowledged transfer is fetched once by id and must be stored
//! as requested (its amount, source and destination) in a status its answer allows; no id is
//! acknowledged twice; every transfer whose outcome the load left unknown is settled by a
//! replay under its key where possible (`driver::resolve`); each test account's balance must
//! have changed by exactly what the transfers explain (credits less debits, fees included),
//! give or take those still unknown; and money is conserved — the change of the test's
//! accounts plus the settlement account's change is zero, less the fees the transfers paid.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Client, field};
use crate::driver::{Ack, Resolution};
use crate::error::LoadError;
use crate::setup::Fixture;

/// Look-ups in flight during verification: enough to check tens of thousands of transfers in
/// seconds, few enough not to become a load test of its own.
pub const VERIFY_CONCURRENCY: usize = 64;
/// Problems listed in the report; the counts are always complete.
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// Stored statuses a transfer answered `202` (pending) may be in at verification: still
/// pending or being executed, completed since, or ended by an admin's rejection, its owner's
/// cancellation or its pending time-out (API.md). `201` promises `completed`, and only that.
pub const STATUSES_AFTER_202: [&str; 6] = ["pending", "processing", "completed", "rejected", "cancelled", "expired"];

/// Balances of the test's accounts and the settlement account at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub accounts: Decimal,
    pub settlement: Decimal,
    /// Each test account's balance, in `Fixture::accounts` order.
    pub balances: Vec<Decimal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Transfers the load's answers acknowledged (a batch counts its acknowledged items).
    pub acknowledged: usize,
    pub lost: usize,
    /// Stored (or answered) with another amount than requested, or another fee than answered.
    pub wrong_amount: usize,
    /// Stored (or answered) with another source or destination than requested.
    pub wrong_accounts: usize,
    /// Stored in a status its answer does not allow (`201` stored other than `completed`).
    pub wrong_status: usize,
    pub duplicated: usize,
    pub replay_mismatches: usize,
    /// Transfers whose outcome the load left unknown (a `5xx` other than `503`, a time-out, a
    /// connection broken after sending), each replayed under its key after the load.
    pub unknown: usize,
    /// Of those, the ones the replay showed made (checked as acknowledged transfers) ...
    pub resolved_applied: usize,
    /// ... refused (nothing moved) ...
    pub resolved_not_applied: usize,
    /// ... and still unknown: each may or may not have moved money, and the balance checks
    /// allow for both.
    pub unresolved: usize,
    /// Test accounts whose balance changed by other than their transfers explain.
    pub balance_mismatches: usize,
    /// Change of the test accounts' total plus the settlement account's change plus the fees
    /// the completed transfers paid: must be "0" (or down to minus the fees of transfers whose
    /// outcome is not known).
    pub conservation_delta: String,
    pub problems: Vec<String>,
    pub passed: bool,
}

impl Verification {
    /// `Err` when the run lost, altered or duplicated money.
    pub fn verdict(&self) -> Result<(), LoadError> {
        if self.passed { Ok(()) } else { Err(LoadError::Verification(self.summary())) }
    }

    /// The counts, in one line.
    pub fn summary(&self) -> String {
        format!(
            "{} lost, {} wrong amount, {} wrong accounts, {} wrong status, {} duplicated, {} replay mismatches, \
             {} accounts with unexplained balances, conservation delta {}, {} of {} unknown outcomes unresolved",
            self.lost,
            self.wrong_amount,
            self.wrong_accounts,
            self.wrong_status,
            self.duplicated,
            self.replay_mismatches,
            self.balance_mismatches,
            self.conservation_delta,
            self.unresolved,
            self.unknown
        )
    }
}

fn overflow() -> LoadError {
    LoadError::Verification("balance arithmetic overflows".into())
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, LoadError> {
    a.checked_add(b).ok_or_else(overflow)
}

fn sub(a: Decimal, b: Decimal) -> Result<Decimal, LoadError> {
    a.checked_sub(b).ok_or_else(overflow)
}

async fn balance(client: &Client, admin_token: &str, id: &str) -> Result<Decimal, LoadError> {
    let step = "read a balance";
    let body =
        client.get_patiently(&format!("/v1/admin/accounts/{id}"), Some(admin_token)).await?.expect(step, &[200])?;
    let text = field(&body, step, "balance")?;
    Decimal::from_str(&text).map_err(|_| LoadError::Missing { step: step.to_owned(), field: "balance".to_owned() })
}

/// The test's balances, their sum and the settlement balance, read through the admin API.
pub async fn snapshot(client: &Client, fixture: &Fixture) -> Result<Snapshot, LoadError> {
    let mut accounts = Decimal::ZERO;
    let mut balances = Vec::with_capacity(fixture.accounts.len());
    for account in &fixture.accounts {
        let b = balance(client, &fixture.admin_token, &account.id).await?;
        accounts = add(accounts, b)?;
        balances.push(b);
    }
    let settlement = balance(client, &fixture.admin_token, &fixture.settlement_id).await?;
    Ok(Snapshot { accounts, settlement, balances })
}

/// What a transfer did to its accounts' balances, as far as the verification can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Its amount left the source (with its fee) and reached the destination.
    Moved,
    /// It may have or not (pending, or its outcome unknown).
    Maybe,
    /// Nothing moved (a pending transfer rejected, cancelled or expired).
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wrong {
    Lost,
    Amount,
    Accounts,
    Status,
}

/// What one look-up found of one acknowledged transfer.
struct Checked {
    effect: Effect,
    wrong: Vec<(Wrong, String)>,
}

/// The effect a `202` transfer stored in `status` had on balances.
fn effect_after_202(status: &str) -> Effect {
    match status {
        "completed" => Effect::Moved,
        "rejected" | "cancelled" | "expired" => Effect::Nothing,
        _ => Effect::Maybe,
    }
}

async fn check(client: &Client, fixture: &Fixture, token: &str, ack: &Ack) -> Result<Checked, LoadError> {
    let id = &ack.transfer_id;
    // A `201` promised the money moved; a `202` promised nothing yet.
    let promised = if ack.status == 201 { Effect::Moved } else { Effect::Maybe };
    let mut wrong = Vec::new();
    if !ack.answered_amount {
        wrong.push((Wrong::Amount, format!("transfer {id} was acknowledged with another amount than {}", ack.amount)));
    }
    if !ack.answered_accounts {
        wrong.push((Wrong::Accounts, format!("transfer {id} was acknowledged with other accounts than requested")));
    }
    let answer = client.get_patiently(&format!("/v1/transfers/{id}"), Some(token)).await?;
    if answer.status == 404 {
        wrong.insert(0, (Wrong::Lost, format!("transfer {id} was acknowledged but is not stored")));
        return Ok(Checked { effect: promised, wrong });
    }
    let body = answer.expect("fetch an acknowledged transfer", &[200])?;
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let decimal = |name: &str| text(name).and_then(|a| Decimal::from_str(a).ok());
    if text("id") != Some(id.as_str())
        || decimal("amount") != Some(ack.amount)
        || decimal("fee").is_some_and(|fee| fee != ack.fee)
    {
        let fee = ack.fee;
        wrong.push((Wrong::Amount, format!("transfer {id}: requested {} (fee {fee}), stored {body}", ack.amount)));
    }
    let id_of = |index: usize| fixture.accounts.get(index).map(|a| a.id.as_str());
    if text("source_account_id") != id_of(ack.source) || text("destination_account_id") != id_of(ack.destination) {
        let (from, to) = (id_of(ack.source).unwrap_or("?"), id_of(ack.destination).unwrap_or("?"));
        wrong.push((Wrong::Accounts, format!("transfer {id}: requested from {from} to {to}, stored {body}")));
    }
    let status = text("status").unwrap_or("");
    let allowed = if ack.status == 201 { status == "completed" } else { STATUSES_AFTER_202.contains(&status) };
    if !allowed {
        wrong.push((Wrong::Status, format!("transfer {id}: answered {}, stored as `{status}`", ack.status)));
    }
    let effect = if ack.status == 201 || !allowed { promised } else { effect_after_202(status) };
    Ok(Checked { effect, wrong })
}

/// What the transfers explain of one account's balance change: `known`, plus any part of
/// `maybe_credits`, less any part of `maybe_debits`.
#[derive(Debug, Clone, Copy, Default)]
struct Explained {
    known: Decimal,
    maybe_debits: Decimal,
    maybe_credits: Decimal,
}

/// Every account's `Explained`, and the fees moved out of the test's accounts.
#[derive(Debug, Default)]
struct Ledger {
    accounts: Vec<Explained>,
    fees: Decimal,
    maybe_fees: Decimal,
}

impl Ledger {
    fn new(accounts: usize) -> Self {
        Ledger { accounts: vec![Explained::default(); accounts], ..Ledger::default() }
    }

    /// Books `amount` (plus `fee` on the source) from `source` to `destination` with `effect`.
    fn book(
        &mut self,
        effect: Effect,
        source: usize,
        destination: usize,
        amount: Decimal,
        fee: Decimal,
    ) -> Result<(), LoadError> {
        let debit = add(amount, fee)?;
        let missing = || LoadError::Verification(format!("no test account {source} or {destination}"));
        if source >= self.accounts.len() || destination >= self.accounts.len() {
            return Err(missing());
        }
        match effect {
            Effect::Moved => {
                self.accounts[source].known = sub(self.accounts[source].known, debit)?;
                self.accounts[destination].known = add(self.accounts[destination].known, amount)?;
                self.fees = add(self.fees, fee)?;
            }
            Effect::Maybe => {
                self.accounts[source].maybe_debits = add(self.accounts[source].maybe_debits, debit)?;
                self.accounts[destination].maybe_credits = add(self.accounts[destination].maybe_credits, amount)?;
                self.maybe_fees = add(self.maybe_fees, fee)?;
            }
            Effect::Nothing => {}
        }
        Ok(())
    }
}

/// Checks `acks` (and the transfers `resolution` found made), each account's balance and
/// conservation between `before` (after set-up) and now.
pub async fn verify(
    client: &Client,
    fixture: &Fixture,
    acks: Vec<Ack>,
    resolution: Resolution,
    replay_mismatches: Vec<String>,
    before: &Snapshot,
) -> Result<Verification, LoadError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    let acknowledged = acks.len();
    let resolved_applied = resolution.applied.len();
    for ack in acks.iter().chain(&resolution.applied) {
        if !seen.insert(ack.transfer_id.clone()) {
            duplicated += 1;
            problems.push(format!("transfer {} was acknowledged for two different requests", ack.transfer_id));
        }
    }
    let limit = Arc::new(Semaphore::new(VERIFY_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let unique: Vec<Ack> = {
        let mut once = HashSet::new();
        acks.into_iter().chain(resolution.applied).filter(|a| once.insert(a.transfer_id.clone())).collect()
    };
    // The fee of a transfer whose outcome is unknown is not known either: the highest any
    // answer reported stands for it.
    let fee_max = unique.iter().map(|a| a.fee).max().unwrap_or(Decimal::ZERO);
    let fixture_shared = Arc::new(fixture.clone());
    for ack in unique {
        let client = client.clone();
        let fixture = Arc::clone(&fixture_shared);
        let token = fixture.tokens.get(ack.owner).cloned().unwrap_or_default();
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            check(&client, &fixture, &token, &ack).await.map(|checked| (ack, checked))
        });
    }
    let mut ledger = Ledger::new(fixture.accounts.len());
    let (mut lost, mut wrong_amount, mut wrong_accounts, mut wrong_status) = (0, 0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (ack, checked) = joined.map_err(|e| LoadError::Verification(format!("a look-up task failed: {e}")))??;
        ledger.book(checked.effect, ack.source, ack.destination, ack.amount, ack.fee)?;
        let mut kinds = HashSet::new();
        for (kind, problem) in checked.wrong {
            if kinds.insert(kind) {
                match kind {
                    Wrong::Lost => lost += 1,
                    Wrong::Amount => wrong_amount += 1,
                    Wrong::Accounts => wrong_accounts += 1,
                    Wrong::Status => wrong_status += 1,
                }
            }
            problems.push(problem);
        }
    }
    let mut notes = Vec::new();
    for unresolved in &resolution.unresolved {
        ledger.book(Effect::Maybe, unresolved.source, unresolved.destination, unresolved.amount, fee_max)?;
        if notes.len() < PROBLEMS_LISTED_MAX {
            notes.push(format!("a transfer's outcome is unresolved (allowed for): {}", unresolved.why));
        }
    }

    let after = snapshot(client, fixture).await?;
    let mut balance_mismatches = 0;
    for (index, explained) in ledger.accounts.iter().enumerate() {
        let (Some(was), Some(is)) = (before.balances.get(index), after.balances.get(index)) else {
            return Err(LoadError::Verification("a snapshot lacks a test account".into()));
        };
        let change = sub(*is, *was)?;
        let low = sub(explained.known, explained.maybe_debits)?;
        let high = add(explained.known, explained.maybe_credits)?;
        if change < low || change > high {
            balance_mismatches += 1;
            let id = fixture.accounts.get(index).map_or("?", |a| a.id.as_str());
            let explains = if low == high {
                format!("{}", explained.known.normalize())
            } else {
                format!("{} to {}", low.normalize(), high.normalize())
            };
            problems.push(format!(
                "account {id}: balance changed by {}, its acknowledged transfers explain {explains}",
                change.normalize()
            ));
        }
    }
    let total = add(sub(after.accounts, before.accounts)?, sub(after.settlement, before.settlement)?)?;
    let delta = add(total, ledger.fees)?;
    let conserved = delta <= Decimal::ZERO && delta >= -ledger.maybe_fees;
    if !conserved {
        problems.push(format!(
            "money is not conserved: accounts plus settlement changed by {}, the transfers' fees explain {}",
            total.normalize(),
            (-ledger.fees).normalize()
        ));
    }
    let replay_count = replay_mismatches.len();
    problems.extend(replay_mismatches);
    problems.extend(notes);
    let passed = lost == 0
        && wrong_amount == 0
        && wrong_accounts == 0
        && wrong_status == 0
        && duplicated == 0
        && replay_count == 0
        && balance_mismatches == 0
        && conserved;
    problems.truncate(PROBLEMS_LISTED_MAX);
    Ok(Verification {
        acknowledged,
        lost,
        wrong_amount,
        wrong_accounts,
        wrong_status,
        duplicated,
        replay_mismatches: replay_count,
        unknown: resolution.unknown,
        resolved_applied,
        resolved_not_applied: resolution.not_applied,
        unresolved: resolution.unresolved.len(),
        balance_mismatches,
        conservation_delta: delta.normalize().to_string(),
        problems,
        passed,
    })
}
