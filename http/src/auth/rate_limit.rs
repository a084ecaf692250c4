//! Rate limits: failed logins and wrong second-factor codes (`FailureLimiter`, fixed windows
//! of failures per key) and requests per caller (`RequestLimiter`, GCRA).
//!
//! Both keep their counters in memory, bounded: a node restart forgets them, and each node of
//! a future cluster counts on its own (DESIGN.md §10). Time comes from the `Clock` seam.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use dashmap::DashMap;
use tally_actors::IdMap;
use tally_engine::{ErrorCode, Timestamp, UserId};

use crate::problem::ApiError;

/// Failed logins per identifier (normalised email) within `LOGIN_FAILURE_WINDOW` before that
/// identifier is refused: five typos is generous for a person, and an online guesser gets
/// five tries per quarter hour (~480 a day) against one account.
pub const LOGIN_FAILURES_PER_IDENTIFIER_MAX: u32 = 5;

/// Failed logins per client ip within `LOGIN_FAILURE_WINDOW`: a guesser spraying many accounts
/// from one address is stopped after fifty, while an office behind one NAT can still absorb
/// its people's typos. A success does not reset it.
pub const LOGIN_FAILURES_PER_IP_MAX: u32 = 50;

/// How long failures count: fifteen minutes, the usual lock-out period (OWASP's suggestion).
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Wrong second-factor codes per user within `LOGIN_FAILURE_WINDOW`, across every MFA and
/// step-up session: without it an attacker holding the password (or an access token) could
/// open session after session and try a million codes.
pub const SECOND_FACTOR_FAILURES_PER_USER_MAX: u32 = 10;

/// Keys one failure limiter tracks at once. An entry is ~150 bytes, so ~15 MiB at most. When
/// full (after purging expired windows), new keys share one overflow window: counting stays
/// on, more strictly, rather than memory growing or an attacker buying a fresh budget by
/// filling the map.
pub const FAILURE_KEYS_MAX: usize = 100_000;

/// Callers tracked by the request limiter at once (~50 bytes each, ~5 MiB). When full, idle
/// callers (whose allowance has fully refilled) are dropped; if none are, new callers share
/// one overflow bucket.
pub const REQUEST_CALLERS_MAX: usize = 100_000;

/// Default requests per second per caller (`TALLY_RATE_LIMIT_PER_SECOND`), with a burst of
/// one second's worth. Generous on purpose: two cores serve a few thousand transfers a second
/// in all, so this stops only a caller trying to take the whole node, and the load tester's
/// single clients are never throttled by it.
pub const REQUESTS_PER_SECOND_DEFAULT: u32 = 5_000;

/// Least time between two purges of a full map, so a flood of new keys does not turn every
/// request into a scan.
const PURGE_INTERVAL_MICROS: i64 = 1_000_000;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The key that new entries share when a map is full.
const OVERFLOW_KEY: &str = "\u{0}overflow";

/// A `429 RATE_LIMITED` answer with `Retry-After`.
pub fn rate_limited(detail: &str, retry_after_micros: i64) -> ApiError {
    let mut error = ApiError::new(ErrorCode::RateLimited, detail);
    // Rounded up: retrying after the floor would be refused again.
    let seconds = (retry_after_micros.max(1).saturating_add(MICROS_PER_SECOND - 1) / MICROS_PER_SECOND).max(1);
    error.retry_after_secs = Some(u32::try_from(seconds).unwrap_or(u32::MAX));
    error
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started_micros: i64,
    failures: u32,
}

/// Counts failures per key in fixed windows that start at a key's first failure.
#[derive(Debug)]
pub struct FailureLimiter {
    windows: DashMap<String, Window>,
    failures_max: u32,
    window_micros: i64,
    last_purge_micros: AtomicI64,
}

impl FailureLimiter {
    pub fn new(failures_max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            windows: DashMap::new(),
            failures_max,
            window_micros: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            last_purge_micros: AtomicI64::new(0),
        }
    }

    /// The key this limiter counts `key` under: itself, or the overflow key when full.
    fn slot(&self, key: &str, now: Timestamp) -> String {
        if self.windows.contains_key(key) || self.windows.len() < FAILURE_KEYS_MAX {
            return key.to_owned();
        }
        let last = self.last_purge_micros.load(Ordering::Relaxed);
        if now.as_micros().saturating_sub(last) >= PURGE_INTERVAL_MICROS
            && self
                .last_purge_micros
                .compare_exchange(last, now.as_micros(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let window = self.window_micros;
            self.windows.retain(|_, entry| now.as_micros().saturating_sub(entry.started_micros) < window);
        }
        if self.windows.len() < FAILURE_KEYS_MAX { key.to_owned() } else { OVERFLOW_KEY.to_owned() }
    }

    /// Microseconds until `key` may try again, if it has used up its failures.
    pub fn blocked_for(&self, key: &str, now: Timestamp) -> Option<i64> {
        let slot = self.slot(key, now);
        let window = *self.windows.get(&slot)?.value();
        let ends = window.started_micros.saturating_add(self.window_micros);
        (window.failures >= self.failures_max && ends > now.as_micros()).then(|| ends - now.as_micros())
    }

    pub fn record_failure(&self, key: &str, now: Timestamp) {
        let slot = self.slot(key, now);
        let window_micros = self.window_micros;
        let mut entry = self.windows.entry(slot).or_insert(Window { started_micros: now.as_micros(), failures: 0 });
        if now.as_micros().saturating_sub(entry.started_micros) >= window_micros {
            *entry = Window { started_micros: now.as_micros(), failures: 0 };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Counts an attempt of `key` as a failure before it is judged, if `key` has a place left
    /// under the bound; otherwise answers the microseconds until it has. The check and the
    /// count are one step under the key's entry lock, so attempts made at once can never pass
    /// the bound (checked, then counted, one slipped past per runtime thread).
    pub fn take(&self, key: &str, now: Timestamp) -> Result<(), i64> {
        let slot = self.slot(key, now);
        let window_micros = self.window_micros;
        let mut entry = self.windows.entry(slot).or_insert(Window { started_micros: now.as_micros(), failures: 0 });
        if now.as_micros().saturating_sub(entry.started_micros) >= window_micros {
            *entry = Window { started_micros: now.as_micros(), failures: 0 };
        }
        if entry.failures >= self.failures_max {
            return Err(entry.started_micros.saturating_add(window_micros).saturating_sub(now.as_micros()));
        }
        entry.failures = entry.failures.saturating_add(1);
        Ok(())
    }

    /// Forgets `key`'s failures (a successful login clears its identifier's count).
    pub fn clear(&self, key: &str) {
        self.windows.remove(key);
    }

    /// Takes back one failure of `key` (an attempt counted before it was judged, which then
    /// succeeded: `LoginLimits::take_attempt`).
    pub fn forgive_one(&self, key: &str) {
        if let Some(mut entry) = self.windows.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
        }
    }
}

/// The login limits: per identifier and per client ip.
#[derive(Debug)]
pub struct LoginLimits {
    pub by_identifier: FailureLimiter,
    pub by_ip: FailureLimiter,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            by_identifier: FailureLimiter::new(LOGIN_FAILURES_PER_IDENTIFIER_MAX, LOGIN_FAILURE_WINDOW),
            by_ip: FailureLimiter::new(LOGIN_FAILURES_PER_IP_MAX, LOGIN_FAILURE_WINDOW),
        }
    }
}

impl LoginLimits {
    /// `429` if the identifier or the ip has used up its failures; checked before the
    /// password, so a refused attempt costs no argon2 work.
    pub fn check(&self, identifier: &str, ip: ClientIp, now: Timestamp) -> Result<(), ApiError> {
        let waits = [self.by_identifier.blocked_for(identifier, now), self.by_ip.blocked_for(&ip.key(), now)];
        match waits.into_iter().flatten().max() {
            Some(wait) => Err(rate_limited("too many failed logins; retry later", wait)),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, identifier: &str, ip: ClientIp, now: Timestamp) {
        self.by_identifier.record_failure(identifier, now);
        self.by_ip.record_failure(&ip.key(), now);
    }

    /// The attempt counted as a failure at once, before its password is checked, if both the
    /// identifier and the ip have a place left (`FailureLimiter::take`: check and count in one
    /// step): a check that only counted failures once judged let concurrent attempts all pass
    /// it while their passwords were being hashed (hundreds of guesses where five are
    /// allowed). A success takes its count back (`record_success`).
    pub fn take_attempt(&self, identifier: &str, ip: ClientIp, now: Timestamp) -> Result<(), ApiError> {
        const DETAIL: &str = "too many failed logins; retry later";
        self.by_identifier.take(identifier, now).map_err(|wait| rate_limited(DETAIL, wait))?;
        if let Err(wait) = self.by_ip.take(&ip.key(), now) {
            self.by_identifier.forgive_one(identifier);
            return Err(rate_limited(DETAIL, wait));
        }
        Ok(())
    }

    /// A success clears the identifier's count (its owner got in) but not the ip's: an
    /// attacker who also holds one account of their own cannot reset their spraying budget.
    /// The ip's count loses only this attempt's own failure (`take_attempt`).
    pub fn record_success(&self, identifier: &str, ip: ClientIp) {
        self.by_identifier.clear(identifier);
        self.by_ip.forgive_one(&ip.key());
    }
}

/// Password-reset requests per address within `LOGIN_FAILURE_WINDOW`, counted whether or not
/// the address names a user (so the limit itself says nothing): a person asks once or twice;
/// beyond five, someone is using Tally to flood an inbox.
pub const RESET_REQUESTS_PER_EMAIL_MAX: u32 = 5;

/// Password-reset requests per client ip within the window: a sweep of addresses from one
/// place is stopped, an office behind one NAT still has room.
pub const RESET_REQUESTS_PER_IP_MAX: u32 = 20;

/// Wrong emailed codes per client ip within the window, across addresses: each code allows
/// only `CODE_ATTEMPTS_MAX` tries, and this stops one client spreading guesses over many.
pub const WRONG_CODES_PER_IP_MAX: u32 = 20;

/// Verification mails a user may ask for within the window.
pub const VERIFICATION_REQUESTS_PER_USER_MAX: u32 = 5;

/// Wrong current passwords per user within the window when changing the password: a stolen
/// access token must not become an online password oracle.
pub const WRONG_PASSWORDS_PER_USER_MAX: u32 = 5;

/// The limits of the self-service routes (each a fixed window of `LOGIN_FAILURE_WINDOW`).
#[derive(Debug)]
pub struct SelfServiceLimits {
    pub reset_requests_by_email: FailureLimiter,
    pub reset_requests_by_ip: FailureLimiter,
    pub wrong_codes_by_ip: FailureLimiter,
    pub verification_requests_by_user: FailureLimiter,
    pub wrong_passwords_by_user: FailureLimiter,
}

impl Default for SelfServiceLimits {
    fn default() -> Self {
        let limiter = |max| FailureLimiter::new(max, LOGIN_FAILURE_WINDOW);
        SelfServiceLimits {
            reset_requests_by_email: limiter(RESET_REQUESTS_PER_EMAIL_MAX),
            reset_requests_by_ip: limiter(RESET_REQUESTS_PER_IP_MAX),
            wrong_codes_by_ip: limiter(WRONG_CODES_PER_IP_MAX),
            verification_requests_by_user: limiter(VERIFICATION_REQUESTS_PER_USER_MAX),
            wrong_passwords_by_user: limiter(WRONG_PASSWORDS_PER_USER_MAX),
        }
    }
}

/// `429` if any of `checks` (limiter, key) has used up its count.
pub fn check_all(checks: &[(&FailureLimiter, &str)], now: Timestamp, detail: &str) -> Result<(), ApiError> {
    match checks.iter().filter_map(|(limiter, key)| limiter.blocked_for(key, now)).max() {
        Some(wait) => Err(rate_limited(detail, wait)),
        None => Ok(()),
    }
}

/// The peer address of the connection (`ConnectInfo`), or `None` where the server was started
/// without it. `X-Forwarded-For` is not trusted: Tally does not know its proxies, and a client
/// could name any address in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    pub fn key(self) -> String {
        self.0.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

/// Requests per caller, by the generic cell rate algorithm: each caller has a theoretical
/// arrival time that every request pushes one emission interval later; a request that would
/// push it more than the burst ahead of now is refused. Integer microseconds throughout.
#[derive(Debug)]
pub struct RequestLimiter {
    /// Per caller: the theoretical arrival time, microseconds.
    /// Keyed by user ids, which Tally issues (`IdMap`'s hashing; ~1 % of a keyed transfer's
    /// instructions were SipHash here, two look-ups per request).
    arrivals: IdMap<Option<UserId>, i64>,
    per_second: std::sync::atomic::AtomicU32,
    last_purge_micros: AtomicI64,
}

impl Default for RequestLimiter {
    fn default() -> Self {
        RequestLimiter::new(REQUESTS_PER_SECOND_DEFAULT)
    }
}

impl RequestLimiter {
    pub fn new(per_second: u32) -> RequestLimiter {
        RequestLimiter {
            arrivals: IdMap::default(),
            per_second: std::sync::atomic::AtomicU32::new(per_second.max(1)),
            last_purge_micros: AtomicI64::new(0),
        }
    }

    /// Changes the rate (`TALLY_RATE_LIMIT_PER_SECOND` at start-up; tests).
    pub fn set_per_second(&self, per_second: u32) {
        self.per_second.store(per_second.max(1), Ordering::Relaxed);
    }

    /// Admits one request of `caller` at `now`, or answers `429` with the wait.
    pub fn admit(&self, caller: UserId, now: Timestamp) -> Result<(), ApiError> {
        let per_second = i64::from(self.per_second.load(Ordering::Relaxed));
        let interval = (MICROS_PER_SECOND / per_second).max(1);
        // A burst of one second's worth of requests.
        let burst = MICROS_PER_SECOND.saturating_sub(interval);
        let now = now.as_micros();
        // A known caller's entry in one look-up; a new one's through the bound on callers.
        let mut arrival = match self.arrivals.get_mut(&Some(caller)) {
            Some(arrival) => arrival,
            None => self.arrivals.entry(self.slot(caller, now)).or_insert(now),
        };
        let theoretical = (*arrival).max(now);
        if theoretical - now > burst {
            return Err(rate_limited("too many requests from this caller; retry later", theoretical - now - burst));
        }
        *arrival = theoretical + interval;
        Ok(())
    }

    /// The key of a caller not in the map: its own while the map is below its bound (after a
    /// purge of the callers whose burst is back, at most once per interval), else the one
    /// shared by every caller past it.
    fn slot(&self, caller: UserId, now: i64) -> Option<UserId> {
        if self.arrivals.len() < REQUEST_CALLERS_MAX {
            return Some(caller);
        }
        let last = self.last_purge_micros.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= PURGE_INTERVAL_MICROS
            && self.last_purge_micros.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // A caller whose arrival time is past has its whole burst back: forgetting it
            // changes nothing.
            self.arrivals.retain(|_, arrival| *arrival > now);
        }
        if self.arrivals.len() < REQUEST_CALLERS_MAX { Some(caller) } else { None }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_000_000);

    fn later(micros: i64) -> Timestamp {
        Timestamp::from_micros(NOW.as_micros() + micros)
    }

    #[test]
    fn failures_block_a_key_until_its_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(limiter.blocked_for("k", NOW), None);
            limiter.record_failure("k", NOW);
        }
        assert_eq!(limiter.blocked_for("k", later(1_000_000)), Some(59_000_000));
        assert_eq!(limiter.blocked_for("other", NOW), None, "keys count apart");
        assert_eq!(limiter.blocked_for("k", later(60_000_000)), None, "the window ended");
        limiter.record_failure("k", later(60_000_000));
        assert_eq!(limiter.blocked_for("k", later(60_000_000)), None, "a new window starts at one failure");
    }

    /// Attempts taken at once from many threads never pass the bound: the check and the
    /// count are one step (checked, then counted, a CI run saw six of a bound of five judged).
    #[test]
    fn attempts_taken_at_once_never_pass_the_bound() {
        let limiter = std::sync::Arc::new(FailureLimiter::new(5, Duration::from_secs(60)));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, barrier) = (std::sync::Arc::clone(&limiter), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..1_000).filter(|_| limiter.take("k", NOW).is_ok()).count()
                })
            })
            .collect();
        let taken: usize = threads.into_iter().map(|thread| thread.join().unwrap()).sum();
        assert_eq!(taken, 5);
        assert_eq!(limiter.take("k", later(1_000_000)), Err(59_000_000), "the wait until the window ends");
        assert_eq!(limiter.take("k", later(60_000_000)), Ok(()), "a new window");
    }

    #[test]
    fn a_success_clears_the_identifier_but_not_the_ip() {
        let limits = LoginLimits::default();
        let ip = ClientIp(Some(IpAddr::from([10, 0, 0, 1])));
        for n in 0..LOGIN_FAILURES_PER_IP_MAX - 1 {
            limits.record_failure(&format!("sprayed-{n}"), ip, NOW);
        }
        limits.record_failure("victim", ip, NOW);
        limits.by_ip.forgive_one(&ip.key());
        // The last place: taken by an attempt that then succeeds, which gives back only its own.
        limits.take_attempt("victim", ip, NOW).unwrap();
        limits.record_success("victim", ip);
        assert!(limits.by_identifier.blocked_for("victim", NOW).is_none());
        limits.check("someone-else", ip, NOW).unwrap();
        limits.record_failure("someone-else", ip, NOW);
        let refused = limits.check("someone-else", ip, NOW).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(LOGIN_FAILURE_WINDOW.as_secs() as u32));
    }

    #[test]
    fn attempts_count_as_they_start_so_concurrent_ones_cannot_pass_the_bound() {
        // Attempts whose passwords are still being checked hold their places: the sixth
        // concurrent attempt on one identifier is refused before any was judged.
        let limits = LoginLimits::default();
        let ip = ClientIp(Some(IpAddr::from([10, 0, 0, 2])));
        for _ in 0..LOGIN_FAILURES_PER_IDENTIFIER_MAX {
            limits.take_attempt("target", ip, NOW).unwrap();
        }
        let refused = limits.take_attempt("target", ip, NOW).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
    }

    #[test]
    fn requests_beyond_the_burst_wait_one_interval() {
        let limiter = RequestLimiter::new(10);
        let caller = UserId::from_u128(7);
        for _ in 0..10 {
            limiter.admit(caller, NOW).unwrap();
        }
        let refused = limiter.admit(caller, NOW).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(1));
        limiter.admit(UserId::from_u128(8), NOW).unwrap();
        limiter.admit(caller, later(100_000)).unwrap();
    }

    #[test]
    fn callers_past_the_bound_share_one_slot_until_a_purge_frees_room() {
        // One request per second and no burst: a caller's second request in the same second
        // is refused.
        let limiter = RequestLimiter::new(1);
        let known = UserId::from_u128(1_000);
        for n in 0..REQUEST_CALLERS_MAX as u128 {
            limiter.admit(UserId::from_u128(1_000 + n), NOW).unwrap();
        }
        assert_eq!(limiter.admit(known, NOW).unwrap_err().code, ErrorCode::RateLimited, "its own slot");
        // The map is full and nobody's second is over: two new callers share one slot.
        let (first, second) = (UserId::from_u128(1), UserId::from_u128(2));
        limiter.admit(first, NOW).unwrap();
        assert_eq!(limiter.admit(second, NOW).unwrap_err().code, ErrorCode::RateLimited, "the shared slot");
        // Two seconds on, every caller has its burst back; the next purge forgets them, and a
        // new caller has its own slot again.
        limiter.admit(second, later(2_000_000)).unwrap();
        assert_eq!(limiter.arrivals.len(), 1);
        assert!(limiter.arrivals.contains_key(&Some(second)));
        assert_eq!(limiter.admit(second, later(2_000_001)).unwrap_err().code, ErrorCode::RateLimited);
        limiter.admit(first, later(2_000_001)).unwrap();
    }
}
