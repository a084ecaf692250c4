//! The state behind the second factor, step-up, API keys and rate limits, built once with
//! `Identity` and reached as `identity.protection`.

use std::sync::Arc;

use tally_persistence::users::mfa::MfaStore;

use super::api_keys::ApiKeys;
use super::mfa::SecondFactor;
use super::rate_limit::{LoginLimits, RequestLimiter, SelfServiceLimits};
use super::stepup::StepUps;

#[derive(Debug)]
pub struct Protection {
    pub second_factor: SecondFactor,
    pub step_ups: StepUps,
    pub api_keys: ApiKeys,
    pub logins: LoginLimits,
    /// Requests per caller (`TALLY_RATE_LIMIT_PER_SECOND`).
    pub requests: RequestLimiter,
    /// Password resets, emailed codes, verification mails, password changes.
    pub self_service: SelfServiceLimits,
}

impl Protection {
    pub fn new(store: Arc<dyn MfaStore>) -> Protection {
        Protection {
            second_factor: SecondFactor::new(store.clone()),
            step_ups: StepUps::default(),
            api_keys: ApiKeys::new(store),
            logins: LoginLimits::default(),
            requests: RequestLimiter::default(),
            self_service: SelfServiceLimits::default(),
        }
    }
}
