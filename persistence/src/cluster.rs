//! A Tally cluster's nodes and shard leases, kept in the store (issue 13, DESIGN.md §10).
//!
//! No home-made consensus: the database that holds the ledger says who owns what. A node
//! registers in `cluster_nodes` and heartbeats there; each shard's row of `journal_shards`
//! is also its lease (`owner`, `epoch`, `lease_expires_at`), taken and renewed by conditional
//! `UPDATE`s, the epoch raised at every take. Every journal commit of a leased shard is fenced
//! by (owner, epoch) in the same transaction (migration 0064's trigger, set up by
//! `PgStore::fence_journal_writers`), so a node that lost a lease can never commit to it again.
//!
//! This first step leases every shard to one node at a time (`take_all`): the owner runs the
//! engine, the other nodes forward requests to it and take over when its leases run out. Times
//! are microseconds on the database's clock, one clock for every node.
//!
//! Postgres only: the embedded SQLite store is a cluster of one.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::postgres::classify;
use crate::runtime::StoreRuntime;
use crate::store::{StoreError, corrupt};

/// The database's clock in microseconds since the Unix epoch (`clock_timestamp`, not `now`,
/// which is the transaction's start).
const NOW_MICROS: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT";

/// The SQLSTATE of a commit the lease fence refused (migration 0064).
pub(crate) const FENCED_SQLSTATE: &str = "TL001";

/// Writes refused by the fence in this process: a commit (`TL001`), or a writer's read of its
/// shard's committed sequence once the shard's row names another lease (the retry of a batch
/// whose answer was lost; `PgJournalWriter::committed_seq`). One batch can count twice.
static FENCED_COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a commit the fence refused (`classify` sees its SQLSTATE).
pub(crate) fn count_fenced_commit() {
    FENCED_COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("tally_cluster_fenced_commits_total").increment(1);
}

/// Commits refused by the fence in this process so far.
pub fn fenced_commits() -> u64 {
    FENCED_COMMITS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A lease this node holds: the shard and the epoch its take gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub shard: u16,
    pub epoch: i64,
}

/// What a node's heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The node's row names this process: registered or refreshed.
    Alive,
    /// Another process registered under this node id after this one did (migration 0066):
    /// this process is no longer the node and must stop.
    Superseded,
}

/// A registered node as the store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub url: String,
    /// Its last heartbeat is younger than the lease time.
    pub alive: bool,
    pub last_heartbeat_at: i64,
    /// Shards whose live lease names it.
    pub shards_owned: usize,
    /// Its journal commits the fence refused, over all its incarnations.
    pub fenced_commits: i64,
}

/// A shard's lease as the store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub shard: u16,
    pub owner: Option<String>,
    pub epoch: i64,
    pub expires_at: Option<i64>,
}

/// What `take_all` took: the leases, and how many of them another node held before (shard
/// moves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub leases: Vec<Lease>,
    pub moved: usize,
}

/// Nodes and leases, read together (`GET /v1/admin/cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: Vec<NodeRow>,
    pub shards: Vec<LeaseRow>,
}

/// One node's handle on the cluster tables: a small pool of its own on a runtime of its own,
/// so renewing a lease never waits behind the engine's queries or its threads.
pub struct ClusterStore {
    pool: PgPool,
    runtime: StoreRuntime,
    node: String,
    url: String,
    lease: Duration,
    /// This process's registration under `node` (random, one per `ClusterStore`).
    incarnation: uuid::Uuid,
    /// Whether the first heartbeat, which takes the node's row over, has been made.
    registered: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore").field("node", &self.node).finish_non_exhaustive()
    }
}

impl ClusterStore {
    /// Connects as node `node`, reachable by its peers at `url`, holding leases for `lease`.
    /// The schema must be migrated (`PgStore::migrate`).
    pub async fn connect(
        database_url: &str,
        node: &str,
        url: &str,
        lease: Duration,
    ) -> Result<ClusterStore, StoreError> {
        let runtime = StoreRuntime::new("tally-cluster")?;
        let options = crate::postgres::connect_options(database_url)?
            // A take waits at most this long for a row a committing batch holds, then tries
            // again on the next tick rather than holding up renewals behind it.
            .options([("lock_timeout", "1000")]);
        let pool = runtime
            .run(async move {
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_with(options)
                    .await
                    .map_err(classify)
            })
            .await?;
        Ok(ClusterStore {
            pool,
            runtime,
            node: node.to_owned(),
            url: url.to_owned(),
            lease,
            incarnation: uuid::Uuid::new_v4(),
            registered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn lease_micros(&self) -> i64 {
        i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX)
    }

    /// Registers this node with a heartbeat now, or refreshes its row. The first heartbeat of a
    /// `ClusterStore` registers this process as the node's incarnation, taking the row over from
    /// any earlier process of the same node id (one killed and restarted, or still running);
    /// every later one refreshes the row only while it names this incarnation, and answers
    /// `Superseded` once another process has registered since.
    pub async fn heartbeat(&self) -> Result<Heartbeat, StoreError> {
        use std::sync::atomic::Ordering;
        let (pool, node, url) = (self.pool.clone(), self.node.clone(), self.url.clone());
        let (incarnation, registering) = (self.incarnation, !self.registered.load(Ordering::Acquire));
        let beat = self
            .runtime
            .run(async move {
                let written = sqlx::query(&format!(
                    "INSERT INTO cluster_nodes (id, url, started_at, heartbeat_at, incarnation)
                     VALUES ($1, $2, {NOW_MICROS}, {NOW_MICROS}, $3)
                     ON CONFLICT (id) DO UPDATE
                     SET url = EXCLUDED.url, heartbeat_at = EXCLUDED.heartbeat_at, incarnation = EXCLUDED.incarnation
                     WHERE $4 OR cluster_nodes.incarnation = EXCLUDED.incarnation"
                ))
                .bind(node)
                .bind(url)
                .bind(incarnation)
                .bind(registering)
                .execute(&pool)
                .await
                .map_err(classify)?;
                Ok(if written.rows_affected() == 1 { Heartbeat::Alive } else { Heartbeat::Superseded })
            })
            .await?;
        if beat == Heartbeat::Alive {
            self.registered.store(true, Ordering::Release);
        }
        Ok(beat)
    }

    /// Takes the lease of every shard, `shards` at least (rows `0..shards` are created if
    /// missing), if none is held by another node whose lease is still running; all or none,
    /// in one transaction. Each take raises the shard's epoch, also when this node held it
    /// before (a restarted node fences its former incarnation). `None`: another node holds one.
    pub async fn take_all(&self, shards: u16) -> Result<Option<Taken>, StoreError> {
        let (pool, node, lease) = (self.pool.clone(), self.node.clone(), self.lease_micros());
        let shards = i16::try_from(shards.max(1)).map_err(|_| corrupt("more shards than SMALLINT"))?;
        self.runtime
            .run(async move {
                let mut transaction = pool.begin().await.map_err(classify)?;
                sqlx::query(
                    "INSERT INTO journal_shards (shard, committed_seq) SELECT generate_series(0, $1 - 1), 0
                     ON CONFLICT (shard) DO NOTHING",
                )
                .bind(shards)
                .execute(&mut *transaction)
                .await
                .map_err(classify)?;
                // Locked in shard order, so two nodes taking at once cannot deadlock, and read
                // under the lock: a row a batch is committing to is read once that batch ends.
                let rows = sqlx::query(&format!(
                    "SELECT shard, owner, lease_expires_at < {NOW_MICROS} AS expired
                     FROM journal_shards ORDER BY shard FOR UPDATE"
                ))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
                let held_elsewhere = rows.iter().any(|row| {
                    let owner: Option<String> = row.get("owner");
                    let expired: Option<bool> = row.get("expired");
                    owner.is_some_and(|owner| owner != node) && expired == Some(false)
                });
                let moved = rows
                    .iter()
                    .filter(|row| row.get::<Option<String>, _>("owner").is_some_and(|owner| owner != node))
                    .count();
                if held_elsewhere {
                    transaction.rollback().await.map_err(classify)?;
                    return Ok(None);
                }
                let taken = sqlx::query(&format!(
                    "UPDATE journal_shards SET owner = $1, epoch = epoch + 1, lease_expires_at = {NOW_MICROS} + $2
                     RETURNING shard, epoch"
                ))
                .bind(&node)
                .bind(lease)
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
                transaction.commit().await.map_err(classify)?;
                let mut leases = taken
                    .iter()
                    .map(|row| {
                        let shard: i16 = row.get("shard");
                        Ok(Lease {
                            shard: u16::try_from(shard).map_err(|_| corrupt("negative shard"))?,
                            epoch: row.get("epoch"),
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                leases.sort_by_key(|lease| lease.shard);
                Ok(Some(Taken { leases, moved }))
            })
            .await
    }

    /// Renews `leases` for another lease time. `false` if any of them is no longer this
    /// node's at its epoch (another node took it): the caller must stop serving at once.
    pub async fn renew(&self, leases: &[Lease]) -> Result<bool, StoreError> {
        let (pool, node, lease) = (self.pool.clone(), self.node.clone(), self.lease_micros());
        let shards: Vec<i16> = leases.iter().map(|lease| i16::try_from(lease.shard).unwrap_or(i16::MAX)).collect();
        let epochs: Vec<i64> = leases.iter().map(|lease| lease.epoch).collect();
        let wanted = leases.len();
        self.runtime
            .run(async move {
                let renewed = sqlx::query(&format!(
                    "UPDATE journal_shards AS s SET lease_expires_at = {NOW_MICROS} + $2
                     FROM UNNEST($3::int2[], $4::int8[]) AS held (shard, epoch)
                     WHERE s.shard = held.shard AND s.epoch = held.epoch AND s.owner = $1"
                ))
                .bind(node)
                .bind(lease)
                .bind(shards)
                .bind(epochs)
                .execute(&pool)
                .await
                .map_err(classify)?;
                Ok(usize::try_from(renewed.rows_affected()).unwrap_or(0) == wanted)
            })
            .await
    }

    /// Adds `count` fenced commits to this node's row (a node that lost its leases, before it
    /// restarts: the count outlives the process).
    pub async fn add_fenced_commits(&self, count: u64) -> Result<(), StoreError> {
        let (pool, node) = (self.pool.clone(), self.node.clone());
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.runtime
            .run(async move {
                sqlx::query("UPDATE cluster_nodes SET fenced_commits = fenced_commits + $2 WHERE id = $1")
                    .bind(node)
                    .bind(count)
                    .execute(&pool)
                    .await
                    .map_err(classify)?;
                Ok(())
            })
            .await
    }

    /// Gives `leases` up (a clean shutdown, after the journals are flushed): another node may
    /// take them at once instead of after the lease time.
    pub async fn release(&self, leases: &[Lease]) -> Result<(), StoreError> {
        let (pool, node) = (self.pool.clone(), self.node.clone());
        let shards: Vec<i16> = leases.iter().map(|lease| i16::try_from(lease.shard).unwrap_or(i16::MAX)).collect();
        let epochs: Vec<i64> = leases.iter().map(|lease| lease.epoch).collect();
        self.runtime
            .run(async move {
                sqlx::query(
                    "UPDATE journal_shards AS s SET lease_expires_at = 0
                     FROM UNNEST($2::int2[], $3::int8[]) AS held (shard, epoch)
                     WHERE s.shard = held.shard AND s.epoch = held.epoch AND s.owner = $1",
                )
                .bind(node)
                .bind(shards)
                .bind(epochs)
                .execute(&pool)
                .await
                .map_err(classify)?;
                Ok(())
            })
            .await
    }

    /// The node whose live lease covers shard 0, with its URL, if any: in this first step the
    /// owner of every shard.
    pub async fn owner(&self) -> Result<Option<(String, String)>, StoreError> {
        let pool = self.pool.clone();
        self.runtime
            .run(async move {
                let row = sqlx::query(&format!(
                    "SELECT n.id, n.url FROM journal_shards AS s JOIN cluster_nodes AS n ON n.id = s.owner
                     WHERE s.shard = 0 AND s.lease_expires_at > {NOW_MICROS}"
                ))
                .fetch_optional(&pool)
                .await
                .map_err(classify)?;
                Ok(row.map(|row| (row.get("id"), row.get("url"))))
            })
            .await
    }

    /// Every node and every shard's lease.
    pub async fn view(&self) -> Result<ClusterView, StoreError> {
        let (pool, lease) = (self.pool.clone(), self.lease_micros());
        self.runtime
            .run(async move {
                let mut transaction = pool.begin().await.map_err(classify)?;
                let shards = sqlx::query(&format!(
                    "SELECT shard, owner, epoch, lease_expires_at, lease_expires_at > {NOW_MICROS} AS live
                     FROM journal_shards ORDER BY shard"
                ))
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
                let nodes = sqlx::query(&format!(
                    "SELECT id, url, heartbeat_at, fenced_commits, heartbeat_at > {NOW_MICROS} - $1 AS alive FROM cluster_nodes ORDER BY id"
                ))
                .bind(lease)
                .fetch_all(&mut *transaction)
                .await
                .map_err(classify)?;
                transaction.commit().await.map_err(classify)?;
                let mut leases = Vec::with_capacity(shards.len());
                let mut live_owners: Vec<String> = Vec::new();
                for row in &shards {
                    let shard: i16 = row.get("shard");
                    let owner: Option<String> = row.get("owner");
                    if row.get::<Option<bool>, _>("live") == Some(true) {
                        live_owners.extend(owner.clone());
                    }
                    leases.push(LeaseRow {
                        shard: u16::try_from(shard).map_err(|_| corrupt("negative shard"))?,
                        owner,
                        epoch: row.get("epoch"),
                        expires_at: row.get("lease_expires_at"),
                    });
                }
                let nodes = nodes
                    .iter()
                    .map(|row| {
                        let id: String = row.get("id");
                        let shards_owned = live_owners.iter().filter(|owner| **owner == id).count();
                        NodeRow {
                            url: row.get("url"),
                            alive: row.get::<Option<bool>, _>("alive") == Some(true),
                            last_heartbeat_at: row.get("heartbeat_at"),
                            fenced_commits: row.get("fenced_commits"),
                            shards_owned,
                            id,
                        }
                    })
                    .collect();
                Ok(ClusterView { nodes, shards: leases })
            })
            .await
    }
}

/// Whether any shard of the store at `pool` is leased to a cluster node right now (a server
/// that is not a cluster node refuses to start then, since it would write beside the owner);
/// leases that ran out are cleared first (owner NULL, the epoch kept, so a former owner stays
/// fenced).
pub(crate) async fn live_lease_exists_clearing_the_rest(pool: &PgPool) -> Result<bool, StoreError> {
    sqlx::query(&format!(
        "UPDATE journal_shards SET owner = NULL, lease_expires_at = NULL
         WHERE owner IS NOT NULL AND (lease_expires_at IS NULL OR lease_expires_at <= {NOW_MICROS})"
    ))
    .execute(pool)
    .await
    .map_err(classify)?;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM journal_shards WHERE owner IS NOT NULL)")
        .fetch_one(pool)
        .await
        .map_err(classify)
}
