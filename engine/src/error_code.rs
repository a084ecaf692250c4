//! The error codes of the HTTP contract (`docs/API.md`). Every rejection in the engine maps
//! to exactly one of them; the HTTP layer maps each code to its status.

/// An error code of the API contract.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorCode {
    ValidationError,
    /// A wrong, expired or used one-time code (an emailed reset or verification code, or a
    /// second-factor code given in a request body). Served as `400`.
    InvalidCode,
    Unauthenticated,
    /// An access token that verified and has expired: the client should refresh it. Every
    /// other bad credential stays `Unauthenticated`. Served as `401`.
    TokenExpired,
    InvalidCredentials,
    Forbidden,
    StepUpRequired,
    /// A money-moving route refused because the caller's email is not verified (with
    /// `TALLY_REQUIRE_VERIFIED_EMAIL=true`). Served as `403`.
    EmailNotVerified,
    NotFound,
    Conflict,
    IdempotencyKeyReused,
    NotCancellable,
    NotPending,
    AccountNotEmpty,
    InsufficientFunds,
    AccountNotActive,
    CurrencyMismatch,
    TransferTypeDisabled,
    AmountLimitExceeded,
    FxRateNotFound,
    QuoteExpired,
    TransferBlocked,
    /// The caller's verification level does not allow this amount now (a per-transfer,
    /// daily or monthly maximum of their level and the currency). Served as `422`.
    VerificationLimitExceeded,
    RateLimited,
    Overloaded,
    /// An actor that kept failing is quarantined: writes to it are refused until an operator
    /// releases it. Served as `503` so clients retry later.
    Quarantined,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::InvalidCode => "INVALID_CODE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::StepUpRequired => "STEP_UP_REQUIRED",
            ErrorCode::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::NotCancellable => "NOT_CANCELLABLE",
            ErrorCode::NotPending => "NOT_PENDING",
            ErrorCode::AccountNotEmpty => "ACCOUNT_NOT_EMPTY",
            ErrorCode::InsufficientFunds => "INSUFFICIENT_FUNDS",
            ErrorCode::AccountNotActive => "ACCOUNT_NOT_ACTIVE",
            ErrorCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ErrorCode::TransferTypeDisabled => "TRANSFER_TYPE_DISABLED",
            ErrorCode::AmountLimitExceeded => "AMOUNT_LIMIT_EXCEEDED",
            ErrorCode::FxRateNotFound => "FX_RATE_NOT_FOUND",
            ErrorCode::QuoteExpired => "QUOTE_EXPIRED",
            ErrorCode::TransferBlocked => "TRANSFER_BLOCKED",
            ErrorCode::VerificationLimitExceeded => "VERIFICATION_LIMIT_EXCEEDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Quarantined => "QUARANTINED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status of the code, as the contract gives it.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError | ErrorCode::InvalidCode => 400,
            ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden | ErrorCode::StepUpRequired | ErrorCode::EmailNotVerified => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::NotCancellable
            | ErrorCode::NotPending
            | ErrorCode::AccountNotEmpty => 409,
            ErrorCode::InsufficientFunds
            | ErrorCode::AccountNotActive
            | ErrorCode::CurrencyMismatch
            | ErrorCode::TransferTypeDisabled
            | ErrorCode::AmountLimitExceeded
            | ErrorCode::FxRateNotFound
            | ErrorCode::QuoteExpired
            | ErrorCode::TransferBlocked
            | ErrorCode::VerificationLimitExceeded => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Overloaded | ErrorCode::Quarantined => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn from_str_code(code: &str) -> Option<ErrorCode> {
        ALL.iter().copied().find(|candidate| candidate.as_str() == code)
    }
}

impl ErrorCode {
    /// Every code, in the contract's order: the OpenAPI document lists them from here.
    pub const ALL: [ErrorCode; 27] = ALL;
}

const ALL: [ErrorCode; 27] = [
    ErrorCode::ValidationError,
    ErrorCode::InvalidCode,
    ErrorCode::Unauthenticated,
    ErrorCode::TokenExpired,
    ErrorCode::InvalidCredentials,
    ErrorCode::Forbidden,
    ErrorCode::StepUpRequired,
    ErrorCode::EmailNotVerified,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::IdempotencyKeyReused,
    ErrorCode::NotCancellable,
    ErrorCode::NotPending,
    ErrorCode::AccountNotEmpty,
    ErrorCode::InsufficientFunds,
    ErrorCode::AccountNotActive,
    ErrorCode::CurrencyMismatch,
    ErrorCode::TransferTypeDisabled,
    ErrorCode::AmountLimitExceeded,
    ErrorCode::FxRateNotFound,
    ErrorCode::QuoteExpired,
    ErrorCode::TransferBlocked,
    ErrorCode::VerificationLimitExceeded,
    ErrorCode::RateLimited,
    ErrorCode::Overloaded,
    ErrorCode::Quarantined,
    ErrorCode::Internal,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ALL {
            assert_eq!(ErrorCode::from_str_code(code.as_str()), Some(code));
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(ErrorCode::ValidationError.http_status(), 400);
        assert_eq!(ErrorCode::InsufficientFunds.http_status(), 422);
        assert_eq!(ErrorCode::IdempotencyKeyReused.http_status(), 409);
        assert_eq!(ErrorCode::Overloaded.http_status(), 503);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::TransferBlocked.http_status(), 422);
        assert_eq!(ErrorCode::TokenExpired.http_status(), 401);
        assert_eq!(ErrorCode::InvalidCode.http_status(), 400);
        assert_eq!(ErrorCode::EmailNotVerified.http_status(), 403);
        assert_eq!(ErrorCode::Quarantined.http_status(), 503);
        assert_eq!(ErrorCode::VerificationLimitExceeded.http_status(), 422);
        assert_eq!(ErrorCode::VerificationLimitExceeded.as_str(), "VERIFICATION_LIMIT_EXCEEDED");
    }
}
