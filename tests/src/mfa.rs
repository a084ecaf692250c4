//! TOTP helpers for the black-box tests: codes computed as an authenticator app would, from
//! the secret setup answers and the server's clock (which tests move forward, not sleep).

use std::time::Duration;

use serde_json::json;
use tally_actors::Clock;
use tally_http::auth::totp::{base32_decode, code_at, step_of};

use crate::http::{TestServer, TestUser};

/// One TOTP step: after using a code, the next usable code is the next step's.
pub const STEP: Duration = Duration::from_secs(30);

pub fn current_code(server: &TestServer, secret: &[u8]) -> String {
    code_at(secret, step_of(server.clock.now()))
}

/// A six-digit code that is not valid now (nor a step either side).
pub fn wrong_code(server: &TestServer, secret: &[u8]) -> String {
    let step = step_of(server.clock.now());
    let valid: Vec<String> = (step - 1..=step + 1).map(|s| code_at(secret, s)).collect();
    (0..1_000_000).map(|n| format!("{n:06}")).find(|code| !valid.contains(code)).expect("a wrong code")
}

/// Sets TOTP up and confirms it for `user`; returns the secret and the backup codes, with the
/// clock moved past the confirming code's step.
pub async fn enable_totp(server: &TestServer, user: &TestUser) -> (Vec<u8>, Vec<String>) {
    let setup = server.post_empty("/v1/users/me/mfa/totp/setup", Some(&user.token)).await;
    setup.assert_status(200);
    let secret = base32_decode(&setup.str("secret")).expect("base32 secret");
    let backup_codes: Vec<String> = setup.body["backup_codes"]
        .as_array()
        .expect("backup codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    let code = current_code(server, &secret);
    server.post("/v1/users/me/mfa/totp/confirm", Some(&user.token), json!({"code": code})).await.assert_status(204);
    server.clock.advance(STEP);
    (secret, backup_codes)
}

/// A step-up token for `operation`, with the clock moved past the code's step.
pub async fn step_up(server: &TestServer, user: &TestUser, secret: &[u8], operation: &str) -> String {
    let began = server.post("/v1/auth/step-up", Some(&user.token), json!({"operation_type": operation})).await;
    began.assert_status(200);
    let verified = server
        .post(
            "/v1/auth/step-up/verify",
            Some(&user.token),
            json!({"step_up_session_id": began.str("step_up_session_id"), "code": current_code(server, secret)}),
        )
        .await;
    verified.assert_status(200);
    server.clock.advance(STEP);
    verified.str("step_up_token")
}
