//! A position: one balance in one currency or asset, with its holds. Accounts have one;
//! wallets have one per asset. All balance arithmetic of Tally lives here.
//!
//! `available = balance - held + credit_limit`. A hold or a debit that would make `available`
//! negative is refused, unless the position is `unlimited` (the system accounts, which stand
//! for money outside Tally and may go negative without bound).

use std::collections::{BTreeMap, VecDeque};

use rust_decimal::Decimal;

use crate::ids::TransferId;
use crate::money::{self, Overflow};

/// How many recent credits a position remembers to drop an exact repeat of a credit step.
/// Repeats arrive only when a saga retries a step whose reply it lost, which happens right
/// after an actor restart; a short window covers that at 16 bytes a slot. The saga's durable
/// step record is the guarantee beyond this window (see ARCHITECTURE.md, "Idempotent steps").
pub const RECENT_CREDITS_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Position {
    pub balance: Decimal,
    pub held: Decimal,
    pub credit_limit: Decimal,
    /// How many times the balance has changed: the number of the last posting, so postings
    /// of one position are numbered 1, 2, 3, … in the order they were applied. It orders an
    /// account's history (statements, balances after) and tells a store which postings a
    /// balance snapshot already includes.
    pub version: u64,
    /// System accounts: no funds check.
    pub unlimited: bool,
    /// Holds, recent credits and admitted credits: what only a position with work in flight
    /// has. Boxed, and dropped whenever all three are empty, so an idle position carries one
    /// pointer for them instead of ~100 bytes of empty collections. That is what brings an
    /// idle account actor's tokio task down a 128-byte size class (DESIGN.md §9's idle-actor
    /// budget; `benches/benches/actor_memory.rs`). `None` exactly when empty (`tidy`), so the
    /// derived equality still compares contents.
    work: Option<Box<InFlight>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct InFlight {
    /// Live holds by transfer. A `BTreeMap` (not `HashMap`) so that iteration is deterministic
    /// and an empty map costs no allocation and no random seed.
    holds: BTreeMap<TransferId, Decimal>,
    recent_credits: VecDeque<TransferId>,
    /// Credits this position promised to accept (the first phase of an atomic batch): a
    /// credit admitted here is applied later even if the account was blocked in between.
    /// Stored like holds (the SQL stores' `credit_admissions`, read back by `restore_admission`),
    /// so an account loaded again between a batch's phases, or after a crash, still keeps its
    /// promise. Bounded by the engine's sagas in flight (one admission per admitted saga).
    admitted_credits: BTreeMap<TransferId, Decimal>,
    /// The sum of `admitted_credits`, so an admission can check the balance stays in range
    /// once every admitted credit has landed.
    admitted_total: Decimal,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.holds.is_empty() && self.recent_credits.is_empty() && self.admitted_credits.is_empty()
    }
}

/// Why a position refused a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FundsRejection {
    InsufficientFunds { available: Decimal, requested: Decimal },
    Overflow,
}

impl From<Overflow> for FundsRejection {
    fn from(_: Overflow) -> Self {
        FundsRejection::Overflow
    }
}

impl Position {
    fn work(&self) -> Option<&InFlight> {
        self.work.as_deref()
    }

    fn work_mut(&mut self) -> &mut InFlight {
        self.work.get_or_insert_with(Box::default)
    }

    /// The totals kept beside the maps are their sums: `held` of the live holds, and the
    /// admitted total of the admitted credits. Funds checks read the totals, so a drift would
    /// let money be spent twice or refused wrongly; debug builds (every test) check both after
    /// each change.
    fn debug_check_totals(&self) {
        if cfg!(debug_assertions) {
            let holds = self.holds().try_fold(Decimal::ZERO, |sum, (_, amount)| sum.checked_add(amount));
            debug_assert_eq!(holds, Some(self.held), "held is the sum of the live holds");
            if let Some(work) = self.work() {
                let admitted =
                    work.admitted_credits.values().try_fold(Decimal::ZERO, |sum, amount| sum.checked_add(*amount));
                debug_assert_eq!(
                    admitted,
                    Some(work.admitted_total),
                    "the admitted total is the sum of the admitted credits"
                );
            }
        }
    }

    /// Drops the in-flight part once it holds nothing.
    fn tidy(&mut self) {
        if self.work.as_ref().is_some_and(|work| work.is_empty()) {
            self.work = None;
        }
    }

    fn has_hold(&self, transfer: TransferId) -> bool {
        self.work().is_some_and(|work| work.holds.contains_key(&transfer))
    }

    fn has_recent_credit(&self, transfer: TransferId) -> bool {
        self.work().is_some_and(|work| work.recent_credits.contains(&transfer))
    }

    pub fn new(balance: Decimal, credit_limit: Decimal, unlimited: bool) -> Self {
        Position { balance, held: Decimal::ZERO, credit_limit, unlimited, ..Position::default() }
    }

    pub fn available(&self) -> Result<Decimal, Overflow> {
        money::add(money::sub(self.balance, self.held)?, self.credit_limit)
    }

    pub fn holds(&self) -> impl Iterator<Item = (TransferId, Decimal)> + '_ {
        self.work().into_iter().flat_map(|work| work.holds.iter()).map(|(transfer, amount)| (*transfer, *amount))
    }

    pub fn hold_of(&self, transfer: TransferId) -> Option<Decimal> {
        self.work().and_then(|work| work.holds.get(&transfer)).copied()
    }

    pub fn has_holds(&self) -> bool {
        self.work().is_some_and(|work| !work.holds.is_empty())
    }

    /// `Ok(true)`: the hold may be placed. `Ok(false)`: it is already placed (a repeat).
    pub fn check_hold(&self, transfer: TransferId, amount: Decimal) -> Result<bool, FundsRejection> {
        if self.has_hold(transfer) {
            return Ok(false);
        }
        if !self.unlimited {
            let available = self.available()?;
            if amount > available {
                return Err(FundsRejection::InsufficientFunds { available, requested: amount });
            }
        }
        // Overflow comes after the funds check (the declared order of `HoldRejection`): the held
        // total must fit, and the hold must also be postable later without overflow.
        money::add(self.held, amount)?;
        money::sub(self.balance, amount)?;
        Ok(true)
    }

    pub fn apply_hold(&mut self, transfer: TransferId, amount: Decimal) -> Result<(), Overflow> {
        if self.has_hold(transfer) {
            return Ok(());
        }
        self.held = money::add(self.held, amount)?;
        self.work_mut().holds.insert(transfer, amount);
        self.debug_check_totals();
        Ok(())
    }

    /// Drops the hold. Returns the amount released, or `None` if there was none (a repeat).
    pub fn apply_release(&mut self, transfer: TransferId) -> Result<Option<Decimal>, Overflow> {
        let Some(amount) = self.hold_of(transfer) else { return Ok(None) };
        self.held = money::sub(self.held, amount)?;
        self.work_mut().holds.remove(&transfer);
        self.tidy();
        self.debug_check_totals();
        Ok(Some(amount))
    }

    /// Turns the hold into a debit. Returns the amount debited, or `None` if there was no hold
    /// (already posted: a repeat).
    pub fn apply_post(&mut self, transfer: TransferId) -> Result<Option<Decimal>, Overflow> {
        let Some(amount) = self.hold_of(transfer) else { return Ok(None) };
        let held = money::sub(self.held, amount)?;
        let balance = money::sub(self.balance, amount)?;
        self.held = held;
        self.balance = balance;
        self.version += 1;
        self.work_mut().holds.remove(&transfer);
        self.tidy();
        self.debug_check_totals();
        Ok(Some(amount))
    }

    /// Whether this transfer's credit was applied recently (a repeated step).
    pub fn credited_recently(&self, transfer: TransferId) -> bool {
        self.has_recent_credit(transfer)
    }

    /// `Ok(true)`: the credit may be applied. `Ok(false)`: a recent repeat.
    pub fn check_credit(&self, transfer: TransferId, amount: Decimal) -> Result<bool, Overflow> {
        if self.has_recent_credit(transfer) {
            return Ok(false);
        }
        money::add(self.balance, amount)?;
        Ok(true)
    }

    pub fn apply_credit(&mut self, transfer: TransferId, amount: Decimal) -> Result<(), Overflow> {
        if self.has_recent_credit(transfer) {
            return Ok(());
        }
        self.balance = money::add(self.balance, amount)?;
        self.version += 1;
        // The admitted credit has landed: the promise is kept and no longer outstanding.
        self.apply_withdraw_admission(transfer)?;
        let recent = &mut self.work_mut().recent_credits;
        if recent.len() == RECENT_CREDITS_MAX {
            recent.pop_front();
        }
        recent.push_back(transfer);
        Ok(())
    }

    /// Whether this transfer's credit was admitted and has not landed or been withdrawn.
    pub fn credit_admitted(&self, transfer: TransferId) -> bool {
        self.work().is_some_and(|work| work.admitted_credits.contains_key(&transfer))
    }

    pub fn admitted_credits_of(&self, transfer: TransferId) -> Option<Decimal> {
        self.work().and_then(|work| work.admitted_credits.get(&transfer)).copied()
    }

    /// The admitted credits that have not landed, by transfer.
    pub fn admitted_credits(&self) -> impl Iterator<Item = (TransferId, Decimal)> + '_ {
        self.work()
            .into_iter()
            .flat_map(|work| work.admitted_credits.iter())
            .map(|(transfer, amount)| (*transfer, *amount))
    }

    pub fn has_admitted_credits(&self) -> bool {
        self.work().is_some_and(|work| !work.admitted_credits.is_empty())
    }

    /// `Ok(true)`: the credit may be admitted (the balance stays in range with every admitted
    /// credit landed). `Ok(false)`: it already is (a repeat).
    pub fn check_admission(&self, transfer: TransferId, amount: Decimal) -> Result<bool, Overflow> {
        if self.credit_admitted(transfer) {
            return Ok(false);
        }
        let admitted_total = self.work().map_or(Decimal::ZERO, |work| work.admitted_total);
        money::add(money::add(self.balance, admitted_total)?, amount)?;
        Ok(true)
    }

    pub fn apply_admission(&mut self, transfer: TransferId, amount: Decimal) -> Result<(), Overflow> {
        if self.credit_admitted(transfer) {
            return Ok(());
        }
        let admitted_total = money::add(self.work().map_or(Decimal::ZERO, |work| work.admitted_total), amount)?;
        let work = self.work_mut();
        work.admitted_total = admitted_total;
        work.admitted_credits.insert(transfer, amount);
        self.debug_check_totals();
        Ok(())
    }

    /// Drops an admission (its credit landed, or its batch was abandoned). Returns the amount
    /// it promised, or `None` if there was none.
    pub fn apply_withdraw_admission(&mut self, transfer: TransferId) -> Result<Option<Decimal>, Overflow> {
        let Some(amount) = self.admitted_credits_of(transfer) else { return Ok(None) };
        let work = self.work_mut();
        work.admitted_total = money::sub(work.admitted_total, amount)?;
        work.admitted_credits.remove(&transfer);
        self.tidy();
        self.debug_check_totals();
        Ok(Some(amount))
    }

    /// A direct debit without a hold, for replaying a posting whose hold is not in memory.
    pub fn apply_debit(&mut self, amount: Decimal) -> Result<(), Overflow> {
        self.balance = money::sub(self.balance, amount)?;
        self.version += 1;
        Ok(())
    }

    /// Restores a hold read back from a store, without funds checks.
    pub fn restore_hold(&mut self, transfer: TransferId, amount: Decimal) -> Result<(), Overflow> {
        self.apply_hold(transfer, amount)
    }

    /// Restores an admission read back from a store.
    pub fn restore_admission(&mut self, transfer: TransferId, amount: Decimal) -> Result<(), Overflow> {
        self.apply_admission(transfer, amount)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn transfer(n: u128) -> TransferId {
        TransferId::from_u128(n)
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "held is the sum of the live holds")]
    fn a_held_total_that_drifted_from_its_holds_is_caught_in_debug_builds() {
        let mut position = Position::new(dec!(100), dec!(0), false);
        position.held = dec!(1);
        let _ = position.apply_hold(transfer(1), dec!(10));
    }

    #[test]
    fn hold_then_post_moves_the_held_amount_to_a_debit() {
        let mut position = Position::new(dec!(100), dec!(0), false);
        assert_eq!(position.check_hold(transfer(1), dec!(30)), Ok(true));
        position.apply_hold(transfer(1), dec!(30)).unwrap();
        assert_eq!(position.available(), Ok(dec!(70)));
        assert_eq!(position.apply_post(transfer(1)), Ok(Some(dec!(30))));
        assert_eq!((position.balance, position.held), (dec!(70), dec!(0)));
        assert_eq!(position.apply_post(transfer(1)), Ok(None), "a repeated post changes nothing");
        assert_eq!(position.balance, dec!(70));
        assert_eq!(position.version, 1, "one posting: the hold moved no balance");
    }

    #[test]
    fn hold_beyond_available_is_refused_but_credit_limit_counts() {
        let position = Position::new(dec!(10), dec!(5), false);
        assert_eq!(position.check_hold(transfer(1), dec!(15)), Ok(true));
        assert_eq!(
            position.check_hold(transfer(1), dec!(15.01)),
            Err(FundsRejection::InsufficientFunds { available: dec!(15), requested: dec!(15.01) })
        );
    }

    #[test]
    fn unlimited_positions_may_go_negative() {
        let mut position = Position::new(dec!(0), dec!(0), true);
        assert_eq!(position.check_hold(transfer(1), dec!(1000)), Ok(true));
        position.apply_hold(transfer(1), dec!(1000)).unwrap();
        position.apply_post(transfer(1)).unwrap();
        assert_eq!(position.balance, dec!(-1000));
    }

    #[test]
    fn repeated_hold_release_and_credit_apply_once() {
        let mut position = Position::new(dec!(100), dec!(0), false);
        position.apply_hold(transfer(1), dec!(10)).unwrap();
        assert_eq!(position.check_hold(transfer(1), dec!(10)), Ok(false));
        position.apply_hold(transfer(1), dec!(10)).unwrap();
        assert_eq!(position.held, dec!(10));
        assert_eq!(position.apply_release(transfer(1)), Ok(Some(dec!(10))));
        assert_eq!(position.apply_release(transfer(1)), Ok(None));
        assert_eq!(position.held, dec!(0));

        position.apply_credit(transfer(2), dec!(5)).unwrap();
        assert_eq!(position.check_credit(transfer(2), dec!(5)), Ok(false));
        position.apply_credit(transfer(2), dec!(5)).unwrap();
        assert_eq!(position.balance, dec!(105));
    }

    #[test]
    fn recent_credit_memory_is_bounded() {
        let mut position = Position::new(dec!(0), dec!(0), false);
        for n in 0..100 {
            position.apply_credit(transfer(n), dec!(1)).unwrap();
        }
        assert_eq!(position.work().map(|work| work.recent_credits.len()), Some(RECENT_CREDITS_MAX));
        assert_eq!(position.balance, dec!(100));
    }

    #[test]
    fn an_admitted_credit_is_counted_until_it_lands_or_is_withdrawn() {
        let mut position = Position::new(dec!(0), dec!(0), false);
        assert_eq!(position.check_admission(transfer(1), dec!(5)), Ok(true));
        position.apply_admission(transfer(1), dec!(5)).unwrap();
        assert_eq!(position.check_admission(transfer(1), dec!(5)), Ok(false), "a repeat admits once");
        assert!(position.credit_admitted(transfer(1)));
        position.apply_credit(transfer(1), dec!(5)).unwrap();
        assert!(!position.has_admitted_credits(), "the landed credit is no longer outstanding");
        position.apply_admission(transfer(2), dec!(3)).unwrap();
        assert_eq!(position.apply_withdraw_admission(transfer(2)), Ok(Some(dec!(3))));
        assert_eq!(position.apply_withdraw_admission(transfer(2)), Ok(None));
        assert_eq!(position.balance, dec!(5));
        // Only the landed credit's memory is left in flight: no admission, no total.
        assert_eq!(position.work().map(|work| (work.admitted_credits.len(), work.admitted_total)), Some((0, dec!(0))));
        let full = Position::new(Decimal::MAX, dec!(0), false);
        assert_eq!(full.check_admission(transfer(3), dec!(1)), Err(Overflow));
    }

    #[test]
    fn an_idle_position_keeps_no_in_flight_part() {
        let mut position = Position::new(dec!(100), dec!(0), false);
        position.apply_hold(transfer(1), dec!(30)).unwrap();
        position.apply_admission(transfer(2), dec!(7)).unwrap();
        assert!(position.work.is_some());
        position.apply_release(transfer(1)).unwrap();
        assert!(position.work.is_some(), "the admission is still outstanding");
        position.apply_withdraw_admission(transfer(2)).unwrap();
        assert_eq!(position.work, None, "nothing in flight: the box is gone");
        assert_eq!(position, Position::new(dec!(100), dec!(0), false), "and equality sees no difference");
        position.apply_hold(transfer(3), dec!(10)).unwrap();
        position.apply_post(transfer(3)).unwrap();
        assert_eq!(position.work, None, "a posted hold leaves nothing behind");
        assert_eq!(position.apply_admission(transfer(4), Decimal::MAX), Ok(()));
        assert_eq!(position.apply_admission(transfer(5), dec!(1)), Err(Overflow));
        assert_eq!(
            position.work().map(|work| work.admitted_credits.len()),
            Some(1),
            "a refused admission changes nothing"
        );
    }

    #[test]
    fn overflow_is_a_named_error_not_a_panic() {
        let position = Position::new(Decimal::MAX, dec!(0), false);
        assert_eq!(position.check_credit(transfer(1), dec!(1)), Err(Overflow));
        let position = Position::new(Decimal::MIN, dec!(0), true);
        assert_eq!(position.check_hold(transfer(1), dec!(1)), Err(FundsRejection::Overflow));
    }
}
