//! A clock for black-box tests: the system's time plus an offset the test moves forward, so
//! time-bound behaviour (TOTP steps, step-up token expiry, rate-limit windows) is tested
//! without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tally_actors::{Clock, SystemClock};
use tally_engine::Timestamp;

#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_micros: AtomicI64,
}

impl ShiftedClock {
    /// Moves this clock `by` into the future.
    pub fn advance(&self, by: Duration) {
        self.offset_micros.fetch_add(i64::try_from(by.as_micros()).expect("a test-sized duration"), Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(SystemClock.now().as_micros() + self.offset_micros.load(Ordering::SeqCst))
    }
}
