//! Tally's persistence: the `Store` trait, its stores, and the write-behind journal that
//! drains actors' records into a store in group commits.
//!
//! Architecture invariant: only this crate knows SQL. Actors never call a store on the hot
//! path: they append records to the journal and await a durable ack.

pub mod aml;
pub mod audit;
pub mod batch;
pub mod check;
pub mod cluster;
pub mod crypto;
pub(crate) mod crypto_sql;
pub mod events;
pub mod finance;
pub mod journal;
pub(crate) mod ledger_sql;
pub mod memory;
pub(crate) mod metadata;
pub mod open;
pub mod open_users;
pub mod postgres;
pub mod reads;
pub mod runtime;
pub mod sessions;
pub(crate) mod sql;
pub mod sqlite;
pub mod store;
pub mod users;

pub use finance::{PricingChange, PricingTables};
pub use journal::{
    Admitted, DurableAck, Journal, JournalConfig, JournalPosition, JournalStats, JournalStopped, JournalTotals,
    Journals, Overloaded,
};
pub use memory::MemoryStore;
pub use store::{
    JournalWriter, LiveHold, Loaded, PipelineTurn, PricingStore, SequencedRecord, Store, StoreError, StoreReads,
    WalletStore,
};
