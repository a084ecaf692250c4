//! The outermost layer of every request (`app` in `lib.rs`): its id and its time limit.
//!
//! The id is the client's `X-Request-Id` (1 to 64 bytes) or a fresh UUID; error answers and
//! logs read it (`problem::REQUEST_ID`), the response echoes it, and one log line per request
//! carries it. The time limit is `AppState::request_timeout` (`REQUEST_TIMEOUT` unless
//! `TALLY_REQUEST_TIMEOUT_SECS` says otherwise; the event feed's long-poll gets its wait on
//! top), counted from this service's `call`: a wait for a place under the concurrency bound
//! happens before it, in `poll_ready` (the bound's permit is taken there), and does not count,
//! as before this layer existed. A read that runs out of time is answered `503` (nothing
//! changed), a write `500` "outcome unknown" (`timed_out`).
//!
//! A hand-written `tower` service rather than two `axum::middleware::from_fn` layers: each of
//! those clones and boxes the inner service and boxes a future of its own on every request;
//! this one boxes one future.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::problem::{ApiError, REQUEST_ID};
use crate::state::AppState;

/// The answer's header naming its request: a name made once, where `insert` by `&str` copied
/// a new one into every answer.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The layer that gives each request its id and its time limit.
#[derive(Clone)]
pub struct RequestScopeLayer {
    state: AppState,
}

impl RequestScopeLayer {
    pub fn new(state: AppState) -> RequestScopeLayer {
        RequestScopeLayer { state }
    }
}

impl<S> Layer<S> for RequestScopeLayer {
    type Service = RequestScope<S>;

    fn layer(&self, inner: S) -> RequestScope<S> {
        RequestScope { inner, state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct RequestScope<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for RequestScope<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The concurrency bound below waits here for its permit.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            // Letters, digits and `-_.:` only: the id is written into the text log line as it
            // is, and a space or `=` in it could forge that line's fields (a review found
            // `x-request-id: a method=POST path=/v1/admin/users status=201` doing just that).
            // Anything else gets an id of ours.
            .filter(|value| {
                !value.is_empty()
                    && value.len() <= 64
                    && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // What the log line needs, kept only when it will be written (under load the server
        // logs at `warn`, and this was a copy of every path).
        let logged: Option<(Method, String, Instant)> = tracing::enabled!(tracing::Level::INFO)
            .then(|| (request.method().clone(), request.uri().path().to_owned(), Instant::now()));
        let limit = if request.uri().path() == "/v1/admin/events" {
            // Saturating: `AppState::set_request_timeout` takes any duration.
            self.state.request_timeout().saturating_add(Duration::from_secs(crate::events::FEED_WAIT_MAX_SECS))
        } else {
            self.state.request_timeout()
        };
        let read_only = request.method().is_safe();
        // The service made ready by `poll_ready` is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // Inside the scope, so that whatever the inner service does, a timed-out answer
            // included, sees the request id.
            let answer = async move {
                match tokio::time::timeout(limit, inner.call(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => timed_out(read_only).into_response(),
                }
            };
            let mut response = REQUEST_ID.scope(id.clone(), answer).await;
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(X_REQUEST_ID, value);
            }
            if let Some((method, path, started)) = logged {
                tracing::info!(
                    request_id = %id,
                    %method,
                    path = %path,
                    status = response.status().as_u16(),
                    micros = started.elapsed().as_micros() as u64,
                    "request"
                );
            }
            Ok(response)
        })
    }
}

/// The answer to a request that ran out of time. A read gets `503` (nothing changed; retry). A
/// write gets `500` "outcome unknown": a saga goes on to its end after its caller stops
/// waiting (`RunToEnd`), so the write may yet be done, and a `503` would tell a client without
/// an idempotency key that resending is harmless.
fn timed_out(read_only: bool) -> ApiError {
    if read_only {
        ApiError::new(tally_engine::ErrorCode::Overloaded, "the request timed out and changed nothing; retry")
    } else {
        ApiError::new(
            tally_engine::ErrorCode::Internal,
            "the request timed out before its outcome was known; it may still be done: retry under the same \
             Idempotency-Key, which answers with the outcome",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_ran_out_changed_nothing_and_a_writes_outcome_is_unknown() {
        let read = timed_out(true);
        assert_eq!((read.code, read.status), (tally_engine::ErrorCode::Overloaded, None));
        let write = timed_out(false);
        assert_eq!(write.code, tally_engine::ErrorCode::Internal);
        assert!(write.detail.contains("retry under the same Idempotency-Key"), "{}", write.detail);
    }
}
