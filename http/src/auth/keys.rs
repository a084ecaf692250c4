//! The RS256 signing keys: generated on first start, persisted in the user store so tokens
//! survive restarts and every node of a cluster signs with the same key, and published as a
//! JWKS.
//!
//! A key is stored as PKCS#8 DER (what `aws-lc-rs` generates). `jsonwebtoken`'s aws-lc
//! backend signs with a PKCS#1 `RSAPrivateKey`, which PKCS#8 wraps in an OCTET STRING, so
//! loading unwraps it (`pkcs1_of_pkcs8`) and then checks, as a pair assertion, that the
//! unwrapped key has the same public key as the PKCS#8 one.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use tally_engine::Timestamp;
use tally_persistence::users::{SigningKeyRecord, UserStore};

/// The only algorithm Tally signs with or accepts.
pub const ALGORITHM: &str = "RS256";

/// How many times start-up reads the keys again after losing the race to create the first
/// one. One retry suffices (the winner's insert is committed before ours fails); three
/// absorb a slow replica without looping forever.
const KEY_LOAD_ATTEMPTS_MAX: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating an RSA key failed")]
    Generate,
    #[error("stored signing key {kid} is unusable: {reason}")]
    Unusable { kid: String, reason: String },
    #[error("no signing key after {KEY_LOAD_ATTEMPTS_MAX} attempts")]
    Missing,
    #[error("store: {0}")]
    Store(#[from] tally_persistence::StoreError),
    #[error("blocking task: {0}")]
    Task(String),
}

/// One usable key: what signs, what verifies, and its public half for the JWKS.
pub struct SigningKey {
    pub kid: String,
    pub generation: u32,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// Base64url (no padding) big-endian modulus and exponent, as JWK `n` and `e`.
    pub n: String,
    pub e: String,
    /// The SubjectPublicKeyInfo DER of the public key (tests use it to forge an HS256 token
    /// "signed" with the public key, the classic algorithm-confusion attack).
    pub public_key_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("generation", &self.generation).finish()
    }
}

/// Every stored key by `kid`; the newest generation signs.
pub struct KeyRing {
    signing: usize,
    keys: Vec<SigningKey>,
    by_kid: HashMap<String, usize>,
    jwks: serde_json::Value,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("keys", &self.keys).finish()
    }
}

impl KeyRing {
    /// Loads the stored keys, creating generation 1 if there is none. Safe against another
    /// process doing the same at the same moment: the loser reads the winner's key.
    pub async fn load_or_create(users: &dyn UserStore, now: Timestamp) -> Result<KeyRing, KeyError> {
        for _ in 0..KEY_LOAD_ATTEMPTS_MAX {
            let records = users.signing_keys().await?;
            if !records.is_empty() {
                return KeyRing::from_records(&records);
            }
            let pkcs8 = tokio::task::spawn_blocking(generate_pkcs8)
                .await
                .map_err(|error| KeyError::Task(error.to_string()))??;
            let key = signing_key_from_pkcs8(&pkcs8, 1, "new key")?;
            let record = SigningKeyRecord {
                generation: 1,
                kid: key.kid,
                algorithm: ALGORITHM.to_owned(),
                private_key_pkcs8: pkcs8,
                created_at: now,
            };
            if users.insert_signing_key(&record).await? {
                tracing::info!(kid = %record.kid, "generated the first JWT signing key");
            }
        }
        Err(KeyError::Missing)
    }

    pub fn from_records(records: &[SigningKeyRecord]) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            if record.algorithm != ALGORITHM {
                return Err(KeyError::Unusable {
                    kid: record.kid.clone(),
                    reason: format!("algorithm {}", record.algorithm),
                });
            }
            let key = signing_key_from_pkcs8(&record.private_key_pkcs8, record.generation, &record.kid)?;
            if key.kid != record.kid {
                return Err(KeyError::Unusable {
                    kid: record.kid.clone(),
                    reason: format!("its thumbprint is {}", key.kid),
                });
            }
            keys.push(key);
        }
        let signing = keys
            .iter()
            .enumerate()
            .max_by_key(|(_, key)| key.generation)
            .map(|(index, _)| index)
            .ok_or(KeyError::Missing)?;
        let by_kid = keys.iter().enumerate().map(|(index, key)| (key.kid.clone(), index)).collect();
        let jwks = serde_json::json!({
            "keys": keys.iter().map(|key| serde_json::json!({
                "kty": "RSA",
                "use": "sig",
                "alg": ALGORITHM,
                "kid": key.kid,
                "n": key.n,
                "e": key.e,
            })).collect::<Vec<_>>()
        });
        Ok(KeyRing { signing, keys, by_kid, jwks })
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        // `signing` is an index `from_records` took from `keys` itself.
        &self.keys[self.signing]
    }

    pub fn by_kid(&self, kid: &str) -> Option<&SigningKey> {
        self.by_kid.get(kid).and_then(|index| self.keys.get(*index))
    }

    /// The JWKS document of every key.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

/// A fresh RSA-2048 private key as PKCS#8 DER. Slow (up to a second): call it on the blocking
/// pool.
pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
    Ok(pair.as_der().map_err(|_| KeyError::Generate)?.as_ref().to_vec())
}

/// Builds the usable key from stored PKCS#8 DER, checking that the PKCS#1 key inside is the
/// same key.
pub fn signing_key_from_pkcs8(pkcs8: &[u8], generation: u32, label: &str) -> Result<SigningKey, KeyError> {
    let unusable = |reason: &str| KeyError::Unusable { kid: label.to_owned(), reason: reason.to_owned() };
    let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|error| unusable(&format!("not PKCS#8 RSA: {error}")))?;
    let pkcs1 = pkcs1_of_pkcs8(pkcs8).ok_or_else(|| unusable("no RSAPrivateKey inside the PKCS#8"))?;
    let inner = RsaKeyPair::from_der(pkcs1).map_err(|error| unusable(&format!("inner key: {error}")))?;
    if inner.public_key().as_ref() != pair.public_key().as_ref() {
        return Err(unusable("the inner key's public key differs"));
    }
    let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let public_key_der =
        pair.public_key().as_der().map_err(|_| unusable("public key not encodable"))?.as_ref().to_vec();
    let n = URL_SAFE_NO_PAD.encode(&components.n);
    let e = URL_SAFE_NO_PAD.encode(&components.e);
    Ok(SigningKey {
        kid: thumbprint(&n, &e),
        generation,
        encoding: EncodingKey::from_rsa_der(pkcs1),
        decoding: DecodingKey::from_rsa_raw_components(&components.n, &components.e),
        n,
        e,
        public_key_der,
    })
}

/// The RFC 7638 JWK thumbprint of an RSA key: base64url SHA-256 of its canonical JWK. Used as
/// the `kid`, so the id follows from the key and cannot be attached to another.
fn thumbprint(n: &str, e: &str) -> String {
    // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}

/// The DER object identifier of `rsaEncryption` (1.2.840.113549.1.1.1), tag and length
/// included.
const RSA_ENCRYPTION_OID: [u8; 11] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208):
///
/// ```text
/// SEQUENCE { INTEGER version, SEQUENCE { OID rsaEncryption, NULL }, OCTET STRING { RSAPrivateKey }, ... }
/// ```
///
/// `None` for anything else. Only definite-length DER is read; every index is checked.
pub fn pkcs1_of_pkcs8(pkcs8: &[u8]) -> Option<&[u8]> {
    let (tag, info, rest) = read_tlv(pkcs8)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, version, info) = read_tlv(info)?;
    if tag != 0x02 || !(version == [0] || version == [1]) {
        return None;
    }
    let (tag, algorithm, info) = read_tlv(info)?;
    if tag != 0x30 || !algorithm.starts_with(&RSA_ENCRYPTION_OID) {
        return None;
    }
    let (tag, private_key, _attributes) = read_tlv(info)?;
    (tag == 0x04).then_some(private_key)
}

/// One DER tag-length-value: `(tag, value, rest)`. Lengths up to four bytes (4 GiB).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (length, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let octets = usize::from(first & 0x7F);
        if octets == 0 || octets > 4 {
            return None;
        }
        let bytes = input.get(2..2 + octets)?;
        let length = bytes.iter().fold(0_usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, 2 + octets)
    };
    let end = header.checked_add(length)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_generated_key_loads_and_its_kid_is_its_thumbprint() {
        let pkcs8 = generate_pkcs8().unwrap();
        let key = signing_key_from_pkcs8(&pkcs8, 1, "test").unwrap();
        assert_eq!(key.kid, thumbprint(&key.n, &key.e));
        assert_eq!(key.e, "AQAB", "exponent 65537");
        assert_eq!(key.kid.len(), 43, "32 bytes in unpadded base64url");
        let ring = KeyRing::from_records(&[SigningKeyRecord {
            generation: 1,
            kid: key.kid.clone(),
            algorithm: ALGORITHM.to_owned(),
            private_key_pkcs8: pkcs8,
            created_at: Timestamp::default(),
        }])
        .unwrap();
        assert_eq!(ring.signing_key().kid, key.kid);
        assert_eq!(ring.jwks()["keys"][0]["kid"], key.kid.as_str());
    }

    #[test]
    fn the_rfc_7638_example_thumbprint_is_reproduced() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(thumbprint(n, "AQAB"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn stored_keys_that_are_not_what_they_claim_are_refused() {
        let pkcs8 = generate_pkcs8().unwrap();
        let record = |kid: &str, algorithm: &str, der: Vec<u8>| SigningKeyRecord {
            generation: 1,
            kid: kid.to_owned(),
            algorithm: algorithm.to_owned(),
            private_key_pkcs8: der,
            created_at: Timestamp::default(),
        };
        let kid = signing_key_from_pkcs8(&pkcs8, 1, "x").unwrap().kid;
        assert!(KeyRing::from_records(&[record("other-kid", ALGORITHM, pkcs8.clone())]).is_err());
        assert!(KeyRing::from_records(&[record(&kid, "HS256", pkcs8.clone())]).is_err());
        let mut truncated = pkcs8;
        truncated.truncate(100);
        assert!(KeyRing::from_records(&[record(&kid, ALGORITHM, truncated)]).is_err());
        assert!(KeyRing::from_records(&[]).is_err());
    }

    #[test]
    fn the_der_reader_refuses_malformed_input() {
        assert_eq!(pkcs1_of_pkcs8(&[]), None);
        assert_eq!(pkcs1_of_pkcs8(&[0x30]), None);
        assert_eq!(pkcs1_of_pkcs8(&[0x30, 0x85, 0, 0, 0, 0, 1]), None, "five length octets");
        assert_eq!(pkcs1_of_pkcs8(&[0x30, 0x82, 0xFF, 0xFF]), None, "length beyond the input");
        assert_eq!(pkcs1_of_pkcs8(&[0x30, 0x03, 0x02, 0x01, 0x00]), None, "no algorithm");
    }
}
