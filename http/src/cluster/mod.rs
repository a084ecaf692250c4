//! A Tally cluster node (issue 13, DESIGN.md §10, API.md "Cluster", `docs/cluster.md`).
//!
//! Several `tally serve` processes share one Postgres. Who owns what is decided by leases in
//! the store (`tally_persistence::cluster`), never by the nodes among themselves. In this
//! first step one node at a time leases every shard and runs the engine; it is the *owner*.
//! Every other node is a *standby*: it accepts any request and forwards it to the owner
//! (`forward.rs`), and takes the shards over when the owner's leases run out.
//!
//! - The owner renews its leases every third of the lease time. It serves only while its
//!   last renewal (counted from before it was sent) is younger than nine tenths of the lease
//!   time, so a node that was paused answers nothing from its engine once it wakes; and every
//!   journal commit is fenced by (owner, epoch) in the store, so it cannot write either. While
//!   the store is unreachable it keeps trying; a renewal that succeeds later (nobody took the
//!   leases meanwhile) lets it serve again.
//! - A node that finds its leases taken counts its
//!   fenced commits into the store and starts over as a standby: it executes its own binary
//!   again (same process id, arguments and environment), so nothing of the former engine's
//!   memory survives into the new incarnation.
//! - A standby that finds no live owner takes every shard (all or none) and starts the engine,
//!   which recovers the journals from the store as on a restart: sagas driven forward or
//!   undone, no hold left dangling.
//! - A clean shutdown of the owner flushes its journals and releases the leases, so a standby
//!   takes over at once instead of after the lease time.
//! - A process registers as its node under a fresh incarnation; if another process registers
//!   under the same `TALLY_NODE_ID` later, the earlier one exits (`EXIT_SUPERSEDED`) instead of
//!   taking the leases back and forth with it.
//!
//! Without `TALLY_NODE_ID` none of this runs: the server is a cluster of one, as before.

pub mod batch;
pub mod forward;
mod gate;

pub use gate::GateLayer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde::Serialize;
use tally_engine::{ErrorCode, Timestamp};
use tally_persistence::cluster::{ClusterStore, Heartbeat, Lease};
use utoipa::ToSchema;

use crate::auth::caller::Authorized;
use crate::auth::permissions::OpsRead;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::rfc3339;

/// `TALLY_LEASE_SECS` when unset.
const LEASE_SECS_DEFAULT: u64 = 5;
/// The shortest cluster secret accepted: 128 bits as hex.
const SECRET_BYTES_MIN: usize = 32;

/// How long a node that lost its shards lets its journals' commits in flight end before it
/// counts the fenced ones and starts over.
const FENCED_SETTLE: Duration = Duration::from_millis(500);

/// The exit status of a process another one superseded as its node (`Heartbeat::Superseded`):
/// `EX_CONFIG`, since two processes were given one `TALLY_NODE_ID`.
pub const EXIT_SUPERSEDED: i32 = 78;

/// How long a forwarded request waits for the owner's next byte.
const FORWARD_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's settings (`TALLY_NODE_ID`, `TALLY_ADVERTISE_URL`, `TALLY_CLUSTER_SECRET`,
/// `TALLY_LEASE_SECS`).
#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: String,
    pub advertise_url: String,
    pub secret: String,
    pub lease: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The node's settings from the environment; `None` without `TALLY_NODE_ID` (a cluster of
    /// one). Every error names the variable.
    pub fn from_env() -> Result<Option<ClusterConfig>, String> {
        let var = |name: &str| std::env::var(name).ok().map(|value| value.trim().to_owned());
        let Some(node_id) = var("TALLY_NODE_ID").filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let advertise_url = var("TALLY_ADVERTISE_URL")
            .ok_or("TALLY_ADVERTISE_URL is required with TALLY_NODE_ID: where the other nodes reach this one")?;
        let secret =
            var("TALLY_CLUSTER_SECRET").ok_or("TALLY_CLUSTER_SECRET is required with TALLY_NODE_ID")?.to_owned();
        let lease = match var("TALLY_LEASE_SECS") {
            None => LEASE_SECS_DEFAULT,
            Some(text) => text.parse().map_err(|_| format!("TALLY_LEASE_SECS: not a whole number: {text:?}"))?,
        };
        ClusterConfig::new(node_id, advertise_url, secret, Duration::from_secs(lease)).map(Some)
    }

    /// Checks each setting.
    pub fn new(node_id: String, advertise_url: String, secret: String, lease: Duration) -> Result<Self, String> {
        let id_ok = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return Err(format!("TALLY_NODE_ID: 1 to 64 letters, digits, '-', '_' or '.', not {node_id:?}"));
        }
        let url = reqwest::Url::parse(&advertise_url)
            .map_err(|error| format!("TALLY_ADVERTISE_URL: not a URL ({error}): {advertise_url:?}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.path() != "/" {
            return Err(format!("TALLY_ADVERTISE_URL: an http(s) base URL with no path, not {advertise_url:?}"));
        }
        if secret.len() < SECRET_BYTES_MIN {
            return Err(format!("TALLY_CLUSTER_SECRET: at least {SECRET_BYTES_MIN} characters"));
        }
        if !(1..=300).contains(&lease.as_secs()) {
            return Err("TALLY_LEASE_SECS: from 1 to 300".to_owned());
        }
        let advertise_url = advertise_url.trim_end_matches('/').to_owned();
        Ok(ClusterConfig { node_id, advertise_url, secret, lease })
    }
}

/// What the node does once it holds every lease: fence the store's writers and start the
/// engine (`tally serve` passes this in; it runs once per process).
pub type BecomeOwner = Box<dyn FnOnce(Vec<Lease>) -> BoxFuture<'static, ()> + Send>;

/// One node of the cluster.
pub struct Node {
    config: ClusterConfig,
    store: ClusterStore,
    /// The origin of `serving_until`.
    started: Instant,
    /// Micros since `started` until which this node may serve from its engine (0: never).
    serving_until: AtomicU64,
    /// Whether this node took the leases (it stays the owner until it starts over).
    owner: AtomicBool,
    /// Set by `release`: the renewals stop, so a clean shutdown's release is not undone.
    released: AtomicBool,
    /// The owner's id and URL as last read, for a standby.
    owner_seen: RwLock<Option<(String, String)>>,
    leases: Mutex<Vec<Lease>>,
    /// The node's whole router, this gate included, through which the owner runs the requests
    /// of a forwarded batch (`batch.rs`): the gate sits inside each route, so the rest of its
    /// stack is that one route. Set once by `tally serve`.
    router: std::sync::OnceLock<axum::Router>,
}

thread_local! {
    /// Each runtime thread forwards on a client of its own: a pooled connection's I/O is driven
    /// by the thread that opened it, so a client shared by the threads woke another thread for
    /// every request forwarded on a connection that thread had opened (DESIGN.md §2: a request
    /// stays on the thread that accepted it).
    static FORWARDING_CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

/// The forwarding client's settings.
fn forwarding_client() -> reqwest::Result<reqwest::Client> {
    // HTTP/1.1 keep-alive, not HTTP/2: measured with `scripts/cluster bench` at 6,000
    // transfers/s, prior-knowledge HTTP/2 cost the three nodes 156 µs of CPU per transfer
    // against 129 µs (one node alone: 83-90 µs), and at 3,000/s it saved nothing.
    peer_client().build()
}

/// The settings every client to a peer shares.
fn peer_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_idle_timeout(Duration::from_secs(30))
        // An owner that stops answering (paused, or its host gone without a reset) must not
        // hold a forwarded request for ever: 30 s without a byte, then "outcome unknown".
        .read_timeout(FORWARD_READ_TIMEOUT)
        .tcp_nodelay(true)
}

/// This thread's forwarding client (`Node::join` checked that one can be built).
fn thread_client() -> Option<reqwest::Client> {
    FORWARDING_CLIENT.with(|client| match client.get() {
        Some(client) => Some(client.clone()),
        None => forwarding_client().ok().map(|built| client.get_or_init(|| built).clone()),
    })
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl Node {
    /// Connects to the cluster tables. The node registers later, at the first heartbeat of
    /// `run`, once this process listens.
    pub async fn join(config: ClusterConfig, database_url: &str) -> Result<Arc<Node>, String> {
        let store = ClusterStore::connect(database_url, &config.node_id, &config.advertise_url, config.lease)
            .await
            .map_err(|error| format!("cluster: {error}"))?;
        // Not registered yet: the first heartbeat of `run`, once this process listens, registers
        // it as the node (`Heartbeat`). Registered here, a second process that then failed to
        // start (its address taken) would have superseded a healthy first one on its way out.
        // Checked once here, so that building one per thread later cannot fail.
        forwarding_client().map_err(|error| format!("cluster: the forwarding client: {error}"))?;
        batch::batch_client().map_err(|error| format!("cluster: the batches' client: {error}"))?;
        // Every cluster series exists from the start, so a dashboard shows 0, not "no data".
        metrics::gauge!("tally_cluster_owner").set(0.0);
        metrics::gauge!("tally_cluster_shards_owned").set(0.0);
        for counter in [
            "tally_cluster_lease_takes_total",
            "tally_cluster_shard_moves_total",
            "tally_cluster_forwarded_requests_total",
            "tally_cluster_forwarded_batches_total",
            "tally_cluster_forward_failures_total",
            "tally_cluster_fenced_commits_total",
        ] {
            metrics::counter!(counter).increment(0);
        }
        Ok(Arc::new(Node {
            config,
            store,
            started: Instant::now(),
            serving_until: AtomicU64::new(0),
            owner: AtomicBool::new(false),
            released: AtomicBool::new(false),
            owner_seen: RwLock::new(None),
            leases: Mutex::new(Vec::new()),
            router: std::sync::OnceLock::new(),
        }))
    }

    /// Gives the node its router (with the gate), for the batches it serves as the owner.
    /// The router holds the node in its gate: both live as long as the process.
    pub fn set_router(&self, router: axum::Router) {
        let _ = self.router.set(router);
    }

    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    /// `TALLY_LEASE_SECS`.
    pub fn lease(&self) -> Duration {
        self.config.lease
    }

    fn micros_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether this node holds the leases and its last renewal is recent enough to serve.
    pub fn serving(&self) -> bool {
        self.micros_since_start() < self.serving_until.load(Ordering::Acquire)
    }

    fn serve_until(&self, renewal_sent: Instant) {
        let until = renewal_sent.duration_since(self.started) + self.config.lease * 9 / 10;
        self.serving_until.store(u64::try_from(until.as_micros()).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn leases(&self) -> Vec<Lease> {
        self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Keeps the node's row and leases alive, takes the shards when nobody holds them, and
    /// starts over as a standby when they are lost. Runs until the process ends.
    pub async fn run(self: Arc<Self>, shards: u16, become_owner: BecomeOwner) {
        let tick = (self.config.lease / 3).max(Duration::from_millis(200));
        let mut become_owner = Some(become_owner);
        let mut registered = false;
        loop {
            match self.store.heartbeat().await {
                Ok(Heartbeat::Alive) => registered = true,
                Ok(Heartbeat::Superseded) => self.exit_superseded().await,
                Err(error) => tracing::warn!(%error, "cluster: heartbeat failed"),
            }
            // Until the store has answered the registering heartbeat this process is not the
            // node, and takes nothing.
            if registered && self.owner.load(Ordering::Acquire) {
                self.renew().await;
            } else if registered {
                self.look_for_owner(shards, &mut become_owner).await;
            }
            tokio::time::sleep(tick).await;
        }
    }

    async fn renew(&self) {
        if self.released.load(Ordering::Acquire) {
            return;
        }
        let sent = Instant::now();
        match self.store.renew(&self.leases()).await {
            Ok(true) => self.serve_until(sent),
            Ok(false) => self.start_over("another node took this node's shards").await,
            // The store is unreachable (an outage, a network cut). Past nine tenths of the lease
            // without a renewal this node serves nothing (`serving`), since another node may
            // take the shards any moment; it keeps trying, and if the store comes back with
            // its leases untaken (the outage kept the others from taking them too), a
            // renewal succeeds and it serves again: the fence held every commit meanwhile.
            Err(error) => tracing::warn!(%error, serving = self.serving(), "cluster: renewing the leases failed"),
        }
    }

    async fn look_for_owner(&self, shards: u16, become_owner: &mut Option<BecomeOwner>) {
        match self.store.owner().await {
            // A live lease in this node's own name is a former incarnation's (killed and
            // restarted within the lease time): taken again at once, the epoch fencing it,
            // rather than forwarding to itself until it runs out.
            Ok(Some(owner)) if owner.0 != self.id() => {
                *self.owner_seen.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(owner);
                return;
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cluster: reading the owner failed");
                return;
            }
        }
        *self.owner_seen.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let sent = Instant::now();
        let taken = match self.store.take_all(shards).await {
            Ok(Some(taken)) => taken,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cluster: taking the shards failed");
                return;
            }
        };
        tracing::info!(
            node = self.id(),
            shards = taken.leases.len(),
            moved = taken.moved,
            "cluster: this node owns the shards now"
        );
        metrics::counter!("tally_cluster_lease_takes_total").increment(1);
        metrics::counter!("tally_cluster_shard_moves_total").increment(taken.moved as u64);
        metrics::gauge!("tally_cluster_shards_owned").set(taken.leases.len() as f64);
        metrics::gauge!("tally_cluster_owner").set(1.0);
        *self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = taken.leases.clone();
        self.serve_until(sent);
        self.owner.store(true, Ordering::Release);
        if let Some(start) = become_owner.take() {
            // In a task of its own: recovery may take longer than a lease, and the leases must
            // be renewed meanwhile (the gate answers 503 until the engine is set).
            tokio::spawn(start(taken.leases));
        }
    }

    /// Gives the leases up after a clean shutdown (the journals are flushed), so a standby
    /// takes over without waiting for them to run out.
    pub async fn release(&self) {
        if self.owner.load(Ordering::Acquire) {
            self.released.store(true, Ordering::Release);
            self.serving_until.store(0, Ordering::Release);
            if let Err(error) = self.store.release(&self.leases()).await {
                tracing::warn!(%error, "cluster: releasing the leases failed; they run out by themselves");
            }
        }
    }

    /// This node lost its shards: it stops serving, records its fenced commits in the store,
    /// and executes itself again to come back as a standby with nothing of the former
    /// engine's memory.
    async fn start_over(&self, why: &str) {
        self.serving_until.store(0, Ordering::Release);
        tracing::error!(
            node = self.id(),
            why,
            "cluster: this node no longer owns its shards; starting over as a standby"
        );
        // The shards' taker may be another process under this node id (started by mistake
        // beside this one): then this one exits rather than come back and take the id back.
        if self.superseded().await {
            self.exit_superseded().await;
        }
        self.record_fenced_commits().await;
        restart_process();
    }

    /// Whether another process has registered under this node's id since this one did, asked
    /// again while the store does not answer, for up to a lease time. Past that the answer
    /// is taken to be no (the usual case: another node took the shards), so a process that
    /// lost its shards during a long outage still comes back as a standby.
    async fn superseded(&self) -> bool {
        let asked = Instant::now();
        loop {
            match self.store.heartbeat().await {
                Ok(beat) => return beat == Heartbeat::Superseded,
                Err(error) if asked.elapsed() < self.config.lease => {
                    tracing::warn!(%error, "cluster: heartbeat failed; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster: no heartbeat answer within a lease; starting over");
                    return false;
                }
            }
        }
    }

    /// Another process registered under this node's id after this one (two processes given one
    /// `TALLY_NODE_ID`, or a node started again while its former process still ran). The newer
    /// one is the node: this one stops serving and exits with `EXIT_SUPERSEDED`, rather than
    /// take the leases back and forth with it (each take fences the other's commits).
    async fn exit_superseded(&self) -> ! {
        self.serving_until.store(0, Ordering::Release);
        tracing::error!(
            node = self.id(),
            "cluster: another process registered as this node since this one did (is TALLY_NODE_ID given to two \
             processes?); this one stops and exits"
        );
        self.record_fenced_commits().await;
        std::process::exit(EXIT_SUPERSEDED)
    }

    /// Adds this process's fenced commits to the node's row, once the journals' commits in
    /// flight have ended (refused by the fence, or committed before the take), so that the
    /// count includes them.
    async fn record_fenced_commits(&self) {
        tokio::time::sleep(FENCED_SETTLE).await;
        let fenced = tally_persistence::cluster::fenced_commits();
        if fenced > 0 {
            let recorded = tokio::time::timeout(Duration::from_secs(2), self.store.add_fenced_commits(fenced)).await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::warn!(fenced, "cluster: the fenced commits could not be recorded");
            }
        }
    }

    /// The owner as a standby last read it.
    fn owner_seen(&self) -> Option<(String, String)> {
        self.owner_seen.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Replaces this process with a fresh run of the same binary, arguments and environment. Every
/// socket is close-on-exec, so the listeners and the database connections go with it. The
/// binary is `/proc/self/exe`, the very file this process runs even if its path now names
/// another (an upgrade in place: the new version starts when the operator restarts the node).
fn restart_process() -> ! {
    use std::os::unix::process::CommandExt;
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe()
    };
    let error = match exe {
        Ok(exe) => std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec(),
        Err(error) => error,
    };
    tracing::error!(%error, "cluster: could not execute itself again; exiting");
    std::process::exit(75)
}

/// `503` with `Retry-After: 1`: the client retries (under the same `Idempotency-Key`).
fn unavailable(detail: &str) -> Response {
    ApiError::new(ErrorCode::Overloaded, detail.to_owned()).into_response()
}

/// `GET /v1/admin/cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// This node's id; `"local"` for a server that is not a cluster node.
    pub node_id: String,
    pub shards_total: usize,
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    /// Where its peers reach it; `null` for a cluster of one.
    pub url: Option<String>,
    /// Its last heartbeat is younger than the lease time.
    pub alive: bool,
    pub last_heartbeat_at: String,
    pub shards_owned: usize,
    /// Its journal commits that the lease fence refused (a former owner that kept writing).
    pub fenced_commits: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShardView {
    pub shard: u16,
    pub owner: Option<String>,
    /// Raised by one at every take of the shard's lease.
    pub epoch: i64,
    /// When the lease runs out unless renewed; `null` for a cluster of one.
    pub expires_at: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/cluster",
    tag = "operations",
    responses(
        (status = 200, description = "The cluster's nodes and every shard's lease (API.md \"Cluster\"). A server that is not a cluster node answers as a cluster of one: node `local`, owner of every shard, epoch 0, no expiry", body = ClusterView),
        (status = 503, description = "Starting up, or (a cluster node) no node owns the shards at the moment", body = crate::openapi::ProblemDoc)
    ),
    security(("bearer" = []))
)]
pub async fn admin_cluster(
    _: Authorized<OpsRead>,
    State(state): State<AppState>,
) -> Result<axum::Json<ClusterView>, ApiError> {
    let Some(node) = state.cluster() else {
        let engine = state.engine()?;
        let shards = engine.shards();
        let now = rfc3339(engine.now())?;
        return Ok(axum::Json(ClusterView {
            node_id: "local".to_owned(),
            shards_total: shards,
            nodes: vec![NodeView {
                id: "local".to_owned(),
                url: None,
                alive: true,
                last_heartbeat_at: now,
                shards_owned: shards,
                fenced_commits: 0,
            }],
            shards: (0..shards)
                .map(|shard| ShardView {
                    shard: u16::try_from(shard).unwrap_or(u16::MAX),
                    owner: Some("local".to_owned()),
                    epoch: 0,
                    expires_at: None,
                })
                .collect(),
        }));
    };
    let view = node.store.view().await?;
    let at = |micros: i64| rfc3339(Timestamp::from_micros(micros));
    Ok(axum::Json(ClusterView {
        node_id: node.id().to_owned(),
        shards_total: view.shards.len(),
        nodes: view
            .nodes
            .into_iter()
            .map(|row| {
                Ok(NodeView {
                    last_heartbeat_at: at(row.last_heartbeat_at)?,
                    id: row.id,
                    url: Some(row.url),
                    alive: row.alive,
                    shards_owned: row.shards_owned,
                    fenced_commits: row.fenced_commits,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        shards: view
            .shards
            .into_iter()
            .map(|row| {
                Ok(ShardView {
                    shard: row.shard,
                    owner: row.owner,
                    epoch: row.epoch,
                    expires_at: row.expires_at.map(at).transpose()?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
    }))
}
