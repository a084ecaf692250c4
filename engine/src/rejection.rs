//! One exhaustive rejection enum per operation. Variants are declared in the order they are
//! checked: an operation answers with the first reason that applies, and the table tests walk
//! the reasons in this same order. Each variant maps to one error code of the API contract.

use rust_decimal::Decimal;

use crate::account::AccountStatus;
use crate::currency::Currency;
use crate::error_code::ErrorCode;
use crate::money::AmountError;
use crate::transfer::TransferStatus;

/// Why an account or wallet refused a hold (saga step 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoldRejection {
    #[error("the account is {status:?}, not active")]
    NotActive { status: AccountStatus },
    #[error("the account holds {account}, the amount is in {amount}")]
    CurrencyMismatch { account: Currency, amount: Currency },
    #[error("available balance {available} is less than {requested}")]
    InsufficientFunds { available: Decimal, requested: Decimal },
    #[error("the balance would overflow")]
    Overflow,
}

/// Why an account or wallet refused a credit (saga step 3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreditRejection {
    #[error("the account is {status:?}, not active")]
    NotActive { status: AccountStatus },
    #[error("the account holds {account}, the amount is in {amount}")]
    CurrencyMismatch { account: Currency, amount: Currency },
    #[error("the balance would overflow")]
    Overflow,
}

/// Why an account refused a status change (block, unblock, close).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusRejection {
    #[error("system accounts cannot be blocked or closed")]
    SystemAccount,
    #[error("the account is closed; closing is final")]
    Closed,
    #[error("the account still has balance {balance} and holds {held}")]
    NotEmpty { balance: Decimal, held: Decimal },
    /// Empty, but an atomic batch has promised it a credit that has not landed yet.
    #[error("the account has {promised} on its way in (an atomic batch's credit); close it once that has landed")]
    CreditPromised { promised: Decimal },
}

/// Any rejection an account actor can answer with, for the actor's single reply type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountRejection {
    #[error(transparent)]
    Hold(#[from] HoldRejection),
    #[error(transparent)]
    Credit(#[from] CreditRejection),
    #[error(transparent)]
    Status(#[from] StatusRejection),
    #[error("credit limit must not be negative")]
    NegativeCreditLimit,
}

/// Why a transfer could not be created or completed. Checked in this order: first the request
/// alone (amount, accounts, type), then the source account (saga step 2), then the destination
/// (step 3, after which the hold is released).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateTransferRejection {
    #[error("invalid amount: {0}")]
    InvalidAmount(AmountError),
    #[error("fee must be zero or positive, in the source currency's scale")]
    InvalidFee,
    #[error("source and destination are the same account")]
    SameAccount,
    #[error("transfer type is disabled")]
    TransferTypeDisabled,
    #[error("amount is outside the transfer type's limits")]
    AmountLimitExceeded,
    #[error("no FX rate is set from {from} to {to}")]
    FxRateNotFound { from: Currency, to: Currency },
    #[error("the amount converts to less than the destination currency's smallest unit")]
    ConvertsToNothing,
    #[error("source account not found")]
    SourceNotFound,
    #[error("source account is {status:?}, not active")]
    SourceNotActive { status: AccountStatus },
    #[error("source account holds {account}, the transfer is in {amount}")]
    SourceCurrencyMismatch { account: Currency, amount: Currency },
    #[error("available balance {available} is less than {requested}")]
    InsufficientFunds { available: Decimal, requested: Decimal },
    #[error("destination account not found")]
    DestinationNotFound,
    #[error("destination account is {status:?}, not active")]
    DestinationNotActive { status: AccountStatus },
    #[error("destination account holds {account}, the transfer delivers {amount}")]
    DestinationCurrencyMismatch { account: Currency, amount: Currency },
    #[error("a balance would overflow")]
    Overflow,
    /// An AML rule with action `block` matched (`engine/src/aml.rs`).
    #[error("an AML rule blocked the transfer")]
    Blocked,
}

impl CreateTransferRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            CreateTransferRejection::InvalidAmount(_)
            | CreateTransferRejection::InvalidFee
            | CreateTransferRejection::SameAccount => ErrorCode::ValidationError,
            CreateTransferRejection::TransferTypeDisabled => ErrorCode::TransferTypeDisabled,
            CreateTransferRejection::FxRateNotFound { .. } => ErrorCode::FxRateNotFound,
            CreateTransferRejection::AmountLimitExceeded
            | CreateTransferRejection::ConvertsToNothing
            | CreateTransferRejection::Overflow => ErrorCode::AmountLimitExceeded,
            CreateTransferRejection::SourceNotFound | CreateTransferRejection::DestinationNotFound => {
                ErrorCode::NotFound
            }
            CreateTransferRejection::SourceNotActive { .. } | CreateTransferRejection::DestinationNotActive { .. } => {
                ErrorCode::AccountNotActive
            }
            CreateTransferRejection::SourceCurrencyMismatch { .. }
            | CreateTransferRejection::DestinationCurrencyMismatch { .. } => ErrorCode::CurrencyMismatch,
            CreateTransferRejection::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            CreateTransferRejection::Blocked => ErrorCode::TransferBlocked,
        }
    }

    pub fn from_source(rejection: HoldRejection) -> Self {
        match rejection {
            HoldRejection::NotActive { status } => CreateTransferRejection::SourceNotActive { status },
            HoldRejection::CurrencyMismatch { account, amount } => {
                CreateTransferRejection::SourceCurrencyMismatch { account, amount }
            }
            HoldRejection::InsufficientFunds { available, requested } => {
                CreateTransferRejection::InsufficientFunds { available, requested }
            }
            HoldRejection::Overflow => CreateTransferRejection::Overflow,
        }
    }

    pub fn from_destination(rejection: CreditRejection) -> Self {
        match rejection {
            CreditRejection::NotActive { status } => CreateTransferRejection::DestinationNotActive { status },
            CreditRejection::CurrencyMismatch { account, amount } => {
                CreateTransferRejection::DestinationCurrencyMismatch { account, amount }
            }
            CreditRejection::Overflow => CreateTransferRejection::Overflow,
        }
    }
}

/// Why a transfer's status could not change (execute, reject, cancel).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionRejection {
    #[error("transfer not found")]
    NotFound,
    /// Execute or reject asked of a transfer that is not pending.
    #[error("transfer is {status:?}, not pending")]
    NotPending { status: TransferStatus },
    /// Cancel asked of a transfer that is not pending.
    #[error("transfer is {status:?} and cannot be cancelled")]
    NotCancellable { status: TransferStatus },
}

impl TransitionRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            TransitionRejection::NotFound => ErrorCode::NotFound,
            TransitionRejection::NotPending { .. } => ErrorCode::NotPending,
            TransitionRejection::NotCancellable { .. } => ErrorCode::NotCancellable,
        }
    }
}

impl StatusRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            StatusRejection::SystemAccount => ErrorCode::Forbidden,
            StatusRejection::Closed => ErrorCode::Conflict,
            StatusRejection::NotEmpty { .. } | StatusRejection::CreditPromised { .. } => ErrorCode::AccountNotEmpty,
        }
    }
}

impl AccountRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            AccountRejection::Hold(rejection) => CreateTransferRejection::from_source(rejection.clone()).code(),
            AccountRejection::Credit(rejection) => CreateTransferRejection::from_destination(rejection.clone()).code(),
            AccountRejection::Status(rejection) => rejection.code(),
            AccountRejection::NegativeCreditLimit => ErrorCode::ValidationError,
        }
    }
}
