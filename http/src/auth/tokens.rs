//! Access tokens: RS256 JWTs with the signing key's `kid` in the header, 15 minutes long.
//!
//! Verification accepts exactly one algorithm (RS256), only a `kid` Tally published, only its
//! issuer and audience, and only an unexpired token by Tally's clock. A token that passes
//! every check but has expired is `401 TOKEN_EXPIRED`, so a client knows to refresh rather
//! than log in again (API.md 1.1); anything else is `401 UNAUTHENTICATED`, without saying
//! which check failed. Expiry is told apart only after the signature verified: a forged
//! token never learns whether its claims would have been accepted.
//!
//! A verified token is cached by its SHA-256 until it expires, so a client sending the same
//! token on every request pays one RSA verify, not one per request (DESIGN.md §7). A tampered
//! token hashes differently, so the cache can only ever answer for the exact bytes verified.
//!
//! Every token names its login session (`sid`). The cache only answers "these bytes were
//! signed by us for this user and session"; whether the session is still live is asked of the
//! session registry on every request (`caller.rs`), so a cached token of a terminated session
//! is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use tally_engine::{ErrorCode, Timestamp, UserId};
use uuid::Uuid;

use super::keys::KeyRing;
use crate::digest::sha256;
use crate::problem::ApiError;

/// How long an access token lives (API.md, DESIGN.md §7).
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The `iss` and `aud` of every token Tally issues and the only ones it accepts.
pub const ISSUER: &str = "tally";
pub const AUDIENCE: &str = "tally-api";

/// Longest bearer token looked at. Tally's tokens are ~700 bytes; anything far longer is not
/// one of them, and is refused before it is hashed or parsed.
pub const TOKEN_LENGTH_MAX: usize = 4_096;

/// Verified tokens remembered at once. An entry is ~100 bytes with the map's overhead, so the
/// cache stays under ~7 MiB; 65,536 distinct live tokens is far more clients than one node
/// serves in 15 minutes. When full, expired entries are purged (at most once a second); if it
/// is still full, new tokens are verified every time until room frees up.
pub const VERIFIED_TOKENS_MAX: usize = 65_536;

/// Least time between two purges of a full cache, so a flood of new tokens does not turn
/// every request into a scan of the whole map.
const PURGE_INTERVAL_MICROS: i64 = 1_000_000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// A unique id per token (a future revocation list names tokens by it).
    pub jti: String,
    /// The login session the token belongs to; ending the session ends the token.
    pub sid: String,
}

impl AccessClaims {
    /// The claims of a fresh access token for `user` in login session `session`, issued at
    /// `now`.
    pub fn new(user: UserId, session: Uuid, now: Timestamp) -> AccessClaims {
        let iat = now.as_micros().div_euclid(1_000_000);
        AccessClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.to_string(),
            iat,
            exp: iat.saturating_add(ACCESS_TOKEN_TTL.as_secs() as i64),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session.to_string(),
        }
    }
}

/// What a verified token says: whose it is and which session it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    pub session: Uuid,
    /// Seconds since the epoch.
    expires_at: i64,
}

pub struct Tokens {
    keys: KeyRing,
    validation: Validation,
    verified: DashMap<[u8; 32], Verified>,
    last_purge_micros: AtomicI64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("keys", &self.keys).field("verified", &self.verified.len()).finish()
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "missing, malformed or invalid access token")
}

fn expired() -> ApiError {
    ApiError::new(ErrorCode::TokenExpired, "the access token has expired; refresh it")
}

impl Tokens {
    pub fn new(keys: KeyRing) -> Tokens {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked against Tally's clock (the one seam for time), below, not the
        // library's own reading of the system clock.
        validation.validate_exp = false;
        validation.leeway = 0;
        Tokens { keys, validation, verified: DashMap::new(), last_purge_micros: AtomicI64::new(0) }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Signs `claims` with the current signing key. CPU-bound (an RSA private-key operation):
    /// async callers use `issue`.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let key = self.keys.signing_key();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding)
    }

    /// A fresh access token for `user` in `session`, signed on the blocking pool.
    pub async fn issue(self: &Arc<Self>, user: UserId, session: Uuid, now: Timestamp) -> Result<String, ApiError> {
        let tokens = Arc::clone(self);
        let claims = AccessClaims::new(user, session, now);
        tokio::task::spawn_blocking(move || tokens.sign(&claims))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// The user a bearer token speaks for, or `401 UNAUTHENTICATED`. Says nothing of whether
    /// its session is live: `verify_session` and then the session registry do.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<UserId, ApiError> {
        self.verify_session(token, now).map(|verified| verified.user)
    }

    /// The user and session a bearer token speaks for, or `401 UNAUTHENTICATED`.
    pub fn verify_session(&self, token: &str, now: Timestamp) -> Result<Verified, ApiError> {
        if token.is_empty() || token.len() > TOKEN_LENGTH_MAX {
            return Err(unauthenticated());
        }
        let now_secs = now.as_micros().div_euclid(1_000_000);
        let digest = sha256(token.as_bytes());
        if let Some(hit) = self.verified.get(&digest).map(|entry| *entry.value()) {
            if hit.expires_at > now_secs {
                return Ok(hit);
            }
            self.verified.remove(&digest);
            return Err(expired());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthenticated());
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.by_kid(kid)).ok_or_else(unauthenticated)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map_err(|_| unauthenticated())?;
        let claims = data.claims;
        if claims.exp <= now_secs {
            return Err(expired());
        }
        let user = uuid::Uuid::parse_str(&claims.sub).map(UserId::from_uuid).map_err(|_| unauthenticated())?;
        let session = uuid::Uuid::parse_str(&claims.sid).map_err(|_| unauthenticated())?;
        let verified = Verified { user, session, expires_at: claims.exp };
        self.remember(digest, verified, now);
        Ok(verified)
    }

    fn remember(&self, digest: [u8; 32], verified: Verified, now: Timestamp) {
        if self.verified.len() >= VERIFIED_TOKENS_MAX {
            let last = self.last_purge_micros.load(Ordering::Relaxed);
            if now.as_micros().saturating_sub(last) >= PURGE_INTERVAL_MICROS
                && self
                    .last_purge_micros
                    .compare_exchange(last, now.as_micros(), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let now_secs = now.as_micros().div_euclid(1_000_000);
                self.verified.retain(|_, entry| entry.expires_at > now_secs);
            }
            if self.verified.len() >= VERIFIED_TOKENS_MAX {
                return;
            }
        }
        self.verified.insert(digest, verified);
    }

    /// Verified tokens currently cached (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.verified.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tally_persistence::users::SigningKeyRecord;

    use super::*;
    use crate::auth::keys::{self, ALGORITHM};

    fn ring() -> KeyRing {
        let pkcs8 = keys::generate_pkcs8().unwrap();
        let kid = keys::signing_key_from_pkcs8(&pkcs8, 1, "t").unwrap().kid;
        KeyRing::from_records(&[SigningKeyRecord {
            generation: 1,
            kid,
            algorithm: ALGORITHM.to_owned(),
            private_key_pkcs8: pkcs8,
            created_at: Timestamp::default(),
        }])
        .unwrap()
    }

    const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_000_000);

    #[test]
    fn a_signed_token_verifies_until_it_expires_and_is_cached() {
        let tokens = Tokens::new(ring());
        let user = UserId::from_u128(42);
        let token = tokens.sign(&AccessClaims::new(user, Uuid::from_u128(7), NOW)).unwrap();
        assert_eq!(tokens.verify(&token, NOW).unwrap(), user);
        assert_eq!(tokens.cached(), 1);
        assert_eq!(tokens.verify(&token, NOW).unwrap(), user, "from the cache");
        assert_eq!(tokens.verify_session(&token, NOW).unwrap().session, Uuid::from_u128(7), "the session rides along");
        let expiry = Timestamp::from_micros(NOW.as_micros() + ACCESS_TOKEN_TTL.as_micros() as i64);
        let code = |result: Result<UserId, ApiError>| result.err().map(|error| error.code);
        assert_eq!(code(tokens.verify(&token, expiry)), Some(ErrorCode::TokenExpired), "expired, even though cached");
        assert_eq!(code(tokens.verify(&token, expiry)), Some(ErrorCode::TokenExpired), "and after eviction too");
    }

    #[test]
    fn tampering_wrong_issuer_and_foreign_keys_are_refused() {
        let tokens = Tokens::new(ring());
        let token = tokens.sign(&AccessClaims::new(UserId::from_u128(1), Uuid::from_u128(7), NOW)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = AccessClaims::new(UserId::from_u128(2), Uuid::from_u128(7), NOW);
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(tokens.verify(&tampered, NOW).is_err());

        claims.iss = "someone-else".to_owned();
        assert!(tokens.verify(&tokens.sign(&claims).unwrap(), NOW).is_err());

        let other = Tokens::new(ring());
        let foreign = other.sign(&AccessClaims::new(UserId::from_u128(1), Uuid::from_u128(7), NOW)).unwrap();
        assert!(tokens.verify(&foreign, NOW).is_err(), "unknown kid");
        assert!(tokens.verify("", NOW).is_err());
        assert!(tokens.verify(&"a".repeat(TOKEN_LENGTH_MAX + 1), NOW).is_err());
    }
}
