//! Tally's actors: accounts, wallets and transfer sagas on actix, with the registry that
//! activates and passivates them and the supervision that restarts them.
//!
//! Architecture invariant: this is the only crate that knows actix. Everything above it
//! (`http`, `benches`, `tests`) talks to the `Engine` facade with plain async calls.
//!
//! Following one transfer: `Engine::transfer` (engine.rs) admits it and runs a saga on the
//! source account's thread (saga.rs); the saga calls `Registry::command_on` (registry.rs) for
//! each step, which activates the account if needed and sends a `Call` to its `EntityActor`
//! (entity_actor.rs); the actor decides and applies the step with the engine's pure functions
//! and appends the record to the journal; the saga awaits the journal's durable ack for its
//! last record before answering.

pub mod aml;
pub mod batch;
pub mod clock;
pub mod crypto;
pub mod engine;
pub mod entity;
pub mod entity_actor;
pub mod expiry;
pub mod faults;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod pricing;
pub mod recovery;
pub mod registry;
pub mod runtime;
pub mod saga;
pub mod sessions;
pub mod shared;

pub use batch::{AtomicBatch, BatchItem};
pub use clock::{Clock, IdSource, OffsetFileClock, RandomIds, SystemClock};
pub use crypto::{CryptoError, DepositTarget, Quote};
pub use engine::{Engine, EngineConfig, EngineError, PendingDecision, QuarantinedActor, StartError, TransferError};
pub use entity::ActorKind;
pub use faults::FaultInjector;
pub use health::{HealthReport, KindHealth};
pub use idempotency::KeyClaim;
pub use limits::{Limits, LimitsError, Reservation, ReservationRefused};
pub use pricing::{AccountFacts, PricingError};
pub use runtime::Runtime;
pub use sessions::{SessionConfig, SessionError, Sessions};

/// An `AccountActor` is the generic supervised entity actor over an `Account`.
pub type AccountActor = entity_actor::EntityActor<tally_engine::Account>;
/// A `WalletActor` is the generic supervised entity actor over a `Wallet`.
pub type WalletActor = entity_actor::EntityActor<tally_engine::Wallet>;

/// A concurrent map keyed by ids the engine issued (accounts, transfers, users, sessions),
/// hashed with foldhash, seeded per map: SipHash, the default, was ~2 % of the instructions of
/// a keyed transfer (`scripts/callgrind`), spent on a handful of look-ups of 16-byte ids. Maps
/// keyed by what a client chooses (idempotency keys, login-failure keys: emails and
/// addresses) keep SipHash, whose keyed hashing is the stronger defence against crafted
/// collisions.
pub type IdMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
