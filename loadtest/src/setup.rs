//! The set-up phase: log the admin in, register load users, open their accounts and fund each
//! by an admin credit (`POST /v1/admin/adjustments` with an `Idempotency-Key`, so a retried
//! funding call never pays twice).

use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::client::{Client, field};
use crate::error::LoadError;

/// Accounts opened per load user (API.md lets a user hold at most 64). Each user costs two
/// argon2 hashes on the server (registration, login), tens of milliseconds of CPU each, so few
/// users keep set-up short: 10,000 accounts need 200 users, not 1,000.
pub const ACCOUNTS_PER_USER: usize = 50;
/// One user's accounts opened and funded at once. Each funding waits for a durable commit;
/// with `SETUP_CONCURRENCY` users at a time this keeps ~128 requests in flight, enough for the
/// journal's group commits to carry many at once.
const ACCOUNTS_IN_FLIGHT_PER_USER: usize = 8;
/// A password that meets API.md's rule (≥ 8 with upper, lower, digit and special).
const LOAD_USER_PASSWORD: &str = "Load-test-2026!";

/// One account of the test and the bearer token of its owner.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Account {
    pub id: String,
    pub owner: usize,
}

/// Everything the load and the verification need from set-up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fixture {
    #[serde(skip)]
    pub admin_token: String,
    /// Bearer tokens of the load users; `Account::owner` indexes this.
    pub tokens: Vec<String>,
    /// One API key per load user (scopes `transfers:write`, `transfers:read`,
    /// `accounts:read`) when set-up was asked for them, indexed like `tokens`.
    pub api_keys: Vec<String>,
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

/// Users set up at once: registration hashes a password (argon2, ~tens of ms of server CPU)
/// and every funding waits for a durable commit, so a sequential set-up of 10,000 accounts
/// would take minutes; sixteen in parallel keep both cores busy without tripping limits.
pub const SETUP_CONCURRENCY: usize = 16;

/// Creates `accounts` funded accounts of `currency` over fresh users named after `run_id`.
/// Account `i` belongs to user `i / ACCOUNTS_PER_USER`, whatever order set-up finished in, so a
/// seed picks the same accounts in every run.
pub async fn prepare(client: &Client, config: &crate::cli::Config, run_id: &str) -> Result<Fixture, LoadError> {
    let (accounts, currency, funding) = (config.accounts as usize, config.currency.as_str(), config.funding.as_str());
    let api_keys = config.auth == crate::cli::Auth::ApiKey;
    let admin_token = login(client, &config.admin_email, &config.admin_password).await?;
    let users = accounts.div_ceil(ACCOUNTS_PER_USER);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..users {
        let first = user * ACCOUNTS_PER_USER;
        let count = ACCOUNTS_PER_USER.min(accounts - first);
        let (client, permits, admin_token) = (client.clone(), permits.clone(), admin_token.clone());
        let (currency, funding, run_id) = (currency.to_owned(), funding.to_owned(), run_id.to_owned());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|_| LoadError::Config("set-up stopped".into()))?;
            let user_setup = UserSetup {
                client: &client,
                admin_token: &admin_token,
                currency: &currency,
                funding: &funding,
                run_id: &run_id,
                api_key: api_keys,
            };
            user_setup.run(user, first, count).await.map(|made| (user, made))
        });
    }
    let mut made = Vec::with_capacity(users);
    while let Some(joined) = tasks.join_next().await {
        made.push(joined.map_err(|e| LoadError::Config(format!("set-up task: {e}")))??);
    }
    made.sort_by_key(|(user, _)| *user);
    let mut tokens = Vec::with_capacity(users);
    let mut keys = Vec::with_capacity(users);
    let mut opened = Vec::with_capacity(accounts);
    let mut settlement_id = None;
    for (user, (token, key, ids, settlement)) in made {
        tokens.push(token);
        keys.extend(key);
        opened.extend(ids.into_iter().map(|id| Account { id, owner: user }));
        settlement_id = settlement_id.or(settlement);
    }
    let settlement_id = settlement_id.ok_or_else(|| LoadError::Config("no accounts to fund".into()))?;
    Ok(Fixture { admin_token, tokens, api_keys: keys, accounts: opened, settlement_id })
}

/// What one set-up task needs to make one load user.
struct UserSetup<'a> {
    client: &'a Client,
    admin_token: &'a str,
    currency: &'a str,
    funding: &'a str,
    run_id: &'a str,
    /// Make the user an API key for the load (`--auth api-key`).
    api_key: bool,
}

impl UserSetup<'_> {
    /// Registers user `user`, opens `count` accounts from account index `first` and funds each.
    /// Answers the user's token, API key (if asked for), the account ids in order, and the
    /// settlement account's id.
    async fn run(&self, user: usize, first: usize, count: usize) -> Result<UserMade, LoadError> {
        let (client, run_id) = (self.client, self.run_id);
        let email = format!("loadtest-{run_id}-{user}@example.com");
        let register =
            json!({"email": email, "password": LOAD_USER_PASSWORD, "first_name": "Load", "last_name": "Test"});
        client.post("/v1/auth/register", None, None, &register).await?.expect("register a load user", &[201])?;
        let token = login(client, &email, LOAD_USER_PASSWORD).await?;
        let api_key = if self.api_key {
            let body = json!({"name": "load", "scopes": ["transfers:write", "transfers:read", "accounts:read"]});
            let made =
                client.post("/v1/api-keys", Some(&token), None, &body).await?.expect("make an API key", &[201])?;
            Some(field(&made, "make an API key", "key")?)
        } else {
            None
        };
        let opened: Vec<Result<(String, String), LoadError>> = futures::stream::iter(first..first + count)
            .map(|index| self.open_and_fund(&token, index))
            .buffered(ACCOUNTS_IN_FLIGHT_PER_USER)
            .collect()
            .await;
        let mut ids = Vec::with_capacity(count);
        let mut settlement_id = None;
        for result in opened {
            let (id, settlement) = result?;
            settlement_id.get_or_insert(settlement);
            ids.push(id);
        }
        Ok((token, api_key, ids, settlement_id))
    }
}

/// What setting up one load user made: its token, its API key if asked for, its account ids
/// in order, and the settlement account its fundings came from.
type UserMade = (String, Option<String>, Vec<String>, Option<String>);

impl UserSetup<'_> {
    /// Opens account `index` for the user holding `token` and funds it by an idempotent admin
    /// credit. Answers the account's id and the settlement account the credit came from.
    async fn open_and_fund(&self, token: &str, index: usize) -> Result<(String, String), LoadError> {
        let client = self.client;
        let account = client
            .post("/v1/accounts", Some(token), None, &json!({"currency": self.currency}))
            .await?
            .expect("open an account", &[201])?;
        let id = field(&account, "open an account", "id")?;
        let credit = json!({
            "type": "admin_credit", "account_id": id, "amount": self.funding,
            "purpose": "load test funding", "reference": format!("loadtest-{}", self.run_id),
        });
        let key = format!("loadtest-fund-{}-{index}", self.run_id);
        let transfer = client
            .post("/v1/admin/adjustments", Some(self.admin_token), Some(&key), &credit)
            .await?
            .expect("fund an account", &[201])?;
        let settlement = field(&transfer, "fund an account", "source_account_id")?;
        Ok((id, settlement))
    }
}

/// A run id unique enough that reruns against the same server never collide on emails.
pub fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}
