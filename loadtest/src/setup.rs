//! The set-up phase: log the admin in, register load users, open their accounts and fund each
//! by an admin credit (`POST /v1/admin/adjustments` with an `Idempotency-Key`, so a retried
//! funding call never pays twice).

use serde_json::json;
use uuid::Uuid;

use crate::client::{Client, field};
use crate::error::LoadError;

/// Accounts opened per load user. Spreading accounts over users keeps one user's per-caller
/// limits from throttling the whole run, while keeping set-up cheap (one login per 10).
pub const ACCOUNTS_PER_USER: usize = 10;
/// A password that meets API.md's rule (≥ 8 with upper, lower, digit and special).
const LOAD_USER_PASSWORD: &str = "Load-test-2026!";

/// One account of the test and the bearer token of its owner.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub owner: usize,
}

/// Everything the load and the verification need from set-up.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub admin_token: String,
    /// Bearer tokens of the load users; `Account::owner` indexes this.
    pub tokens: Vec<String>,
    pub accounts: Vec<Account>,
    /// The settlement account the admin credits came from (the source of an `admin_credit`).
    pub settlement_id: String,
}

pub async fn login(client: &Client, identifier: &str, password: &str) -> Result<String, LoadError> {
    let body = client
        .post("/v1/auth/login", None, None, &json!({"identifier": identifier, "password": password}))
        .await?
        .expect("login", &[200])?;
    field(&body, "login", "access_token")
}

/// Creates `accounts` funded accounts of `currency` over fresh users named after `run_id`.
pub async fn prepare(
    client: &Client,
    admin_email: &str,
    admin_password: &str,
    accounts: usize,
    currency: &str,
    funding: &str,
    run_id: &str,
) -> Result<Fixture, LoadError> {
    let admin_token = login(client, admin_email, admin_password).await?;
    let mut tokens = Vec::new();
    let mut opened = Vec::with_capacity(accounts);
    let mut settlement_id = None;
    for index in 0..accounts {
        if index % ACCOUNTS_PER_USER == 0 {
            let email = format!("loadtest-{run_id}-{}@example.com", tokens.len());
            let register =
                json!({"email": email, "password": LOAD_USER_PASSWORD, "first_name": "Load", "last_name": "Test"});
            client.post("/v1/auth/register", None, None, &register).await?.expect("register a load user", &[201])?;
            tokens.push(login(client, &email, LOAD_USER_PASSWORD).await?);
        }
        let owner = tokens.len() - 1;
        let token = tokens.get(owner).map(String::as_str);
        let account = client
            .post("/v1/accounts", token, None, &json!({"currency": currency}))
            .await?
            .expect("open an account", &[201])?;
        let id = field(&account, "open an account", "id")?;
        let credit = json!({
            "type": "admin_credit", "account_id": id, "amount": funding,
            "purpose": "load test funding", "reference": format!("loadtest-{run_id}"),
        });
        let key = format!("loadtest-fund-{run_id}-{index}");
        let transfer = client
            .post("/v1/admin/adjustments", Some(&admin_token), Some(&key), &credit)
            .await?
            .expect("fund an account", &[201])?;
        if settlement_id.is_none() {
            settlement_id = Some(field(&transfer, "fund an account", "source_account_id")?);
        }
        opened.push(Account { id, owner });
    }
    let settlement_id = settlement_id.ok_or_else(|| LoadError::Config("no accounts to fund".into()))?;
    Ok(Fixture { admin_token, tokens, accounts: opened, settlement_id })
}

/// A run id unique enough that reruns against the same server never collide on emails.
pub fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}
