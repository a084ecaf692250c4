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

/// A test-only clock for a real `tally serve` (docs/ledger-views.md "Pending expiry"): the
/// system's time plus an offset in whole seconds read from a file, so a black-box test can move
/// the engine's time forward (past a pending transfer's deadline) without waiting. `tally
/// serve` uses it only when `TALLY_TEST_CLOCK=enabled` and `TALLY_TEST_CLOCK_OFFSET_FILE`
/// names the file; otherwise it runs on `SystemClock`.
///
/// A thread re-reads the file every `OFFSET_POLL` and keeps the largest offset it has seen, so
/// `now()` costs one atomic load and this clock never goes back (an unreadable or half-written
/// file changes nothing).
#[derive(Debug)]
pub struct OffsetFileClock {
    offset_micros: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// How often the offset file is read: a test that writes it waits at least this long before it
/// relies on the new time.
pub const OFFSET_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl OffsetFileClock {
    /// Starts the clock and its polling thread (which lives as long as the process).
    pub fn start(path: std::path::PathBuf) -> std::io::Result<OffsetFileClock> {
        let offset_micros = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let shared = std::sync::Arc::clone(&offset_micros);
        let read = move || {
            let secs = std::fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<i64>().ok());
            if let Some(micros) = secs.and_then(|secs| secs.checked_mul(1_000_000)) {
                shared.fetch_max(micros, Ordering::SeqCst);
            }
        };
        read();
        std::thread::Builder::new().name("test-clock".to_owned()).spawn(move || {
            loop {
                std::thread::sleep(OFFSET_POLL);
                read();
            }
        })?;
        Ok(OffsetFileClock { offset_micros })
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(SystemClock.now().as_micros().saturating_add(self.offset_micros.load(Ordering::SeqCst)))
    }
}
