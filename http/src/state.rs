//! What every handler can reach: the ledger store (health), the engine (once started), and
//! identity (users, tokens, passwords, the accounts-by-owner read model).

use std::sync::{Arc, OnceLock};

use tally_actors::Engine;
use tally_persistence::Store;

use crate::auth::Identity;
use crate::problem::ApiError;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    identity: Identity,
    /// Set once the engine has started and recovered; until then writes answer 503.
    engine: OnceLock<Engine>,
    /// Set on a cluster node (`TALLY_NODE_ID`): its view of the cluster.
    cluster: OnceLock<Arc<crate::cluster::Node>>,
    /// How long a request may take before it is answered without its outcome, in milliseconds
    /// (`REQUEST_TIMEOUT` unless `TALLY_REQUEST_TIMEOUT_SECS` says otherwise).
    request_timeout_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("ready", &self.inner.engine.get().is_some()).finish()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, identity: Identity) -> AppState {
        // Before any engine of this process commits: events' data is rendered by the journal.
        crate::events::install();
        let request_timeout_ms = std::sync::atomic::AtomicU64::new(crate::REQUEST_TIMEOUT.as_millis() as u64);
        AppState {
            inner: Arc::new(Inner {
                store,
                identity,
                engine: OnceLock::new(),
                cluster: OnceLock::new(),
                request_timeout_ms,
            }),
        }
    }

    /// A state whose engine is already running (tests drive `app` with this).
    pub fn with_engine(store: Arc<dyn Store>, identity: Identity, engine: Engine) -> AppState {
        let state = AppState::new(store, identity);
        state.set_engine(engine);
        state
    }

    /// Makes the started engine available to handlers, after giving it the verification
    /// limits identity loaded (so it never serves without them).
    pub fn set_engine(&self, engine: Engine) {
        engine.limits().install(&self.inner.identity.limits_at_start);
        engine.limits().install_levels(&self.inner.identity.levels_at_start);
        let _ = self.inner.engine.set(engine);
    }

    /// As `set_engine`, with the limits and levels read from the store now: a cluster node
    /// that was a standby since it started takes over with what the owner before it changed.
    pub async fn set_engine_reading_limits(&self, engine: Engine) -> Result<(), tally_persistence::StoreError> {
        let limits = self.inner.identity.limits.load_limits().await?;
        let levels = self.inner.identity.limits.load_user_levels().await?;
        engine.limits().install(&limits);
        engine.limits().install_levels(&levels);
        let _ = self.inner.engine.set(engine);
        Ok(())
    }

    /// Changes the request time-out (`TALLY_REQUEST_TIMEOUT_SECS` at start-up; tests).
    pub fn set_request_timeout(&self, limit: std::time::Duration) {
        let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.inner.request_timeout_ms.store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a request may take before it is answered without its outcome.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.inner.request_timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Makes this server a cluster node (`GET /v1/admin/cluster` reads the cluster's tables).
    pub fn set_cluster(&self, node: Arc<crate::cluster::Node>) {
        let _ = self.inner.cluster.set(node);
    }

    /// The cluster node this server is, if it is one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Node>> {
        self.inner.cluster.get()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The engine, or `503` while it is still starting (recovery in progress).
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.inner
            .engine
            .get()
            .ok_or_else(|| ApiError::new(tally_engine::ErrorCode::Overloaded, "starting up: recovery in progress"))
    }

    pub fn engine_if_started(&self) -> Option<&Engine> {
        self.inner.engine.get()
    }

    /// The engine's health with the `session` kind filled in from the session registry, which
    /// lives beside the engine (in identity), not inside it. `None` while starting.
    pub fn health(&self, worst_max: usize) -> Option<tally_actors::HealthReport> {
        let mut report = self.engine_if_started()?.health(worst_max);
        let sessions = self.identity().sessions.health();
        if let Some(kind) = report.kinds.iter_mut().find(|kind| kind.kind == sessions.kind) {
            *kind = sessions;
        }
        Some(report)
    }
}
