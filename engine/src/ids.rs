//! Typed ids and time. Ids are UUIDs made by the caller; the engine never generates one.

use std::fmt;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An account: one balance in one currency.
    AccountId
);
id_type!(
    /// A multi-asset wallet.
    WalletId
);
id_type!(
    /// A transfer, and so the saga that carries it out.
    TransferId
);
id_type!(
    /// A person or machine client that owns accounts.
    UserId
);

/// Microseconds since the Unix epoch, UTC. The engine never reads a clock: callers pass time in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(&self) -> i64 {
        self.0
    }
}
