//! The `tally` binary: `serve`, `migrate`, `check`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tally_actors::{Engine, EngineConfig};
use tally_http::{AppState, app};
use tally_persistence::open::{DEFAULT_DATABASE_URL, open_store};

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
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Verify the store offline against the ledger's invariants; exit 1 on a violation.
    Check,
}

/// How long shutdown waits for running sagas before it stops the actors anyway. A saga left
/// unfinished is finished by the next start's recovery.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tally: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen } => serve(&cli.database_url, listen).await,
            Command::Migrate => migrate(&cli.database_url).await,
            Command::Check => check(&cli.database_url).await,
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

/// `TALLY_LOG` picks the level (an `EnvFilter`, default `info`); `TALLY_LOG_FORMAT=json`
/// switches to one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::new(std::env::var("TALLY_LOG").unwrap_or_else(|_| "info".to_owned()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("TALLY_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(database_url: &str, listen: SocketAddr) -> Result<ExitCode, String> {
    let store = open_store(database_url).await.map_err(|error| format!("opening the store: {error}"))?;
    let state = AppState::new(store.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|error| format!("binding {listen}: {error}"))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    tracing::info!(%address, "tally listening; recovering before ready");
    // Serve `/health/live` at once; the engine starts (and recovers) behind it, and
    // `/health/ready` turns 200 when it is done.
    let starting = state.clone();
    tokio::spawn(async move {
        match Engine::start(store, EngineConfig::default()).await {
            Ok(engine) => {
                tracing::info!("engine ready");
                starting.set_engine(engine);
            }
            Err(error) => {
                tracing::error!(%error, "the engine could not start; exiting");
                std::process::exit(1);
            }
        }
    });
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|error| error.to_string())?;
    if let Some(engine) = state.engine_if_started() {
        engine.shutdown(SHUTDOWN_GRACE).await;
    }
    Ok(ExitCode::SUCCESS)
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
