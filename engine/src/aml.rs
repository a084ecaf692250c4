//! Anti-money-laundering rules, evaluated purely: a rule set, a transfer's facts, the source
//! account's recent transfers and the time come in; a decision comes out.
//!
//! Two kinds of rule:
//! - **threshold**: matches a transfer whose amount is at least `amount` in `currency`
//!   (optionally only transfers of one type);
//! - **velocity**: matches when the source account's transfers in `currency` within the last
//!   `window_seconds`, this one included, number more than `max_count` or sum to more than
//!   `max_amount`.
//!
//! Every matched rule raises a flag; the most severe matched action decides what happens to
//! the transfer: `block` > `review` > `flag`. The engine holds no clock: the caller passes
//! `now`, and the velocity window is data (`VelocityWindow`) the caller keeps.

use std::collections::VecDeque;

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::ids::{AccountId, Timestamp, TransferId, UserId};
use crate::money::{self, AmountError, validate_amount};
use crate::transfer::TransferKind;

/// The longest velocity window: 30 days. Longer looks-backs are a reporting job, not a check
/// on every transfer, and the window's memory grows with it.
pub const VELOCITY_WINDOW_SECONDS_MAX: u32 = 30 * 24 * 3600;

/// The most entries a velocity window keeps per account. Past it the oldest entry is merged
/// into the next one of its currency (`VelocityWindow::note`), so the window still counts and
/// sums every transfer it saw, each merged one for a little longer than its own time: the
/// bound costs precision towards counting too much, never a transfer forgotten (a sum rule
/// could otherwise be passed by splitting into more pieces than the window keeps).
pub const VELOCITY_ENTRIES_MAX: usize = 1_024;

/// Rules at most: each transfer walks them all, so the set stays small (a rule book, not a
/// blocklist).
pub const AML_RULES_MAX: usize = 256;

/// What a matched rule does to a transfer, least severe first (the order is the severity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AmlAction {
    /// The transfer proceeds; a flag is raised for an analyst.
    Flag,
    /// The transfer is held and waits `pending` (`aml_review`) for an admin.
    Review,
    /// The transfer is refused (`TRANSFER_BLOCKED`); no money moves.
    Block,
}

impl AmlAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            AmlAction::Flag => "flag",
            AmlAction::Review => "review",
            AmlAction::Block => "block",
        }
    }

    pub fn parse(text: &str) -> Option<AmlAction> {
        match text {
            "flag" => Some(AmlAction::Flag),
            "review" => Some(AmlAction::Review),
            "block" => Some(AmlAction::Block),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdRule {
    pub amount: Decimal,
    pub currency: Currency,
    /// Only transfers of this type; `None`: every screened type.
    pub transfer_kind: Option<TransferKind>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VelocityRule {
    pub window_seconds: u32,
    pub max_count: Option<u32>,
    pub max_amount: Option<Decimal>,
    pub currency: Currency,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmlRuleKind {
    Threshold(ThresholdRule),
    Velocity(VelocityRule),
}

impl AmlRuleKind {
    pub const fn as_str(&self) -> &'static str {
        match self {
            AmlRuleKind::Threshold(_) => "threshold",
            AmlRuleKind::Velocity(_) => "velocity",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmlRule {
    pub id: uuid::Uuid,
    pub name: String,
    pub kind: AmlRuleKind,
    pub action: AmlAction,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why a rule's configuration is refused, one reason each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleConfigError {
    #[error("amount: {0}")]
    Amount(AmountError),
    #[error("max_amount: {0}")]
    MaxAmount(AmountError),
    #[error("window_seconds must be from 1 to {VELOCITY_WINDOW_SECONDS_MAX}")]
    WindowSeconds,
    #[error("max_count must be from 1 to {VELOCITY_ENTRIES_MAX}")]
    MaxCount,
    #[error("a velocity rule needs max_count, max_amount or both")]
    NoLimit,
    #[error("transfer_type must be internal or external")]
    TransferType,
}

impl ThresholdRule {
    /// A threshold rule with its amount checked at the currency's scale (positive, not more
    /// decimals than the currency has, within its maximum).
    pub fn new(
        amount: Decimal,
        currency: Currency,
        transfer_kind: Option<TransferKind>,
    ) -> Result<ThresholdRule, RuleConfigError> {
        let amount = validate_amount(amount, currency).map_err(RuleConfigError::Amount)?;
        if matches!(transfer_kind, Some(TransferKind::AdminCredit | TransferKind::AdminDebit)) {
            return Err(RuleConfigError::TransferType);
        }
        Ok(ThresholdRule { amount, currency, transfer_kind })
    }
}

impl VelocityRule {
    pub fn new(
        window_seconds: u32,
        max_count: Option<u32>,
        max_amount: Option<Decimal>,
        currency: Currency,
    ) -> Result<VelocityRule, RuleConfigError> {
        if window_seconds == 0 || window_seconds > VELOCITY_WINDOW_SECONDS_MAX {
            return Err(RuleConfigError::WindowSeconds);
        }
        if max_count.is_none() && max_amount.is_none() {
            return Err(RuleConfigError::NoLimit);
        }
        if let Some(count) = max_count
            && (count == 0 || count as usize > VELOCITY_ENTRIES_MAX)
        {
            return Err(RuleConfigError::MaxCount);
        }
        let max_amount = max_amount
            .map(|amount| validate_amount(amount, currency).map_err(RuleConfigError::MaxAmount))
            .transpose()?;
        Ok(VelocityRule { window_seconds, max_count, max_amount, currency })
    }
}

/// Whether a transfer kind is screened. Admin adjustments are not: they are the bank's own
/// bookings against its settlement account, made by an admin who is the reviewer.
pub const fn is_screened(kind: TransferKind) -> bool {
    matches!(kind, TransferKind::Internal | TransferKind::External)
}

/// The facts of a transfer the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmlSubject {
    pub kind: TransferKind,
    pub amount: Decimal,
    pub currency: Currency,
    pub at: Timestamp,
}

/// One source account's recent screened transfers, oldest first, in at most
/// `VELOCITY_ENTRIES_MAX` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VelocityWindow {
    entries: VecDeque<VelocityEntry>,
}

/// Transfers in one currency, counted as made at `at`: one transfer, or several merged when
/// the window was full (then `at` is the newest of their times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VelocityEntry {
    at: Timestamp,
    currency: Currency,
    amount: Decimal,
    count: u64,
}

impl VelocityWindow {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remembers a transfer, forgetting what is older than `keep_seconds` before it. Past the
    /// bound an old entry is merged into the next entry of its currency (or into this
    /// transfer's): counted from that entry's later time, it stays in the window a little
    /// longer than it would have, which errs towards a rule firing, never away from it.
    pub fn note(&mut self, subject: &AmlSubject, keep_seconds: u32) {
        let horizon = window_start(subject.at, keep_seconds);
        while self.entries.front().is_some_and(|entry| entry.at < horizon) {
            self.entries.pop_front();
        }
        let mut noted = VelocityEntry { at: subject.at, currency: subject.currency, amount: subject.amount, count: 1 };
        while self.entries.len() >= VELOCITY_ENTRIES_MAX {
            // The oldest entry that has a later one of its currency (this transfer included)
            // goes into that one. There always is such an entry: there are far fewer
            // currencies than entries.
            let merge = (0..self.entries.len()).find_map(|index| {
                let currency = self.entries[index].currency;
                let later = self.entries.iter().skip(index + 1).position(|entry| entry.currency == currency);
                match later {
                    Some(offset) => Some((index, Some(index + offset))),
                    None => (noted.currency == currency).then_some((index, None)),
                }
            });
            let Some((index, target)) = merge else {
                self.entries.pop_front();
                continue;
            };
            let Some(merged) = self.entries.remove(index) else { break };
            // `target` is the later entry's index once `index` is removed.
            let into = match target.and_then(|later| self.entries.get_mut(later)) {
                Some(entry) => entry,
                None => &mut noted,
            };
            into.amount = money::add(into.amount, merged.amount).unwrap_or(Decimal::MAX);
            into.count = into.count.saturating_add(merged.count);
        }
        self.entries.push_back(noted);
    }

    /// Forgets the oldest remembered transfer of `amount` in `currency` noted at or after
    /// `since` (a transfer that was screened and then refused for a reason of the engine's, not
    /// the customer's); true if there was one. Two such transfers count and sum alike, but not
    /// for as long: if the one that goes is not the refused one, the oldest going leaves a newer
    /// entry that stays in the window longer, so the window errs towards counting too much
    /// rather than too little.
    pub fn forget(&mut self, currency: Currency, amount: Decimal, since: Timestamp) -> bool {
        // A merged entry is left alone: it stands for several transfers.
        let oldest = self.entries.iter().position(|entry| {
            entry.count == 1 && entry.currency == currency && entry.amount == amount && entry.at >= since
        });
        oldest.and_then(|index| self.entries.remove(index)).is_some()
    }

    /// The number and sum of remembered transfers in `currency` at or after `since`.
    fn count_and_sum(&self, currency: Currency, since: Timestamp) -> (u64, Decimal) {
        self.entries.iter().filter(|entry| entry.currency == currency && entry.at >= since).fold(
            (0, Decimal::ZERO),
            |(count, sum), entry| {
                // Every amount is within its currency's maximum and the window is bounded, so
                // the sum stays far inside Decimal; saturate rather than fail a screening.
                (count.saturating_add(entry.count), money::add(sum, entry.amount).unwrap_or(Decimal::MAX))
            },
        )
    }
}

fn window_start(at: Timestamp, seconds: u32) -> Timestamp {
    Timestamp::from_micros(at.as_micros().saturating_sub(i64::from(seconds).saturating_mul(1_000_000)))
}

/// A rule that matched, as the flag it raises will name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRule {
    pub rule_id: uuid::Uuid,
    pub rule_name: String,
    pub action: AmlAction,
}

/// The outcome of screening one transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AmlDecision {
    /// The most severe action among the matched rules; `None`: nothing matched.
    pub action: Option<AmlAction>,
    /// Every matched rule, in the rule set's order: each raises a flag.
    pub matched: Vec<MatchedRule>,
}

/// Screens `subject` against the enabled `rules`, with `window` the source account's earlier
/// transfers (this one not yet in it).
pub fn evaluate(rules: &[AmlRule], subject: &AmlSubject, window: &VelocityWindow) -> AmlDecision {
    let mut decision = AmlDecision::default();
    if !is_screened(subject.kind) {
        return decision;
    }
    for rule in rules.iter().filter(|rule| rule.enabled) {
        if matches(rule, subject, window) {
            decision.action = decision.action.max(Some(rule.action));
            decision.matched.push(MatchedRule { rule_id: rule.id, rule_name: rule.name.clone(), action: rule.action });
        }
    }
    decision
}

fn matches(rule: &AmlRule, subject: &AmlSubject, window: &VelocityWindow) -> bool {
    match &rule.kind {
        AmlRuleKind::Threshold(threshold) => {
            threshold.currency == subject.currency
                && threshold.transfer_kind.is_none_or(|kind| kind == subject.kind)
                && subject.amount >= threshold.amount
        }
        AmlRuleKind::Velocity(velocity) => {
            if velocity.currency != subject.currency {
                return false;
            }
            let (count, sum) =
                window.count_and_sum(subject.currency, window_start(subject.at, velocity.window_seconds));
            let count = count + 1;
            let sum = money::add(sum, subject.amount).unwrap_or(Decimal::MAX);
            velocity.max_count.is_some_and(|max| count > u64::from(max))
                || velocity.max_amount.is_some_and(|max| sum > max)
        }
    }
}

/// The longest window among the enabled velocity rules: how long a window must remember.
/// `None`: no velocity rule is enabled, and nothing needs remembering.
pub fn velocity_horizon_seconds(rules: &[AmlRule]) -> Option<u32> {
    rules
        .iter()
        .filter(|rule| rule.enabled)
        .filter_map(|rule| match &rule.kind {
            AmlRuleKind::Velocity(velocity) => Some(velocity.window_seconds),
            AmlRuleKind::Threshold(_) => None,
        })
        .max()
}

/// A flag's review state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagStatus {
    Open,
    Cleared,
    FalsePositive,
}

impl FlagStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Open => "open",
            FlagStatus::Cleared => "cleared",
            FlagStatus::FalsePositive => "false_positive",
        }
    }

    pub fn parse(text: &str) -> Option<FlagStatus> {
        match text {
            "open" => Some(FlagStatus::Open),
            "cleared" => Some(FlagStatus::Cleared),
            "false_positive" => Some(FlagStatus::FalsePositive),
            _ => None,
        }
    }
}

/// A flag: one matched rule on one transfer. Raised `open`; an analyst resolves it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmlFlag {
    pub id: uuid::Uuid,
    pub transfer: TransferId,
    pub account: AccountId,
    pub user: Option<UserId>,
    pub rule_id: uuid::Uuid,
    pub rule_name: String,
    pub action: AmlAction,
    pub status: FlagStatus,
    pub notes: Option<String>,
    pub amount: Decimal,
    pub currency: Currency,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<UserId>,
}

impl AmlFlag {
    /// The open flag `matched` raises on a transfer of `account`.
    pub fn raise(
        id: uuid::Uuid,
        transfer: TransferId,
        account: AccountId,
        user: Option<UserId>,
        subject: &AmlSubject,
        matched: &MatchedRule,
    ) -> AmlFlag {
        AmlFlag {
            id,
            transfer,
            account,
            user,
            rule_id: matched.rule_id,
            rule_name: matched.rule_name.clone(),
            action: matched.action,
            status: FlagStatus::Open,
            notes: None,
            amount: subject.amount,
            currency: subject.currency,
            created_at: subject.at,
            resolved_at: None,
            resolved_by: None,
        }
    }
}
