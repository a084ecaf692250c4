//! A real `tally serve` process for black-box tests: started on a free port of 127.0.0.1
//! against a given database, waited on until `/health/ready`, killed with SIGKILL to crash it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin every test server is bootstrapped with.
pub const ADMIN_EMAIL: &str = "admin@tally.test";
pub const ADMIN_PASSWORD: &str = "Adm1n!password";

/// Where the `tally` binary is: `TALLY_BIN` (set by `scripts/test`), else the debug build.
pub fn tally_bin() -> PathBuf {
    match std::env::var("TALLY_BIN") {
        Ok(path) => PathBuf::from(path),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tally"),
    }
}

/// Runs `tally verify ARGS` on `database_url`: whether it passed (exit 0; exit 1 is a
/// finding, anything else fails the test) and what it printed.
pub fn tally_verify(database_url: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(tally_bin())
        .arg("verify")
        .args(args)
        .env("TALLY_DATABASE_URL", database_url)
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally verify");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.code().is_some_and(|code| code == 0 || code == 1), "exit 0 or 1: {text}");
    (output.status.success(), text)
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

pub struct TallyServer {
    child: Option<Child>,
    pub port: u16,
    database_url: String,
    extra_env: Vec<(String, String)>,
    log: PathBuf,
    /// `TALLY_DATA_DIR` of this server (mail files land under `mail/`); removed on drop.
    pub data_dir: PathBuf,
}

impl TallyServer {
    /// Starts `tally serve` on `database_url` and waits until it is ready.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> TallyServer {
        let log = std::env::temp_dir().join(format!("tally-server-{}.log", uuid::Uuid::new_v4().simple()));
        let data_dir = std::env::temp_dir().join(format!("tally-server-data-{}", uuid::Uuid::new_v4().simple()));
        let mut server = TallyServer {
            child: None,
            port: free_port(),
            database_url: database_url.to_owned(),
            extra_env: extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            log,
            data_dir,
        };
        // `free_port` can hand two tests running side by side the same port (it is free until a
        // server binds it); the second server then refuses it at start, and gets another.
        for _ in 0..3 {
            server.spawn();
            match server.wait_until_ready(Duration::from_secs(60)).await {
                Ok(()) => return server,
                Err(log) if log.contains("another process listens on it") => {
                    server.port = free_port();
                    let _ = std::fs::remove_file(&server.log);
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free port for tally serve in three tries");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("server log file");
        let mut command = Command::new(tally_bin());
        command
            .arg("serve")
            .env("TALLY_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("TALLY_DATABASE_URL", &self.database_url)
            .env("TALLY_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("TALLY_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("TALLY_LOG", "warn")
            .env("TALLY_DATA_DIR", &self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        // A cluster node tells its peers where it listens.
        if self.extra_env.iter().any(|(key, _)| key == "TALLY_NODE_ID") {
            command.env("TALLY_ADVERTISE_URL", self.base_url());
        }
        self.child = Some(command.spawn().unwrap_or_else(|error| panic!("start {}: {error}", tally_bin().display())));
    }

    /// The server process's id (to read its memory from `/proc`), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/health/ready` until 200, failing the test (with the server's log) on time-out.
    pub async fn wait_ready(&mut self, limit: Duration) {
        if let Err(failure) = self.wait_until_ready(limit).await {
            panic!("{failure}");
        }
    }

    /// Polls `/health/ready` until 200; on exit or time-out, says which, with the server's log.
    async fn wait_until_ready(&mut self, limit: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("tally serve exited with {status}; log:\n{}", self.log_text()));
            }
            let ready = client.get(format!("{}/health/ready", self.base_url())).send().await;
            if ready.is_ok_and(|response| response.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("tally serve not ready within {limit:?}; log:\n{}", self.log_text()))
    }

    /// Waits up to `limit` for the process to exit by itself; its exit status, or `None` if it
    /// still runs.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL: the process dies at once, mid-whatever, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stops mid-whatever (a long GC-like pause, a VM frozen) and holds
    /// its sockets, until `resume`.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("run kill");
            assert!(status.success(), "kill {signal} {pid}");
        }
    }

    /// Starts the process again on the same port and database, and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(60)).await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TallyServer {
    fn drop(&mut self) {
        self.kill();
        // A failing test keeps the server's log, to read what the server saw.
        if std::thread::panicking() {
            eprintln!("tally serve's log is kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// An HTTP client logged in as a user, speaking the API contract.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub async fn login(base: &str, email: &str, password: &str) -> Client {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let response = http
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"identifier": email, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), 200, "login as {email}");
        let body: serde_json::Value = response.json().await.expect("login body");
        let token = body["access_token"].as_str().expect("access_token").to_owned();
        Client { http, base: base.to_owned(), token }
    }

    pub async fn admin(server: &TallyServer) -> Client {
        Client::login(&server.base_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, serde_json::Value), reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let json =
            if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap_or_default() };
        Ok((status, json))
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body), None).await.expect("request")
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None, None).await.expect("request")
    }

    /// Opens an account of the caller's in `currency`; returns its id.
    pub async fn open_account(&self, currency: &str) -> String {
        let (status, body) = self.post("/v1/accounts", serde_json::json!({"currency": currency})).await;
        assert_eq!(status, 201, "open account: {body}");
        body["id"].as_str().expect("account id").to_owned()
    }

    /// An admin credit of `amount` to `account`.
    pub async fn fund(&self, account: &str, amount: &str) {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/v1/admin/adjustments",
                Some(serde_json::json!({
                    "type": "admin_credit", "account_id": account, "amount": amount,
                    "purpose": "test funding", "reference": "fund"
                })),
                Some(&uuid::Uuid::new_v4().to_string()),
            )
            .await
            .expect("fund request");
        assert_eq!(status, 201, "fund: {body}");
    }

    pub async fn balance(&self, account: &str) -> String {
        let (status, body) = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_str().expect("balance").to_owned()
    }
}

/// Reads from the database itself that each of `acknowledged` (transfer ids as the API gave
/// them) was debited exactly once and credited exactly once: nothing lost, duplicated or half
/// applied. `context` prefixes each failure (a seed, a scenario).
pub async fn assert_each_posted_once(database_url: &str, acknowledged: &[&str], context: &str) {
    use futures::StreamExt;
    use tally_persistence::Store;
    let store = tally_persistence::postgres::PgStore::connect(database_url).await.expect("connect");
    // Eight look-ups at a time (the store's pool): thousands of transfers take seconds.
    let mut checks = futures::stream::iter(acknowledged)
        .map(|id| {
            let store = &store;
            async move {
                let uuid: uuid::Uuid = id.parse().expect("uuid");
                let postings =
                    store.postings_of_transfer(tally_engine::TransferId::from_uuid(uuid)).await.expect("postings");
                (id, postings)
            }
        })
        .buffer_unordered(8);
    while let Some((id, postings)) = checks.next().await {
        let count = |direction| postings.iter().filter(|posting| posting.direction == direction).count();
        assert_eq!(count(tally_engine::Direction::Debit), 1, "{context}{id} debited once");
        assert_eq!(count(tally_engine::Direction::Credit), 1, "{context}{id} credited once");
    }
}

/// Runs `tally check` against a database; true if every invariant holds.
pub fn tally_check(database_url: &str) -> (bool, String) {
    let output = Command::new(tally_bin())
        .arg("check")
        .env("TALLY_DATABASE_URL", database_url)
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally check");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A PostgreSQL cluster of the test's own, so a test can stop and start it (a database outage)
/// without touching anyone else's. Stopped and deleted on drop.
pub struct OwnPostgres {
    dir: PathBuf,
    pub port: u16,
    pub url: String,
}

impl OwnPostgres {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg")
    }

    pub fn start() -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("tally-own-pg-{}", uuid::Uuid::new_v4().simple()));
        let port = free_port();
        let url = OwnPostgres::run("start", &dir, port);
        OwnPostgres { dir, port, url: url.trim().to_owned() }
    }

    fn run(command: &str, dir: &std::path::Path, port: u16) -> String {
        let output = Command::new(OwnPostgres::script())
            .arg(command)
            .arg(dir)
            .arg(port.to_string())
            .output()
            .expect("run scripts/pg");
        assert!(output.status.success(), "scripts/pg {command}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the server at once (`pg_ctl -m immediate`): connections drop, as in a crash.
    pub fn kill(&self) {
        OwnPostgres::run("kill", &self.dir, self.port);
    }

    pub fn resume(&self) {
        OwnPostgres::run("start", &self.dir, self.port);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(OwnPostgres::script()).arg("stop").arg(&self.dir).arg(self.port.to_string()).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An SQLite database file of a test's own under the temporary directory, removed (with its
/// `-wal` and `-shm` files) when dropped.
pub struct TempSqlite(pub PathBuf);

impl TempSqlite {
    pub fn new(label: &str) -> TempSqlite {
        TempSqlite(std::env::temp_dir().join(format!("tally-{label}-{}.db", uuid::Uuid::new_v4().simple())))
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// Reads from a raw connection until the peer closes it or `deadline` passes; answers what was
/// read and whether the peer closed.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream, deadline: Instant) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (seen, false);
        }
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (seen, false),
        }
    }
}
