//! The one seam for time and ids, so tests and simulations can control them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tally_engine::Timestamp;
use uuid::Uuid;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros());
        Timestamp::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

pub trait IdSource: Send + Sync + 'static {
    fn next_uuid(&self) -> Uuid;
}

/// Random v4 UUIDs: the production id source.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Sequential ids (still v4-shaped, so they never collide with system account ids), for
/// reproducible tests.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    pub fn new(start: u64) -> Self {
        SequentialIds { next: AtomicU64::new(start) }
    }
}

impl IdSource for SequentialIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        uuid::Builder::from_random_bytes((u128::from(n) | (0xC0FFEE_u128 << 64)).to_be_bytes()).into_uuid()
    }
}
