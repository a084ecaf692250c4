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

/// Time-ordered v7 UUIDs (48 bits of Unix milliseconds, then random bits): the production id
/// source. A table keyed by them grows at its right edge, one B-tree page at a time, where
/// random v4 keys land on a random page each (DESIGN.md §5: the primary key of `transfers`
/// cost a random page per insert). The first 48 bits are the time since 1970, so an id can
/// never begin with the 32 zero bits of a system account's fixed id.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_uuid(&self) -> Uuid {
        Uuid::now_v7()
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
