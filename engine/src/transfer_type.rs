//! Transfer-type settings: enabled, execution mode, amount limits.

use rust_decimal::Decimal;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExecutionMode {
    /// The saga runs to the end at once.
    Auto,
    /// The saga stops after the hold as `pending` and waits for an admin to execute it.
    Manual,
}

impl ExecutionMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Auto => "auto",
            ExecutionMode::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutionMode> {
        match text {
            "auto" => Some(ExecutionMode::Auto),
            "manual" => Some(ExecutionMode::Manual),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferTypeSettings {
    pub enabled: bool,
    pub execution_mode: ExecutionMode,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    /// Seconds a transfer of this type may wait `pending` before it ends `expired`, unless
    /// the transfer names its own `pending_expires_in`; `None`: it waits for a decision.
    pub pending_timeout_secs: Option<u32>,
}

/// The bounds of a pending transfer's time to expiry, its own or its type's (API.md 1.1):
/// at least a minute (a shorter one would expire before an admin could open the queue), at
/// most 30 days (a hold longer than a card network's would tie up a customer's money).
pub const PENDING_EXPIRY_SECS_MIN: u32 = 60;
pub const PENDING_EXPIRY_SECS_MAX: u32 = 2_592_000;

impl TransferTypeSettings {
    /// Internal transfers: on, automatic, no limits beyond the currency's maximum.
    pub fn internal_default() -> Self {
        TransferTypeSettings {
            enabled: true,
            execution_mode: ExecutionMode::Auto,
            min_amount: None,
            max_amount: None,
            pending_timeout_secs: None,
        }
    }

    /// External transfers leave Tally, so by default an admin reviews each one (API.md).
    pub fn external_default() -> Self {
        TransferTypeSettings {
            enabled: true,
            execution_mode: ExecutionMode::Manual,
            min_amount: None,
            max_amount: None,
            pending_timeout_secs: None,
        }
    }

    /// Admin adjustments: always on, always automatic.
    pub fn adjustment_default() -> Self {
        Self::internal_default()
    }

    pub fn allows_amount(&self, amount: Decimal) -> bool {
        self.min_amount.is_none_or(|min| amount >= min) && self.max_amount.is_none_or(|max| amount <= max)
    }
}

/// Most decimals of a type's amount limit. The limits are compared with amounts of every
/// currency, so they allow the finest scale any currency has (ETH: 18).
pub const LIMIT_SCALE_MAX: u32 = 18;

impl TransferTypeSettings {
    /// Checks an admin's limits: each positive with at most `LIMIT_SCALE_MAX` decimals, and
    /// `min_amount <= max_amount`. Returns the field at fault and why.
    pub fn validate_limits(&self) -> Result<(), (&'static str, &'static str)> {
        for (field, limit) in [("min_amount", self.min_amount), ("max_amount", self.max_amount)] {
            if let Some(limit) = limit {
                if limit.is_sign_negative() || limit.is_zero() {
                    return Err((field, "must be greater than zero"));
                }
                if limit.normalize().scale() > LIMIT_SCALE_MAX {
                    return Err((field, "allows at most 18 decimals"));
                }
            }
        }
        if let (Some(min), Some(max)) = (self.min_amount, self.max_amount)
            && min > max
        {
            return Err(("min_amount", "must not exceed max_amount"));
        }
        Ok(())
    }
}
