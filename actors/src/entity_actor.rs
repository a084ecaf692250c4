//! The supervised entity actor: one per account and one per wallet.
//!
//! Who sends to it: `Registry::command_on` and `Registry::read` (saga steps, status changes,
//! reads) and the registry's passivation sweeper. What bounds its mailbox: the slot's `depth` counter, checked by the
//! registry before every send (`mailbox_capacity_max`). How it shuts down: it *retires* —
//! refuses every later message with `Reply::Retry`, removes its slot from the registry, and
//! stops — either when passivated (idle, all records durable) or when a handler panicked
//! (supervision). A retired actor never applies another change, so the next incarnation can
//! load the store plus the journal's pending records without racing it.
//!
//! Each command runs `decide` (pure) under `catch_unwind`, checks the journal has room,
//! `apply`s the event and appends its record. A panic in `decide` therefore leaves state and
//! journal untouched, and the caller is told to retry against the restarted actor.
//!
//! Which journal: the one the caller names (`Call::journal`: a saga's records all go to its
//! own shard's journal), else the actor's own shard's. When it is not the journal of the
//! actor's previous record, the new record depends on that one (`JournalPosition`), so the
//! actor's history becomes durable in the order it happened, whichever journals carry it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use tokio::sync::oneshot;

use tally_engine::Record;
use tally_persistence::JournalPosition;

use crate::entity::Entity;
use crate::registry::{Registry, Slot};

/// A request to an entity actor, with its own reply channel: the reply is explicit even when
/// the answer is "not handled, retry", and a dropped channel also means "not handled".
pub struct Call<E: Entity> {
    pub op: Op<E>,
    /// The shard whose journal takes the record (the saga's); `None`: the actor's own.
    pub journal: Option<u16>,
    pub reply: oneshot::Sender<Reply<E>>,
    /// The caller's runtime thread when it is not this actor's: the answer goes back through
    /// that thread's inbox (`EntityActor::answer`). `None`: answered on the channel directly.
    pub reply_via: Option<usize>,
}

impl<E: Entity> Message for Call<E> {
    type Result = ();
}

#[derive(Clone)]
pub enum Op<E: Entity> {
    Command(E::Command),
    /// A command an admin asked for: if it changes something, its record and this audit
    /// record are appended as one group, so one batch transaction commits both.
    CommandAudited(E::Command, Box<tally_engine::AuditRecord>),
    Read,
}

pub enum Reply<E: Entity> {
    /// Applied (with its event) or already applied (`None`).
    Done(Option<E::Event>),
    Rejected(E::Rejection),
    State(Box<E>),
    /// Not handled: the actor retired or restarted under the message. Safe to send again.
    Retry,
    /// The actor is quarantined and refuses new work.
    Quarantined,
    /// The journal is full; nothing was applied.
    Overloaded,
}

/// Sent by the registry's sweeper to an actor that looks idle.
pub struct Passivate;

impl Message for Passivate {
    type Result = ();
}

pub struct EntityActor<E: Entity> {
    state: E,
    registry: Arc<Registry<E>>,
    slot: Arc<Slot<E>>,
    /// Where this actor's last record went (to depend on from another journal, and to wait
    /// for before passivating).
    last_record: Option<JournalPosition>,
    handled: u32,
    retired: bool,
    passivating: bool,
    quarantined: bool,
}

impl<E: Entity> EntityActor<E> {
    pub(crate) fn new(
        state: E,
        registry: Arc<Registry<E>>,
        slot: Arc<Slot<E>>,
        quarantined: bool,
        last_record: Option<JournalPosition>,
    ) -> Self {
        EntityActor { state, registry, slot, last_record, handled: 0, retired: false, passivating: false, quarantined }
    }

    fn retire(&mut self, ctx: &mut Context<Self>) {
        self.retired = true;
        // The next incarnation loads from the store, so it first waits until this one's last
        // record is durable (`Registry::start_incarnation`).
        if let Some(position) = self.last_record
            && !self.registry.shared.journals.is_durable(position)
        {
            self.registry.note_unfinished(self.state.id(), position);
        }
        self.registry.remove_slot(self.state.id(), &self.slot);
        ctx.stop();
    }

    fn handle_command(
        &mut self,
        command: E::Command,
        audit: Option<Box<tally_engine::AuditRecord>>,
        journal: Option<u16>,
        ctx: &mut Context<Self>,
    ) -> Reply<E> {
        if self.quarantined && !E::finishes_admitted_work(&command) {
            // An operator may have released the quarantine since this incarnation started.
            if self.registry.is_quarantined(self.state.id()) {
                return Reply::Quarantined;
            }
            self.quarantined = false;
        }
        let faults = &self.registry.shared.faults;
        let state = &self.state;
        let decision = catch_unwind(AssertUnwindSafe(|| {
            faults.maybe_panic(E::KIND);
            state.decide(&command)
        }));
        let event = match decision {
            Err(_panic) => {
                self.fail(ctx);
                return Reply::Retry;
            }
            Ok(Err(rejection)) => return Reply::Rejected(rejection),
            Ok(Ok(None)) => return Reply::Done(None),
            Ok(Ok(Some(event))) => event,
        };
        let shared = &self.registry.shared;
        let journal = match journal {
            Some(shard) => shared.journals.shard(shard),
            None => shared.journals.shard(shared.shard_of(uuid::Uuid::from_u128(E::id_bits(self.state.id())))),
        };
        if !journal.has_room() {
            return Reply::Overloaded;
        }
        if self.state.apply(&event).is_err() {
            // `decide` checked this arithmetic; failing here is a bug. Nothing was appended,
            // so restarting (reloading store + journal) drops the half-applied change.
            tracing::error!(id = %self.state.id(), "apply failed after decide accepted; restarting");
            self.fail(ctx);
            return Reply::Retry;
        }
        // The record is appended after `apply` so it carries the state after the event. No
        // one can observe the new state before the append: the next message to this actor is
        // handled after this one, and the saga hears the reply after it.
        let record = self.state.record(event.clone());
        let position = match audit {
            None => journal.append_admitted(record, self.last_record),
            Some(audit) => journal.append_admitted_group(vec![record, Record::Audit(audit)], self.last_record),
        };
        self.last_record = Some(position);
        self.slot.noted(position);
        Reply::Done(Some(event))
    }

    /// Sends `reply` to the caller. A caller on another runtime thread hears it through that
    /// thread's inbox (`Runtime::run_on`): a oneshot answered from here would wake that thread
    /// once per answer, where the inbox wakes it once for every answer (and step) queued for
    /// it meanwhile. If the runtime has stopped the answer is dropped, which the caller reads
    /// as "not handled".
    fn answer(&self, reply_to: oneshot::Sender<Reply<E>>, via: Option<usize>, reply: Reply<E>) {
        match via {
            Some(thread) => {
                let _ = self.registry.shared.runtime.run_on(thread, move || {
                    let _ = reply_to.send(reply);
                });
            }
            None => {
                let _ = reply_to.send(reply);
            }
        }
    }

    /// Supervision: count the failure, retire this incarnation, and start the next one.
    fn fail(&mut self, ctx: &mut Context<Self>) {
        let id = self.state.id();
        self.registry.record_failure(id);
        self.retire(ctx);
        let registry = Arc::clone(&self.registry);
        // Restart at once rather than on the next message, so health shows the actor back.
        actix::spawn(async move {
            if let Err(error) = registry.activate_now(id).await {
                tracing::warn!(%id, ?error, "restart after failure did not activate");
            }
        });
    }
}

impl<E: Entity> Actor for EntityActor<E> {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        // The mailbox was made without actix's bound (`Registry::start_actor`): Tally bounds
        // it itself, since actix's bound only parks one sender handle.
        self.registry.shared.stats(E::KIND).active.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.registry.shared.stats(E::KIND).active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<E: Entity> Handler<Call<E>> for EntityActor<E> {
    type Result = ();

    fn handle(&mut self, call: Call<E>, ctx: &mut Context<Self>) {
        let started = Instant::now();
        self.slot.depth.fetch_sub(1, Ordering::AcqRel);
        if self.retired {
            self.answer(call.reply, call.reply_via, Reply::Retry);
            return;
        }
        self.handled = self.handled.wrapping_add(1);
        let reply = match call.op {
            Op::Read => Reply::State(Box::new(self.state.clone())),
            Op::Command(command) => self.handle_command(command, None, call.journal, ctx),
            Op::CommandAudited(command, audit) => self.handle_command(command, Some(audit), call.journal, ctx),
        };
        // The caller may have given up (time-out); the change stands either way.
        self.answer(call.reply, call.reply_via, reply);
        let stats = self.registry.shared.stats(E::KIND);
        stats.handled.fetch_add(1, Ordering::Relaxed);
        stats.handler_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl<E: Entity> Handler<Passivate> for EntityActor<E> {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        if self.retired || self.passivating {
            return;
        }
        self.passivating = true;
        let handled_before = self.handled;
        let journals = self.registry.shared.journals.clone();
        let last_record = self.last_record;
        // Passivate only once every record this actor appended is durable, and only if no
        // message arrived meanwhile.
        let durable = async move {
            match last_record {
                Some(position) => journals.wait_durable(position).await,
                None => Ok(()),
            }
        };
        ctx.spawn(durable.into_actor(self).map(move |result, actor, ctx| {
            actor.passivating = false;
            let idle = actor.handled == handled_before && actor.slot.depth.load(Ordering::Acquire) == 0;
            if result.is_ok() && idle && !actor.retired {
                actor.registry.shared.stats(E::KIND).passivations.fetch_add(1, Ordering::Relaxed);
                actor.retire(ctx);
            }
        }));
    }
}
