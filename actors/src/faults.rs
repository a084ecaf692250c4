//! The fault-injection switch: arms panics inside actor handlers and saga steps so that tests
//! can prove supervision restarts them without losing or doubling money. Disarmed it costs
//! one relaxed atomic load per handled message.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::entity::ActorKind;

/// Parses `TALLY_FAULT_PANIC_EVERY`, e.g. `account=50,transfer_saga=200`.
pub fn parse_panic_every(spec: &str) -> Result<Vec<(ActorKind, u32)>, String> {
    spec.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (kind, every) = part.split_once('=').ok_or_else(|| format!("expected kind=n, got {part:?}"))?;
            let kind = ActorKind::ALL
                .into_iter()
                .find(|candidate| candidate.as_str() == kind.trim())
                .ok_or_else(|| format!("unknown actor kind {kind:?}"))?;
            let every = every.trim().parse::<u32>().map_err(|_| format!("not a count: {every:?}"))?;
            Ok((kind, every))
        })
        .collect()
}

/// The payload of an injected panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault(pub ActorKind);

#[derive(Debug, Default)]
pub struct FaultInjector {
    account_panics: AtomicU32,
    wallet_panics: AtomicU32,
    saga_panics: AtomicU32,
    /// With `panic_every`: every n-th handler of the kind panics (0: off).
    account_every: AtomicU32,
    saga_every: AtomicU32,
    account_seen: AtomicU32,
    saga_seen: AtomicU32,
    /// Panics that fired, by kind (account, wallet, saga): what a test checks to know its
    /// faults happened, not only that it armed them.
    fired: [AtomicU32; 3],
}

impl FaultInjector {
    /// The next `count` handlers of actors of `kind` panic before they decide anything.
    pub fn arm_panics(&self, kind: ActorKind, count: u32) {
        if let Some(counter) = self.counter(kind) {
            counter.fetch_add(count, Ordering::SeqCst);
        }
    }

    /// Every `n`-th handler of `kind` panics from now on (`0` turns it off): panics spread
    /// through a running load. `tally serve` arms this from `TALLY_FAULT_PANIC_EVERY`.
    pub fn panic_every(&self, kind: ActorKind, n: u32) {
        match kind {
            ActorKind::Account => self.account_every.store(n, Ordering::SeqCst),
            ActorKind::TransferSaga => self.saga_every.store(n, Ordering::SeqCst),
            ActorKind::Wallet | ActorKind::Session => {}
        }
    }

    pub fn disarm(&self) {
        for counter in
            [&self.account_panics, &self.wallet_panics, &self.saga_panics, &self.account_every, &self.saga_every]
        {
            counter.store(0, Ordering::SeqCst);
        }
    }

    fn periodic(&self, kind: ActorKind) -> bool {
        let (every, seen) = match kind {
            ActorKind::Account => (&self.account_every, &self.account_seen),
            ActorKind::TransferSaga => (&self.saga_every, &self.saga_seen),
            ActorKind::Wallet | ActorKind::Session => return false,
        };
        let n = every.load(Ordering::Relaxed);
        n != 0 && (seen.fetch_add(1, Ordering::Relaxed).wrapping_add(1)) % n == 0
    }

    /// How many injected panics of `kind` have fired.
    pub fn fired(&self, kind: ActorKind) -> u32 {
        Self::slot(kind).map_or(0, |slot| self.fired[slot].load(Ordering::SeqCst))
    }

    fn slot(kind: ActorKind) -> Option<usize> {
        match kind {
            ActorKind::Account => Some(0),
            ActorKind::Wallet => Some(1),
            ActorKind::TransferSaga => Some(2),
            ActorKind::Session => None,
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
        let periodic = self.periodic(kind);
        if counter.load(Ordering::Relaxed) == 0 && !periodic {
            return;
        }
        let taken =
            periodic || counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |armed| armed.checked_sub(1)).is_ok();
        if taken {
            if let Some(slot) = Self::slot(kind) {
                self.fired[slot].fetch_add(1, Ordering::SeqCst);
            }
            // Unwind like a panic, but without the panic hook: an injected fault is expected
            // and should not print a backtrace into test and server output.
            std::panic::resume_unwind(Box::new(InjectedFault(kind)));
        }
    }
}
