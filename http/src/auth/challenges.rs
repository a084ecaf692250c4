//! Pending second-factor challenges: the MFA session a password login opens, and the step-up
//! session `POST /v1/auth/step-up` opens. Each is short-lived, single-use and allows a bounded
//! number of wrong codes; all live in memory (a restart or another node does not know them,
//! which only means logging in or stepping up again).

use std::time::Duration;

use dashmap::DashMap;
use tally_engine::{ErrorCode, Timestamp, UserId};
use uuid::Uuid;

use crate::problem::ApiError;

/// How long an MFA or step-up session waits for its code: long enough to unlock a phone and
/// type six digits, short enough that a stolen session id is soon useless.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

/// Wrong codes one session accepts before it is dropped (and the client must start again,
/// which the per-user second-factor limit also counts).
pub const CHALLENGE_ATTEMPTS_MAX: u32 = 5;

/// Sessions pending at once per kind. Each is ~100 bytes; more than this many people
/// mid-login within five minutes is beyond one node, and a flood of opened sessions gets
/// `503` instead of growing memory.
pub const CHALLENGES_MAX: usize = 65_536;

/// Sessions pending at once per user and kind: a user opening more drops their own oldest.
/// Without it one user could fill `CHALLENGES_MAX` (a step-up session needs no code to open)
/// and every other user's step-up would answer `503` for five minutes.
pub const CHALLENGES_PER_USER_MAX: usize = 8;

/// What the session is for. A login session carries a digest of the stored password hash its
/// password was checked against (not the hash itself, which has no business in memory dumps or
/// debug output), so a password changed or reset before the code arrives ends it; a step-up
/// session carries its operation type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    Login { password_digest: String },
    StepUp(&'static str),
}

impl Purpose {
    /// A login session for a password checked against the stored `password_hash`.
    pub fn login(password_hash: &str) -> Purpose {
        Purpose::Login { password_digest: crate::digest::sha256_hex(password_hash.as_bytes()) }
    }

    /// Whether this is a login session whose password is still `password_hash`.
    pub fn is_login_with(&self, password_hash: &str) -> bool {
        matches!(self, Purpose::Login { password_digest } if *password_digest == crate::digest::sha256_hex(password_hash.as_bytes()))
    }
}

#[derive(Clone, Debug)]
pub struct Challenge {
    pub user: UserId,
    pub purpose: Purpose,
    expires_micros: i64,
    attempts_left: u32,
}

#[derive(Debug, Default)]
pub struct Challenges {
    pending: DashMap<Uuid, Challenge>,
    /// Each user's sessions, oldest first (ids of sessions since used or expired linger
    /// until the next open of that user, or the next sweep).
    of_user: DashMap<UserId, std::collections::VecDeque<Uuid>>,
}

/// What checking a code against a session found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Accepted,
    /// Wrong; the session stays with this many attempts left (0: it is gone).
    Refused {
        attempts_left: u32,
    },
}

impl Challenges {
    /// Opens a session for `user`; `503` if too many are pending even after dropping the
    /// expired ones.
    pub fn open(&self, id: Uuid, user: UserId, purpose: Purpose, now: Timestamp) -> Result<(), ApiError> {
        // Swept when either map is full: `of_user` keeps a user's entry until their next open,
        // so without its own bound it would grow with every user who ever opened a session.
        if self.pending.len() >= CHALLENGES_MAX || self.of_user.len() >= CHALLENGES_MAX {
            self.pending.retain(|_, challenge| challenge.expires_micros > now.as_micros());
            self.of_user.retain(|_, ids| {
                ids.retain(|id| self.pending.contains_key(id));
                !ids.is_empty()
            });
            if self.pending.len() >= CHALLENGES_MAX {
                return Err(ApiError::new(ErrorCode::Overloaded, "too many sessions pending; retry later"));
            }
        }
        {
            let mut ids = self.of_user.entry(user).or_default();
            ids.retain(|id| self.pending.contains_key(id));
            while ids.len() >= CHALLENGES_PER_USER_MAX {
                if let Some(oldest) = ids.pop_front() {
                    self.pending.remove(&oldest);
                }
            }
            ids.push_back(id);
        }
        let ttl = i64::try_from(CHALLENGE_TTL.as_micros()).unwrap_or(i64::MAX);
        let expires_micros = now.as_micros().saturating_add(ttl);
        self.pending.insert(id, Challenge { user, purpose, expires_micros, attempts_left: CHALLENGE_ATTEMPTS_MAX });
        Ok(())
    }

    /// The live session `id` (expired ones are dropped here).
    pub fn get(&self, id: Uuid, now: Timestamp) -> Option<Challenge> {
        let challenge = self.pending.get(&id)?.value().clone();
        if challenge.expires_micros <= now.as_micros() {
            self.pending.remove(&id);
            return None;
        }
        Some(challenge)
    }

    /// The live session `id` with one of its attempts taken, before its code is checked
    /// (`None` if it is gone, expired or out of attempts). Taken first, as `settle` used to
    /// spend a wrong code's attempt only once the code was judged, concurrent codes on one
    /// session all passed the bound while they were being checked.
    pub fn begin(&self, id: Uuid, now: Timestamp) -> Option<Challenge> {
        let mut entry = self.pending.get_mut(&id)?;
        if entry.expires_micros <= now.as_micros() || entry.attempts_left == 0 {
            drop(entry);
            self.pending.remove(&id);
            return None;
        }
        entry.attempts_left -= 1;
        Some(entry.value().clone())
    }

    /// Settles an attempt `begin` took: a right code consumes the session (single use, and
    /// of two concurrent right answers only one gets `Accepted`); a wrong one leaves it with
    /// the attempts left, dropped at none.
    pub fn settle(&self, id: Uuid, correct: bool) -> Attempt {
        if correct {
            return match self.pending.remove(&id) {
                Some(_) => Attempt::Accepted,
                None => Attempt::Refused { attempts_left: 0 },
            };
        }
        let attempts_left = self.pending.get(&id).map_or(0, |challenge| challenge.attempts_left);
        if attempts_left == 0 {
            self.pending.remove(&id);
        }
        Attempt::Refused { attempts_left }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_000_000);

    fn login() -> Purpose {
        Purpose::login("argon2-of-the-password")
    }

    /// One user opening sessions without end drops only their own oldest: another user can
    /// still open one (before, one user could fill the table and every other user's step-up
    /// answered `503` for five minutes; found by a review).
    #[test]
    fn a_user_opening_many_sessions_drops_their_own_oldest_and_denies_no_one_else() {
        let challenges = Challenges::default();
        let (greedy, other) = (UserId::from_u128(1), UserId::from_u128(2));
        let first = Uuid::new_v4();
        challenges.open(first, greedy, login(), NOW).unwrap();
        for _ in 0..CHALLENGES_MAX {
            challenges.open(Uuid::new_v4(), greedy, Purpose::StepUp("transfers.create"), NOW).unwrap();
        }
        assert_eq!(challenges.pending.len(), CHALLENGES_PER_USER_MAX);
        assert!(challenges.get(first, NOW).is_none(), "the oldest went first");
        let theirs = Uuid::new_v4();
        challenges.open(theirs, other, login(), NOW).unwrap();
        assert!(challenges.get(theirs, NOW).is_some());

        // The per-user index stays bounded too: users whose sessions are all used are swept,
        // even while the sessions themselves never fill up.
        for n in 0..CHALLENGES_MAX as u128 + 5 {
            let id = Uuid::new_v4();
            challenges.open(id, UserId::from_u128(1_000 + n), login(), NOW).unwrap();
            assert!(challenges.begin(id, NOW).is_some());
            assert_eq!(challenges.settle(id, true), Attempt::Accepted);
        }
        assert!(challenges.of_user.len() <= 2 * CHALLENGES_PER_USER_MAX, "{}", challenges.of_user.len());
    }

    #[test]
    fn a_session_expires_allows_bounded_wrong_codes_and_is_used_once() {
        let challenges = Challenges::default();
        let user = UserId::from_u128(1);
        let id = Uuid::new_v4();
        challenges.open(id, user, login(), NOW).unwrap();
        for left in (1..CHALLENGE_ATTEMPTS_MAX).rev() {
            assert!(challenges.begin(id, NOW).is_some());
            assert_eq!(challenges.settle(id, false), Attempt::Refused { attempts_left: left });
        }
        assert!(challenges.begin(id, NOW).is_some());
        assert_eq!(challenges.settle(id, false), Attempt::Refused { attempts_left: 0 });
        assert!(challenges.get(id, NOW).is_none(), "dropped after the last wrong code");

        // Attempts are taken as they begin: concurrent codes cannot pass the bound while they
        // are being checked.
        challenges.open(id, user, login(), NOW).unwrap();
        for _ in 0..CHALLENGE_ATTEMPTS_MAX {
            assert!(challenges.begin(id, NOW).is_some());
        }
        assert!(challenges.begin(id, NOW).is_none(), "no attempt left before any was judged");

        challenges.open(id, user, login(), NOW).unwrap();
        assert!(challenges.begin(id, NOW).is_some());
        assert_eq!(challenges.settle(id, true), Attempt::Accepted);
        assert_eq!(challenges.settle(id, true), Attempt::Refused { attempts_left: 0 }, "single use");

        challenges.open(id, user, login(), NOW).unwrap();
        let expiry = Timestamp::from_micros(NOW.as_micros() + CHALLENGE_TTL.as_micros() as i64);
        assert!(challenges.get(id, expiry).is_none());
    }
}
