//! Tally's pure domain: money, accounts, wallets, transfers, double-entry postings and the
//! rejections every operation can answer with.
//!
//! Architecture invariant: this crate does no I/O. No clock, no randomness, no database, no
//! JSON. Time and ids come in as arguments, so the same code runs in the actors, in recovery
//! and in the simulation tests' model ledger.
//!
//! Money arithmetic must never lose bits silently, so a numeric `as` cast that could truncate,
//! wrap or drop a sign is an error here (clippy runs with `-D warnings`); the few intended ones
//! (splitting a 128-bit product into 64-bit limbs in `fx.rs`) say so where they are.
#![warn(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

pub mod account;
pub mod aml;
pub mod audit;
pub mod crypto;
pub mod currency;
pub mod error_code;
pub mod fees;
pub mod fx;
pub mod ids;
pub mod limits;
pub mod metadata;
pub mod money;
pub mod position;
pub mod posting;
pub mod record;
pub mod rejection;
pub mod system_accounts;
pub mod transfer;
pub mod transfer_type;
pub mod wallet;

pub use account::{Account, AccountCommand, AccountEvent, AccountKind, AccountStatus, StatusAction};
pub use audit::AuditRecord;
pub use crypto::{CryptoOp, CryptoOpKind, CryptoOpStatus};
pub use currency::Currency;
pub use error_code::ErrorCode;
pub use fees::{FeeKind, FeeRule, FeeTier};
pub use fx::FxRate;
pub use ids::{AccountId, Timestamp, TransferId, UserId, WalletId};
pub use metadata::Metadata;
pub use money::{AmountError, parse_amount, validate_amount};
pub use position::Position;
pub use posting::{Direction, Posting};
pub use record::{AccountSnapshot, AssetSnapshot, Record, WalletSnapshot};
pub use rejection::{AccountRejection, CreateTransferRejection, StatusRejection, TransitionRejection};
pub use transfer::{Idempotency, PendingReason, Transfer, TransferKind, TransferRequest, TransferStatus};
pub use transfer_type::{ExecutionMode, TransferTypeSettings};
pub use wallet::{Wallet, WalletCommand, WalletEvent};
