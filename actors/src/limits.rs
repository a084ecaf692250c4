//! Verification limits in the engine (API.md "Verification levels and limits"): the limits
//! of each level and currency in memory, and what each user has used of them, counted as
//! reservations.
//!
//! **Configuration.** Loaded once at start (`Limits::install`, from the identity store's
//! `LimitsStore`) and replaced per level by an admin (`Limits::replace_level`): validated,
//! written to the store first, and only then swapped into memory, so memory never shows a
//! limit the store does not have. Admin writes are serialised by one async mutex, as pricing
//! does; readers take a `RwLock` for one lookup, never across an `.await`.
//!
//! **Usage.** Per (user, currency), the sums of the current UTC day and calendar month, in a
//! `DashMap`. `reserve` checks an amount against the user's limits and counts it in one step
//! under the entry's shard lock (`tally_engine::limits::check` decides), so two racing
//! reservations can never both pass a bound only one of them fits. A `Reservation` that is
//! dropped without `commit` gives its amount back to the window it was counted in (a transfer
//! that failed or was compensated); a committed one stays counted. Windows roll forward with
//! the clock; if the clock steps back, amounts keep counting in the later window already seen
//! (the safe side).
//!
//! **Enforcement.** Saga step 1 (`saga.rs`, `Engine::reserve_limits`) reserves a transfer's
//! amount (fees not included) in its source currency for the user who initiated it, at the
//! user's level, before anything is held; a refusal is `422 VERIFICATION_LIMIT_EXCEEDED` and
//! records nothing. The reservation is committed when the saga starts (a pending transfer's
//! amount counts: it is held); a transfer that then ends `failed`, `rejected` or `cancelled`
//! gives its amount back to the windows of its creation (`give_back`, from the saga's
//! `finish`). Only internal and external transfers count (admin adjustments and transfers
//! without an initiating user do not). Nothing of this touches the store per transfer: levels
//! and usage are in memory, and usage is durable through the transfers themselves: at start,
//! once recovery is done, `install_usage` counts this month's open and completed transfers
//! as the ledger holds them (`LimitsStore::load_usage`).
//!
//! **Levels.** Users above `none` are kept in `levels` (installed at start from the identity
//! store, changed by `set_level` after an admin's change is stored); any other user is `none`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use tally_engine::limits::{self, LimitRejection, Usage, UserLimits, Window, window_of};
use tally_engine::{Currency, ErrorCode, Timestamp, UserId};
use tally_persistence::StoreError;
use tally_persistence::audit::AuditRecord;
use tally_persistence::users::VerificationLevel;
use tally_persistence::users::limits::{LevelLimits, LimitsStore};

use crate::IdMap;
use crate::engine::Engine;

const DAY_MICROS: i64 = 86_400_000_000;

/// (user, currency) pairs whose usage is tracked at most: ~100 bytes each, ~100 MiB at the
/// bound, which covers a million users each active in one currency. When it is full, entries
/// of past months are dropped first (their counters are zero in the current windows anyway);
/// past that a new pair is refused `503` rather than let a user run unchecked.
pub const USAGE_ENTRIES_MAX: usize = 1 << 20;

/// Why an admin's change of a level's limits was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitsError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("store: {0}")]
    Store(StoreError),
}

impl LimitsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LimitsError::Invalid { .. } => ErrorCode::ValidationError,
            // A refused write is retried by the admin; the store's detail goes to the log.
            LimitsError::Store(_) => ErrorCode::Overloaded,
        }
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationRefused {
    /// The amount does not fit the user's limits (or is not positive).
    #[error("{0}")]
    Exceeded(LimitRejection),
    /// `USAGE_ENTRIES_MAX` pairs are tracked and none could be dropped.
    #[error("too many users' usage is tracked; retry later")]
    Overloaded,
}

impl ReservationRefused {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReservationRefused::Exceeded(rejection) => rejection.code(),
            ReservationRefused::Overloaded => ErrorCode::Overloaded,
        }
    }
}

/// What a user has counted in one currency, in the windows it was last counted in.
#[derive(Clone, Copy, Debug)]
struct Counters {
    window: Window,
    used: Usage,
}

impl Counters {
    /// The counters as of `at`: a later day or month starts from zero; an earlier one (the
    /// clock stepped back) keeps the later window already seen.
    fn rolled(self, at: Window) -> Counters {
        let mut rolled = self;
        if at.day > self.window.day {
            rolled.window.day = at.day;
            rolled.used.used_today = Decimal::ZERO;
        }
        if at.month > self.window.month {
            rolled.window.month = at.month;
            rolled.used.used_this_month = Decimal::ZERO;
        }
        rolled
    }
}

type UsageMap = IdMap<(UserId, Currency), Counters>;

/// An amount counted against a user's limits. Dropped without `commit`, it gives the amount
/// back; committed, the amount stays counted.
#[must_use = "a reservation dropped at once gives its amount straight back"]
#[derive(Debug)]
pub struct Reservation {
    usage: Arc<UsageMap>,
    key: (UserId, Currency),
    amount: Decimal,
    /// The windows the amount was counted in: a release after a window rolled over leaves the
    /// new window alone.
    window: Window,
    committed: bool,
}

impl Reservation {
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// Keeps the amount counted (the transfer happened).
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let Some(mut counters) = self.usage.get_mut(&self.key) else { return };
        // Never below zero: a release can only take back what its own reservation added.
        let give_back = |used: Decimal| limits_sub(used, self.amount);
        if counters.window.day == self.window.day {
            counters.used.used_today = give_back(counters.used.used_today);
        }
        if counters.window.month == self.window.month {
            counters.used.used_this_month = give_back(counters.used.used_this_month);
        }
    }
}

fn limits_sub(used: Decimal, amount: Decimal) -> Decimal {
    used.checked_sub(amount).filter(|rest| !rest.is_sign_negative()).unwrap_or(Decimal::ZERO)
}

type LimitTable = HashMap<(VerificationLevel, Currency), UserLimits>;

/// The limits and usage of a running engine (`Engine::limits`).
pub struct Limits {
    /// Replaced whole on each change, so a reader holds the lock for one clone of an `Arc`.
    table: RwLock<Arc<LimitTable>>,
    usage: Arc<UsageMap>,
    /// The month whose sweep of past months' counters last ran (`i64::MIN`: none yet). Entries
    /// only go stale when the month changes, so one sweep per month is all a full map can gain.
    swept_month: AtomicI64,
    /// `USAGE_ENTRIES_MAX`, or a small bound in tests.
    usage_entries_max: usize,
    /// Serialises admin writes (store first, then memory).
    writes: tokio::sync::Mutex<()>,
    /// The verification level of every user above `none`.
    levels: IdMap<UserId, VerificationLevel>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            table: RwLock::default(),
            usage: Arc::default(),
            swept_month: AtomicI64::new(i64::MIN),
            usage_entries_max: USAGE_ENTRIES_MAX,
            writes: tokio::sync::Mutex::default(),
            levels: IdMap::default(),
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("usage_entries", &self.usage.len()).finish_non_exhaustive()
    }
}

impl Limits {
    fn table(&self) -> Arc<LimitTable> {
        Arc::clone(&self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn swap(&self, table: LimitTable) {
        *self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }

    /// Takes the configuration as stored (at start, before the engine serves).
    pub fn install(&self, rows: &[LevelLimits]) {
        self.swap(rows.iter().map(|row| ((row.level, row.currency), row.limits)).collect());
    }

    /// The limits of `level` in `currency` (`UNLIMITED` when none are set).
    pub fn limits(&self, level: VerificationLevel, currency: Currency) -> UserLimits {
        self.table().get(&(level, currency)).copied().unwrap_or(UserLimits::UNLIMITED)
    }

    /// Every currency `level` has limits in, in the currency table's order.
    pub fn of_level(&self, level: VerificationLevel) -> Vec<(Currency, UserLimits)> {
        let table = self.table();
        Currency::all().filter_map(|currency| table.get(&(level, currency)).map(|limits| (currency, *limits))).collect()
    }

    /// Replaces `level`'s whole set (one entry per currency, each with at least one maximum).
    /// Returns once the store has it (with `audit`, in the same transaction); only then does
    /// memory show it.
    pub async fn replace_level(
        &self,
        store: &dyn LimitsStore,
        level: VerificationLevel,
        set: Vec<(Currency, UserLimits)>,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), LimitsError> {
        // The HTTP layer checks the same; this is the pair assertion at the engine's edge.
        for (index, (currency, limits)) in set.iter().enumerate() {
            if set[..index].iter().any(|(earlier, _)| earlier == currency) {
                return Err(LimitsError::Invalid { field: "limits", message: format!("{currency} is listed twice") });
            }
            if limits.is_unlimited() {
                return Err(LimitsError::Invalid {
                    field: "limits",
                    message: format!("{currency} has no maximum; leave it out to leave it unlimited"),
                });
            }
        }
        let _writing = self.writes.lock().await;
        store.replace_level_limits(level, &set, at, audit).await.map_err(LimitsError::Store)?;
        let mut table = (*self.table()).clone();
        table.retain(|(stored_level, _), _| *stored_level != level);
        table.extend(set.into_iter().map(|(currency, limits)| ((level, currency), limits)));
        self.swap(table);
        Ok(())
    }

    /// Counts `amount` of `currency` against the limits of `level` for `user` at `now`, or
    /// refuses it with the first bound it breaks. Checked and counted in one step under the
    /// entry's lock: of racing reservations, exactly those that fit pass.
    pub fn reserve(
        &self,
        user: UserId,
        level: VerificationLevel,
        currency: Currency,
        amount: Decimal,
        now: Timestamp,
    ) -> Result<Reservation, ReservationRefused> {
        let limits = self.limits(level, currency);
        let window = window_of(now);
        let key = (user, currency);
        if !self.usage.contains_key(&key) && self.usage.len() >= self.usage_entries_max {
            // Counters of a past month are zero in every current window: dropping them loses
            // nothing. (A reservation of theirs still outstanding then finds no entry and
            // gives nothing back, which is right: its windows are over.) Once per month: a
            // second sweep in the same month could find nothing more.
            if self.swept_month.fetch_max(window.month, Ordering::AcqRel) < window.month {
                self.usage.retain(|_, counters| counters.window.month >= window.month);
            }
            if self.usage.len() >= self.usage_entries_max {
                return Err(ReservationRefused::Overloaded);
            }
        }
        let mut entry = self
            .usage
            .entry(key)
            .or_insert(Counters { window, used: Usage { used_today: Decimal::ZERO, used_this_month: Decimal::ZERO } });
        let counters = entry.rolled(window);
        let used = limits::check(&limits, counters.used, amount).map_err(ReservationRefused::Exceeded)?;
        *entry = Counters { window: counters.window, used };
        drop(entry);
        Ok(Reservation { usage: Arc::clone(&self.usage), key, amount, window: counters.window, committed: false })
    }

    /// Gives `amount` back to the windows of `at` (a counted transfer created then that ended
    /// without moving money). A window already past is left alone; never below zero.
    pub fn give_back(&self, user: UserId, currency: Currency, amount: Decimal, at: Timestamp) {
        let window = window_of(at);
        let Some(mut counters) = self.usage.get_mut(&(user, currency)) else { return };
        if counters.window.day == window.day {
            counters.used.used_today = limits_sub(counters.used.used_today, amount);
        }
        if counters.window.month == window.month {
            counters.used.used_this_month = limits_sub(counters.used.used_this_month, amount);
        }
    }

    /// The first microsecond of the calendar month (UTC) of `now`: where `install_usage`'s rows
    /// start.
    pub fn month_start(now: Timestamp) -> Timestamp {
        let day = now.as_micros().div_euclid(DAY_MICROS);
        let (_, _, day_of_month) = tally_engine::limits::civil_from_days(day);
        Timestamp::from_micros((day - (day_of_month - 1)) * DAY_MICROS)
    }

    /// Installs, at start, what the ledger holds that limits count (`LimitsStore::load_usage`:
    /// processing, pending or completed, initiated by a user, this month), summed by the store
    /// into the windows of `now`. Called once recovery has finished every saga it could, before
    /// the engine serves, so each such transfer is counted once and a recovered failure not
    /// at all.
    pub fn install_usage(&self, totals: &[(UserId, Currency, Usage)], now: Timestamp) {
        let window = window_of(now);
        for (user, currency, used) in totals {
            self.usage.insert((*user, *currency), Counters { window, used: *used });
        }
    }

    /// Takes the levels of the users above `none` as stored (at start).
    pub fn install_levels(&self, levels: &[(UserId, VerificationLevel)]) {
        for (user, level) in levels {
            self.set_level(*user, *level);
        }
    }

    /// `user`'s level is now `level` (after the store has it).
    pub fn set_level(&self, user: UserId, level: VerificationLevel) {
        if level == VerificationLevel::None {
            self.levels.remove(&user);
        } else {
            self.levels.insert(user, level);
        }
    }

    /// `user`'s verification level as the engine enforces it.
    pub fn level_of(&self, user: UserId) -> VerificationLevel {
        self.levels.get(&user).map_or(VerificationLevel::None, |level| *level)
    }

    /// What `user` has counted in `currency` in the windows of `now` (zero if nothing).
    pub fn usage(&self, user: UserId, currency: Currency, now: Timestamp) -> Usage {
        match self.usage.get(&(user, currency)) {
            Some(counters) => counters.rolled(window_of(now)).used,
            None => Usage::default(),
        }
    }
}

impl Engine {
    /// The verification limits and usage counters (see `limits.rs`).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Step 1's limits check: reserves the transfer's amount (in its source currency, fees not
    /// included) for the user who initiated it, at that user's level, as of its creation.
    /// `None` for a transfer no user initiated, and for admin adjustments (an admin's credit
    /// or debit is not the admin's own spending).
    pub(crate) fn reserve_limits(
        &self,
        transfer: &tally_engine::Transfer,
    ) -> Result<Option<Reservation>, crate::engine::TransferError> {
        let Some(user) = counted_user(transfer) else { return Ok(None) };
        let limits = &self.inner.limits;
        limits
            .reserve(user, limits.level_of(user), transfer.currency, transfer.amount, transfer.created_at)
            .map(Some)
            .map_err(|refused| match refused {
                ReservationRefused::Exceeded(rejection) => crate::engine::TransferError::Limit(rejection),
                ReservationRefused::Overloaded => {
                    crate::engine::TransferError::Unavailable(crate::registry::Unavailable::Overloaded)
                }
            })
    }
}

impl Engine {
    /// What step 1's limits check would say of `transfer` now, without counting anything: a
    /// quote refuses what the transfer would be refused (a concurrent transfer may of course
    /// use the room before this one is sent).
    pub fn check_limits(&self, transfer: &tally_engine::Transfer) -> Result<(), crate::engine::TransferError> {
        let Some(user) = counted_user(transfer) else { return Ok(()) };
        let limits = &self.inner.limits;
        let bounds = limits.limits(limits.level_of(user), transfer.currency);
        let usage = limits.usage(user, transfer.currency, transfer.created_at);
        tally_engine::limits::check(&bounds, usage, transfer.amount)
            .map(|_| ())
            .map_err(crate::engine::TransferError::Limit)
    }
}

/// The user whose limits a transfer counts against: its initiator, for a customer's
/// transfer (internal or external).
fn counted_user(transfer: &tally_engine::Transfer) -> Option<UserId> {
    use tally_engine::TransferKind;
    matches!(transfer.kind, TransferKind::Internal | TransferKind::External).then_some(transfer.initiated_by).flatten()
}

/// What a transfer counted against its initiator's limits in step 1, to give back if its saga
/// never starts (`Counted::give_back`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counted(Option<(UserId, Currency, Decimal, Timestamp)>);

impl Counted {
    pub(crate) fn of(transfer: &tally_engine::Transfer) -> Counted {
        Counted(counted_user(transfer).map(|user| (user, transfer.currency, transfer.amount, transfer.created_at)))
    }

    /// Gives the amount back: a saga counted in step 1 that ended before it recorded anything
    /// (no thread took it, or the journal refused its first record), so nothing moved and no
    /// `finish` ran.
    pub(crate) fn give_back(self, limits: &Limits) {
        if let Some((user, currency, amount, at)) = self.0 {
            limits.give_back(user, currency, amount, at);
        }
    }
}

/// A counted transfer that ended without moving money gives its amount back (`give_back`).
pub(crate) fn on_finish(limits: &Limits, transfer: &tally_engine::Transfer) {
    use tally_engine::TransferStatus;
    let Some(user) = counted_user(transfer) else { return };
    if matches!(
        transfer.status,
        TransferStatus::Failed | TransferStatus::Rejected | TransferStatus::Cancelled | TransferStatus::Expired
    ) {
        limits.give_back(user, transfer.currency, transfer.amount, transfer.created_at);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Barrier;

    use rust_decimal_macros::dec;

    use super::*;

    const DAY_MICROS: i64 = 86_400_000_000;
    /// 2025-06-15T12:00:00Z.
    const NOON: i64 = 1_749_988_800_000_000;

    fn limits_with(level: VerificationLevel, currency: Currency, limits: UserLimits) -> Limits {
        let engine_limits = Limits::default();
        engine_limits.install(&[LevelLimits { level, currency, limits }]);
        engine_limits
    }

    fn daily(max: Decimal) -> UserLimits {
        UserLimits { per_transfer_max: None, daily_max: Some(max), monthly_max: None }
    }

    /// The brief's proof: 200 threads reserve at once against a daily limit that fits exactly
    /// 100 of their amounts; exactly 100 pass and the counter ends exactly at the limit.
    #[test]
    fn of_200_racing_reservations_exactly_the_100_that_fit_pass() {
        let limits = Arc::new(limits_with(VerificationLevel::Basic, Currency::USD, daily(dec!(100.00))));
        let user = UserId::from_u128(7);
        let start = Arc::new(Barrier::new(200));
        let threads: Vec<_> = (0..200)
            .map(|_| {
                let limits = Arc::clone(&limits);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    limits.reserve(
                        user,
                        VerificationLevel::Basic,
                        Currency::USD,
                        dec!(1.00),
                        Timestamp::from_micros(NOON),
                    )
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
        let passed: Vec<Reservation> = outcomes.into_iter().filter_map(Result::ok).collect();
        assert_eq!(passed.len(), 100);
        assert_eq!(limits.usage(user, Currency::USD, Timestamp::from_micros(NOON)).used_today, dec!(100.00));
        for reservation in passed {
            reservation.commit();
        }
        let refused =
            limits.reserve(user, VerificationLevel::Basic, Currency::USD, dec!(0.01), Timestamp::from_micros(NOON));
        assert!(matches!(refused, Err(ReservationRefused::Exceeded(LimitRejection::Daily { .. }))), "{refused:?}");
        assert_eq!(refused.unwrap_err().code(), ErrorCode::VerificationLimitExceeded);
    }

    /// Racing reservations that give their amounts back as others take them: the counter
    /// never passes the limit, and once all are settled it holds exactly the committed ones.
    #[test]
    fn releases_racing_reservations_never_let_the_counter_pass_the_limit() {
        let limits = Arc::new(limits_with(VerificationLevel::None, Currency::EUR, daily(dec!(10))));
        let user = UserId::from_u128(8);
        let now = Timestamp::from_micros(NOON);
        let start = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let limits = Arc::clone(&limits);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut committed = 0;
                    for round in 0..500 {
                        if let Ok(reservation) =
                            limits.reserve(user, VerificationLevel::None, Currency::EUR, dec!(1), now)
                        {
                            let used = limits.usage(user, Currency::EUR, now).used_today;
                            assert!(used <= dec!(10), "{used}");
                            // One in fifty is kept; the rest fail later and give back.
                            if (round + thread) % 50 == 0 && committed < 1 {
                                reservation.commit();
                                committed += 1;
                            }
                        }
                    }
                    committed
                })
            })
            .collect();
        let committed: i64 = threads.into_iter().map(|thread| thread.join().unwrap()).sum();
        assert_eq!(limits.usage(user, Currency::EUR, now).used_today, Decimal::from(committed));
    }

    #[test]
    fn a_dropped_reservation_gives_back_and_a_committed_one_stays() {
        let limits = limits_with(
            VerificationLevel::Verified,
            Currency::USD,
            UserLimits { per_transfer_max: Some(dec!(60)), daily_max: Some(dec!(100)), monthly_max: Some(dec!(150)) },
        );
        let user = UserId::from_u128(9);
        let now = Timestamp::from_micros(NOON);
        let level = VerificationLevel::Verified;
        let first = limits.reserve(user, level, Currency::USD, dec!(60), now).unwrap();
        let second = limits.reserve(user, level, Currency::USD, dec!(40), now).unwrap();
        assert!(limits.reserve(user, level, Currency::USD, dec!(0.01), now).is_err(), "the day is full");
        drop(second);
        assert_eq!(limits.usage(user, Currency::USD, now), Usage { used_today: dec!(60), used_this_month: dec!(60) });
        first.commit();
        let refused = limits.reserve(user, level, Currency::USD, dec!(60.01), now).unwrap_err();
        assert_eq!(
            refused,
            ReservationRefused::Exceeded(LimitRejection::PerTransfer { max: dec!(60), amount: dec!(60.01) })
        );
        limits.reserve(user, level, Currency::USD, dec!(40), now).unwrap().commit();

        // The next day starts from zero today, the month keeps counting; the month's bound
        // then refuses what the day would allow.
        let tomorrow = Timestamp::from_micros(NOON + DAY_MICROS);
        assert_eq!(
            limits.usage(user, Currency::USD, tomorrow),
            Usage { used_today: dec!(0), used_this_month: dec!(100) }
        );
        let refused = limits.reserve(user, level, Currency::USD, dec!(50.01), tomorrow).unwrap_err();
        assert!(matches!(refused, ReservationRefused::Exceeded(LimitRejection::Monthly { .. })), "{refused:?}");
        let late = limits.reserve(user, level, Currency::USD, dec!(50), tomorrow).unwrap();

        // A reservation made yesterday and released today gives back only to the month.
        let (user_2, yesterday) = (UserId::from_u128(10), now);
        let old = limits.reserve(user_2, level, Currency::USD, dec!(30), yesterday).unwrap();
        limits.reserve(user_2, level, Currency::USD, dec!(20), tomorrow).unwrap().commit();
        drop(old);
        assert_eq!(
            limits.usage(user_2, Currency::USD, tomorrow),
            Usage { used_today: dec!(20), used_this_month: dec!(20) }
        );
        drop(late);

        // Other users, currencies and levels are counted apart; no limits means no bound.
        assert_eq!(limits.usage(UserId::from_u128(11), Currency::USD, now), Usage::default());
        limits.reserve(user, level, Currency::EUR, dec!(1000000), now).unwrap().commit();
        limits.reserve(user, VerificationLevel::Enhanced, Currency::USD, dec!(1000), now).unwrap().commit();
        assert_eq!(limits.usage(user, Currency::EUR, now).used_today, dec!(1000000));
    }

    /// Past the bound of tracked pairs a new pair is refused, never let through unchecked;
    /// a new month sweeps out the past month's counters and makes room.
    #[test]
    fn a_full_usage_map_refuses_new_pairs_until_a_new_month_frees_room() {
        let limits = Limits { usage_entries_max: 3, ..Limits::default() };
        let now = Timestamp::from_micros(NOON);
        let level = VerificationLevel::None;
        for user in 1..=3 {
            limits.reserve(UserId::from_u128(user), level, Currency::USD, dec!(1), now).unwrap().commit();
        }
        let refused = limits.reserve(UserId::from_u128(4), level, Currency::USD, dec!(1), now).unwrap_err();
        assert_eq!(refused, ReservationRefused::Overloaded);
        assert_eq!(refused.code(), ErrorCode::Overloaded);
        // A pair already tracked still reserves.
        limits.reserve(UserId::from_u128(2), level, Currency::USD, dec!(1), now).unwrap().commit();
        // 31 days later is another month: the old counters go, the new pair fits.
        let next_month = Timestamp::from_micros(NOON + 31 * DAY_MICROS);
        limits.reserve(UserId::from_u128(4), level, Currency::USD, dec!(1), next_month).unwrap().commit();
        assert_eq!(limits.usage(UserId::from_u128(1), Currency::USD, next_month), Usage::default());
        assert_eq!(limits.usage.len(), 1);
    }

    #[test]
    fn a_clock_that_steps_back_keeps_counting_in_the_later_window() {
        let limits = limits_with(VerificationLevel::None, Currency::USD, daily(dec!(10)));
        let user = UserId::from_u128(12);
        let tomorrow = Timestamp::from_micros(NOON + DAY_MICROS);
        limits.reserve(user, VerificationLevel::None, Currency::USD, dec!(8), tomorrow).unwrap().commit();
        let today = Timestamp::from_micros(NOON);
        assert!(limits.reserve(user, VerificationLevel::None, Currency::USD, dec!(3), today).is_err());
        limits.reserve(user, VerificationLevel::None, Currency::USD, dec!(2), today).unwrap().commit();
        assert_eq!(limits.usage(user, Currency::USD, tomorrow).used_today, dec!(10));
    }

    #[test]
    fn the_table_answers_per_level_and_currency_in_currency_order() {
        let limits = Limits::default();
        let set = |per: Decimal| UserLimits { per_transfer_max: Some(per), daily_max: None, monthly_max: None };
        limits.install(&[
            LevelLimits { level: VerificationLevel::Basic, currency: Currency::JPY, limits: set(dec!(5000)) },
            LevelLimits { level: VerificationLevel::Basic, currency: Currency::USD, limits: set(dec!(50)) },
            LevelLimits { level: VerificationLevel::Enhanced, currency: Currency::USD, limits: set(dec!(5000)) },
        ]);
        let basic: Vec<Currency> = limits.of_level(VerificationLevel::Basic).into_iter().map(|(c, _)| c).collect();
        let mut expected = vec![Currency::JPY, Currency::USD];
        expected.sort_by_key(|currency| currency.index());
        assert_eq!(basic, expected);
        assert_eq!(limits.limits(VerificationLevel::Basic, Currency::USD), set(dec!(50)));
        assert!(limits.limits(VerificationLevel::None, Currency::USD).is_unlimited());
        assert!(limits.of_level(VerificationLevel::Verified).is_empty());
    }
}
