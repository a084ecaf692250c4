//! Passwords: the policy a new password must meet, and argon2id hashing and verification.
//!
//! Hashing is deliberately slow (tens of milliseconds, 19 MiB of memory per hash), so it runs
//! on tokio's blocking pool, never on an async worker (DESIGN.md §2), and at most
//! `HASHES_IN_FLIGHT_MAX` at once: a flood of logins then queues instead of taking
//! `19 MiB × blocking threads` of memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// Shortest password accepted (API.md).
pub const PASSWORD_LENGTH_MIN: usize = 8;

/// Longest password accepted, in characters. Argon2 takes any length, but an unbounded input
/// is an unbounded allocation; 128 covers every passphrase a person types or a manager makes.
pub const PASSWORD_LENGTH_MAX: usize = 128;

/// Hashes or verifications running at once. Each holds `MEMORY_KIB` of memory: eight take
/// ~152 MiB, and keep both cores busy with one in the queue each.
pub const HASHES_IN_FLIGHT_MAX: usize = 8;

/// The OWASP-recommended argon2id parameters (19 MiB, 2 passes, 1 lane). Verification reads
/// the parameters from the stored hash, so raising these later re-hashes nobody by force.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// Random bytes in each salt: 16 bytes (128 bits), as the argon2 RFC (9106) recommends.
const SALT_BYTES: usize = 16;

/// Why a password does not meet the policy; the message names every missing part.
pub fn check_policy(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    let mut missing = Vec::new();
    if length < PASSWORD_LENGTH_MIN {
        missing.push(format!("at least {PASSWORD_LENGTH_MIN} characters"));
    }
    if length > PASSWORD_LENGTH_MAX {
        return Err(format!("must be at most {PASSWORD_LENGTH_MAX} characters"));
    }
    if !password.chars().any(char::is_uppercase) {
        missing.push("an uppercase letter".to_owned());
    }
    if !password.chars().any(char::is_lowercase) {
        missing.push("a lowercase letter".to_owned());
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        missing.push("a digit".to_owned());
    }
    if !password.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace()) {
        missing.push("a special character".to_owned());
    }
    if missing.is_empty() { Ok(()) } else { Err(format!("must contain {}", missing.join(", "))) }
}

/// Hashes and verifies passwords on the blocking pool, bounded.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user does not exist, so that
    /// "no such user" costs as long as "wrong password" and timing does not tell them apart.
    decoy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

fn argon2() -> Result<Argon2<'static>, String> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).map_err(|error| error.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &str) -> Result<String, String> {
    let mut salt = [0_u8; SALT_BYTES];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "the system random generator failed".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| error.to_string())?;
    Ok(argon2()?.hash_password(password.as_bytes(), &salt).map_err(|error| error.to_string())?.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> Result<bool, String> {
    let parsed = PasswordHash::new(hash).map_err(|error| format!("stored hash unreadable: {error}"))?;
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(other.to_string()),
    }
}

impl Passwords {
    /// Prepares the hasher, computing the decoy hash (on the blocking pool).
    pub async fn new() -> Result<Passwords, String> {
        let mut decoy = [0_u8; 32];
        aws_lc_rs::rand::fill(&mut decoy).map_err(|_| "the system random generator failed".to_owned())?;
        let decoy_password = data_encoding::HEXLOWER.encode(&decoy);
        let decoy_hash = tokio::task::spawn_blocking(move || hash_blocking(&decoy_password))
            .await
            .map_err(|error| error.to_string())??;
        Ok(Passwords { permits: Arc::new(Semaphore::new(HASHES_IN_FLIGHT_MAX)), decoy_hash: decoy_hash.into() })
    }

    /// An argon2id PHC string of `password`.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `hash`; with no hash (no such user), checks against the
    /// decoy and answers false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy_hash.to_string());
        let matches = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_policy_names_each_missing_part_in_order() {
        assert_eq!(check_policy("Passw0rd!"), Ok(()));
        assert_eq!(check_policy("Pw0!"), Err("must contain at least 8 characters".to_owned()));
        assert_eq!(
            check_policy("password"),
            Err("must contain an uppercase letter, a digit, a special character".to_owned())
        );
        assert_eq!(check_policy("PASSWORD1!"), Err("must contain a lowercase letter".to_owned()));
        assert_eq!(check_policy("Password!"), Err("must contain a digit".to_owned()));
        assert_eq!(check_policy("Password1"), Err("must contain a special character".to_owned()));
        assert!(check_policy(&format!("Aa1!{}", "x".repeat(PASSWORD_LENGTH_MAX))).is_err());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let passwords = Passwords::new().await.unwrap();
        let hash = passwords.hash("Corr3ct!horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(passwords.verify("Corr3ct!horse".to_owned(), Some(hash.clone())).await.unwrap());
        assert!(!passwords.verify("Corr3ct!horsE".to_owned(), Some(hash)).await.unwrap());
        assert!(!passwords.verify("anything".to_owned(), None).await.unwrap(), "no user never verifies");
    }
}
