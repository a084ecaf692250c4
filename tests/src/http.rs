//! A real HTTP server for black-box tests: `tally_http::app(state)` served by axum on
//! `127.0.0.1:0`, with a real engine on a real store (an SQLite file in the temp directory, or
//! a fresh Postgres database), and a `reqwest` client talking to it over the socket. Its mail
//! goes over SMTP to a real receiver on loopback (`smtp.rs`), which tests read codes from. The
//! tests see only HTTP; the engine handle is kept for checking balances behind the API's back
//! (after each refused request: nothing moved) and for funding accounts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_actors::{Engine, EngineConfig, RandomIds};
use tally_engine::{AccountId, TransferKind};
use tally_http::auth::tokens::AccessClaims;
use tally_http::auth::{Identity, IdentityOptions};
use tally_http::mail::{MailConfig, MailTransport};
use tally_http::{AppState, app};
use tally_persistence::Store;
use tally_persistence::audit::{ActorKind, AuditRecord};
use tally_persistence::open::open_store;
use tally_persistence::open_users::open_user_store;
use tally_persistence::users::User;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::ShiftedClock;
use crate::smtp::SmtpReceiver;

/// The password every test user gets: it meets the policy.
pub const PASSWORD: &str = "Sup3r!secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub state: AppState,
    /// Identity's clock (TOTP, step-up, rate limits); tests move it forward.
    pub clock: Arc<ShiftedClock>,
    pub backend: Backend,
    pub database_url: String,
    /// Where the server's mail goes.
    pub mail: SmtpReceiver,
    server: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    sqlite_file: Option<PathBuf>,
}

/// A test that fails before `shutdown` still removes its SQLite file: CI runs on a shared disk.
impl Drop for TestServer {
    fn drop(&mut self) {
        remove_sqlite(self.sqlite_file.take());
    }
}

fn remove_sqlite(file: Option<PathBuf>) {
    if let Some(file) = file {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub user_id: String,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON, or `Null` if it was empty or not JSON.
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts a problem+json answer with this status and code, carrying a request id.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Reply {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.body["code"], code, "code; body: {}", self.text);
        assert_eq!(self.body["status"], status, "status field; body: {}", self.text);
        let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(content_type, "application/problem+json", "content type; body: {}", self.text);
        assert!(self.body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "request id; body: {}", self.text);
        self
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Reply {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        self
    }

    /// The field errors' field names.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_else(|| panic!("{field} missing in {}", self.text)).to_owned()
    }
}

/// Settings a test may change from `TestServer::start`'s.
#[derive(Clone, Debug, Default)]
pub struct TestOptions {
    /// `TALLY_REQUIRE_VERIFIED_EMAIL=true`.
    pub require_verified_email: bool,
    /// `TALLY_WEBHOOK_DENY_PRIVATE`, `TALLY_WEBHOOK_CA_FILE`'s certificates.
    pub webhooks: tally_http::webhooks::WebhookOptions,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, TestOptions::default()).await
    }

    pub async fn start_with(backend: Backend, options: TestOptions) -> TestServer {
        let (database_url, sqlite_file) = match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("tally-http-{}.db", uuid::Uuid::new_v4().simple()));
                (format!("sqlite://{}", file.display()), Some(file))
            }
            Backend::Postgres => (crate::postgres::fresh_database("http").await, None),
        };
        let store = open_store(&database_url).await.expect("ledger store opens");
        let stores = open_user_store(&database_url).await.expect("user store opens");
        let clock = Arc::new(ShiftedClock::default());
        let mail = SmtpReceiver::start().await;
        let identity_options = IdentityOptions {
            mail: MailConfig {
                transport: MailTransport::Smtp(mail.url()),
                from: "Tally <no-reply@tally.test>".to_owned(),
            },
            require_verified_email: options.require_verified_email,
            webhooks: options.webhooks,
            ..IdentityOptions::default()
        };
        let identity = Identity::open_configured(stores, clock.clone(), Arc::new(RandomIds), identity_options)
            .await
            .expect("identity opens");
        let engine = Engine::start(store.clone(), EngineConfig::default()).await.expect("engine starts");
        let state = AppState::with_engine(store.clone(), identity, engine.clone());
        tally_http::webhooks::start(state.clone()).expect("webhook deliveries start");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        // With connect info, as `tally serve` runs it, so sessions record the client's address.
        let router = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            base: format!("http://{address}"),
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            engine,
            store,
            state,
            clock,
            backend,
            database_url,
            mail,
            server: Some(server),
            stop: Some(stop),
            sqlite_file,
        }
    }

    /// Checks the ledger's invariants against the store (every scenario ends with it: no
    /// sequence of API calls, refused or not, may create or lose money), then stops the server
    /// and the engine, and removes an SQLite file.
    pub async fn shutdown(mut self) {
        self.engine.journals().barrier().await.expect("journal durable");
        crate::assert_store_consistent(self.store.as_ref()).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.engine.shutdown(Duration::from_secs(5)).await;
        remove_sqlite(self.sqlite_file.take());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    fn authorized(&self, request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.authorized(self.client.get(self.url(path)), token)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(self.authorized(self.client.post(self.url(path)), token).json(&body)).await
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, token: Option<&str>, key: &str, body: Value) -> Reply {
        self.send(self.authorized(self.client.post(self.url(path)), token).header("idempotency-key", key).json(&body))
            .await
    }

    /// A PATCH with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(self.authorized(self.client.patch(self.url(path)), token).json(&body)).await
    }

    /// A DELETE, with a JSON body if given.
    pub async fn delete(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.authorized(self.client.delete(self.url(path)), token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Any request, with an optional bearer token, `X-Step-Up-Token` and JSON body.
    pub async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        step_up: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.authorized(self.client.request(method, self.url(path)), token);
        if let Some(step_up) = step_up {
            request = request.header("x-step-up-token", step_up);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Logs `email` in with `password` and answers a `TestUser` (for a second session, or after
    /// a password change).
    pub async fn session_of(&self, email: &str, password: &str) -> TestUser {
        let login = self.login(email, password).await;
        login.assert_status(200);
        TestUser {
            user_id: self.get("/v1/users/me", Some(&login.str("access_token"))).await.str("user_id"),
            email: email.to_owned(),
            token: login.str("access_token"),
            refresh_token: login.str("refresh_token"),
        }
    }

    /// A POST with no body at all.
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.authorized(self.client.post(self.url(path)), token)).await
    }

    /// A POST of raw bytes with the given content type (malformed input).
    pub async fn post_raw(&self, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.authorized(self.client.post(self.url(path)), token).header("content-type", content_type).body(body),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post("/v1/auth/login", None, json!({"identifier": email, "password": password})).await
    }

    /// Registers a fresh user with `PASSWORD` and logs them in.
    pub async fn user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = self
            .post(
                "/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD, "first_name": "Test", "last_name": "User"}),
            )
            .await;
        registered.assert_status(201);
        self.logged_in(&email).await
    }

    /// Creates an admin holding exactly `actions` (straight into the user store, as an admin
    /// bootstrap would) and logs them in.
    pub async fn admin(&self, actions: &[&str]) -> TestUser {
        let identity = self.state.identity();
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        let user = User::new(
            tally_engine::UserId::from_uuid(uuid::Uuid::new_v4()),
            email.clone(),
            identity.passwords.hash(PASSWORD.to_owned()).await.expect("hash"),
            "Test".to_owned(),
            "Admin".to_owned(),
            actions.iter().map(|action| (*action).to_owned()).collect(),
            identity.now(),
        );
        identity.users.create_user(&user, &setup_record(&user)).await.expect("admin created");
        self.logged_in(&email).await
    }

    async fn logged_in(&self, email: &str) -> TestUser {
        let login = self.login(email, PASSWORD).await;
        login.assert_status(200);
        TestUser {
            user_id: self.get("/v1/users/me", Some(&login.str("access_token"))).await.str("user_id"),
            email: email.to_owned(),
            token: login.str("access_token"),
            refresh_token: login.str("refresh_token"),
        }
    }

    /// Opens an account for `user` over HTTP and returns its id.
    pub async fn open_account(&self, user: &TestUser, currency: &str) -> String {
        let reply = self.post("/v1/accounts", Some(&user.token), json!({"currency": currency})).await;
        reply.assert_status(201);
        reply.str("id")
    }

    /// Credits `amount` to the account from settlement, behind the API (test set-up).
    pub async fn fund(&self, account: &str, amount: Decimal) {
        self.engine
            .adjust(TransferKind::AdminCredit, account_id(account), amount, None, Some("test funding".to_owned()), None)
            .await
            .expect("funding succeeds");
    }

    /// `(balance, held)` as the account's actor holds them now.
    pub async fn position(&self, account: &str) -> (Decimal, Decimal) {
        let account = self.engine.account(account_id(account)).await.expect("account readable");
        (account.balance(), account.held())
    }

    /// Signs `claims` with the server's real signing key (for expired or otherwise crafted
    /// but correctly signed tokens).
    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.state.identity().tokens.sign(claims).expect("sign")
    }
}

/// The audit entry of a user a test creates behind the API (as the start-up bootstrap does).
pub fn setup_record(user: &User) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::new_v4(),
        at: user.created_at,
        actor_kind: ActorKind::System,
        actor_id: None,
        action: "user.create".to_owned(),
        target_type: Some("user".to_owned()),
        target_id: Some(user.id.to_string()),
        subject_user: Some(user.id),
        request_id: "test-setup".to_owned(),
        ip: None,
        user_agent: None,
        details: json!({"actions": user.permissions}).to_string(),
    }
}

pub fn account_id(text: &str) -> AccountId {
    AccountId::from_uuid(uuid::Uuid::parse_str(text).expect("a UUID"))
}

/// A token with `"alg": "none"` and no signature.
pub fn forge_alg_none(claims: &AccessClaims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{header}.{payload}.")
}

/// A token "signed" with HS256 using the server's RSA public key as the HMAC secret, under the
/// server's real `kid`: the algorithm-confusion attack.
pub fn forge_hs256_with_public_key(server: &TestServer, claims: &AccessClaims) -> String {
    let key = server.state.identity().tokens.keys().signing_key();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(&key.public_key_der)).expect("hs256")
}

/// A correctly RS256-signed token under a key the server never published.
pub fn forge_unknown_kid(claims: &AccessClaims) -> String {
    let pkcs8 = tally_http::auth::keys::generate_pkcs8().expect("key");
    let key = tally_http::auth::keys::signing_key_from_pkcs8(&pkcs8, 1, "foreign").expect("usable");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("rs256")
}

/// `token` with its payload replaced (the signature left as it was).
pub fn tamper(token: &str, claims: &AccessClaims) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// Runs each named scenario (an `async fn(TestServer)`) as two tests, one on SQLite and one
/// on a fresh Postgres database.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::http::TestServer::start($crate::http::Backend::Sqlite).await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::http::TestServer::start($crate::http::Backend::Postgres).await).await;
                }
            )*
        }
    };
}
