//! RFC 6238 TOTP as authenticator apps compute it: HMAC-SHA1 over the 30-second time step,
//! dynamic truncation (RFC 4226 §5.3) to 6 digits, a base32 (RFC 4648) shared secret.
//!
//! Pure functions of the secret and the time, which comes from the `Clock` seam through the
//! caller: no I/O here. Replay protection (each time step accepted once) needs the store and
//! lives in `mfa.rs`.

use aws_lc_rs::hmac;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tally_engine::Timestamp;

use crate::problem::ApiError;

/// Seconds per time step (RFC 6238's default, which every authenticator app uses).
pub const STEP_SECONDS: i64 = 30;

/// Digits per code (RFC 6238's and the apps' default).
pub const DIGITS: u32 = 6;

/// Steps either side of now a code may come from: a phone's clock a little off, or a code
/// typed as it changed. One step (±30 s) is RFC 6238 §5.2's recommendation.
pub const SKEW_STEPS: i64 = 1;

/// Bytes of secret: 160 bits, the length RFC 4226 §4 recommends for HMAC-SHA1.
pub const SECRET_BYTES: usize = 20;

/// The issuer an authenticator app shows next to the account.
pub const ISSUER: &str = "Tally";

/// A fresh random secret from the system's secure generator.
pub fn generate_secret() -> Result<Vec<u8>, ApiError> {
    let mut secret = vec![0_u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| ApiError::internal("the system random generator failed"))?;
    Ok(secret)
}

/// RFC 4648 base32 without padding (what `otpauth://` URLs carry).
pub fn base32_encode(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// Decodes base32 as a person may copy it: either case, padding and spaces ignored; `None` if
/// it is not base32.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let symbols: String = text.chars().filter(|c| *c != '=' && *c != ' ').collect();
    data_encoding::BASE32_NOPAD.decode(symbols.to_ascii_uppercase().as_bytes()).ok()
}

/// RFC 4226 HOTP: `digits` decimal digits of the dynamically truncated HMAC-SHA1 of `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // A SHA-1 tag is 20 bytes, so the offset (≤ 15) plus 4 stays inside it.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    binary % 10_u32.pow(digits)
}

/// The time step `now` falls in.
pub fn step_of(now: Timestamp) -> i64 {
    now.as_micros().div_euclid(1_000_000).div_euclid(STEP_SECONDS)
}

/// The 6-digit code of `step`, zero-padded.
pub fn code_at(secret: &[u8], step: i64) -> String {
    format!("{:06}", hotp(secret, u64::try_from(step).unwrap_or(0), DIGITS))
}

/// Whether `code` is shaped like a TOTP code (exactly six ASCII digits).
pub fn is_code_shaped(code: &str) -> bool {
    code.len() == DIGITS as usize && code.bytes().all(|byte| byte.is_ascii_digit())
}

/// The step within `SKEW_STEPS` of `now` whose code is `code`, newest first; compared in
/// constant time so the answer's timing does not tell how many digits matched.
pub fn matching_step(secret: &[u8], code: &str, now: Timestamp) -> Option<i64> {
    if !is_code_shaped(code) {
        return None;
    }
    let current = step_of(now);
    (-SKEW_STEPS..=SKEW_STEPS).rev().map(|offset| current + offset).filter(|step| *step >= 0).find(|step| {
        aws_lc_rs::constant_time::verify_slices_are_equal(code_at(secret, *step).as_bytes(), code.as_bytes()).is_ok()
    })
}

/// The `otpauth://` URL an authenticator app scans (the de-facto Key Uri Format).
pub fn otpauth_url(secret_base32: &str, account: &str) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret_base32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        issuer = ISSUER,
        account = utf8_percent_encode(account, NOT_UNRESERVED),
    )
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// RFC 6238 Appendix B: the SHA-1 seed and its 8-digit codes at each test time.
    const RFC_SEED: &[u8] = b"12345678901234567890";
    const RFC_VECTORS: [(i64, u32); 6] = [
        (59, 94_287_082),
        (1_111_111_109, 7_081_804),
        (1_111_111_111, 14_050_471),
        (1_234_567_890, 89_005_924),
        (2_000_000_000, 69_279_037),
        (20_000_000_000, 65_353_130),
    ];

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds * 1_000_000)
    }

    #[test]
    fn the_rfc_6238_sha1_test_vectors_hold() {
        for (seconds, expected) in RFC_VECTORS {
            let step = step_of(at(seconds));
            assert_eq!(hotp(RFC_SEED, step as u64, 8), expected, "T = {seconds}");
            assert_eq!(code_at(RFC_SEED, step), format!("{:06}", expected % 1_000_000), "6 digits at T = {seconds}");
        }
    }

    #[test]
    fn a_code_matches_within_one_step_of_skew_and_not_beyond() {
        let now = at(1_111_111_111);
        let step = step_of(now);
        for offset in -SKEW_STEPS..=SKEW_STEPS {
            let code = code_at(RFC_SEED, step + offset);
            assert_eq!(matching_step(RFC_SEED, &code, now), Some(step + offset), "offset {offset}");
        }
        assert_eq!(matching_step(RFC_SEED, &code_at(RFC_SEED, step + 2), now), None);
        assert_eq!(matching_step(RFC_SEED, &code_at(RFC_SEED, step - 2), now), None);
        assert_eq!(matching_step(RFC_SEED, "12345", now), None, "too short");
        assert_eq!(matching_step(RFC_SEED, "12345a", now), None, "not digits");
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZ1"), None);
        let secret = generate_secret().unwrap();
        assert_eq!(secret.len(), SECRET_BYTES);
        assert_eq!(base32_decode(&base32_encode(&secret)).unwrap(), secret);
    }

    #[test]
    fn the_otpauth_url_names_the_parameters_and_escapes_the_account() {
        let url = otpauth_url("ABC", "a+b@example.com");
        assert_eq!(
            url,
            "otpauth://totp/Tally:a%2Bb%40example.com?secret=ABC&issuer=Tally&algorithm=SHA1&digits=6&period=30"
        );
    }
}
