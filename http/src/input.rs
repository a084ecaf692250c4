//! Input that is not a JSON body, and checks shared by the routes: ids in the path, optional
//! bodies, amounts, free text, and the `Idempotency-Key` header. Every refusal is a
//! problem+json `400 VALIDATION_ERROR` naming the field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use tally_engine::money::with_currency_scale;
use tally_engine::{AmountError, Currency, ErrorCode, parse_amount};

use crate::json::ApiJson;
use crate::problem::ApiError;

/// Longest `Idempotency-Key` accepted. A UUID is 36 characters; 255 leaves room for any
/// client's scheme while keeping the stored key small.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// Longest transfer `reference` (what the beneficiary sees: SEPA allows 140).
pub const REFERENCE_LENGTH_MAX: usize = 140;

/// Longest free-text `description`, `purpose` or `reason`.
pub const DESCRIPTION_LENGTH_MAX: usize = 500;

/// The UUID in a route's one path parameter (`/v1/transfers/{id}`).
#[derive(Clone, Copy, Debug)]
pub struct IdPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
        uuid::Uuid::try_parse(&raw).map(IdPath).map_err(|_| ApiError::field("id", "must be a UUID"))
    }
}

/// A path segment as text, its rejection (a segment that is not UTF-8 once decoded) answered
/// problem+json like every other bad input (axum's own is `text/plain`).
#[derive(Debug)]
pub struct TextPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TextPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
        Ok(TextPath(raw))
    }
}

/// A raw body (a signed webhook's, whose bytes are checked before they are parsed), its
/// rejection answered problem+json: over the body bound, `413`.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(RawBody).map_err(|rejection| {
            let status = rejection.status();
            let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".to_owned()
            } else {
                rejection.body_text()
            };
            ApiError::new(ErrorCode::ValidationError, detail).with_status(status)
        })
    }
}

/// A JSON body that may be left out entirely (`POST .../cancel` with no reason). A body that
/// is sent must be JSON and is checked like any other (`ApiJson`).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if request.headers().contains_key(CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::<T>::from_request(request, state).await?;
            return Ok(OptionalJson(Some(value)));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            ApiError::new(ErrorCode::ValidationError, rejection.body_text()).with_status(rejection.status())
        })?;
        if bytes.is_empty() {
            Ok(OptionalJson(None))
        } else {
            Err(ApiError::new(ErrorCode::ValidationError, "expected Content-Type: application/json")
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
        }
    }
}

/// An amount written as the contract says (a string at no more than the currency's scale,
/// positive, within the maximum), at the currency's scale.
pub fn amount(field: &str, text: &str, currency: Currency) -> Result<Decimal, ApiError> {
    parse_amount(text, currency).map_err(|error| ApiError::field(field, error.to_string()))
}

/// A credit limit: like an amount, but zero is allowed.
pub fn credit_limit(field: &str, text: &str, currency: Currency) -> Result<Decimal, ApiError> {
    amount_or_zero(field, text, currency)
}

/// Like an amount, but zero is allowed (not a negative): a credit limit, a fee rule's amounts.
pub fn amount_or_zero(field: &str, text: &str, currency: Currency) -> Result<Decimal, ApiError> {
    if text.starts_with('-') {
        return Err(ApiError::field(field, "must not be negative"));
    }
    match parse_amount(text, currency) {
        Ok(limit) => Ok(limit),
        // A zero is refused as "not positive" before its decimals are counted: count them here,
        // or `"0.000"` USD would pass as a limit of zero (found by a review).
        Err(AmountError::NotPositive) => {
            let decimals = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
            if u32::try_from(decimals).map_or(true, |decimals| decimals > currency.scale()) {
                let error = AmountError::TooManyDecimals { currency, scale_max: currency.scale() };
                return Err(ApiError::field(field, error.to_string()));
            }
            Ok(with_currency_scale(Decimal::ZERO, currency))
        }
        Err(error) => Err(ApiError::field(field, error.to_string())),
    }
}

/// A currency code the engine knows (`USD`, `JPY`, `BTC`, ...; upper case).
pub fn currency(field: &str, code: &str) -> Result<Currency, ApiError> {
    Currency::from_code(code).ok_or_else(|| ApiError::field(field, format!("unknown currency {code:?}")))
}

/// Optional free text, trimmed; empty means absent. At most `length_max` characters, no
/// control characters.
pub fn text(field: &str, value: Option<&str>, length_max: usize) -> Result<Option<String>, ApiError> {
    Ok(checked_text(field, value, length_max)?.map(str::to_owned))
}

/// `text`, as the `Arc<str>` a transfer shares among its clones (made once, not copied into
/// one from a `String`).
pub fn shared_text(field: &str, value: Option<&str>, length_max: usize) -> Result<Option<Arc<str>>, ApiError> {
    Ok(checked_text(field, value, length_max)?.map(Arc::from))
}

fn checked_text<'a>(field: &str, value: Option<&'a str>, length_max: usize) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else { return Ok(None) };
    if value.chars().count() > length_max {
        return Err(ApiError::field(field, format!("must be at most {length_max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(field, "must not contain control characters"));
    }
    Ok(Some(value))
}

/// Required free text, as `text`.
pub fn required_text(field: &str, value: &str, length_max: usize) -> Result<String, ApiError> {
    text(field, Some(value), length_max)?.ok_or_else(|| ApiError::field(field, "must not be empty"))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters, as the `Arc<str>`
/// an `Idempotency` shares among a transfer's clones (made once, not copied into one).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<Arc<str>>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let refuse = || {
        ApiError::field(
            "Idempotency-Key",
            format!("must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| refuse())?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(refuse());
    }
    Ok(Some(Arc::from(key)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn credit_limits_allow_zero_but_not_negatives_or_extra_decimals() {
        assert_eq!(credit_limit("credit_limit", "0", Currency::USD).unwrap().to_string(), "0.00");
        assert_eq!(credit_limit("credit_limit", "250.5", Currency::USD).unwrap(), dec!(250.50));
        assert!(credit_limit("credit_limit", "-1", Currency::USD).is_err());
        assert!(credit_limit("credit_limit", "-0", Currency::USD).is_err());
        assert!(credit_limit("credit_limit", "1.001", Currency::USD).is_err());
        assert!(credit_limit("credit_limit", "abc", Currency::USD).is_err());
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&headers).unwrap().as_deref(), Some("order-42"));
        headers.insert("idempotency-key", HeaderValue::from_static("has space"));
        assert!(idempotency_key(&headers).is_err());
        headers.insert("idempotency-key", HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(idempotency_key(&headers).is_err());
    }

    #[test]
    fn text_is_trimmed_bounded_and_printable() {
        assert_eq!(text("reference", Some("  inv 7 "), 10).unwrap().as_deref(), Some("inv 7"));
        assert_eq!(text("reference", Some("   "), 10).unwrap(), None);
        assert!(text("reference", Some("12345678901"), 10).is_err());
        assert!(text("reference", Some("a\nb"), 10).is_err());
        assert!(required_text("reason", "", 10).is_err());
    }
}
