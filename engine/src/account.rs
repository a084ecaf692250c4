//! Accounts: one position in one currency, a status, an owner.
//!
//! An account changes only through `decide` (pure: may this command apply? what event does it
//! make?) followed by `apply` (mutate by the event). The actor calls both; recovery replays
//! `apply` alone over journal records. Keeping them apart lets a panic in `decide` leave the
//! state untouched, and lets replay share the exact arithmetic of live operation.

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::ids::{AccountId, Timestamp, TransferId, UserId};
use crate::money::Overflow;
use crate::position::{FundsRejection, Position};
use crate::rejection::{AccountRejection, CreditRejection, HoldRejection, StatusRejection};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AccountStatus {
    Active,
    /// Frozen by an admin: no new holds or credits. Holds already placed may still be posted
    /// (an admin executes a pending transfer) or released.
    Blocked,
    /// Final. Only an empty account (no balance, no holds) can be closed.
    Closed,
}

impl AccountStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Blocked => "blocked",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "blocked" => Some(AccountStatus::Blocked),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// Who an account belongs to. System accounts are ordinary accounts that stand for money
/// outside Tally (settlement), Tally's revenue (fees), or the two sides of a conversion (FX
/// clearing); they have no funds limit and cannot be blocked or closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AccountKind {
    User,
    Settlement,
    Fees,
    FxClearing,
}

impl AccountKind {
    pub const fn is_system(self) -> bool {
        !matches!(self, AccountKind::User)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Settlement => "settlement",
            AccountKind::Fees => "fees",
            AccountKind::FxClearing => "fx_clearing",
        }
    }

    pub fn parse(text: &str) -> Option<AccountKind> {
        match text {
            "user" => Some(AccountKind::User),
            "settlement" => Some(AccountKind::Settlement),
            "fees" => Some(AccountKind::Fees),
            "fx_clearing" => Some(AccountKind::FxClearing),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StatusAction {
    Block,
    Unblock,
    Close,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// `None` for system accounts.
    pub owner: Option<UserId>,
    pub currency: Currency,
    pub kind: AccountKind,
    pub status: AccountStatus,
    pub position: Position,
    pub created_at: Timestamp,
}

/// What an account actor is asked to do. Every money command names its transfer, which makes
/// it idempotent on (transfer, step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    Hold {
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    },
    Release {
        transfer: TransferId,
    },
    Post {
        transfer: TransferId,
    },
    Credit {
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    },
    /// The first phase of an atomic batch at the destination: promise to accept this credit
    /// (checks as `Credit` would now); the promise holds even if the account is blocked before
    /// the credit arrives.
    AdmitCredit {
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    },
    /// Drops an admission whose credit will not come (its batch was abandoned).
    WithdrawCredit {
        transfer: TransferId,
    },
    SetStatus {
        action: StatusAction,
    },
    SetCreditLimit {
        credit_limit: Decimal,
    },
}

/// What happened to an account: the journal record of one change, replayed by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountEvent {
    Held {
        transfer: TransferId,
        amount: Decimal,
    },
    Released {
        transfer: TransferId,
        amount: Decimal,
    },
    /// The hold became a debit.
    Posted {
        transfer: TransferId,
        amount: Decimal,
    },
    Credited {
        transfer: TransferId,
        amount: Decimal,
        /// The credit an admission promised (an atomic batch's phase 3): it ends that
        /// admission, which a store that keeps admissions then deletes.
        admitted: bool,
    },
    /// A credit was promised (atomic batch, first phase). Moves no money.
    CreditAdmitted {
        transfer: TransferId,
        amount: Decimal,
    },
    /// A promised credit will not come. Moves no money.
    CreditWithdrawn {
        transfer: TransferId,
        amount: Decimal,
    },
    StatusChanged {
        status: AccountStatus,
        /// The account's owner and opening time, unchanged by the event: carried so that the
        /// event's data is the whole account object as it stood (API.md), which the journal
        /// writer renders from the record alone.
        owner: Option<UserId>,
        opened_at: Timestamp,
    },
    CreditLimitChanged {
        credit_limit: Decimal,
    },
}

impl Account {
    /// A new, empty, active account.
    pub fn open(
        id: AccountId,
        owner: Option<UserId>,
        currency: Currency,
        kind: AccountKind,
        credit_limit: Decimal,
        created_at: Timestamp,
    ) -> Account {
        Account {
            id,
            owner,
            currency,
            kind,
            status: AccountStatus::Active,
            position: Position::new(Decimal::ZERO, credit_limit, kind.is_system()),
            created_at,
        }
    }

    pub fn balance(&self) -> Decimal {
        self.position.balance
    }

    pub fn held(&self) -> Decimal {
        self.position.held
    }

    pub fn credit_limit(&self) -> Decimal {
        self.position.credit_limit
    }

    pub fn available(&self) -> Result<Decimal, Overflow> {
        self.position.available()
    }

    /// Decides whether a command applies. `Ok(None)` means it already has (a repeated step):
    /// nothing to apply, and the caller answers success.
    pub fn decide(&self, command: &AccountCommand) -> Result<Option<AccountEvent>, AccountRejection> {
        match command {
            AccountCommand::Hold { transfer, amount, currency } => Ok(self.decide_hold(*transfer, *amount, *currency)?),
            AccountCommand::Release { transfer } => Ok(self
                .position
                .hold_of(*transfer)
                .map(|amount| AccountEvent::Released { transfer: *transfer, amount })),
            AccountCommand::Post { transfer } => {
                Ok(self.position.hold_of(*transfer).map(|amount| AccountEvent::Posted { transfer: *transfer, amount }))
            }
            AccountCommand::Credit { transfer, amount, currency } => {
                Ok(self.decide_credit(*transfer, *amount, *currency)?)
            }
            AccountCommand::AdmitCredit { transfer, amount, currency } => {
                Ok(self.decide_admission(*transfer, *amount, *currency)?)
            }
            AccountCommand::WithdrawCredit { transfer } => Ok(self
                .position
                .admitted_credits_of(*transfer)
                .map(|amount| AccountEvent::CreditWithdrawn { transfer: *transfer, amount })),
            AccountCommand::SetStatus { action } => Ok(self.decide_status(*action)?),
            AccountCommand::SetCreditLimit { credit_limit } => {
                if credit_limit.is_sign_negative() {
                    return Err(AccountRejection::NegativeCreditLimit);
                }
                Ok(Some(AccountEvent::CreditLimitChanged { credit_limit: *credit_limit }))
            }
        }
    }

    pub fn decide_hold(
        &self,
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    ) -> Result<Option<AccountEvent>, HoldRejection> {
        // A repeat of a hold already placed succeeds whatever happened to the account since.
        if self.position.hold_of(transfer).is_some() {
            return Ok(None);
        }
        if self.status != AccountStatus::Active {
            return Err(HoldRejection::NotActive { status: self.status });
        }
        if currency != self.currency {
            return Err(HoldRejection::CurrencyMismatch { account: self.currency, amount: currency });
        }
        match self.position.check_hold(transfer, amount) {
            Ok(true) => Ok(Some(AccountEvent::Held { transfer, amount })),
            Ok(false) => Ok(None),
            Err(FundsRejection::InsufficientFunds { available, requested }) => {
                Err(HoldRejection::InsufficientFunds { available, requested })
            }
            Err(FundsRejection::Overflow) => Err(HoldRejection::Overflow),
        }
    }

    pub fn decide_credit(
        &self,
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    ) -> Result<Option<AccountEvent>, CreditRejection> {
        // Like a hold, a repeat of a credit already applied succeeds whatever happened to the
        // account since: refusing it would make the saga release a source that has paid.
        if self.position.credited_recently(transfer) {
            return Ok(None);
        }
        // An admitted credit was checked when it was admitted and is honoured now, whatever
        // the status became since: the batch that admitted it has already moved on.
        if self.status != AccountStatus::Active && !self.position.credit_admitted(transfer) {
            return Err(CreditRejection::NotActive { status: self.status });
        }
        if currency != self.currency {
            return Err(CreditRejection::CurrencyMismatch { account: self.currency, amount: currency });
        }
        match self.position.check_credit(transfer, amount) {
            Ok(true) => {
                Ok(Some(AccountEvent::Credited { transfer, amount, admitted: self.position.credit_admitted(transfer) }))
            }
            Ok(false) => Ok(None),
            Err(Overflow) => Err(CreditRejection::Overflow),
        }
    }

    /// May this credit be promised? The same checks as a credit, in the same order, plus room
    /// for every credit already promised.
    pub fn decide_admission(
        &self,
        transfer: TransferId,
        amount: Decimal,
        currency: Currency,
    ) -> Result<Option<AccountEvent>, CreditRejection> {
        if self.position.credit_admitted(transfer) {
            return Ok(None);
        }
        if self.status != AccountStatus::Active {
            return Err(CreditRejection::NotActive { status: self.status });
        }
        if currency != self.currency {
            return Err(CreditRejection::CurrencyMismatch { account: self.currency, amount: currency });
        }
        match self.position.check_admission(transfer, amount) {
            Ok(true) => Ok(Some(AccountEvent::CreditAdmitted { transfer, amount })),
            Ok(false) => Ok(None),
            Err(Overflow) => Err(CreditRejection::Overflow),
        }
    }

    pub fn decide_status(&self, action: StatusAction) -> Result<Option<AccountEvent>, StatusRejection> {
        if self.kind.is_system() {
            return Err(StatusRejection::SystemAccount);
        }
        if self.status == AccountStatus::Closed {
            return Err(StatusRejection::Closed);
        }
        let status = match action {
            StatusAction::Block => AccountStatus::Blocked,
            StatusAction::Unblock => AccountStatus::Active,
            StatusAction::Close => {
                if !self.position.balance.is_zero() || self.position.has_holds() {
                    return Err(StatusRejection::NotEmpty { balance: self.position.balance, held: self.position.held });
                }
                // A promised credit is money on its way in: closing would break the promise.
                if self.position.has_admitted_credits() {
                    let promised = self
                        .position
                        .admitted_credits()
                        .try_fold(Decimal::ZERO, |sum, (_, amount)| sum.checked_add(amount))
                        .unwrap_or(Decimal::MAX);
                    return Err(StatusRejection::CreditPromised { promised });
                }
                AccountStatus::Closed
            }
        };
        if status == self.status {
            return Ok(None);
        }
        Ok(Some(AccountEvent::StatusChanged { status, owner: self.owner, opened_at: self.created_at }))
    }

    /// Applies an event `decide` produced (or recovery read back). Infallible in practice:
    /// `decide` checked the arithmetic; an `Overflow` here is a programmer error that the
    /// actor treats as a fault (restart), never as a half-applied change.
    pub fn apply(&mut self, event: &AccountEvent) -> Result<(), Overflow> {
        match event {
            AccountEvent::Held { transfer, amount } => self.position.apply_hold(*transfer, *amount),
            AccountEvent::Released { transfer, .. } => self.position.apply_release(*transfer).map(|_| ()),
            AccountEvent::Posted { transfer, amount } => match self.position.apply_post(*transfer)? {
                Some(_) => Ok(()),
                // Replay of a posting whose hold predates the snapshot being replayed onto.
                None => self.position.apply_debit(*amount),
            },
            AccountEvent::Credited { transfer, amount, .. } => self.position.apply_credit(*transfer, *amount),
            AccountEvent::CreditAdmitted { transfer, amount } => self.position.apply_admission(*transfer, *amount),
            AccountEvent::CreditWithdrawn { transfer, .. } => {
                self.position.apply_withdraw_admission(*transfer).map(|_| ())
            }
            AccountEvent::StatusChanged { status, .. } => {
                self.status = *status;
                Ok(())
            }
            AccountEvent::CreditLimitChanged { credit_limit } => {
                self.position.credit_limit = *credit_limit;
                Ok(())
            }
        }
    }
}

impl AccountEvent {
    pub fn transfer(&self) -> Option<TransferId> {
        match self {
            AccountEvent::Held { transfer, .. }
            | AccountEvent::Released { transfer, .. }
            | AccountEvent::Posted { transfer, .. }
            | AccountEvent::Credited { transfer, .. }
            | AccountEvent::CreditAdmitted { transfer, .. }
            | AccountEvent::CreditWithdrawn { transfer, .. } => Some(*transfer),
            AccountEvent::StatusChanged { .. } | AccountEvent::CreditLimitChanged { .. } => None,
        }
    }
}
