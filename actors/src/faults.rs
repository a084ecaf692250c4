//! The fault-injection switch: arms panics inside actor handlers and saga steps so that tests
//! can prove supervision restarts them without losing or doubling money. Disarmed it costs
//! one relaxed atomic load per handled message.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::entity::ActorKind;

/// The payload of an injected panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault(pub ActorKind);

#[derive(Debug, Default)]
pub struct FaultInjector {
    account_panics: AtomicU32,
    wallet_panics: AtomicU32,
    saga_panics: AtomicU32,
}

impl FaultInjector {
    /// The next `count` handlers of actors of `kind` panic before they decide anything.
    pub fn arm_panics(&self, kind: ActorKind, count: u32) {
        if let Some(counter) = self.counter(kind) {
            counter.fetch_add(count, Ordering::SeqCst);
        }
    }

    pub fn disarm(&self) {
        for counter in [&self.account_panics, &self.wallet_panics, &self.saga_panics] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    fn counter(&self, kind: ActorKind) -> Option<&AtomicU32> {
        match kind {
            ActorKind::Account => Some(&self.account_panics),
            ActorKind::Wallet => Some(&self.wallet_panics),
            ActorKind::TransferSaga => Some(&self.saga_panics),
            ActorKind::Session => None,
        }
    }

    /// Panics if a panic is armed for `kind`. Called at the top of each handler and saga step.
    pub fn maybe_panic(&self, kind: ActorKind) {
        let Some(counter) = self.counter(kind) else { return };
        if counter.load(Ordering::Relaxed) == 0 {
            return;
        }
        let taken = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |armed| armed.checked_sub(1));
        if taken.is_ok() {
            // Unwind like a panic, but without the panic hook: an injected fault is expected
            // and should not print a backtrace into test and server output.
            std::panic::resume_unwind(Box::new(InjectedFault(kind)));
        }
    }
}
