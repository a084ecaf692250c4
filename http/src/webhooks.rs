//! Webhooks (API.md *1.1* "Events and webhooks", `docs/events.md`): the subscription routes
//! and the delivery worker.
//!
//! **Delivery.** One task per enabled subscription (`Deliveries`, started by `tally serve` and
//! the test harness on their tokio runtime, never on a shard thread) reads the feed from the
//! subscription's position and posts one event at a time, in feed order (so in `seq` order per
//! shard), signed `Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! with `Tally-Event-Id` and `Tally-Event-Type`; the body is the event's envelope, the same bytes
//! on every attempt. A `2xx` within 10 s is delivered; anything else is retried after an
//! exponential back-off with full jitter (1 s doubling, capped at 10 minutes) until 24 hours
//! after the first attempt (by the identity clock, so a test can move time), then `dead`, and
//! the task goes on with the next event. The position is stored after each event settles, so a
//! restart re-sends at most the event in flight (at-least-once; dedupe by `Tally-Event-Id`).
//! A slow or dead receiver holds only its own subscription's task (one request in flight each):
//! transfers never wait for deliveries, and other subscriptions go on.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tally_engine::{ErrorCode, Timestamp};
use tally_persistence::events::webhooks::{Delivery, DeliveryStatus, Subscription};
use tally_persistence::events::{EventType, FeedPosition, StoredEvent};
use uuid::Uuid;

use crate::auth::Authorized;
use crate::auth::permissions::WebhooksManage;
use crate::auth::stepup::StepUp;
use crate::events::{envelope, parse_types};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::rfc3339;

/// API.md: a receiver has 10 s to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// API.md: retried for 24 h after the first attempt, then `dead`.
pub const RETRY_WINDOW_MICROS: i64 = 24 * 3600 * 1_000_000;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Events read from the feed per turn of a subscription's task.
const EVENTS_PER_READ: u32 = 100;
/// How often an idle subscription looks for new events, and the supervisor for new or
/// changed subscriptions.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest URL accepted.
const URL_LENGTH_MAX: usize = 2048;
const DESCRIPTION_LENGTH_MAX: usize = 500;

/// `Tally-Signature` for `body` at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", data_encoding::HEXLOWER.encode(tag.as_ref()))
}

/// Starts the supervisor of the delivery tasks on the current tokio runtime.
pub fn start(state: AppState) {
    tokio::spawn(supervise(state));
}

async fn supervise(state: AppState) {
    let client = match reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook client could not be built; no deliveries");
            return;
        }
    };
    let mut running: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        match state.identity().events.subscriptions().await {
            Ok(subscriptions) => {
                for subscription in subscriptions.into_iter().filter(|s| s.enabled) {
                    running.entry(subscription.id).or_insert_with(|| {
                        tokio::spawn(run_subscription(state.clone(), client.clone(), subscription.id))
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "webhook subscriptions unreadable; retrying"),
        }
        tokio::time::sleep(IDLE_POLL).await;
    }
}

fn types_of(subscription: &Subscription) -> Option<Vec<EventType>> {
    subscription.events.as_ref().map(|names| names.iter().filter_map(|name| EventType::parse(name)).collect())
}

/// Delivers one subscription's events until it is disabled or deleted.
async fn run_subscription(state: AppState, client: reqwest::Client, id: Uuid) {
    let store = state.identity().events.clone();
    loop {
        let Ok(Some(subscription)) = store.subscription(id).await else { return };
        if !subscription.enabled {
            return;
        }
        let Some(mut position) = FeedPosition::parse(&subscription.position) else { return };
        let events = match store.events_after(&position, types_of(&subscription).as_deref(), EVENTS_PER_READ).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, subscription = %id, "webhook feed unreadable; retrying");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if events.is_empty() {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let mut written = subscription.position.clone();
        for event in &events {
            // A replay or an edit since: start over from what is stored now.
            match store.subscription(id).await {
                Ok(Some(now)) if now.enabled && now.position == written && now.url == subscription.url => {}
                Ok(Some(_)) => break,
                Ok(None) | Err(_) => return,
            }
            if !deliver(&state, &client, &subscription, event).await {
                return;
            }
            position.advance(event.shard, event.seq);
            // Written over the subscription as it is now (an edit meanwhile is kept), unless a
            // replay moved its position meanwhile.
            let mut stored = match store.subscription(id).await {
                Ok(Some(now)) if now.position == written => now,
                Ok(Some(_)) => break,
                Ok(None) | Err(_) => return,
            };
            stored.position = position.text();
            if store.update_subscription(&stored).await.is_err() {
                break;
            }
            written = stored.position;
        }
    }
}

/// Delivers `event` until a `2xx` or `dead`. False when the subscription went away meanwhile.
async fn deliver(state: &AppState, client: &reqwest::Client, subscription: &Subscription, event: &StoredEvent) -> bool {
    let store = &state.identity().events;
    let Ok(body) = envelope(event) else { return false };
    let mut delivery = match store.delivery(subscription.id, event.shard, event.seq).await {
        // A replay sends a delivered or dead event again, from a fresh retry window.
        Ok(Some(existing)) if existing.status == DeliveryStatus::Pending => existing,
        _ => Delivery {
            shard: event.shard,
            seq: event.seq,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status_code: None,
            last_error: None,
            first_attempt_at: state.identity().now(),
            next_attempt_at: None,
            delivered_at: None,
        },
    };
    loop {
        let t = unix_now();
        let sent = client
            .post(&subscription.url)
            .header("content-type", "application/json")
            .header("tally-event-id", event.id().to_string())
            .header("tally-event-type", event.kind.as_str())
            .header("tally-signature", signature(&subscription.secret, t, &body))
            .body(body.clone())
            .send()
            .await;
        delivery.attempts = delivery.attempts.saturating_add(1);
        let now = state.identity().now();
        match sent {
            Ok(response) if response.status().is_success() => {
                delivery.status = DeliveryStatus::Delivered;
                delivery.last_status_code = Some(response.status().as_u16());
                delivery.last_error = None;
                delivery.next_attempt_at = None;
                delivery.delivered_at = Some(now);
                metrics::counter!("tally_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                return record(state, subscription.id, &delivery).await;
            }
            Ok(response) => {
                delivery.last_status_code = Some(response.status().as_u16());
                delivery.last_error = Some(format!("answered {}", response.status().as_u16()));
            }
            Err(error) => {
                delivery.last_status_code = None;
                delivery.last_error = Some(if error.is_timeout() {
                    "timed out after 10 s".to_owned()
                } else {
                    format!("not delivered: {}", error.without_url())
                });
            }
        }
        metrics::counter!("tally_webhook_deliveries_total", "outcome" => "failed").increment(1);
        if now.as_micros().saturating_sub(delivery.first_attempt_at.as_micros()) >= RETRY_WINDOW_MICROS {
            delivery.status = DeliveryStatus::Dead;
            delivery.next_attempt_at = None;
            metrics::counter!("tally_webhook_deliveries_total", "outcome" => "dead").increment(1);
            return record(state, subscription.id, &delivery).await;
        }
        let wait = backoff(delivery.attempts);
        delivery.next_attempt_at =
            Some(Timestamp::from_micros(now.as_micros().saturating_add(wait.as_micros() as i64)));
        if !record(state, subscription.id, &delivery).await {
            return false;
        }
        tokio::time::sleep(wait).await;
        match store.subscription(subscription.id).await {
            Ok(Some(now)) if now.enabled && now.url == subscription.url => {}
            _ => return false,
        }
    }
}

async fn record(state: &AppState, subscription: Uuid, delivery: &Delivery) -> bool {
    match state.identity().events.record_delivery(subscription, delivery).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, %subscription, "webhook delivery state not stored");
            // The subscription may have been deleted (its deliveries with it).
            false
        }
    }
}

/// Exponential with full jitter: a random time up to 1 s · 2^(attempts-1), at most 10 min.
fn backoff(attempts: u32) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1_u32 << attempts.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    let mut byte = [0_u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut byte);
    let fraction = f64::from(u16::from_be_bytes(byte)) / f64::from(u16::MAX);
    // At least a tenth of the ceiling, so retries never spin.
    ceiling.mul_f64(0.1 + 0.9 * fraction)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64)
}

// ---- routes ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    /// Event types, or `["*"]` for every type.
    events: Vec<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Redeliver every event after this: a seq (every shard; `0` = from the beginning) or a
    /// feed position `S:N,S:N`.
    #[schema(value_type = String)]
    after_seq: serde_json::Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookSubscription)]
struct SubscriptionView {
    #[schema(format = Uuid)]
    id: String,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    enabled: bool,
    created_at: String,
    /// Where its deliveries stand in the feed (`next_after` form).
    position: String,
    /// Only in the answer to create: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl SubscriptionView {
    fn of(subscription: &Subscription, with_secret: bool) -> Result<SubscriptionView, ApiError> {
        Ok(SubscriptionView {
            id: subscription.id.to_string(),
            url: subscription.url.clone(),
            events: subscription.events.clone().unwrap_or_else(|| vec!["*".to_owned()]),
            description: subscription.description.clone(),
            enabled: subscription.enabled,
            created_at: rfc3339(subscription.created_at)?,
            position: subscription.position.clone(),
            secret: with_secret.then(|| subscription.secret.clone()),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookSubscriptionList)]
struct SubscriptionList {
    items: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
struct DeliveryView {
    #[schema(format = Uuid)]
    event_id: String,
    shard: u16,
    seq: u64,
    status: &'static str,
    attempts: u32,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryPage)]
struct DeliveryPage {
    items: Vec<DeliveryView>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    status: Option<String>,
    cursor: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<String>,
}

fn check_url(url: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| ApiError::field("url", why.to_owned());
    if url.len() > URL_LENGTH_MAX {
        return Err(refuse("must be at most 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse("must be an absolute http or https URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse("must be an absolute http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("must not carry credentials"));
    }
    Ok(parsed.to_string())
}

fn check_events(events: &[String]) -> Result<Option<Vec<String>>, ApiError> {
    if events.len() == 1 && events[0] == "*" {
        return Ok(None);
    }
    if events.is_empty() {
        return Err(ApiError::field("events", "must name at least one event type, or be [\"*\"]"));
    }
    let joined = events.join(",");
    if events.iter().any(|name| name.contains(',')) {
        return Err(ApiError::field("events", "unknown event type"));
    }
    let types = parse_types(Some(&joined)).map_err(|_| ApiError::field("events", "unknown event type"))?;
    Ok(types.map(|types| types.iter().map(|kind| kind.as_str().to_owned()).collect()))
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::field("id", "must be a UUID"))
}

async fn existing(state: &AppState, id: Uuid) -> Result<Subscription, ApiError> {
    state.identity().events.subscription(id).await?.ok_or_else(|| ApiError::not_found("webhook"))
}

/// `POST /v1/admin/webhooks` ★ (`webhooks:manage`).
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks",
    tag = "admin",
    request_body = CreateBody,
    description = "Subscribes `url` (http or https, no credentials) to `events` (types, or `[\"*\"]`). The answer \
                   carries `secret`, shown only here: deliveries are signed `Tally-Signature: t=<unix seconds>,\
                   v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`. Deliveries start from the events committed \
                   after the subscription was made. Stepped up for users with TOTP on (`webhooks.manage`).",
    responses((status = 201, body = SubscriptionView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    _step_up: StepUp<crate::auth::stepup::WebhooksManage>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let url = check_url(&body.url)?;
    let events = check_events(&body.events)?;
    if body.description.as_ref().is_some_and(|text| text.chars().count() > DESCRIPTION_LENGTH_MAX) {
        return Err(ApiError::field("description", "must be at most 500 characters"));
    }
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
    // From now on: the feed's current end, per shard.
    let mut position = FeedPosition::default();
    for head in state.identity().events.ledger_heads().await? {
        position.advance(head.shard, head.last_seq);
    }
    let subscription = Subscription {
        id: Uuid::now_v7(),
        url,
        events,
        description: body.description,
        secret: format!("whsec_{}", URL_SAFE_NO_PAD.encode(bytes)),
        enabled: true,
        created_at: state.identity().now(),
        position: position.text(),
    };
    state.identity().events.create_subscription(&subscription).await?;
    Ok((StatusCode::CREATED, axum::Json(SubscriptionView::of(&subscription, true)?)).into_response())
}

/// `GET /v1/admin/webhooks` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", description = "Every subscription, oldest first (never its secret).", responses((status = 200, body = SubscriptionList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _admin: Authorized<WebhooksManage>) -> Result<Response, ApiError> {
    let items = state
        .identity()
        .events
        .subscriptions()
        .await?
        .iter()
        .map(|subscription| SubscriptionView::of(subscription, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(SubscriptionList { items }).into_response())
}

/// `GET /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, body = SubscriptionView)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let subscription = existing(&state, parse_id(&id)?).await?;
    Ok(axum::Json(SubscriptionView::of(&subscription, false)?).into_response())
}

/// `PATCH /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(patch, path = "/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), request_body = UpdateBody, responses((status = 200, body = SubscriptionView)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let mut subscription = existing(&state, parse_id(&id)?).await?;
    if let Some(url) = body.url {
        subscription.url = check_url(&url)?;
    }
    if let Some(events) = body.events {
        subscription.events = check_events(&events)?;
    }
    if let Some(enabled) = body.enabled {
        subscription.enabled = enabled;
    }
    if !state.identity().events.update_subscription(&subscription).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(axum::Json(SubscriptionView::of(&subscription, false)?).into_response())
}

/// `DELETE /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.identity().events.delete_subscription(parse_id(&id)?).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/admin/webhooks/{id}/replay {after_seq}` (`webhooks:manage`) → `202`.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/replay", tag = "admin", params(("id" = String, Path)), request_body = ReplayBody, description = "Redelivers every event after `after_seq` (a seq applying to every shard, `0` = from the beginning, or a feed position `S:N,S:N`), in order, then goes on with new ones.", responses((status = 202)), security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let mut subscription = existing(&state, parse_id(&id)?).await?;
    let text = match &body.after_seq {
        serde_json::Value::Number(number) if number.is_u64() => number.to_string(),
        serde_json::Value::String(text) => text.clone(),
        _ => return Err(ApiError::field("after_seq", "must be a seq or a position S:N,S:N")),
    };
    let position = FeedPosition::parse(&text)
        .ok_or_else(|| ApiError::field("after_seq", "must be a seq or a position S:N,S:N"))?;
    subscription.position = position.text();
    if !state.identity().events.update_subscription(&subscription).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v1/admin/webhooks/{id}/deliveries?status&cursor&limit` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries", tag = "admin", params(("id" = String, Path), DeliveryQuery), description = "The subscription's delivery log in (shard, seq) order: each event attempted, its latest state.", responses((status = 200, body = DeliveryPage)), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
    let subscription = existing(&state, parse_id(&id)?).await?;
    let status = query
        .status
        .as_deref()
        .map(|text| {
            DeliveryStatus::parse(text).ok_or_else(|| ApiError::field("status", "must be pending, delivered or dead"))
        })
        .transpose()?;
    let limit = crate::pagination::limit(query.limit.as_deref())?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(text) => {
            let position = FeedPosition::parse(text).filter(|position| position.shards.len() == 1);
            let (shard, seq) = position
                .map(|position| position.shards[0])
                .ok_or_else(|| ApiError::field("cursor", "must be a cursor this listing answered"))?;
            Some((shard, seq))
        }
    };
    let mut items = state.identity().events.deliveries(subscription.id, status, after, limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(|last| format!("{}:{}", last.shard, last.seq)) } else { None };
    let items = items
        .iter()
        .map(|delivery| {
            Ok(DeliveryView {
                event_id: tally_persistence::events::event_id(delivery.shard, delivery.seq).to_string(),
                shard: delivery.shard,
                seq: delivery.seq,
                status: delivery.status.as_str(),
                attempts: delivery.attempts,
                last_status_code: delivery.last_status_code,
                last_error: delivery.last_error.clone(),
                next_attempt_at: delivery.next_attempt_at.map(rfc3339).transpose()?,
                delivered_at: delivery.delivered_at.map(rfc3339).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(DeliveryPage { items, next_cursor }).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme_over_timestamp_and_body() {
        // RFC 4231-style known answer computed independently: HMAC-SHA256("key", "1.{}").
        let signed = signature("key", 1, "{}");
        assert!(signed.starts_with("t=1,v1="));
        assert_eq!(signed.len(), "t=1,v1=".len() + 64);
        assert_ne!(signature("key", 2, "{}"), signed);
        assert_ne!(signature("other", 1, "{}"), signed);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempts in 1..40 {
            let wait = backoff(attempts);
            assert!(wait <= BACKOFF_MAX);
            assert!(wait >= BACKOFF_FIRST.mul_f64(0.1).min(BACKOFF_MAX));
        }
    }

    #[test]
    fn urls_are_http_or_https_only() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.com/hook").is_ok());
        for bad in ["ftp://example.com", "example.com/hook", "http://user:pw@example.com/", "file:///etc/passwd"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
