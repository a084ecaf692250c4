//! The verification phase: every acknowledged transfer is fetched once by id and must exist
//! with the acknowledged amount; no id is acknowledged twice; and money is conserved — the
//! change of the test's accounts plus the settlement account's change is zero.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Client, field};
use crate::driver::Ack;
use crate::error::LoadError;
use crate::setup::Fixture;

/// Look-ups in flight during verification: enough to check tens of thousands of transfers in
/// seconds, few enough not to become a load test of its own.
pub const VERIFY_CONCURRENCY: usize = 64;
/// Problems listed in the report; the counts are always complete.
pub const PROBLEMS_LISTED_MAX: usize = 50;

/// Balances of the test's accounts and the settlement account at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub accounts: Decimal,
    pub settlement: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub acknowledged: usize,
    pub lost: usize,
    pub wrong_amount: usize,
    pub duplicated: usize,
    pub replay_mismatches: usize,
    /// Change of the test accounts' total plus the settlement account's change: must be "0".
    pub conservation_delta: String,
    pub problems: Vec<String>,
    pub passed: bool,
}

impl Verification {
    /// `Err` when the run lost, altered or duplicated money.
    pub fn verdict(&self) -> Result<(), LoadError> {
        if self.passed {
            Ok(())
        } else {
            Err(LoadError::Verification(format!(
                "{} lost, {} wrong amount, {} duplicated, {} replay mismatches, conservation delta {}",
                self.lost, self.wrong_amount, self.duplicated, self.replay_mismatches, self.conservation_delta
            )))
        }
    }
}

async fn balance(client: &Client, admin_token: &str, id: &str) -> Result<Decimal, LoadError> {
    let step = "read a balance";
    let body =
        client.get_patiently(&format!("/v1/admin/accounts/{id}"), Some(admin_token)).await?.expect(step, &[200])?;
    let text = field(&body, step, "balance")?;
    Decimal::from_str(&text).map_err(|_| LoadError::Missing { step: step.to_owned(), field: "balance".to_owned() })
}

/// Sum of the test's balances and the settlement balance, read through the admin API.
pub async fn snapshot(client: &Client, fixture: &Fixture) -> Result<Snapshot, LoadError> {
    let mut accounts = Decimal::ZERO;
    for account in &fixture.accounts {
        let b = balance(client, &fixture.admin_token, &account.id).await?;
        accounts = accounts.checked_add(b).ok_or_else(|| LoadError::Verification("balance sum overflows".into()))?;
    }
    let settlement = balance(client, &fixture.admin_token, &fixture.settlement_id).await?;
    Ok(Snapshot { accounts, settlement })
}

/// What one look-up found wrong with one acknowledged transfer.
enum Finding {
    Fine,
    Lost(String),
    WrongAmount(String),
}

async fn check(client: &Client, token: &str, ack: &Ack) -> Result<Finding, LoadError> {
    let answer = client.get_patiently(&format!("/v1/transfers/{}", ack.transfer_id), Some(token)).await?;
    if answer.status == 404 {
        return Ok(Finding::Lost(format!("transfer {} was acknowledged but is not stored", ack.transfer_id)));
    }
    let body = answer.expect("fetch an acknowledged transfer", &[200])?;
    let stored = body.get("amount").and_then(Value::as_str).and_then(|a| Decimal::from_str(a).ok());
    let acked = Decimal::from_str(&ack.amount).ok();
    let same_id = body.get("id").and_then(Value::as_str) == Some(ack.transfer_id.as_str());
    if stored.is_none() || stored != acked || !same_id {
        return Ok(Finding::WrongAmount(format!(
            "transfer {}: acknowledged {}, stored {}",
            ack.transfer_id, ack.amount, body
        )));
    }
    Ok(Finding::Fine)
}

/// Checks `acks` and conservation between `before` (after set-up) and now.
pub async fn verify(
    client: &Client,
    fixture: &Fixture,
    acks: Vec<Ack>,
    replay_mismatches: Vec<String>,
    before: &Snapshot,
) -> Result<Verification, LoadError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    for ack in &acks {
        if !seen.insert(ack.transfer_id.clone()) {
            duplicated += 1;
            problems.push(format!("transfer {} was acknowledged for two different requests", ack.transfer_id));
        }
    }
    let acknowledged = acks.len();
    let limit = Arc::new(Semaphore::new(VERIFY_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let unique: Vec<Ack> = {
        let mut once = HashSet::new();
        acks.into_iter().filter(|a| once.insert(a.transfer_id.clone())).collect()
    };
    for ack in unique {
        let client = client.clone();
        let token = fixture.tokens.get(ack.owner).cloned().unwrap_or_default();
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            check(&client, &token, &ack).await
        });
    }
    let (mut lost, mut wrong_amount) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let finding = joined.map_err(|e| LoadError::Verification(format!("a look-up task failed: {e}")))??;
        match finding {
            Finding::Fine => {}
            Finding::Lost(p) => {
                lost += 1;
                problems.push(p);
            }
            Finding::WrongAmount(p) => {
                wrong_amount += 1;
                problems.push(p);
            }
        }
    }
    let after = snapshot(client, fixture).await?;
    let delta = after
        .accounts
        .checked_sub(before.accounts)
        .and_then(|d| d.checked_add(after.settlement.checked_sub(before.settlement)?))
        .ok_or_else(|| LoadError::Verification("balance arithmetic overflows".into()))?;
    if !delta.is_zero() {
        problems.push(format!("money is not conserved: accounts plus settlement changed by {delta}"));
    }
    let replay_count = replay_mismatches.len();
    problems.extend(replay_mismatches);
    let passed = lost == 0 && wrong_amount == 0 && duplicated == 0 && replay_count == 0 && delta.is_zero();
    problems.truncate(PROBLEMS_LISTED_MAX);
    Ok(Verification {
        acknowledged,
        lost,
        wrong_amount,
        duplicated,
        replay_mismatches: replay_count,
        conservation_delta: delta.normalize().to_string(),
        problems,
        passed,
    })
}
