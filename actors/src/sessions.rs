//! Login sessions as actors (DESIGN.md §7): one `SessionActor` per session, and `Sessions`, the
//! registry that starts them and answers the hot-path question "is this session live?".
//!
//! The hot path (every authenticated request, so every transfer) never sends a message and
//! never queries the store: it reads the session's `Entry` in a dashmap shared with the actor
//! (an atomic `ended` flag and an atomic last-activity time) and bumps last activity in place.
//! Only a session this process has not seen yet (after a restart) costs one store read, once.
//!
//! Who sends to a `SessionActor`: `Sessions::terminate` (logout, deletion, refresh-token
//! reuse, admin block, the per-user bound) sends `Terminate`; the hot path nudges it with
//! `Expire` when it sees the session idle. Its own timer (`tick`) writes last activity behind
//! to the store and expires it on idle. What bounds its mailbox: actix's bounded channel
//! (`MAILBOX_CAPACITY`); senders use `send` (waits for room, bounded by `SEND_TIMEOUT`) or
//! `try_send` (a nudge that may be dropped: the tick does the same work). How it shuts down:
//! once terminated it stays in the map as a tombstone for `SessionConfig::tombstone_for` (the
//! longest an access token of it could still be presented), so its tokens are refused
//! without a store read, then removes its entry and stops. Stopping `Sessions` stops its
//! shard and every session actor with it; the store keeps what they were.
//!
//! The `ended` flag is set before the store is written, so a terminated session's tokens stop
//! working at once; the caller of `terminate` is answered only after the revocation (and the
//! revocation of its refresh-token family, whose id is the session's id) is durable.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use tally_engine::{Timestamp, UserId};
use tally_persistence::StoreError;
use tally_persistence::sessions::{SessionRecord, SessionStore};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::IdMap;
use crate::clock::Clock;
use crate::entity::ActorKind;
use crate::health::{KindHealth, KindStats};
use crate::runtime::Runtime;

/// How long a session may go unused before it ends (`TALLY_SESSION_IDLE_SECS`): the usual
/// idle time-out of a banking session.
pub const SESSION_IDLE_DEFAULT: Duration = Duration::from_secs(30 * 60);

/// Live sessions one user may hold; a new login beyond it ends the oldest. Ten covers a
/// phone, a tablet, a few browsers and a laptop or two; a user with more is more likely a
/// script leaking logins than a person.
pub const SESSIONS_PER_USER_MAX: usize = 10;

/// Sessions (live and tombstones) held in memory at once. An entry plus its actor is under
/// 2 KiB, so this bounds the registry at ~512 MiB worst case, far beyond what one node's
/// users keep open in 30 minutes; past it, new logins and activations answer `Overloaded`.
pub const SESSIONS_IN_MEMORY_MAX: usize = 262_144;

/// How often a session actor writes its last activity behind and checks for idleness. The
/// stored last activity is at most this stale, so after a restart a session may live this
/// much longer than its idle time; the in-memory check is exact.
pub const WRITE_BEHIND_INTERVAL: Duration = Duration::from_secs(15);

/// Messages a session actor queues: it gets at most a terminate and a few expiry nudges.
const MAILBOX_CAPACITY: usize = 16;

/// Longest wait for a session actor to take a message and answer: a terminate is one store
/// write, which the store bounds by its own acquire time-out (2 s) plus the write.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The reasons a session ends, as stored in `revoked_reason`.
pub mod reason {
    pub const LOGOUT: &str = "logout";
    pub const DELETED: &str = "deleted";
    pub const IDLE: &str = "idle";
    pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
    pub const USER_BLOCKED: &str = "user_blocked";
    pub const SESSIONS_PER_USER_MAX: &str = "sessions_per_user_max";
}

#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle: Duration,
    /// Live sessions per user; the oldest goes.
    pub per_user_max: usize,
    /// How long an ended session is remembered in memory: the access-token lifetime.
    pub tombstone_for: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle: SESSION_IDLE_DEFAULT,
            per_user_max: SESSIONS_PER_USER_MAX,
            tombstone_for: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("too many sessions in memory, or the session actor did not answer")]
    Overloaded,
}

/// What the hot path shares with a session's actor.
#[derive(Debug)]
struct Entry {
    user: UserId,
    created_at: Timestamp,
    /// Microseconds since the epoch; only moves forward.
    last_activity_micros: AtomicI64,
    ended: AtomicBool,
    actor: OnceLock<Addr<SessionActor>>,
}

/// What every session actor and `Sessions` share (no `Shards` here: actors hold this, and the
/// shards must be free to stop when `Sessions` is dropped).
struct Shared {
    map: IdMap<Uuid, Arc<Entry>>,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
    /// Health of the `session` kind, for `/v1/admin/actors` and `/metrics`.
    stats: KindStats,
    /// Messages sent to session actors; minus `stats.handled`, the mailbox depth (actix has
    /// no API for it).
    enqueued: AtomicU64,
    /// While set and false, the actors' ticks leave the store alone (`Sessions::tick_only_while`).
    ticks_allowed: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Whether a session last active at `last_activity` is idle past `idle` at `now`.
pub fn is_idle(last_activity: Timestamp, now: Timestamp, idle: Duration) -> bool {
    now.as_micros().saturating_sub(last_activity.as_micros()) > micros(idle)
}

/// A session as listed: its stored record with the in-memory last activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub id: Uuid,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
    pub last_activity_at: Timestamp,
}

/// The registry of login sessions. Cheap to share behind an `Arc`.
pub struct Sessions {
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("in_memory", &self.shared.map.len()).finish()
    }
}

impl Sessions {
    /// Starts the session registry on an actix shard of its own: sessions are light, and one
    /// thread for all of them keeps them off the account shards.
    pub fn start(
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
        config: SessionConfig,
    ) -> std::io::Result<Sessions> {
        let runtime = Runtime::start(1)?;
        Ok(Sessions {
            shared: Arc::new(Shared {
                map: IdMap::default(),
                store,
                clock,
                config,
                stats: KindStats::default(),
                enqueued: AtomicU64::new(0),
                ticks_allowed: std::sync::OnceLock::new(),
            }),
            runtime,
        })
    }

    pub fn config(&self) -> SessionConfig {
        self.shared.config
    }

    /// Makes the actors' ticks (last activity written behind, idle sessions ended) run only
    /// while `allowed` says so. A cluster node passes "while I hold the shards": a former
    /// owner woken from a long pause would otherwise end, in the shared store, sessions its
    /// successor is serving, before it learns it lost the shards. Set once.
    pub fn tick_only_while(&self, allowed: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.shared.ticks_allowed.set(Box::new(allowed));
    }

    /// Sessions held in memory (live and tombstones).
    pub fn in_memory(&self) -> usize {
        self.shared.map.len()
    }

    /// The `session` kind's health: resident actors, activations, passivations, messages and
    /// handler time, and the mailbox depth summed over all sessions (sessions never restart or
    /// go into quarantine: they hold nothing that a reload could repair).
    pub fn health(&self) -> KindHealth {
        let mut health = self.shared.stats.snapshot(ActorKind::Session);
        let enqueued = self.shared.enqueued.load(Ordering::Relaxed);
        health.mailbox_depth = i64::try_from(enqueued.saturating_sub(health.handled)).unwrap_or(i64::MAX);
        health.mailbox_depth_max = health.mailbox_depth;
        health
    }

    /// The hot-path check: `Some(user)` if session `id` is live, marking it active now; `None`
    /// if it ended, is idle, or does not exist. In memory unless this process has not seen the
    /// session yet, when it is activated from the store first (once).
    pub async fn authorize(&self, id: Uuid) -> Result<Option<UserId>, SessionError> {
        let entry = match self.entry(id) {
            Some(entry) => entry,
            None => match self.activate(id).await? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        Ok(self.touch(&entry))
    }

    fn entry(&self, id: Uuid) -> Option<Arc<Entry>> {
        self.shared.map.get(&id).map(|entry| Arc::clone(entry.value()))
    }

    fn touch(&self, entry: &Entry) -> Option<UserId> {
        if entry.ended.load(Ordering::Acquire) {
            return None;
        }
        let now = self.shared.clock.now();
        let last = Timestamp::from_micros(entry.last_activity_micros.load(Ordering::Relaxed));
        if is_idle(last, now, self.shared.config.idle) {
            // Refused at once; the actor records the expiry (its tick would too).
            if let Some(actor) = entry.actor.get()
                && actor.try_send(Expire).is_ok()
            {
                self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        entry.last_activity_micros.fetch_max(now.as_micros(), Ordering::Relaxed);
        Some(entry.user)
    }

    /// Loads session `id` from the store into memory and starts its actor (a tombstone if it
    /// was revoked). `None` if the store has no such session.
    async fn activate(&self, id: Uuid) -> Result<Option<Arc<Entry>>, SessionError> {
        let Some(record) = self.shared.store.session(id).await? else { return Ok(None) };
        self.admit(record).map(Some)
    }

    /// Puts `record` in memory with its actor, unless a concurrent activation got there first.
    fn admit(&self, record: SessionRecord) -> Result<Arc<Entry>, SessionError> {
        if self.shared.map.len() >= SESSIONS_IN_MEMORY_MAX {
            return Err(SessionError::Overloaded);
        }
        let entry = match self.shared.map.entry(record.id) {
            dashmap::Entry::Occupied(occupied) => return Ok(Arc::clone(occupied.get())),
            dashmap::Entry::Vacant(vacant) => {
                let entry = Arc::new(Entry {
                    user: record.user_id,
                    created_at: record.created_at,
                    last_activity_micros: AtomicI64::new(record.last_activity_at.as_micros()),
                    ended: AtomicBool::new(record.is_revoked()),
                    actor: OnceLock::new(),
                });
                vacant.insert(Arc::clone(&entry));
                entry
            }
        };
        let actor = SessionActor {
            id: record.id,
            entry: Arc::clone(&entry),
            shared: Arc::clone(&self.shared),
            written_activity_micros: record.last_activity_at.as_micros(),
            ended_at: record.revoked_at.map(|_| self.shared.clock.now()),
            client_ip: record.client_ip,
            user_agent: record.user_agent,
        };
        let addr = SessionActor::start_in_arbiter(self.runtime.arbiter(0), move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            actor
        });
        let _ = entry.actor.set(addr);
        Ok(entry)
    }

    /// Starts a new session for `user` (a login): first ends the user's sessions that are idle,
    /// and the oldest ones beyond `per_user_max - 1`, then stores the new one and starts its
    /// actor. Two logins of one user at the same instant may leave one session over the bound
    /// until the next login; the bound is about leaks, not exact counting.
    pub async fn start_session(
        &self,
        id: Uuid,
        user: UserId,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<SessionRecord, SessionError> {
        let now = self.shared.clock.now();
        let live = self.live_of(user).await?;
        let keep = self.shared.config.per_user_max.saturating_sub(1);
        let surplus = live.len().saturating_sub(keep);
        for oldest in live.iter().take(surplus) {
            self.terminate(oldest.id, reason::SESSIONS_PER_USER_MAX).await?;
        }
        let record = SessionRecord {
            id,
            user_id: user,
            client_ip,
            user_agent,
            created_at: now,
            last_activity_at: now,
            revoked_at: None,
            revoked_reason: None,
        };
        if self.shared.map.len() >= SESSIONS_IN_MEMORY_MAX {
            return Err(SessionError::Overloaded);
        }
        self.shared.store.insert_session(&record).await?;
        self.admit(record.clone())?;
        Ok(record)
    }

    /// The user's live sessions, oldest first, with their in-memory last activity. Sessions
    /// found idle are ended on the way (so they are neither listed nor counted).
    pub async fn live_of(&self, user: UserId) -> Result<Vec<SessionView>, SessionError> {
        let now = self.shared.clock.now();
        let mut live = Vec::new();
        for record in self.shared.store.live_sessions_of(user).await? {
            let (last_activity, ended) = match self.entry(record.id) {
                Some(entry) => (
                    Timestamp::from_micros(
                        entry.last_activity_micros.load(Ordering::Relaxed).max(record.last_activity_at.as_micros()),
                    ),
                    entry.ended.load(Ordering::Acquire),
                ),
                None => (record.last_activity_at, false),
            };
            if ended {
                continue;
            }
            if is_idle(last_activity, now, self.shared.config.idle) {
                self.terminate(record.id, reason::IDLE).await?;
                continue;
            }
            live.push(SessionView {
                id: record.id,
                client_ip: record.client_ip,
                user_agent: record.user_agent,
                created_at: record.created_at,
                last_activity_at: last_activity,
            });
        }
        Ok(live)
    }

    /// The user a session belongs to, if it exists (live or not).
    pub async fn owner(&self, id: Uuid) -> Result<Option<UserId>, SessionError> {
        if let Some(entry) = self.entry(id) {
            return Ok(Some(entry.user));
        }
        Ok(self.shared.store.session(id).await?.map(|record| record.user_id))
    }

    /// Ends session `id` for `reason`: its access tokens are refused from this moment, and the
    /// answer comes once the revocation (with its refresh tokens) is stored. Returns false if
    /// it had already ended or does not exist.
    pub async fn terminate(&self, id: Uuid, reason: &'static str) -> Result<bool, SessionError> {
        let entry = match self.entry(id) {
            Some(entry) => entry,
            None => match self.activate(id).await? {
                Some(entry) => entry,
                None => return Ok(false),
            },
        };
        if entry.ended.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        let Some(actor) = entry.actor.get() else {
            // Not reachable: `admit` sets the actor before it returns the entry. Record the
            // revocation directly rather than lose it.
            self.shared.store.revoke_session(id, self.shared.clock.now(), reason).await?;
            return Ok(true);
        };
        let (reply, answer) = oneshot::channel();
        self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(SEND_TIMEOUT, actor.send(Terminate { reason, reply })).await;
        if !matches!(sent, Ok(Ok(()))) {
            // Not delivered: it will never be handled, so it is not waiting either.
            self.shared.enqueued.fetch_sub(1, Ordering::Relaxed);
        }
        if !matches!(sent, Ok(Ok(()))) {
            // The actor is gone or stuck; the store must still learn of it.
            self.shared.store.revoke_session(id, self.shared.clock.now(), reason).await?;
            return Ok(true);
        }
        match tokio::time::timeout(SEND_TIMEOUT, answer).await {
            Ok(Ok(result)) => result.map(|_| true).map_err(SessionError::Store),
            _ => Err(SessionError::Overloaded),
        }
    }

    /// Ends every live session of `user` (admin block). Returns how many it ended.
    pub async fn terminate_user(&self, user: UserId, reason: &'static str) -> Result<usize, SessionError> {
        let mut ended = 0;
        for record in self.shared.store.live_sessions_of(user).await? {
            if self.terminate(record.id, reason).await? {
                ended += 1;
            }
        }
        // Sessions in memory but not (or no longer) listed as live in the store: none should
        // exist, since every session is stored before it is used; end them anyway.
        let stragglers: Vec<Uuid> = self
            .shared
            .map
            .iter()
            .filter(|entry| entry.value().user == user && !entry.value().ended.load(Ordering::Acquire))
            .map(|entry| *entry.key())
            .collect();
        for id in stragglers {
            if self.terminate(id, reason).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// When session `id` started, if it is in memory (for tests and listings).
    pub fn created_at(&self, id: Uuid) -> Option<Timestamp> {
        self.entry(id).map(|entry| entry.created_at)
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.runtime.stop();
    }
}

/// One login session. Holds what the session is (user, refresh-token family = its id, client
/// ip, user agent, created at) through its `Entry`, and owns writing it behind to the store.
pub struct SessionActor {
    id: Uuid,
    entry: Arc<Entry>,
    shared: Arc<Shared>,
    /// The last activity last written to the store.
    written_activity_micros: i64,
    /// When this process saw it end (for removing the tombstone).
    ended_at: Option<Timestamp>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

impl SessionActor {
    /// Writes last activity behind, ends the session if idle, and removes a tombstone whose
    /// time is up.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.shared.ticks_allowed.get().is_some_and(|allowed| !allowed()) {
            return;
        }
        let now = self.shared.clock.now();
        if let Some(ended_at) = self.ended_at {
            if is_idle(ended_at, now, self.shared.config.tombstone_for) {
                self.shared.map.remove_if(&self.id, |_, entry| Arc::ptr_eq(entry, &self.entry));
                ctx.stop();
            }
            return;
        }
        if self.entry.ended.load(Ordering::Acquire) {
            // Ended by `terminate`, whose `Terminate` message is on its way.
            return;
        }
        let last = self.entry.last_activity_micros.load(Ordering::Relaxed);
        if is_idle(Timestamp::from_micros(last), now, self.shared.config.idle) {
            self.end(ctx, reason::IDLE, None);
            return;
        }
        if last > self.written_activity_micros {
            self.written_activity_micros = last;
            let store = Arc::clone(&self.shared.store);
            let id = self.id;
            ctx.spawn(
                async move {
                    if let Err(error) = store.record_activity(id, Timestamp::from_micros(last)).await {
                        tracing::warn!(session_id = %id, %error, "writing a session's last activity behind failed");
                    }
                }
                .into_actor(self),
            );
        }
    }

    /// Records the end in the store (answering `reply` once it is durable) and becomes a
    /// tombstone.
    fn end(
        &mut self,
        ctx: &mut Context<Self>,
        reason: &'static str,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    ) {
        self.entry.ended.store(true, Ordering::Release);
        let now = self.shared.clock.now();
        if self.ended_at.is_some() {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        self.ended_at = Some(now);
        tracing::info!(
            session_id = %self.id,
            user_id = %self.entry.user,
            client_ip = self.client_ip.as_deref().unwrap_or(""),
            user_agent = self.user_agent.as_deref().unwrap_or(""),
            reason,
            "session ended"
        );
        let store = Arc::clone(&self.shared.store);
        let id = self.id;
        // `wait`: the actor handles nothing else until the revocation is stored, so a later
        // message cannot observe a half-ended session.
        ctx.wait(async move { store.revoke_session(id, now, reason).await.map(|_| ()) }.into_actor(self).map(
            move |result, _, _| {
                if let Err(error) = &result {
                    tracing::error!(session_id = %id, %error, "storing a session's end failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            },
        ));
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.shared.stats.active.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.activations.fetch_add(1, Ordering::Relaxed);
        let interval = WRITE_BEHIND_INTERVAL.min(self.shared.config.idle).max(Duration::from_secs(1));
        self.tick(ctx);
        ctx.run_interval(interval, Self::tick);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.shared.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.shared.stats.passivations.fetch_add(1, Ordering::Relaxed);
    }
}

impl SessionActor {
    /// Counts one handled message and its time, as the entity actors do.
    fn handled(&self, started: std::time::Instant) {
        self.shared.stats.handled.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.stats.handler_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Ends the session; answered once the end is stored.
struct Terminate {
    reason: &'static str,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Message for Terminate {
    type Result = ();
}

impl Handler<Terminate> for SessionActor {
    type Result = ();

    fn handle(&mut self, message: Terminate, ctx: &mut Context<Self>) {
        let started = std::time::Instant::now();
        self.end(ctx, message.reason, Some(message.reply));
        self.handled(started);
    }
}

/// The hot path saw the session idle: record the expiry now rather than at the next tick.
struct Expire;

impl Message for Expire {
    type Result = ();
}

impl Handler<Expire> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Expire, ctx: &mut Context<Self>) {
        let started = std::time::Instant::now();
        self.handle_expire(ctx);
        self.handled(started);
    }
}

impl SessionActor {
    fn handle_expire(&mut self, ctx: &mut Context<Self>) {
        if self.ended_at.is_none() {
            let last = Timestamp::from_micros(self.entry.last_activity_micros.load(Ordering::Relaxed));
            if is_idle(last, self.shared.clock.now(), self.shared.config.idle) {
                self.end(ctx, reason::IDLE, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    #[test]
    fn a_session_is_idle_only_strictly_after_the_idle_time() {
        let idle = Duration::from_secs(30 * 60);
        let last = Timestamp::from_micros(1_000 * SECOND);
        assert!(!is_idle(last, last, idle));
        assert!(!is_idle(last, Timestamp::from_micros(last.as_micros() + 30 * 60 * SECOND), idle));
        assert!(is_idle(last, Timestamp::from_micros(last.as_micros() + 30 * 60 * SECOND + 1), idle));
        assert!(!is_idle(last, Timestamp::from_micros(0), idle), "a clock behind never expires");
    }

    #[test]
    fn the_default_configuration_matches_the_documented_bounds() {
        let config = SessionConfig::default();
        assert_eq!(config.idle, Duration::from_secs(1_800));
        assert_eq!(config.per_user_max, SESSIONS_PER_USER_MAX);
        assert_eq!(config.tombstone_for, Duration::from_secs(900));
    }
}
