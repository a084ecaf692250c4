//! The `tally` binary: `serve`, `migrate`, `check`, `verify`, `admin create`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use tally_actors::{Engine, EngineConfig, RandomIds, Runtime, SessionConfig, SystemClock};
use tally_http::auth::bootstrap::{AdminOutcome, ensure_admin};
use tally_http::auth::{Identity, IdentityOptions};
use tally_http::cluster::{BecomeOwner, ClusterConfig, Node};
use tally_http::mail::{DEFAULT_DATA_DIR, DEFAULT_MAIL_FROM, MailConfig, MailTransport};
use tally_http::server::{Server, ServerConfig};
use tally_http::{AppState, app};
use tally_persistence::Store;
use tally_persistence::open::{DEFAULT_DATABASE_URL, open_store};
use tally_persistence::open_users::open_user_store;
use tally_persistence::postgres::PgStore;

/// mimalloc instead of glibc's malloc. A transfer allocates on one thread (an HTTP worker, an
/// actix arbiter) and frees on another (the journal writer, the store's runtime); glibc's
/// arenas handle that through their slow paths (`malloc_consolidate`, `unlink_chunk`), which
/// `scripts/bench`'s flamegraph showed at ~20 % of the server's samples under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "tally", about = "Tally, a transaction engine for money", version)]
struct Cli {
    /// Where Tally stores its ledger: `postgres://...` or `sqlite://path`.
    #[arg(long, global = true, env = "TALLY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (migrations run at start-up; recovery runs before `/health/ready`).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// With `--admin-password`: create this admin (every permission) unless a user with
        /// this email exists.
        #[arg(long, env = "TALLY_ADMIN_EMAIL")]
        admin_email: Option<String>,
        #[arg(long, env = "TALLY_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Verify the store offline against the ledger's invariants; exit 1 on a violation.
    Check,
    /// Recompute the store's hash chains (the ledger journal's and the audit log's) and exit 1
    /// naming the first entry that does not match.
    Verify {
        /// An audit head copied elsewhere (`GET /v1/admin/audit/head`'s `audit`), as
        /// `SEQ:HASH`: the entry at SEQ must exist with that hash. Repeatable.
        #[arg(long = "audit-head", value_name = "SEQ:HASH")]
        audit_heads: Vec<String>,
        /// A ledger shard's head copied elsewhere (an item of `ledger.shards` of `GET
        /// /v1/admin/audit/head`), as `SHARD:SEQ:HASH`: the shard's batch ending at SEQ must
        /// exist with that hash. Repeatable.
        #[arg(long = "ledger-head", value_name = "SHARD:SEQ:HASH")]
        ledger_heads: Vec<String>,
    },
    /// Manage admins.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an admin with every permission, unless a user with this email exists.
    Create {
        #[arg(long)]
        email: String,
        /// Prefer `TALLY_ADMIN_PASSWORD` over the flag: a flag shows in the process list.
        #[arg(long, env = "TALLY_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

/// How long shutdown waits for running sagas before it stops the actors anyway. A saga left
/// unfinished is finished by the next start's recovery.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    tally_http::logging::init_from_env();
    let cli = Cli::parse();
    // The main thread only starts things and waits for a signal: the work runs on the engine's
    // runtime threads (one per core), which also serve HTTP (`serve`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tally: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen, admin_email, admin_password } => {
                if admin_email.is_some() != admin_password.is_some() {
                    tracing::warn!(
                        "only one of TALLY_ADMIN_EMAIL and TALLY_ADMIN_PASSWORD is set; no admin is bootstrapped"
                    );
                }
                serve(&cli.database_url, listen, admin_email.zip(admin_password)).await
            }
            Command::Migrate => migrate(&cli.database_url).await,
            Command::Check => check(&cli.database_url).await,
            Command::Verify { audit_heads, ledger_heads } => {
                verify(&cli.database_url, &audit_heads, &ledger_heads).await
            }
            Command::Admin { command: AdminCommand::Create { email, password } } => {
                create_admin(&cli.database_url, &email, &password).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tally: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the identity store and loads (or on first start creates) the signing keys, then
/// creates the bootstrap admin if one was given and does not exist yet.
async fn open_identity(database_url: &str, admin: Option<(String, String)>) -> Result<Identity, String> {
    let stores = open_user_store(database_url).await.map_err(|error| format!("opening the user store: {error}"))?;
    let options = identity_options_from_env()?;
    let identity = Identity::open_configured(stores, Arc::new(SystemClock), Arc::new(RandomIds), options)
        .await
        .map_err(|error| format!("identity: {error}"))?;
    if let Some((email, password)) = admin {
        let outcome = ensure_admin(
            identity.users.as_ref(),
            &identity.passwords,
            identity.clock.as_ref(),
            identity.ids.as_ref(),
            &email,
            &password,
        )
        .await?;
        match outcome {
            AdminOutcome::Created(id) => tracing::info!(%id, email = %email, "bootstrap admin created"),
            AdminOutcome::Exists(id) => tracing::info!(%id, email = %email, "bootstrap admin exists; left unchanged"),
        }
    }
    Ok(identity)
}

async fn serve(database_url: &str, listen: SocketAddr, admin: Option<(String, String)>) -> Result<ExitCode, String> {
    // The metrics recorder first, so the journal's first flush is already recorded.
    tally_http::metrics::handle();
    tally_http::metrics::spawn_upkeep();
    let cluster = ClusterConfig::from_env()?;
    // A cluster node fences its journal writers with its leases, which needs the Postgres store
    // itself; the embedded SQLite store is a cluster of one.
    let (store, pg_store): (Arc<dyn Store>, Option<Arc<PgStore>>) = match &cluster {
        None => (open_store(database_url).await.map_err(|error| format!("opening the store: {error}"))?, None),
        Some(_) if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") => {
            return Err(
                "TALLY_NODE_ID: a cluster shares one Postgres; TALLY_DATABASE_URL must be postgres://".to_owned()
            );
        }
        Some(_) => {
            let store = PgStore::connect(database_url).await.map_err(|error| format!("opening the store: {error}"))?;
            store.migrate().await.map_err(|error| format!("migrating the store: {error}"))?;
            let store = Arc::new(store);
            (store.clone() as Arc<dyn Store>, Some(store))
        }
    };
    let identity = open_identity(database_url, admin).await?;
    // `TALLY_RATE_LIMIT_PER_SECOND`: requests per second per caller (default
    // `REQUESTS_PER_SECOND_DEFAULT`), with a burst of one second's worth; beyond it `429`.
    if let Ok(text) = std::env::var("TALLY_RATE_LIMIT_PER_SECOND") {
        let per_second: u32 =
            text.trim().parse().map_err(|_| "TALLY_RATE_LIMIT_PER_SECOND must be a whole number".to_owned())?;
        identity.protection.requests.set_per_second(per_second);
    }
    let state = AppState::new(store.clone(), identity);
    // `TALLY_REQUEST_TIMEOUT_SECS`: how long a request may take before it is answered without
    // its outcome (default `REQUEST_TIMEOUT`). Raised for runs under valgrind, where one
    // password hash takes longer than the default.
    if let Ok(text) = std::env::var("TALLY_REQUEST_TIMEOUT_SECS") {
        let secs: u64 = text
            .trim()
            .parse()
            .ok()
            .filter(|secs| (1..=3_600).contains(secs))
            .ok_or_else(|| "TALLY_REQUEST_TIMEOUT_SECS must be a whole number from 1 to 3600".to_owned())?;
        state.set_request_timeout(std::time::Duration::from_secs(secs));
    }
    // Built now, so bad webhook settings stop the start-up with their message; deliveries
    // start with the engine (on a cluster, only where it runs).
    let webhook_client = tally_http::webhooks::client(&state.identity().webhooks)?;
    let (config, panic_every) = engine_config_from_env()?;
    let engine_clock = engine_clock_from_env()?;
    // One thread per core: each serves HTTP connections, its shards' actors and sagas, and
    // their journal (DESIGN.md §2).
    let runtime = Runtime::start(config.actors.shards).map_err(|error| format!("starting the runtime: {error}"))?;
    let node = match cluster {
        Some(cluster) => Some(Node::join(cluster, database_url).await?),
        None => None,
    };
    let router = match &node {
        // A cluster node's outermost layer serves (the owner) or forwards (a standby).
        Some(node) => {
            state.set_cluster(Arc::clone(node));
            let holder = Arc::clone(node);
            state.identity().sessions.tick_only_while(move || holder.serving());
            // Set before `app`, which puts the cluster's gate over every route.
            let router = app(state.clone());
            node.set_router(router.clone());
            router
        }
        None => app(state.clone()),
    };
    let server = Server::start(&runtime, listen, router, server_config_from_env()?)
        .map_err(|error| format!("binding {listen}: {error}"))?;
    let owner = EngineStart {
        state: state.clone(),
        runtime: Arc::clone(&runtime),
        store,
        config,
        engine_clock,
        panic_every,
        webhook_client,
    };
    match (&node, pg_store) {
        (Some(node), Some(pg_store)) => {
            tracing::info!(address = %server.local_addr(), node = node.id(), "tally listening as a cluster node; standby until it owns the shards");
            let shards = u16::try_from(owner.config.actors.shards).unwrap_or(u16::MAX);
            let lease = node.lease();
            let node_id = node.id().to_owned();
            // Once this node holds every lease: its writers commit only under them, then the
            // engine recovers the journals from the store and serves.
            let become_owner: BecomeOwner = Box::new(move |leases| {
                Box::pin(async move {
                    pg_store.fence_journal_writers(&node_id, &leases, lease);
                    owner.start().await;
                })
            });
            tokio::spawn(Arc::clone(node).run(shards, become_owner));
        }
        _ => {
            tracing::info!(address = %server.local_addr(), threads = runtime.threads(), "tally listening; recovering before ready");
            // Serve `/health/live` at once; the engine starts (and recovers) behind it, and
            // `/health/ready` turns 200 when it is done.
            tokio::spawn(owner.start());
        }
    }
    shutdown_signal().await;
    server.shutdown(SHUTDOWN_GRACE).await;
    if let Some(engine) = state.engine_if_started() {
        engine.shutdown(SHUTDOWN_GRACE).await;
    }
    // The journals are flushed: a standby may take the shards at once.
    if let Some(node) = &node {
        node.release().await;
    }
    runtime.stop();
    Ok(ExitCode::SUCCESS)
}

/// What starting the engine needs: on a server that is not a cluster node at once, on a
/// cluster node once it owns the shards.
struct EngineStart {
    state: AppState,
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    config: EngineConfig,
    engine_clock: Arc<dyn tally_actors::Clock>,
    panic_every: Vec<(tally_actors::ActorKind, u32)>,
    webhook_client: reqwest::Client,
}

impl EngineStart {
    /// Starts (and recovers) the engine, loads what it needs from identity, hands it to the
    /// handlers and starts the webhook deliveries; exits the process if it cannot start.
    async fn start(self) {
        let EngineStart { state, runtime, store, config, engine_clock, panic_every, webhook_client } = self;
        let started = Engine::start_on(runtime, store, config, engine_clock, Arc::new(RandomIds)).await;
        let engine = match started {
            Ok(engine) => engine,
            Err(error) => {
                tracing::error!(%error, "the engine could not start; exiting");
                std::process::exit(1);
            }
        };
        tracing::info!("engine ready");
        for (kind, every) in panic_every {
            tracing::warn!(kind = kind.as_str(), every, "fault injection on: every n-th handler panics");
            engine.faults().panic_every(kind, every);
        }
        // Verification limits' usage of this month, from the ledger as recovery left it
        // (actors/src/limits.rs), before anything is served.
        let now = engine.now();
        let since = tally_actors::limits::Limits::month_start(now);
        match state.identity().limits.load_usage(since, now).await {
            Ok(rows) => engine.limits().install_usage(&rows, now),
            Err(error) => {
                tracing::error!(%error, "the limits' usage could not be read; exiting");
                std::process::exit(1);
            }
        }
        // Only now may an overdue pending transfer expire: its give-back lands on the usage.
        engine.release_expiries();
        if let Err(error) = state.set_engine_reading_limits(engine).await {
            tracing::error!(%error, "the verification limits could not be read; exiting");
            std::process::exit(1);
        }
        // Deliveries run where the engine runs: on a cluster, only the owner delivers.
        tally_http::webhooks::start_with(state.clone(), webhook_client);
    }
}

/// The engine's clock: the system's, unless a test asks for one it can move forward.
/// `TALLY_TEST_CLOCK=enabled` with `TALLY_TEST_CLOCK_OFFSET_FILE=<path>`: the system's time
/// plus the whole seconds written in that file (re-read every 50 ms, only ever forward); for
/// black-box tests of time-bound engine behaviour such as pending expiry
/// (docs/ledger-views.md). Both must be set: the offset file alone is refused, so a stray
/// variable cannot shift a production ledger's time. Sessions and tokens keep the real clock.
fn engine_clock_from_env() -> Result<Arc<dyn tally_actors::Clock>, String> {
    let enabled = std::env::var("TALLY_TEST_CLOCK").ok();
    let file = std::env::var("TALLY_TEST_CLOCK_OFFSET_FILE").ok();
    match (enabled.as_deref(), file) {
        (None, None) => Ok(Arc::new(SystemClock)),
        (Some("enabled"), Some(path)) => {
            tracing::warn!(%path, "TEST CLOCK ON: the engine's time is shifted by the offset in this file");
            let clock = tally_actors::OffsetFileClock::start(path.into())
                .map_err(|error| format!("TALLY_TEST_CLOCK_OFFSET_FILE: {error}"))?;
            Ok(Arc::new(clock))
        }
        _ => Err("TALLY_TEST_CLOCK=enabled and TALLY_TEST_CLOCK_OFFSET_FILE go together (tests only)".to_owned()),
    }
}

/// The server's settings from the environment: `TALLY_HTTP_TIMEOUT_SECS` (header-read and
/// keep-alive idle timeout, default 10, 1 to 300) and `TALLY_HTTP_CONNECTIONS_MAX` (open
/// connections per node, default 16,384).
fn server_config_from_env() -> Result<ServerConfig, String> {
    let mut config = ServerConfig::default();
    if let Ok(text) = std::env::var("TALLY_HTTP_TIMEOUT_SECS") {
        let secs: u64 =
            text.trim().parse().map_err(|_| format!("TALLY_HTTP_TIMEOUT_SECS: not a whole number: {text:?}"))?;
        if !(1..=300).contains(&secs) {
            return Err("TALLY_HTTP_TIMEOUT_SECS: must be from 1 to 300".to_owned());
        }
        config.header_read_timeout = Duration::from_secs(secs);
    }
    if let Ok(text) = std::env::var("TALLY_HTTP_CONNECTIONS_MAX") {
        let max: usize =
            text.trim().parse().map_err(|_| format!("TALLY_HTTP_CONNECTIONS_MAX: not a whole number: {text:?}"))?;
        if max == 0 {
            return Err("TALLY_HTTP_CONNECTIONS_MAX: must be at least 1".to_owned());
        }
        config.connections_max = max;
    }
    Ok(config)
}

/// The session settings from the environment: `TALLY_SESSION_IDLE_SECS` (default 1800, from 1
/// second to a day: a session idle longer than a day is not a banking session).
fn session_config_from_env() -> Result<SessionConfig, String> {
    let mut config = SessionConfig::default();
    if let Ok(text) = std::env::var("TALLY_SESSION_IDLE_SECS") {
        let secs: u64 = text.parse().map_err(|_| format!("TALLY_SESSION_IDLE_SECS: not a whole number: {text:?}"))?;
        if !(1..=SESSION_IDLE_SECS_MAX).contains(&secs) {
            return Err(format!("TALLY_SESSION_IDLE_SECS: must be from 1 to {SESSION_IDLE_SECS_MAX}"));
        }
        config.idle = Duration::from_secs(secs);
    }
    Ok(config)
}

/// Identity's settings from the environment: the session settings, mail, and
/// `TALLY_REQUIRE_VERIFIED_EMAIL`.
///
/// - `TALLY_SMTP_URL` (`smtp://[user:password@]host:port`, `smtps://…` for TLS): send mail
///   through it; unset, each message is an `.eml` file under `<TALLY_DATA_DIR>/mail/`
///   (`TALLY_DATA_DIR` defaults to `./tally-data`).
/// - `TALLY_MAIL_FROM`: the sender (`Name <address>` or an address).
/// - `TALLY_REQUIRE_VERIFIED_EMAIL`: `true` or `false` (default).
fn identity_options_from_env() -> Result<IdentityOptions, String> {
    let data_dir = std::env::var("TALLY_DATA_DIR").unwrap_or_else(|_| DEFAULT_DATA_DIR.to_owned());
    let transport = match std::env::var("TALLY_SMTP_URL") {
        Ok(url) if !url.trim().is_empty() => MailTransport::Smtp(url.trim().to_owned()),
        _ => MailTransport::Files(std::path::PathBuf::from(&data_dir).join("mail")),
    };
    let from = std::env::var("TALLY_MAIL_FROM").unwrap_or_else(|_| DEFAULT_MAIL_FROM.to_owned());
    let require_verified_email = match std::env::var("TALLY_REQUIRE_VERIFIED_EMAIL").as_deref() {
        Err(_) | Ok("") | Ok("false") => false,
        Ok("true") => true,
        Ok(other) => return Err(format!("TALLY_REQUIRE_VERIFIED_EMAIL must be true or false, not {other:?}")),
    };
    Ok(IdentityOptions {
        sessions: session_config_from_env()?,
        mail: MailConfig { transport, from },
        require_verified_email,
        webhooks: webhook_options_from_env()?,
    })
}

/// The webhook settings from the environment:
///
/// - `TALLY_WEBHOOK_DENY_PRIVATE`: `true` refuses receivers on loopback, private, link-local or
///   unspecified addresses, at subscription and at every delivery; `false` (default).
/// - `TALLY_WEBHOOK_CA_FILE`: a PEM file of CA certificates trusted for `https` receivers
///   besides Mozilla's roots (an internal CA); unreadable or empty stops the start.
fn webhook_options_from_env() -> Result<tally_http::webhooks::WebhookOptions, String> {
    let deny_private = match std::env::var("TALLY_WEBHOOK_DENY_PRIVATE").as_deref() {
        Err(_) | Ok("") | Ok("false") => false,
        Ok("true") => true,
        Ok(other) => return Err(format!("TALLY_WEBHOOK_DENY_PRIVATE must be true or false, not {other:?}")),
    };
    let extra_ca_pem = match std::env::var("TALLY_WEBHOOK_CA_FILE") {
        Ok(path) if !path.trim().is_empty() => Some(
            std::fs::read(path.trim()).map_err(|error| format!("TALLY_WEBHOOK_CA_FILE {}: {error}", path.trim()))?,
        ),
        _ => None,
    };
    Ok(tally_http::webhooks::WebhookOptions { deny_private, extra_ca_pem })
}

/// Longest linger a journal may be configured with: beyond it every acknowledgement would
/// wait longer than a commit costs.
const JOURNAL_LINGER_US_MAX: u64 = 50_000;

/// Longest idle time a session may be configured with: a day.
const SESSION_IDLE_SECS_MAX: u64 = 24 * 60 * 60;

/// The engine's settings from the environment; every one optional, defaults as documented in
/// ARCHITECTURE.md's bounds table:
///
/// - `TALLY_JOURNAL_ADMISSION_MAX`: records waiting in a shard's journal (each running saga
///   counted as one more) before new work gets `503`.
/// - `TALLY_JOURNAL_LINGER_US`: how long an idle journal waits for company before it commits
///   what woke it (default 0). Every acknowledgement waits that much longer; in exchange a
///   moderately loaded server makes fewer, larger commits (README, "Benchmarks").
/// - `TALLY_QUARANTINE_RESTARTS`: restarts within a minute that quarantine an actor.
/// - `TALLY_FAULT_PANIC_EVERY`: fault injection for tests, e.g. `account=50,transfer_saga=200`
///   makes every 50th account handler and every 200th saga step panic. Off by default.
fn engine_config_from_env() -> Result<(EngineConfig, Vec<(tally_actors::ActorKind, u32)>), String> {
    // Expiries wait until the verification limits' usage is installed (`EngineStart::start`).
    let mut config = EngineConfig { hold_expiries: true, ..EngineConfig::default() };
    let number = |name: &str| -> Result<Option<u64>, String> {
        match std::env::var(name) {
            Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|_| format!("{name} must be a whole number")),
            Err(_) => Ok(None),
        }
    };
    if let Some(admission) = number("TALLY_JOURNAL_ADMISSION_MAX")? {
        let admission = usize::try_from(admission).map_err(|_| "TALLY_JOURNAL_ADMISSION_MAX too large".to_owned())?;
        // Keep the room above admission that admitted sagas need to finish.
        let reserve = config.journal.depth_max - config.journal.admission_depth_max;
        config.journal.admission_depth_max = admission;
        config.journal.depth_max = admission + reserve;
    }
    if let Some(micros) = number("TALLY_JOURNAL_LINGER_US")? {
        if micros > JOURNAL_LINGER_US_MAX {
            return Err(format!("TALLY_JOURNAL_LINGER_US must be at most {JOURNAL_LINGER_US_MAX} (50 ms)"));
        }
        config.journal.linger = std::time::Duration::from_micros(micros);
    }
    if let Some(restarts) = number("TALLY_QUARANTINE_RESTARTS")? {
        config.actors.quarantine_restarts = u32::try_from(restarts).unwrap_or(u32::MAX);
    }
    let panic_every = match std::env::var("TALLY_FAULT_PANIC_EVERY") {
        Ok(spec) => tally_actors::faults::parse_panic_every(&spec)
            .map_err(|error| format!("TALLY_FAULT_PANIC_EVERY: {error}"))?,
        Err(_) => Vec::new(),
    };
    Ok((config, panic_every))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn migrate(database_url: &str) -> Result<ExitCode, String> {
    open_store(database_url).await.map_err(|error| format!("migrating: {error}"))?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// `tally admin create`: the same as the start-up bootstrap, from the command line. Needs no
/// running server; it writes to the database directly.
async fn create_admin(database_url: &str, email: &str, password: &str) -> Result<ExitCode, String> {
    let stores = open_user_store(database_url).await.map_err(|error| format!("opening the user store: {error}"))?;
    let passwords = tally_http::auth::Passwords::new().await?;
    let outcome = ensure_admin(stores.users.as_ref(), &passwords, &SystemClock, &RandomIds, email, password).await?;
    match outcome {
        AdminOutcome::Created(id) => println!("admin {email} created: {id}"),
        AdminOutcome::Exists(id) => println!("a user {email} already exists ({id}); nothing changed"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally verify`: recomputes every hash chain the store keeps and exits 1 naming the first
/// entry that does not match, or a head anchored elsewhere (`--audit-head`, `--ledger-head`)
/// that the store no longer holds. Each chain is one `ChainCheck`.
async fn verify(database_url: &str, audit_heads: &[String], ledger_heads: &[String]) -> Result<ExitCode, String> {
    let anchors = Anchors {
        audit: audit_heads.iter().map(|text| parse_audit_head(text)).collect::<Result<_, _>>()?,
        ledger: ledger_heads.iter().map(|text| parse_ledger_head(text)).collect::<Result<_, _>>()?,
    };
    let stores = open_user_store(database_url).await.map_err(|error| format!("opening the store: {error}"))?;
    let mut broken = false;
    for check in chain_checks() {
        match (check.run)(&stores, &anchors).await.map_err(|error| format!("reading the {}: {error}", check.name))? {
            ChainOutcome::Intact { entries, head } => {
                println!("{}: {entries} entries, chain intact; head {head}", check.name)
            }
            ChainOutcome::Broken { entries, first } => {
                println!("{}: {entries} entries intact before the first break", check.name);
                println!("TAMPERED: {first}");
                broken = true;
            }
        }
    }
    if broken {
        return Ok(ExitCode::from(1));
    }
    println!("ok: every hash chain verifies");
    Ok(ExitCode::SUCCESS)
}

/// Heads copied elsewhere that `tally verify` checks the store still holds.
struct Anchors {
    audit: Vec<tally_persistence::audit::AuditHead>,
    ledger: Vec<tally_persistence::events::chain::ChainHead>,
}

/// A SHA-256 in hex as the heads show it: 64 hex digits, read in lower case.
fn parse_hash(text: &str, flag: &str) -> Result<String, String> {
    if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("{flag}: {text:?} is not a SHA-256 in hex (64 digits)"))
    }
}

/// `--audit-head SEQ:HASH`.
fn parse_audit_head(text: &str) -> Result<tally_persistence::audit::AuditHead, String> {
    let (seq, hash) = text.split_once(':').ok_or_else(|| format!("--audit-head {text:?}: expected SEQ:HASH"))?;
    let seq = seq.parse::<u64>().map_err(|_| format!("--audit-head {text:?}: SEQ is not a number"))?;
    Ok(tally_persistence::audit::AuditHead { seq, hash: parse_hash(hash, "--audit-head")? })
}

/// `--ledger-head SHARD:SEQ:HASH`.
fn parse_ledger_head(text: &str) -> Result<tally_persistence::events::chain::ChainHead, String> {
    let refuse = || format!("--ledger-head {text:?}: expected SHARD:SEQ:HASH");
    let mut parts = text.splitn(3, ':');
    let (Some(shard), Some(seq), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refuse());
    };
    let shard = shard.parse::<u16>().map_err(|_| refuse())?;
    let last_seq = seq.parse::<u64>().map_err(|_| refuse())?;
    let hash = data_encoding::HEXLOWER_PERMISSIVE
        .decode(parse_hash(hash, "--ledger-head")?.as_bytes())
        .map_err(|_| refuse())?;
    Ok(tally_persistence::events::chain::ChainHead { shard, last_seq, hash })
}

/// What verifying one chain found.
enum ChainOutcome {
    Intact { entries: u64, head: String },
    Broken { entries: u64, first: String },
}

type ChainRun = for<'a> fn(
    &'a tally_persistence::open_users::UserStores,
    &'a Anchors,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ChainOutcome, tally_persistence::StoreError>> + Send + 'a>,
>;

/// One hash chain `tally verify` walks.
struct ChainCheck {
    name: &'static str,
    run: ChainRun,
}

/// The chains `tally verify` walks, in order: the ledger journal's batches, then the audit log.
fn chain_checks() -> Vec<ChainCheck> {
    vec![
        ChainCheck { name: "ledger journal", run: |stores, anchors| Box::pin(verify_ledger(stores, anchors)) },
        ChainCheck { name: "audit log", run: |stores, anchors| Box::pin(verify_audit(stores, anchors)) },
    ]
}

/// The journal's batch chain (`persistence::events::chain`): names the first batch, by shard
/// and seq range, whose stored hash its rows no longer give, or an anchored shard head the
/// store does not hold (checked after the walk, which proved every stored link).
async fn verify_ledger(
    stores: &tally_persistence::open_users::UserStores,
    anchors: &Anchors,
) -> Result<ChainOutcome, tally_persistence::StoreError> {
    use tally_persistence::events::chain::{ChainReport, hex};
    match stores.events.verify_ledger_chain().await? {
        ChainReport::Intact { batches } => {
            for anchor in &anchors.ledger {
                let stored = stores.events.ledger_link(anchor.shard, anchor.last_seq).await?;
                if stored.as_deref() != Some(anchor.hash.as_slice()) {
                    let found = match stored {
                        Some(hash) => format!("its batch ending at seq {} has hash {}", anchor.last_seq, hex(&hash)),
                        None => format!("no batch of the shard ends at seq {}", anchor.last_seq),
                    };
                    return Ok(ChainOutcome::Broken {
                        entries: batches,
                        first: format!(
                            "the anchored head of shard {} names seq {} hash {}, but {found} (batches removed or \
                             rewritten)",
                            anchor.shard,
                            anchor.last_seq,
                            hex(&anchor.hash)
                        ),
                    });
                }
            }
            let heads = stores.events.ledger_heads().await?;
            let head = heads
                .iter()
                .map(|head| format!("shard {} seq {} hash {}", head.shard, head.last_seq, hex(&head.hash)))
                .collect::<Vec<_>>()
                .join("; ");
            Ok(ChainOutcome::Intact {
                entries: batches,
                head: if head.is_empty() { "(none)".to_owned() } else { head },
            })
        }
        ChainReport::Broken { shard, first_seq, last_seq, reason } => Ok(ChainOutcome::Broken {
            entries: 0,
            first: format!("journal batch shard {shard} seq {first_seq}..={last_seq}: {reason}"),
        }),
    }
}

async fn verify_audit(
    stores: &tally_persistence::open_users::UserStores,
    anchors: &Anchors,
) -> Result<ChainOutcome, tally_persistence::StoreError> {
    let report = tally_persistence::audit::verify_chain_anchored(stores.audit.as_ref(), &anchors.audit).await?;
    Ok(match report.first_break {
        None => ChainOutcome::Intact {
            entries: report.entries,
            head: format!("seq {} hash {}", report.head.seq, report.head.hash),
        },
        Some(first) => ChainOutcome::Broken { entries: report.entries, first: first.to_string() },
    })
}

async fn check(database_url: &str) -> Result<ExitCode, String> {
    let store = open_store(database_url).await.map_err(|error| format!("opening the store: {error}"))?;
    let (summary, violations) =
        tally_persistence::check::check(store.as_ref()).await.map_err(|error| format!("reading the store: {error}"))?;
    println!(
        "checked {} accounts, {} holds, {} pending transfers",
        summary.accounts, summary.holds, summary.pending_transfers
    );
    let unbalanced: Vec<_> = summary.currencies.iter().filter(|(_, sum)| !sum.is_zero()).collect();
    println!("{} currencies, {} with balances not summing to zero", summary.currencies.len(), unbalanced.len());
    if violations.is_empty() {
        println!("ok: every invariant holds");
        return Ok(ExitCode::SUCCESS);
    }
    for violation in &violations {
        println!("VIOLATION: {violation}");
    }
    Ok(ExitCode::from(1))
}
