//! The registry: id → live actor, for one entity kind.
//!
//! Activation: the first call for an id creates its slot and loads the entity from the store,
//! and starts the actor on the thread that serves the id's shard. Concurrent first calls share
//! one activation: the first takes the id's gate (`Registry::activating`, present only while an
//! activation is under way, so an idle slot carries no lock), the others wait on it and find the
//! address set. An incarnation that ended with records not yet durable (a
//! restart after a panic) leaves its last record's position behind; the next one waits until
//! that is durable before it loads, so the store then holds everything the last one did.
//!
//! Passivation: a sweeper asks idle actors to passivate; an actor retires only after its
//! records are durable. A message that reaches a retired actor is answered `Retry` (or
//! dropped unhandled, which the sender also reads as "retry"), and the sender delivers it to
//! the next incarnation. No message is lost to passivation or to a restart.
//!
//! No dashmap guard is ever held across an `.await`.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tally_persistence::{JournalPosition, StoreError};
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use crate::IdMap;
use crate::entity::Entity;
use crate::entity_actor::{Call, EntityActor, Op, Passivate, Reply};
use crate::health::WorstActor;
use crate::shared::Shared;

/// One id's place in the registry. A new slot is made for each incarnation.
pub struct Slot<E: Entity> {
    /// Set once, by the activation that started the actor. A plain `OnceLock` (32 bytes, not a
    /// `tokio::sync::OnceCell` with its semaphore): the waiting is done on the registry's gate.
    cell: OnceLock<actix::Addr<EntityActor<E>>>,
    /// Messages sent to this incarnation and not yet handled. Tally's mailbox bound.
    pub depth: AtomicU32,
    /// `Shared::tick` of the last call, for passivation.
    last_used: AtomicU32,
    /// Where the actor's last record went, packed (`pack_position`; 0: none yet), so a saga
    /// can follow an account's records still in a journal (`Registry::keep_journal`).
    last_record: AtomicU64,
    /// The journal chosen for the last saga this entity took part in (either end), and when
    /// (`Shared::millis`), packed as `(shard + 1) << 48 | millis`; 0: none
    /// (`Registry::keep_journal`).
    affinity: AtomicU64,
}

impl<E: Entity> Slot<E> {
    fn new(tick: u32) -> Self {
        Slot {
            cell: OnceLock::new(),
            depth: AtomicU32::new(0),
            last_used: AtomicU32::new(tick),
            last_record: AtomicU64::new(0),
            affinity: AtomicU64::new(0),
        }
    }

    /// Notes where the actor's newest record went.
    pub(crate) fn noted(&self, position: JournalPosition) {
        // Shards fit in 16 bits and sequence numbers in 48 (2^48 records is centuries of
        // the target rate); a larger one is simply not noted.
        if position.seq < (1 << 48) {
            self.last_record.store((u64::from(position.shard) << 48) | position.seq, Ordering::Relaxed);
        }
    }

    /// The journal of the last saga this entity took part in, if that was noted within
    /// `window_ms` of `now`.
    fn recent_affinity(&self, now: u64, window_ms: u64) -> Option<u16> {
        let packed = self.affinity.load(Ordering::Relaxed);
        let at = packed & ((1 << 48) - 1);
        (packed != 0 && now.saturating_sub(at) <= window_ms).then(|| ((packed >> 48) - 1) as u16)
    }

    fn note_affinity(&self, shard: u16, now: u64) {
        if now < (1 << 48) {
            self.affinity.store(((u64::from(shard) + 1) << 48) | now, Ordering::Relaxed);
        }
    }

    /// Where the actor's newest record went, if one was noted.
    pub(crate) fn newest_record(&self) -> Option<JournalPosition> {
        let packed = self.last_record.load(Ordering::Relaxed);
        (packed != 0).then_some(JournalPosition { shard: (packed >> 48) as u16, seq: packed & ((1 << 48) - 1) })
    }
}

/// Why a call to an entity did not get an answer from it.
#[derive(Debug, Clone)]
pub enum CallError<R> {
    NotFound,
    Rejected(R),
    Unavailable(Unavailable),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// A mailbox or the journal is full, or the actor kept restarting under the message.
    Overloaded,
    /// The actor is quarantined.
    Quarantined,
    /// The store could not be read to activate the actor.
    Store(String),
}

/// Why `Registry::deliver` could not put a call in an actor's mailbox.
enum Undelivered {
    /// The actor's context has ended: activate it anew and retry.
    Gone,
    /// The mailbox refused it (actix's own bound): answered as overloaded.
    Busy,
}

#[derive(Debug)]
struct Failures {
    window_started: Instant,
    restarts_in_window: u32,
    restarts_total: u32,
    quarantined: bool,
}

pub struct Registry<E: Entity> {
    slots: IdMap<E::Id, Arc<Slot<E>>>,
    failures: IdMap<E::Id, Failures>,
    /// The last record of an incarnation that retired before it was durable (a restart after a
    /// panic): the next incarnation waits for it before loading from the store.
    unfinished: IdMap<E::Id, JournalPosition>,
    /// A gate per id whose activation is under way; removed by the last call through it.
    activating: IdMap<E::Id, Arc<AsyncMutex<()>>>,
    pub(crate) shared: Arc<Shared>,
}

impl<E: Entity> Registry<E> {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Registry {
            slots: IdMap::default(),
            failures: IdMap::default(),
            unfinished: IdMap::default(),
            activating: IdMap::default(),
            shared,
        })
    }

    /// Sends a command and waits for its answer: the event applied (`Some`), or `None` if the
    /// step had already been applied. The record goes to the actor's own shard's journal.
    pub async fn command(
        self: &Arc<Self>,
        id: E::Id,
        command: E::Command,
    ) -> Result<Option<E::Event>, CallError<E::Rejection>> {
        self.command_on(id, command, None).await
    }

    /// `command`, with the record appended to shard `journal`'s journal (a saga's own).
    pub async fn command_on(
        self: &Arc<Self>,
        id: E::Id,
        command: E::Command,
        journal: Option<u16>,
    ) -> Result<Option<E::Event>, CallError<E::Rejection>> {
        match self.roundtrip(id, Op::Command(command), journal).await? {
            Reply::Done(event) => Ok(event),
            Reply::Rejected(rejection) => Err(CallError::Rejected(rejection)),
            Reply::Quarantined => Err(CallError::Unavailable(Unavailable::Quarantined)),
            Reply::Overloaded | Reply::Retry | Reply::State(_) => Err(CallError::Unavailable(Unavailable::Overloaded)),
        }
    }

    /// `command` on the entity's own journal, with `audit` appended in one group with the
    /// record it makes (`Op::CommandAudited`). `Ok(None)`: nothing changed, nothing appended.
    pub async fn command_audited(
        self: &Arc<Self>,
        id: E::Id,
        command: E::Command,
        audit: tally_engine::AuditRecord,
    ) -> Result<Option<E::Event>, CallError<E::Rejection>> {
        match self.roundtrip(id, Op::CommandAudited(command, Box::new(audit)), None).await? {
            Reply::Done(event) => Ok(event),
            Reply::Rejected(rejection) => Err(CallError::Rejected(rejection)),
            Reply::Quarantined => Err(CallError::Unavailable(Unavailable::Quarantined)),
            Reply::Overloaded | Reply::Retry | Reply::State(_) => Err(CallError::Unavailable(Unavailable::Overloaded)),
        }
    }

    /// The entity's current state, as its actor sees it.
    pub async fn read(self: &Arc<Self>, id: E::Id) -> Result<E, CallError<E::Rejection>> {
        match self.roundtrip(id, Op::Read, None).await? {
            Reply::State(state) => Ok(*state),
            _ => Err(CallError::Unavailable(Unavailable::Overloaded)),
        }
    }

    async fn roundtrip(
        self: &Arc<Self>,
        id: E::Id,
        op: Op<E>,
        journal: Option<u16>,
    ) -> Result<Reply<E>, CallError<E::Rejection>> {
        let capacity = self.shared.config.mailbox_capacity_max;
        for attempt in 0..self.shared.config.send_attempts_max {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let slot = self.slot(id).await?;
            if let Some(journal) = journal {
                self.settled_outside(&slot, journal).await;
            }
            let Some(addr) = slot.cell.get() else { continue };
            if slot.depth.fetch_add(1, Ordering::AcqRel) >= capacity {
                slot.depth.fetch_sub(1, Ordering::AcqRel);
                return Err(CallError::Unavailable(Unavailable::Overloaded));
            }
            slot.last_used.store(self.shared.tick(), Ordering::Relaxed);
            let (reply, answer) = oneshot::channel();
            let here = self.shared.runtime.current_thread();
            let there = self.shared.placement.thread_of(E::id_bits(id));
            match here {
                Some(here) if here != there => {
                    // A step for an actor on another runtime thread goes through that
                    // thread's inbox, as its answer comes back through this one's
                    // (`Call::reply_via`): one wake-up of a thread carries every step and
                    // answer queued for it meanwhile, where a mailbox send would wake it once
                    // per message (DESIGN.md §2).
                    let call = Call { op: op.clone(), journal, reply, reply_via: Some(here) };
                    let registry = Arc::clone(self);
                    let delivered_slot = Arc::clone(&slot);
                    let queued = self.shared.runtime.run_on(there, move || {
                        let slot = delivered_slot;
                        // The cell is set once and never cleared: it held this address above.
                        let Some(addr) = slot.cell.get() else {
                            slot.depth.fetch_sub(1, Ordering::AcqRel);
                            return;
                        };
                        if let Err((Undelivered::Busy, call)) = registry.deliver(id, &slot, addr, call) {
                            let _ = call.reply.send(Reply::Overloaded);
                        }
                        // Undelivered::Gone drops the call: its caller retries.
                    });
                    if !queued {
                        // The runtime has stopped: the call was dropped with the job.
                        slot.depth.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                _ => {
                    let call = Call { op: op.clone(), journal, reply, reply_via: None };
                    match self.deliver(id, &slot, addr, call) {
                        Ok(()) => {}
                        Err((Undelivered::Gone, _)) => continue,
                        // Tally's own bound normally answers first; this is the backstop.
                        Err((Undelivered::Busy, _)) => return Err(CallError::Unavailable(Unavailable::Overloaded)),
                    }
                }
            }
            match answer.await {
                Ok(Reply::Retry) | Err(_) => continue,
                Ok(reply) => return Ok(reply),
            }
        }
        Err(CallError::Unavailable(Unavailable::Overloaded))
    }

    /// Puts `call` in the actor's mailbox, on any thread. A call not delivered is taken back out
    /// of the slot's depth and handed back with why.
    fn deliver(
        &self,
        id: E::Id,
        slot: &Arc<Slot<E>>,
        addr: &actix::Addr<EntityActor<E>>,
        call: Call<E>,
    ) -> Result<(), (Undelivered, Call<E>)> {
        let error = match addr.try_send(call) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        slot.depth.fetch_sub(1, Ordering::AcqRel);
        match error {
            // The actor is gone (its context ended): forget its slot, so the retry activates
            // it anew.
            actix::prelude::SendError::Closed(call) => {
                self.remove_slot(id, slot);
                Err((Undelivered::Gone, call))
            }
            // Busy, not gone: the live actor keeps its slot (removing it would let a second
            // incarnation start beside it).
            actix::prelude::SendError::Full(call) => Err((Undelivered::Busy, call)),
        }
    }

    /// `busy_in` for `id` (tests).
    #[cfg(test)]
    pub(crate) fn busy_journal(&self, id: E::Id, window_ms: u64) -> Option<u16> {
        let slot = self.slots.get(&id)?;
        self.busy_in(&slot, self.shared.millis(), window_ms)
    }

    /// The journal an entity's work is busy in: the one its last saga took if that started within
    /// `window_ms` (`keep_journal`), else the journal of its newest record if not yet durable.
    /// Never activates the entity.
    ///
    /// Why the first: a saga's journal is chosen when it starts, but its source applies its
    /// hold when the message reaches the head of the mailbox, hundreds of sagas later on a
    /// busy source. Following only the newest *applied* record let one early choice of
    /// another journal (a cold source whose destination was busy elsewhere) echo through the
    /// source's history: its records took turns between two journals, each turn a record
    /// waiting for the other journal's commit, and the writers committed one record at a
    /// time (`scripts/bench` batch: 42 % of commits held a single record).
    fn busy_in(&self, slot: &Slot<E>, now: u64, window_ms: u64) -> Option<u16> {
        slot.recent_affinity(now, window_ms).or_else(|| {
            slot.newest_record().filter(|position| !self.shared.journals.is_durable(*position)).map(|p| p.shard)
        })
    }

    /// Picks the journal of a saga between `first` and `second` and notes it on both: `first`'s
    /// while it is busy (`busy_in`), else `second`'s, else `home`. One look-up of each
    /// entity and one reading of the clock: this runs once per transfer.
    pub(crate) fn keep_journal(&self, first: E::Id, second: E::Id, home: u16, window_ms: u64) -> u16 {
        let now = self.shared.millis();
        // Cloned out of the map, so that no two of its locks are held at once.
        let first = self.slots.get(&first).map(|slot| Arc::clone(&slot));
        let second = self.slots.get(&second).map(|slot| Arc::clone(&slot));
        let busy = |slot: &Option<Arc<Slot<E>>>| slot.as_ref().and_then(|slot| self.busy_in(slot, now, window_ms));
        let chosen = busy(&first).or_else(|| busy(&second)).unwrap_or(home);
        for slot in [&first, &second].into_iter().flatten() {
            slot.note_affinity(chosen, now);
        }
        chosen
    }

    /// Resolves once the entity's newest record is durable, if it is still on its way to the
    /// store in a journal other than `journal`; at once otherwise. `roundtrip` waits here before
    /// a call whose record goes to `journal` (a saga's step, an atomic batch's hold): that
    /// record must follow the other one into the store (`depends_on`), and a journal whose next
    /// record waits for another journal waits whole, every record queued behind it too. Waiting
    /// here holds up one caller instead. It is a hint, not the rule: a record the entity appends
    /// elsewhere meanwhile is still ordered by `depends_on`. If the other journal stopped,
    /// nothing more becomes durable there; the call goes on as it would have, and its record's
    /// `depends_on` keeps it out of the store until the other record is in.
    async fn settled_outside(&self, slot: &Slot<E>, journal: u16) {
        if let Some(position) = slot.newest_record()
            && position.shard != journal
            && !self.shared.journals.is_durable(position)
        {
            let _ = self.shared.journals.wait_durable(position).await;
        }
    }

    /// Resolves once the entity's newest record appended so far is durable (at once if it is,
    /// or if the entity has no live incarnation: an actor passivates only once its last record
    /// is durable). An entity's records become durable in the order it appended them, so after
    /// this the store holds every change the entity made before the call: a point-in-time read
    /// of its postings (`GET /v1/accounts/{id}/balance?at=`) then misses none still in a journal.
    pub async fn wait_newest_durable(&self, id: E::Id) -> Result<(), tally_persistence::JournalStopped> {
        let newest = self.slots.get(&id).and_then(|slot| slot.newest_record());
        if let Some(position) = self.unfinished.get(&id).map(|entry| *entry.value()) {
            self.shared.journals.wait_durable(position).await?;
        }
        match newest {
            Some(position) => self.shared.journals.wait_durable(position).await,
            None => Ok(()),
        }
    }

    /// The live slot of `id`, activating the entity if needed.
    async fn slot(self: &Arc<Self>, id: E::Id) -> Result<Arc<Slot<E>>, CallError<E::Rejection>> {
        loop {
            let existing = self.slots.get(&id).map(|entry| Arc::clone(entry.value()));
            let slot = match existing {
                Some(slot) => slot,
                None => {
                    Arc::clone(self.slots.entry(id).or_insert_with(|| Arc::new(Slot::new(self.shared.tick()))).value())
                }
            };
            if slot.cell.get().is_some() {
                return Ok(slot);
            }
            let gate = Arc::clone(self.activating.entry(id).or_default().value());
            let guard = gate.lock().await;
            let outcome = if slot.cell.get().is_some() {
                Some(Ok(()))
            } else if !self.slots.get(&id).is_some_and(|current| Arc::ptr_eq(current.value(), &slot)) {
                // The activation this call waited for failed and dropped the slot (or the actor
                // has since retired): start over with the id's current slot.
                None
            } else {
                match self.start_incarnation(id, Arc::clone(&slot)).await {
                    Ok(addr) => {
                        // Only an activation holding the gate sets the cell, and it was empty.
                        let _ = slot.cell.set(addr);
                        Some(Ok(()))
                    }
                    Err(error) => {
                        self.remove_slot(id, &slot);
                        Some(Err(error))
                    }
                }
            };
            drop(guard);
            // The last call through the gate removes it (the map's reference and this call's are
            // the only two left); a later first call makes a fresh one.
            self.activating.remove_if(&id, |_, current| Arc::ptr_eq(current, &gate) && Arc::strong_count(current) == 2);
            match outcome {
                Some(Ok(())) => return Ok(slot),
                Some(Err(error)) => return Err(error),
                None => continue,
            }
        }
    }

    /// Activates `id` now if it is not live (supervision's restart).
    pub(crate) async fn activate_now(self: &Arc<Self>, id: E::Id) -> Result<(), CallError<E::Rejection>> {
        self.slot(id).await.map(|_| ())
    }

    async fn start_incarnation(
        self: &Arc<Self>,
        id: E::Id,
        slot: Arc<Slot<E>>,
    ) -> Result<actix::Addr<EntityActor<E>>, CallError<E::Rejection>> {
        // Everything the previous incarnation did must be in the store before this one reads
        // it: wait for its last record (a restart right after a panic waits for a commit).
        if let Some(position) = self.unfinished.get(&id).map(|entry| *entry.value()) {
            self.shared
                .journals
                .wait_durable(position)
                .await
                .map_err(|_| CallError::Unavailable(Unavailable::Store("journal stopped".to_owned())))?;
            self.unfinished.remove_if(&id, |_, noted| *noted == position);
        }
        let loaded = E::load(&self.shared.store, &self.shared.journals, id)
            .await
            .map_err(|error: StoreError| CallError::Unavailable(Unavailable::Store(error.to_string())))?;
        let Some(loaded) = loaded else { return Err(CallError::NotFound) };
        Ok(self.start_actor(loaded.value, slot, None))
    }

    /// Notes that `id`'s incarnation retired with its last record at `position`, not yet
    /// durable.
    pub(crate) fn note_unfinished(&self, id: E::Id, position: JournalPosition) {
        self.unfinished.insert(id, position);
    }

    fn start_actor(
        self: &Arc<Self>,
        state: E,
        slot: Arc<Slot<E>>,
        last_record: Option<JournalPosition>,
    ) -> actix::Addr<EntityActor<E>> {
        let id = state.id();
        let quarantined = self.is_quarantined(id);
        let registry = Arc::clone(self);
        let thread = self.shared.placement.thread_of(E::id_bits(id));
        self.shared.stats(E::KIND).activations.fetch_add(1, Ordering::Relaxed);
        // Like `Actor::start_in_arbiter`, but with the mailbox channel made without actix's own
        // bound (0) from the first moment. With actix's default bound of 16, a burst sent
        // before the actor first runs parks the shared sender, and every `try_send` then
        // answers `Full` — which must never be mistaken for a dead actor. Tally bounds the
        // mailbox itself (`Slot::depth`).
        let (sender, receiver) = actix::dev::channel::channel(0);
        // If the runtime has stopped the actor never starts; its mailbox is then closed and
        // senders find it gone, as after a shutdown.
        let _ = self.shared.runtime.run_on(thread, move || {
            let ctx = actix::Context::with_receiver(receiver);
            let actor = EntityActor::new(state, registry, slot, quarantined, last_record);
            actix::spawn(ctx.into_future(actor));
        });
        actix::Addr::new(sender)
    }

    /// Registers a newly opened entity whose `opened` record the caller has just appended at
    /// `opened`. Returns false if the id is already live.
    pub(crate) fn insert_new(self: &Arc<Self>, state: E, opened: JournalPosition) -> bool {
        let id = state.id();
        let slot = Arc::new(Slot::new(self.shared.tick()));
        match self.slots.entry(id) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Arc::clone(&slot));
                let addr = self.start_actor(state, Arc::clone(&slot), Some(opened));
                // The cell is fresh and only this function sets it.
                let _ = slot.cell.set(addr);
                true
            }
        }
    }

    pub(crate) fn remove_slot(&self, id: E::Id, slot: &Arc<Slot<E>>) {
        self.slots.remove_if(&id, |_, current| Arc::ptr_eq(current, slot));
    }

    pub(crate) fn record_failure(&self, id: E::Id) {
        let stats = self.shared.stats(E::KIND);
        stats.restarts.fetch_add(1, Ordering::Relaxed);
        let config = &self.shared.config;
        let mut failures = self.failures.entry(id).or_insert_with(|| Failures {
            window_started: Instant::now(),
            restarts_in_window: 0,
            restarts_total: 0,
            quarantined: false,
        });
        if failures.window_started.elapsed() > config.restart_window {
            failures.window_started = Instant::now();
            failures.restarts_in_window = 0;
        }
        failures.restarts_in_window += 1;
        failures.restarts_total += 1;
        if !failures.quarantined && failures.restarts_in_window >= config.quarantine_restarts {
            failures.quarantined = true;
            stats.quarantined.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kind = E::KIND.as_str(), %id, "actor quarantined after repeated restarts");
        }
    }

    pub fn is_quarantined(&self, id: E::Id) -> bool {
        self.failures.get(&id).is_some_and(|failures| failures.quarantined)
    }

    /// Lifts a quarantine (an operator's decision). Returns false if `id` was not quarantined.
    pub fn release_quarantine(&self, id: E::Id) -> bool {
        match self.failures.remove(&id) {
            Some((_, failures)) if failures.quarantined => {
                self.shared.stats(E::KIND).quarantined.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Live actors.
    pub fn live(&self) -> usize {
        self.slots.len()
    }

    /// Whether `id` has a live actor (or one being activated).
    pub fn is_live(&self, id: E::Id) -> bool {
        self.slots.contains_key(&id)
    }

    /// Sum of all live mailboxes, the deepest one, and the worst actors by depth and restarts.
    pub fn survey(&self, worst_max: usize) -> (u64, u32, Vec<WorstActor>) {
        let mut total = 0_u64;
        let mut deepest = 0_u32;
        let mut worst: Vec<WorstActor> = Vec::new();
        for entry in &self.slots {
            let depth = entry.value().depth.load(Ordering::Relaxed);
            total += u64::from(depth);
            deepest = deepest.max(depth);
            if depth > 0 {
                worst.push(WorstActor {
                    kind: E::KIND,
                    id: entry.key().to_string(),
                    mailbox_depth: depth,
                    restarts: 0,
                    quarantined: false,
                });
            }
        }
        for entry in &self.failures {
            let id = entry.key().to_string();
            match worst.iter_mut().find(|actor| actor.id == id) {
                Some(actor) => {
                    actor.restarts = entry.restarts_total;
                    actor.quarantined = entry.quarantined;
                }
                None => worst.push(WorstActor {
                    kind: E::KIND,
                    id,
                    mailbox_depth: 0,
                    restarts: entry.restarts_total,
                    quarantined: entry.quarantined,
                }),
            }
        }
        worst.sort_by(|a, b| {
            (b.quarantined, b.mailbox_depth, b.restarts).cmp(&(a.quarantined, a.mailbox_depth, a.restarts))
        });
        worst.truncate(worst_max);
        (total, deepest, worst)
    }

    /// Asks every actor idle for `idle_timeout` to passivate. Returns how many were asked.
    pub fn sweep_idle(&self) -> usize {
        let now = self.shared.tick();
        let idle_secs = u32::try_from(self.shared.config.idle_timeout.as_secs()).unwrap_or(u32::MAX);
        let mut asked = 0;
        for entry in &self.slots {
            let slot = entry.value();
            let idle = now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= idle_secs;
            if idle
                && slot.depth.load(Ordering::Relaxed) == 0
                && let Some(addr) = slot.cell.get()
            {
                // Not a money path: a passivation request that does not fit is simply
                // dropped, and the next sweep asks again.
                if addr.try_send(Passivate).is_ok() {
                    asked += 1;
                }
            }
        }
        asked
    }
}

/// After the yields, 1 ms doubling to at most 20 ms: twelve attempts span about 100 ms in all.
const RESTART_WAITS: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(1))
    .with_max_delay(Duration::from_millis(20))
    .without_max_times();

/// Yield for the first retries (the restart is usually already done), then back off
/// exponentially (`RESTART_WAITS`).
async fn backoff(attempt: u32) {
    if attempt < 3 {
        tokio::task::yield_now().await;
    } else {
        let wait = RESTART_WAITS.build().nth(usize::try_from(attempt - 3).unwrap_or(usize::MAX));
        tokio::time::sleep(wait.unwrap_or(Duration::from_millis(20))).await;
    }
}
