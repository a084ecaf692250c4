//! Refresh tokens: opaque, random, stored only as their SHA-256, spent once. Refreshing spends
//! the token and issues the next one in the same family; presenting a spent token again
//! means it leaked (the legitimate client already holds its successor), so the whole family
//! is revoked and the client must log in again (DESIGN.md §7).
//!
//! A family is one login session: its id is the session's id (`sessions.rs`), so a reuse
//! ends the session too, and with it the family's access tokens at once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tally_engine::{Timestamp, UserId};
use tally_persistence::users::{RefreshTokenRecord, RefreshUse, UserStore};
use uuid::Uuid;

use crate::digest::sha256_hex;
use crate::problem::ApiError;

/// How long a refresh token lives: a month of not opening the app means logging in again.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Random bytes per token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

/// Longest refresh token looked at: ours are 43 characters.
pub const REFRESH_TOKEN_LENGTH_MAX: usize = 128;

/// Makes a new refresh token in `family` for `user`, stores its hash, and returns the token.
pub async fn issue(users: &dyn UserStore, user: UserId, family: Uuid, now: Timestamp) -> Result<String, ApiError> {
    let mut bytes = [0_u8; TOKEN_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let record = RefreshTokenRecord {
        token_hash: sha256_hex(token.as_bytes()),
        user_id: user,
        family_id: family,
        issued_at: now,
        expires_at: Timestamp::from_micros(now.as_micros().saturating_add(REFRESH_TOKEN_TTL.as_micros() as i64)),
    };
    users.insert_refresh_token(&record).await.map_err(ApiError::from)?;
    Ok(token)
}

/// Spends `token`: `Spent` if it was live, `Reused` if it was spent before (its family is now
/// revoked; the caller ends the session), `Invalid` if unknown, expired or revoked.
pub async fn spend(users: &dyn UserStore, token: &str, now: Timestamp) -> Result<RefreshUse, ApiError> {
    if token.is_empty() || token.len() > REFRESH_TOKEN_LENGTH_MAX {
        return Ok(RefreshUse::Invalid);
    }
    let spent = users.spend_refresh_token(&sha256_hex(token.as_bytes()), now).await.map_err(ApiError::from)?;
    if let RefreshUse::Reused { family_id } = &spent {
        tracing::warn!(%family_id, "a spent refresh token was presented again; its family is revoked");
    }
    Ok(spent)
}
