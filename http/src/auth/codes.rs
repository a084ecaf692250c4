//! Emailed one-time codes (password reset, email verification): six random digits, valid
//! `CODE_TTL`, single use, `CODE_ATTEMPTS_MAX` tries, stored only as an argon2id hash.
//!
//! Why argon2 and not SHA-256 as for backup codes and API keys: a six-digit code has only a
//! million values, so anyone who reads the table could try them all against a fast hash in
//! milliseconds; against argon2id (~50 ms each, on the same bounded blocking pool as
//! passwords) trying them all takes about 14 CPU-hours, far past the code's 15 minutes.
//! The cost is one hash per issued code and one per try, and tries are bounded.

use std::time::Duration;

use tally_engine::{ErrorCode, Timestamp, UserId};
use tally_persistence::users::self_service::{CodePurpose, EmailCode};

use super::Identity;
use crate::problem::ApiError;

/// How long a code works (API.md: 15 minutes).
pub const CODE_TTL: Duration = Duration::from_secs(15 * 60);

/// Tries a code allows (API.md: 5 wrong codes kill it). A try is counted before it is checked.
pub const CODE_ATTEMPTS_MAX: u32 = 5;

/// Digits in a code (API.md).
pub const CODE_DIGITS: usize = 6;

/// A fresh code and its stored form.
pub struct IssuedCode {
    /// What the user is mailed.
    pub code: String,
    pub stored: EmailCode,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode").field("stored", &self.stored).finish_non_exhaustive()
    }
}

/// Six digits drawn uniformly (rejection sampling: 2^32 is not a multiple of 10^6, and a
/// plain modulo would make low codes slightly likelier).
pub fn random_code() -> Result<String, ApiError> {
    const RANGE: u32 = 1_000_000;
    const LIMIT: u32 = u32::MAX - (u32::MAX % RANGE);
    loop {
        let mut bytes = [0_u8; 4];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
        let value = u32::from_le_bytes(bytes);
        if value < LIMIT {
            return Ok(format!("{:06}", value % RANGE));
        }
    }
}

/// Whether `code` has a code's shape: exactly six ASCII digits.
pub fn is_code_shaped(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|byte| byte.is_ascii_digit())
}

/// A new code for `user`'s `purpose`, hashed (on the blocking pool). Also used, with the user
/// thrown away, to spend the same time on an address that names nobody.
pub async fn issue(identity: &Identity, user: UserId, purpose: CodePurpose) -> Result<IssuedCode, ApiError> {
    let code = random_code()?;
    let code_hash = identity.passwords.hash(code.clone()).await?;
    let now = identity.now();
    let ttl = i64::try_from(CODE_TTL.as_micros()).unwrap_or(i64::MAX);
    Ok(IssuedCode {
        code,
        stored: EmailCode {
            user,
            purpose,
            code_hash,
            created_at: now,
            expires_at: Timestamp::from_micros(now.as_micros().saturating_add(ttl)),
        },
    })
}

/// The one answer to every code that does not work: wrong, expired, used, out of tries, or
/// for an address that names nobody (so the answer says nothing of which).
pub fn invalid_code() -> ApiError {
    ApiError::new(ErrorCode::InvalidCode, "the code is wrong, expired or already used; request a new one")
}

/// Checks `code` against the user's live code for `purpose`, counting the try first. Returns
/// the stored hash it matched (to spend it), or `None`. With no live code, a decoy check
/// takes the same time.
pub async fn check(
    identity: &Identity,
    user: Option<UserId>,
    purpose: CodePurpose,
    code: &str,
) -> Result<Option<String>, ApiError> {
    let stored = match user {
        Some(user) => identity.self_service.take_code_attempt(user, purpose, identity.now(), CODE_ATTEMPTS_MAX).await?,
        None => None,
    };
    let matches = identity.passwords.verify(code.to_owned(), stored.clone()).await?;
    Ok(stored.filter(|_| matches))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn codes_are_six_digits_and_spread_over_the_range() {
        let mut first_digits = [0_u32; 10];
        for _ in 0..2_000 {
            let code = random_code().unwrap();
            assert!(is_code_shaped(&code), "{code}");
            first_digits[usize::from(code.as_bytes()[0] - b'0')] += 1;
        }
        // Each leading digit is expected ~200 times; a stuck or biased generator fails this.
        assert!(first_digits.iter().all(|count| (100..=320).contains(count)), "{first_digits:?}");
        assert!(!is_code_shaped("12345"));
        assert!(!is_code_shaped("1234567"));
        assert!(!is_code_shaped("12345a"));
        assert!(!is_code_shaped("１２３４５６"), "full-width digits are not ASCII");
    }
}
