//! What an actor-owned entity must offer so that one generic actor, registry and supervisor
//! serve both accounts and wallets: a pure `decide`, an infallible-in-practice `apply`, the
//! journal record of an event, and how to load it back.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tally_engine::money::Overflow;
use tally_engine::wallet::WalletRejection;
use tally_engine::{
    Account, AccountCommand, AccountEvent, AccountId, AccountRejection, ErrorCode, Record, Wallet, WalletCommand,
    WalletEvent, WalletId,
};
use tally_persistence::{Journals, Loaded, Store, StoreError};

/// The kinds of actor Tally runs, as health and metrics name them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ActorKind {
    Account,
    Wallet,
    Session,
    TransferSaga,
}

impl ActorKind {
    pub const ALL: [ActorKind; 4] =
        [ActorKind::Account, ActorKind::Wallet, ActorKind::Session, ActorKind::TransferSaga];

    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::Account => "account",
            ActorKind::Wallet => "wallet",
            ActorKind::Session => "session",
            ActorKind::TransferSaga => "transfer_saga",
        }
    }

    pub const fn index(self) -> usize {
        match self {
            ActorKind::Account => 0,
            ActorKind::Wallet => 1,
            ActorKind::Session => 2,
            ActorKind::TransferSaga => 3,
        }
    }
}

pub trait Entity: Clone + Send + Unpin + 'static {
    type Id: Copy + Eq + Hash + Send + Sync + Unpin + fmt::Display + fmt::Debug + 'static;
    type Command: Clone + Send + Unpin + fmt::Debug + 'static;
    type Event: Clone + Send + 'static;
    type Rejection: Clone + Send + fmt::Debug + 'static;

    const KIND: ActorKind;

    fn id(&self) -> Self::Id;

    /// The id's 128 bits, which place the entity on a shard (`runtime::Placement`).
    fn id_bits(id: Self::Id) -> u128;

    /// Pure: may the command apply, and what event does it make? `Ok(None)`: it already has.
    fn decide(&self, command: &Self::Command) -> Result<Option<Self::Event>, Self::Rejection>;

    fn apply(&mut self, event: &Self::Event) -> Result<(), Overflow>;

    /// The journal record of an event this entity has just applied (so `self` is the state
    /// after it, which the record carries as the snapshot).
    fn record(&self, event: Self::Event) -> Record;

    /// Whether a quarantined actor still runs this command. Posting or releasing a hold
    /// finishes work that was admitted before the quarantine, and a saga must be able to end.
    fn finishes_admitted_work(command: &Self::Command) -> bool;

    /// Reads the entity from the store, with whatever of it the journals keep back from the
    /// store (an account's kept holds: `Journals::kept_holds_of`).
    fn load(
        store: &Arc<dyn Store>,
        journals: &Journals,
        id: Self::Id,
    ) -> impl Future<Output = Result<Option<Loaded<Self>>, StoreError>> + Send;

    fn rejection_code(rejection: &Self::Rejection) -> ErrorCode;
}

impl Entity for Account {
    type Id = AccountId;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    const KIND: ActorKind = ActorKind::Account;

    fn id(&self) -> AccountId {
        self.id
    }

    fn id_bits(id: AccountId) -> u128 {
        id.as_uuid().as_u128()
    }

    fn decide(&self, command: &AccountCommand) -> Result<Option<AccountEvent>, AccountRejection> {
        Account::decide(self, command)
    }

    fn apply(&mut self, event: &AccountEvent) -> Result<(), Overflow> {
        Account::apply(self, event)
    }

    fn record(&self, event: AccountEvent) -> Record {
        Record::Account { account: self.id, currency: self.currency, event, after: self.snapshot() }
    }

    fn finishes_admitted_work(command: &AccountCommand) -> bool {
        matches!(
            command,
            AccountCommand::Post { .. } | AccountCommand::Release { .. } | AccountCommand::WithdrawCredit { .. }
        )
    }

    fn load(
        store: &Arc<dyn Store>,
        journals: &Journals,
        id: AccountId,
    ) -> impl Future<Output = Result<Option<Loaded<Account>>, StoreError>> + Send {
        // The kept holds first, then the store: a hold leaves the journals' list only once
        // the store has its row, so one of the two reads sees it.
        let kept = journals.kept_holds_of(id);
        let store = Arc::clone(store);
        async move {
            let Some(mut loaded) = store.load_account(id).await? else { return Ok(None) };
            for (transfer, amount) in kept {
                if loaded.value.position.hold_of(transfer).is_none() {
                    loaded
                        .value
                        .position
                        .restore_hold(transfer, amount)
                        .map_err(|_| StoreError::Corrupt(format!("account {id}: kept holds overflow")))?;
                }
            }
            Ok(Some(loaded))
        }
    }

    fn rejection_code(rejection: &AccountRejection) -> ErrorCode {
        rejection.code()
    }
}

impl Entity for Wallet {
    type Id = WalletId;
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Rejection = WalletRejection;

    const KIND: ActorKind = ActorKind::Wallet;

    fn id(&self) -> WalletId {
        self.id
    }

    fn id_bits(id: WalletId) -> u128 {
        id.as_uuid().as_u128()
    }

    fn decide(&self, command: &WalletCommand) -> Result<Option<WalletEvent>, WalletRejection> {
        Wallet::decide(self, command)
    }

    fn apply(&mut self, event: &WalletEvent) -> Result<(), Overflow> {
        Wallet::apply(self, event)
    }

    fn record(&self, event: WalletEvent) -> Record {
        let after = self.snapshot(event.asset());
        Record::Wallet { wallet: self.id, event, after }
    }

    fn finishes_admitted_work(command: &WalletCommand) -> bool {
        matches!(command, WalletCommand::Post { .. } | WalletCommand::Release { .. })
    }

    fn load(
        store: &Arc<dyn Store>,
        _journals: &Journals,
        id: WalletId,
    ) -> impl Future<Output = Result<Option<Loaded<Wallet>>, StoreError>> + Send {
        let store = Arc::clone(store);
        async move { store.load_wallet(id).await }
    }

    fn rejection_code(rejection: &WalletRejection) -> ErrorCode {
        match rejection {
            WalletRejection::Hold(hold) => AccountRejection::Hold(hold.clone()).code(),
            WalletRejection::Credit(credit) => AccountRejection::Credit(credit.clone()).code(),
            WalletRejection::Status(status) => status.code(),
        }
    }
}
