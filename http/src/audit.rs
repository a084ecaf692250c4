//! The audit log over HTTP: building entries (`AuditContext`, `Event`, `record`,
//! `AdminChange`), the route layer that audits admin changes (`after_admin_change`), and
//! `GET /v1/admin/audit`, `GET /v1/admin/audit/head`.
//!
//! **Where each entry is written.** Every admin change writes its entry *in the transaction
//! that makes the change*, so the two commit together or not at all:
//! - identity-store writes (users, permissions, roles, codes, passwords, TOTP, API keys,
//!   limits) append it in their SQL transaction (`tally_persistence::users`);
//! - changes the engine makes through the ledger's journal (adjustments, execute, reject,
//!   cancel, admin account open and status) carry it as a journal record
//!   (`Record::Audit`) in one group with the record that makes the change, and the batch
//!   that commits them appends it to the chain, last in its transaction;
//! - pricing, AML and webhook-subscription writes pass it to `Store::save_pricing`, the
//!   `AmlStore` writes and the `WebhookStore` writes, which append it in their transaction.
//!
//! Those handlers build the entry from what the route layer learnt of the request
//! (`AdminChange`), pass it down, and mark their answer `Audited`. The layer writes an entry
//! itself, in a transaction of its own right after a `2xx` (`record_after_change`), only for
//! a route `ADMIN_ACTIONS` says is written after the change (none today) and for a route
//! missing from the table; a unit test keeps the table complete, so a new admin route cannot
//! land unaudited. docs/audit.md has the whole picture.
//!
use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_engine::{ErrorCode, UserId};
use tally_persistence::audit::{ActorKind, AuditEntry, AuditFilter, AuditRecord};

use crate::auth::Identity;
use crate::auth::caller::CallerSlot;
use crate::auth::permissions::AuditRead;
use crate::auth::sessions::ClientInfo;
use crate::auth::{Authorized, Caller};
use crate::pagination;
use crate::problem::{self, ApiError};
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::rfc3339;

/// Largest request or response body the after-the-change layer copies into an entry's
/// details. Admin bodies are a few hundred bytes; a larger request body is recorded as its size
/// and SHA-256 (`request_details`), so the entry still pins down what was asked.
pub const DETAILS_BODY_BYTES_MAX: usize = 64 * 1024;

/// Attempts of an after-the-change write before the entry is given up (and logged whole):
/// a store blip should not lose it, a store outage should not hold the answer for long.
const AFTER_CHANGE_ATTEMPTS: u32 = 3;

/// Longest filter value accepted on the audit listing (ids are 36 characters, actions ~30).
const FILTER_LENGTH_MAX: usize = 128;

/// Who an entry says acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<String>,
}

impl Actor {
    pub fn user(id: UserId) -> Actor {
        Actor { kind: ActorKind::User, id: Some(id.to_string()) }
    }

    pub fn system() -> Actor {
        Actor { kind: ActorKind::System, id: None }
    }

    pub fn anonymous() -> Actor {
        Actor { kind: ActorKind::Anonymous, id: None }
    }

    pub fn of(caller: &Caller) -> Actor {
        Actor::user(caller.user_id)
    }
}

/// What an audited request contributes to its entry: its id, peer address and user agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditContext {
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditContext {
    /// For entries made outside a request (start-up, the command line).
    pub fn system(label: &str) -> AuditContext {
        AuditContext { request_id: label.to_owned(), ip: None, user_agent: None }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(client) = ClientInfo::from_request_parts(parts, state).await;
        Ok(AuditContext { request_id: problem::request_id(), ip: client.ip, user_agent: client.user_agent })
    }
}

/// What happened, for `record`.
#[derive(Debug)]
pub struct Event<'a> {
    /// `user.block`, `auth.password_changed`, …
    pub action: &'a str,
    /// `(type, id)` of what was changed.
    pub target: Option<(&'a str, String)>,
    /// Whose security activity this is (shown by `GET /v1/users/me/activity` for `auth.*`).
    pub subject: Option<UserId>,
    /// No secrets: never a password, code, token or key.
    pub details: Value,
}

impl<'a> Event<'a> {
    pub fn new(action: &'a str) -> Event<'a> {
        Event { action, target: None, subject: None, details: json!({}) }
    }

    pub fn target(mut self, kind: &'a str, id: impl ToString) -> Event<'a> {
        self.target = Some((kind, id.to_string()));
        self
    }

    /// The target is a user, whose activity this also is.
    pub fn on_user(self, user: UserId) -> Event<'a> {
        let mut event = self.target("user", user);
        event.subject = Some(user);
        event
    }

    /// Whose security activity this is, when the target is not the user themselves.
    pub fn subject(mut self, user: UserId) -> Event<'a> {
        self.subject = Some(user);
        self
    }

    pub fn details(mut self, details: Value) -> Event<'a> {
        self.details = details;
        self
    }
}

/// The entry `event` makes, done by `actor` in the request `context`, at identity's clock.
pub fn record(identity: &Identity, context: &AuditContext, actor: &Actor, event: Event<'_>) -> AuditRecord {
    let (target_type, target_id) = match event.target {
        Some((kind, id)) => (Some(kind.to_owned()), Some(id)),
        None => (None, None),
    };
    AuditRecord {
        id: identity.ids.next_uuid(),
        at: identity.now(),
        actor_kind: actor.kind,
        actor_id: actor.id.clone(),
        action: event.action.to_owned(),
        target_type,
        target_id,
        subject_user: event.subject,
        request_id: context.request_id.clone(),
        ip: context.ip.clone(),
        user_agent: context.user_agent.clone(),
        // A `Value` always serialises; its maps are sorted (serde_json without
        // `preserve_order`), so equal details are equal text.
        details: serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".to_owned()),
    }
}

/// Marks a response whose change was audited in its own transaction, so the
/// after-the-change layer does not write a second entry.
#[derive(Clone, Copy, Debug)]
pub struct Audited;

pub fn audited(mut response: Response) -> Response {
    response.extensions_mut().insert(Audited);
    response
}

/// What the audit layer (`after_admin_change`) knows of an admin change before its handler
/// runs: the request's audit context, method, route template and redacted body. A handler
/// whose change carries its own entry (committed in the change's transaction) builds the entry
/// from this, so it reads as the layer's would: the action and target type of
/// `ADMIN_ACTIONS`, details `{method, route, status, request}`.
#[derive(Clone, Debug)]
pub struct AdminChange {
    context: AuditContext,
    method: String,
    route: String,
    request: Value,
}

impl AdminChange {
    /// The request's body as recorded (redacted), `null` if it had none.
    pub fn request(&self) -> &Value {
        &self.request
    }

    /// The entry of this change by `admin` on `target_id` (`None`: filled in where the id is
    /// chosen), answered with `status` if it is made. `status` is left out when the answer's status depends on the outcome the entry is
    /// committed with (an adjustment: `201` completed, `202` pending).
    pub fn record(
        &self,
        identity: &Identity,
        admin: UserId,
        status: Option<axum::http::StatusCode>,
        target_id: Option<String>,
    ) -> AuditRecord {
        let (action, target_type) = admin_action(&self.method, &self.route);
        let mut details = json!({ "method": self.method, "route": self.route, "request": self.request });
        if let (Some(status), Some(map)) = (status, details.as_object_mut()) {
            map.insert("status".to_owned(), json!(status.as_u16()));
        }
        let mut event = Event::new(&action).details(details);
        if let Some(target_id) = target_id {
            event = event.target(target_type, target_id);
        }
        let mut entry = record(identity, &self.context, &Actor::user(admin), event);
        // The target's type is the route's; its id may be chosen where the change is made (the
        // engine names the account it opens).
        entry.target_type = Some(target_type.to_owned());
        entry
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminChange {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Every admin route runs under the layer (lib.rs); a handler that finds none is served
        // some other way, and must not change anything unaudited.
        parts
            .extensions
            .get::<AdminChange>()
            .cloned()
            .ok_or_else(|| ApiError::internal("an audited admin change outside the audit layer"))
    }
}

/// Writes `record` in a transaction of its own, right after a change that was made (and made
/// durable) elsewhere. The one place the interim lives: when the change's own commit can carry
/// the entry, its callers pass the record there instead (docs/audit.md). Retries a failed
/// write a few times; if it still fails, the entry is logged whole at error level (the
/// change stands and its answer was earned, so the caller is not told otherwise).
pub async fn record_after_change(identity: &Identity, record: AuditRecord) {
    // 50 ms, then four times the last wait, between the attempts.
    let mut waits = ExponentialBuilder::new()
        .with_min_delay(std::time::Duration::from_millis(50))
        .with_factor(4.0)
        .without_max_delay()
        .without_max_times()
        .build();
    for attempt in 1..=AFTER_CHANGE_ATTEMPTS {
        match identity.audit.append(&record).await {
            Ok(_) => return,
            Err(error) if attempt < AFTER_CHANGE_ATTEMPTS => {
                tracing::warn!(%error, attempt, action = %record.action, "audit write failed; retrying");
                tokio::time::sleep(waits.next().unwrap_or(std::time::Duration::from_millis(50))).await;
            }
            Err(error) => {
                tracing::error!(
                    target: "audit",
                    %error,
                    id = %record.id,
                    at = record.at.as_micros(),
                    actor_kind = record.actor_kind.as_str(),
                    actor_id = record.actor_id.as_deref().unwrap_or(""),
                    action = %record.action,
                    target_type = record.target_type.as_deref().unwrap_or(""),
                    target_id = record.target_id.as_deref().unwrap_or(""),
                    request_id = %record.request_id,
                    details = %record.details,
                    "an audit entry could not be written; it is recorded here instead"
                );
            }
        }
    }
}

/// Writes `record` in the background: for events whose timing must not depend on whether an
/// account exists (a failed login, a reset request), so the answer never waits for it.
pub fn record_in_background(identity: &Identity, record: AuditRecord) {
    let identity = identity.clone();
    tokio::spawn(async move { record_after_change(&identity, record).await });
}

/// Where an admin change's entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// In the change's own transaction: the journal batch that commits it (`Record::Audit`),
    /// or the store write that makes it (`Store::save_pricing`, the `AmlStore` writes, the
    /// limits store). The handler builds the entry (`AdminChange::record`), passes it down, and
    /// marks its answer `Audited`.
    WithChange,
    /// By the route layer, in a transaction of its own, right after the handler answered
    /// `2xx` (`after_admin_change`).
    AfterChange,
}

/// `(method, route template) → (action, target type, where written)` of every admin route
/// that changes something outside the identity store. The target's id is the route's `{id}`
/// (or `{code}`), else the id of what the route made; `PUT /v1/admin/fx-rates` names its pair.
pub const ADMIN_ACTIONS: &[(&str, &str, &str, &str, Written)] = &[
    ("POST", "/v1/admin/adjustments", "adjustment.create", "transfer", Written::WithChange),
    ("POST", "/v1/admin/transfers/{id}/execute", "transfer.execute", "transfer", Written::WithChange),
    ("POST", "/v1/admin/transfers/{id}/reject", "transfer.reject", "transfer", Written::WithChange),
    ("POST", "/v1/admin/transfers/{id}/cancel", "transfer.cancel", "transfer", Written::WithChange),
    ("POST", "/v1/admin/accounts", "account.open", "account", Written::WithChange),
    ("POST", "/v1/admin/accounts/{id}/status", "account.status", "account", Written::WithChange),
    ("PUT", "/v1/admin/fx-rates", "fx_rate.set", "fx_rate", Written::WithChange),
    ("POST", "/v1/admin/fee-rules", "fee_rule.create", "fee_rule", Written::WithChange),
    ("PUT", "/v1/admin/fee-rules/{id}", "fee_rule.update", "fee_rule", Written::WithChange),
    ("PUT", "/v1/admin/transfer-types/{code}", "transfer_type.update", "transfer_type", Written::WithChange),
    ("POST", "/v1/admin/aml/rules", "aml_rule.create", "aml_rule", Written::WithChange),
    ("PUT", "/v1/admin/aml/rules/{id}", "aml_rule.update", "aml_rule", Written::WithChange),
    ("DELETE", "/v1/admin/aml/rules/{id}", "aml_rule.delete", "aml_rule", Written::WithChange),
    ("POST", "/v1/admin/aml/flags/{id}/resolve", "aml_flag.resolve", "aml_flag", Written::WithChange),
    // A quarantine is process memory, never stored: the entry is committed through the
    // journal right after the release, before the answer (docs/audit.md).
    ("POST", "/v1/admin/actors/{kind}/{id}/release", "actor.release", "actor", Written::WithChange),
    ("PUT", "/v1/admin/limits/{level}", "limits.update", "verification_level", Written::WithChange),
    // Webhook subscriptions: the events store's write.
    ("POST", "/v1/admin/webhooks", "webhook.create", "webhook", Written::WithChange),
    ("PATCH", "/v1/admin/webhooks/{id}", "webhook.update", "webhook", Written::WithChange),
    ("DELETE", "/v1/admin/webhooks/{id}", "webhook.delete", "webhook", Written::WithChange),
    ("POST", "/v1/admin/webhooks/{id}/replay", "webhook.replay", "webhook", Written::WithChange),
];

/// Whether a request is one the layer considers: a change to an admin resource.
fn is_admin_change(method: &Method, route: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && route.starts_with("/v1/admin/")
}

/// Replaces the values of keys that could hold a secret, at any depth.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if key.contains("password") || key.contains("secret") || key.contains("token") || key == "code" {
                    *value = Value::String("[redacted]".to_owned());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A JSON body as details: parsed and redacted, or its size when it is not small JSON.
fn body_details(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) => {
            redact(&mut value);
            value
        }
        Err(_) => json!({ "bytes": bytes.len() }),
    }
}

/// Reads an admin change's request body for its entry's details, whatever its size hint
/// says: a chunked body has no exact size, and skipping it left `request: null` on an entry
/// whose change went through. Up to `DETAILS_BODY_BYTES_MAX` bytes the details are the body
/// (`body_details`: redacted JSON, or its size when it is not JSON); a larger body is recorded
/// as `{bytes, sha256}` of the bytes as received (the hash lets whoever holds the body prove
/// it was this one; the body itself is not kept). Reading stops past `BODY_BYTES_MAX`, the
/// routes' own limit: the body goes on to the handler as it came (read part first), whose
/// extractor refuses it as before, so a refused change writes no entry and this layer never
/// buffers more than the routes accept.
async fn request_details(body: Body) -> Result<(Body, Value), ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut read: Vec<u8> = Vec::new();
    let mut sha256 = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|error| ApiError::new(ErrorCode::ValidationError, format!("unreadable body: {error}")))?;
        if read.len().saturating_add(chunk.len()) > crate::BODY_BYTES_MAX {
            // Past the routes' limit: hand the rest on untouched for the handler to refuse.
            let head = futures::stream::iter([Ok::<_, axum::Error>(axum::body::Bytes::from(read)), Ok(chunk)]);
            let body = Body::from_stream(head.chain(stream));
            return Ok((body, json!({ "bytes_more_than": crate::BODY_BYTES_MAX })));
        }
        sha256.update(&chunk);
        read.extend_from_slice(&chunk);
    }
    let details = if read.len() <= DETAILS_BODY_BYTES_MAX {
        body_details(&read)
    } else {
        json!({
            "bytes": read.len(),
            "sha256": data_encoding::HEXLOWER.encode(sha256.finish().as_ref()),
        })
    };
    Ok((Body::from(read), details))
}

/// A request or response body read whole if it is small enough to keep; `None` when it was
/// left untouched (too large, or of unknown length). The length is the body's own exact size
/// (a request's `Content-Length`; a response built from bytes), never a guess.
async fn small_body(body: Body) -> Result<(Body, Option<axum::body::Bytes>), ApiError> {
    let length = axum::body::HttpBody::size_hint(&body).exact().and_then(|length| usize::try_from(length).ok());
    match length {
        Some(length) if length <= DETAILS_BODY_BYTES_MAX => {
            let bytes = axum::body::to_bytes(body, DETAILS_BODY_BYTES_MAX)
                .await
                .map_err(|error| ApiError::new(ErrorCode::ValidationError, format!("unreadable body: {error}")))?;
            Ok((Body::from(bytes.clone()), Some(bytes)))
        }
        _ => Ok((body, None)),
    }
}

/// The route layer that audits admin changes not audited in their own transaction (see the
/// module comment). Other requests pass straight through.
pub async fn after_admin_change(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let Some(route) = route.filter(|route| is_admin_change(request.method(), route)) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let (mut parts, body) = request.into_parts();
    let context = match AuditContext::from_request_parts(&mut parts, &state).await {
        Ok(context) => context,
        Err(never) => match never {},
    };
    let params: Vec<(String, String)> = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params.iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect(),
        Err(_) => Vec::new(),
    };
    let (body, request_details) = match request_details(body).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    // For a handler that audits its change in the change's own transaction: the same facts
    // this layer would record (`AdminChange::record`).
    parts.extensions.insert(AdminChange {
        context: context.clone(),
        method: method.as_str().to_owned(),
        route: route.clone(),
        request: request_details.clone(),
    });
    let slot = CallerSlot::default();
    parts.extensions.insert(slot.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    if !response.status().is_success() || response.extensions().get::<Audited>().is_some() {
        return response;
    }
    if written(method.as_str(), &route) == Written::WithChange {
        // Its entry belongs in the change's transaction; an entry written now would claim
        // what did not happen. A handler that forgot to pass it is a bug to see, not paper over.
        tracing::error!(target: "audit", route = %route, "an admin change audited with its change answered 2xx unmarked");
        return response;
    }
    let Some(caller) = slot.get() else {
        // A 2xx admin change is always made by an authorised caller; if the extractor did not
        // run, the route is not what this layer assumes, and that must be seen.
        tracing::error!(route = %route, "an admin change answered 2xx without an authenticated caller; not audited");
        return response;
    };
    let status = response.status();
    let (response_parts, response_body) = response.into_parts();
    let (response_body, response_bytes) = match small_body(response_body).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let answered_id = response_bytes
        .as_deref()
        .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .and_then(|value| value.get("id").and_then(Value::as_str).map(str::to_owned));
    let (action, target_type) = admin_action(method.as_str(), &route);
    let target_id = target_of(&route, &params, &request_details, answered_id);
    let mut event = Event::new(&action).details(json!({
        "method": method.as_str(),
        "route": route,
        "status": status.as_u16(),
        "request": request_details,
    }));
    if let Some(target_id) = target_id {
        event = event.target(target_type, target_id);
    }
    let identity = state.identity();
    record_after_change(identity, record(identity, &context, &Actor::of(&caller), event)).await;
    Response::from_parts(response_parts, response_body)
}

/// The action and target type of an admin change: from `ADMIN_ACTIONS`, else derived from the
/// route (a route missing from the table still gets an entry; a unit test keeps the table
/// complete).
fn admin_action(method: &str, route: &str) -> (String, &'static str) {
    match ADMIN_ACTIONS.iter().find(|(m, r, ..)| *m == method && *r == route) {
        Some((_, _, action, target, _)) => ((*action).to_owned(), target),
        None => (format!("admin.{} {route}", method.to_ascii_lowercase()), "resource"),
    }
}

/// Where the entry of an admin change is written: `ADMIN_ACTIONS`' word, and after the change
/// for a route missing from it (so it still gets an entry; a unit test keeps the table
/// complete).
fn written(method: &str, route: &str) -> Written {
    ADMIN_ACTIONS
        .iter()
        .find(|(m, r, ..)| *m == method && *r == route)
        .map_or(Written::AfterChange, |(.., written)| *written)
}

fn target_of(route: &str, params: &[(String, String)], request: &Value, answered_id: Option<String>) -> Option<String> {
    if route == "/v1/admin/fx-rates" {
        let side = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("?").to_owned();
        return Some(format!("{}/{}", side("from"), side("to")));
    }
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    param("id").or_else(|| param("code")).or(answered_id)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries by this actor (a user id).
    pub actor_id: Option<String>,
    /// Only entries with this action (`transfer.execute`, `user.block`, …).
    pub action: Option<String>,
    /// Only entries about this target id.
    pub target_id: Option<String>,
    /// RFC 3339 date-time or `YYYY-MM-DD` (midnight UTC), inclusive.
    pub from: Option<String>,
    /// RFC 3339 date-time or `YYYY-MM-DD`, exclusive.
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditActor)]
struct ActorView {
    /// `user`, `api_key`, `system`, or `anonymous` (nobody authenticated: a failed login, a
    /// password-reset request).
    #[schema(value_type = String, pattern = "^(user|api_key|system|anonymous)$")]
    kind: &'static str,
    id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditTarget)]
struct TargetView {
    /// Absent only on an entry stored with a target id and no type (none is written so).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `null` for a target named by its type alone.
    id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
struct EntryView {
    id: String,
    seq: u64,
    at: String,
    actor: ActorView,
    action: String,
    target: Option<TargetView>,
    request_id: String,
    ip: Option<String>,
    user_agent: Option<String>,
    /// The user whose security activity the entry is (hyphenated lowercase UUID), or `null`.
    /// The chain hashes it, so an entry's hash can be recomputed from this view alone
    /// (docs/audit.md).
    subject_user_id: Option<String>,
    /// What the entry records, without secrets; exactly the JSON text that was hashed.
    #[schema(value_type = Object)]
    details: Value,
    /// SHA-256 (hex) of the previous entry's hash and this entry's canonical form.
    hash: String,
    prev_hash: String,
}

impl EntryView {
    fn of(entry: AuditEntry) -> Result<EntryView, ApiError> {
        let record = entry.record;
        // Both target fields are hashed, so either one present shows: a target named by its
        // type alone (no id) used to vanish from the view, and its hash could not be redone.
        let target = match (record.target_type, record.target_id) {
            (None, None) => None,
            (kind, id) => Some(TargetView { kind, id }),
        };
        Ok(EntryView {
            id: record.id.to_string(),
            seq: entry.seq,
            at: rfc3339(record.at)?,
            actor: ActorView { kind: record.actor_kind.as_str(), id: record.actor_id },
            action: record.action,
            target,
            request_id: record.request_id,
            ip: record.ip,
            user_agent: record.user_agent,
            subject_user_id: record.subject_user.map(|user| user.as_uuid().hyphenated().to_string()),
            details: serde_json::from_str(&record.details).unwrap_or(Value::String(record.details)),
            hash: entry.hash,
            prev_hash: entry.prev_hash,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditPage)]
struct Page {
    items: Vec<EntryView>,
    next_cursor: Option<String>,
}

/// A filter value: present, bounded, printable (so it can never carry a NUL to Postgres).
fn filter_text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    if value.is_empty() || value.chars().count() > FILTER_LENGTH_MAX || value.chars().any(char::is_control) {
        return Err(ApiError::field(field, format!("must be 1 to {FILTER_LENGTH_MAX} printable characters")));
    }
    Ok(Some(value))
}

const AUDIT_CURSOR_TAG: &str = "audit";

/// A time bound as the transactions listing takes it: an RFC 3339 date-time, or a date
/// (`YYYY-MM-DD`, its midnight UTC).
fn instant(field: &str, text: &str) -> Result<tally_engine::Timestamp, ApiError> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let refuse = || ApiError::field(field, "must be an RFC 3339 date-time or a date YYYY-MM-DD");
    let at = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => time::Date::parse(text, format_description!("[year]-[month]-[day]"))
            .map_err(|_| refuse())?
            .midnight()
            .assume_utc(),
    };
    i64::try_from(at.unix_timestamp_nanos() / 1_000).map(tally_engine::Timestamp::from_micros).map_err(|_| refuse())
}

/// `GET /v1/admin/audit?actor_id&action&target_id&from&to&cursor&limit` (`audit:read`).
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    params(AuditQuery),
    description = "The audit log, newest first (by `seq`), paged by an opaque cursor (`limit` 1 to 200, default \
                   50). `from` is inclusive and `to` exclusive; both take an RFC 3339 date-time or a date \
                   (`YYYY-MM-DD`, midnight UTC) and filter on `at`. Every admin route that changes something \
                   writes one entry (`user.block`, `role.assign`, `transfer.execute`, `fee_rule.update`, …; the \
                   full list is in docs/audit.md), and so does every security event (`auth.login_succeeded`, \
                   `auth.login_failed`, `auth.password_changed`, …). `actor.kind` may also be `anonymous` (no \
                   authenticated caller: a failed login, a reset request). Entries are hash-chained: `hash` = \
                   SHA-256(prev_hash bytes ‖ canonical entry); `tally verify` recomputes the chain.",
    responses((status = 200, body = Page)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<AuditRead>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = pagination::limit(query.limit.as_deref())?;
    let before = pagination::parse_seq_cursor(AUDIT_CURSOR_TAG, query.cursor.as_deref())?;
    let filter = AuditFilter {
        actor_id: filter_text("actor_id", query.actor_id)?,
        action: filter_text("action", query.action)?,
        action_prefix: None,
        target_id: filter_text("target_id", query.target_id)?,
        subject_user: None,
        from: query.from.as_deref().map(|text| instant("from", text)).transpose()?,
        to: query.to.as_deref().map(|text| instant("to", text)).transpose()?,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(ApiError::field("to", "must not be before from"));
    }
    page(&state, &filter, before, limit).await
}

async fn page(state: &AppState, filter: &AuditFilter, before: Option<u64>, limit: u32) -> Result<Response, ApiError> {
    let mut entries = state.identity().audit.audit_page(filter, before, limit + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor =
        if more { entries.last().map(|entry| pagination::seq_cursor(AUDIT_CURSOR_TAG, entry.seq)) } else { None };
    let items = entries.into_iter().map(EntryView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ChainHead)]
struct HeadView {
    /// 0 while the log is empty.
    seq: u64,
    hash: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = LedgerShardHead)]
struct ShardHeadView {
    shard: u16,
    /// The last journal seq of the shard's newest batch.
    seq: u64,
    /// That batch's chained hash (hex).
    hash: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = LedgerHead)]
struct LedgerHeadView {
    /// The sum of the shards' `seq`s: grows with every committed batch.
    seq: u64,
    /// Hex SHA-256 over each shard's head in shard order (`"<shard>:<seq>:<hash>\n"`), so one
    /// value anchors every shard's chain; 64 zeros before any batch.
    hash: String,
    shards: Vec<ShardHeadView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditHeads)]
pub struct Heads {
    /// The ledger journal's hash chains (one per shard; docs/events.md).
    ledger: LedgerHeadView,
    audit: HeadView,
}

/// `GET /v1/admin/audit/head` (`audit:read`) → `{ledger, audit: {seq, hash}}`.
#[utoipa::path(
    get,
    path = "/v1/admin/audit/head",
    tag = "admin",
    description = "The heads of Tally's hash chains, for anchoring elsewhere (a later head proves every entry up \
                   to it unchanged). `audit` is the audit log's newest `seq` and `hash`. `ledger` is the journal's \
                   batch chains: each shard's newest batch (`shards`), and `hash` over all of them with `seq` \
                   the sum of their seqs (docs/events.md).",
    responses((status = 200, body = Heads)),
    security(("bearer" = []))
)]
pub async fn head(State(state): State<AppState>, _admin: Authorized<AuditRead>) -> Result<axum::Json<Heads>, ApiError> {
    let head = state.identity().audit.audit_head().await?;
    let shards = state.identity().events.ledger_heads().await?;
    let mut combined = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut seq: u64 = 0;
    let mut views = Vec::with_capacity(shards.len());
    for shard in &shards {
        let hash = tally_persistence::events::chain::hex(&shard.hash);
        combined.update(format!("{}:{}:{hash}\n", shard.shard, shard.last_seq).as_bytes());
        seq = seq.saturating_add(shard.last_seq);
        views.push(ShardHeadView { shard: shard.shard, seq: shard.last_seq, hash });
    }
    let hash = if shards.is_empty() {
        tally_persistence::audit::GENESIS_HASH.to_owned()
    } else {
        tally_persistence::events::chain::hex(combined.finish().as_ref())
    };
    let ledger = LedgerHeadView { seq, hash, shards: views };
    Ok(axum::Json(Heads { ledger, audit: HeadView { seq: head.seq, hash: head.hash } }))
}

/// The caller's own security activity (`GET /v1/users/me/activity`): entries whose subject is
/// the caller and whose action is an `auth.*` event, newest first. The kind shown is the
/// action without its `auth.` prefix.
pub async fn activity_page(
    state: &AppState,
    user: UserId,
    before: Option<u64>,
    limit: u32,
) -> Result<(Vec<AuditEntry>, Option<String>), ApiError> {
    let filter = AuditFilter {
        subject_user: Some(user),
        action_prefix: Some(ACTIVITY_PREFIX.to_owned()),
        ..AuditFilter::default()
    };
    let mut entries = state.identity().audit.audit_page(&filter, before, limit + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor =
        if more { entries.last().map(|entry| pagination::seq_cursor(ACTIVITY_CURSOR_TAG, entry.seq)) } else { None };
    Ok((entries, next_cursor))
}

/// The prefix of security-event actions, which a user's activity shows.
pub const ACTIVITY_PREFIX: &str = "auth.";

pub const ACTIVITY_CURSOR_TAG: &str = "activity";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth_and_other_fields_kept() {
        let mut value = json!({"password": "x", "nested": [{"new_password": "y", "code": "123456"}], "reason": "ok"});
        redact(&mut value);
        assert_eq!(value["password"], "[redacted]");
        assert_eq!(value["nested"][0]["new_password"], "[redacted]");
        assert_eq!(value["nested"][0]["code"], "[redacted]");
        assert_eq!(value["reason"], "ok");
        assert_eq!(body_details(b"not json"), json!({"bytes": 8}));
        assert_eq!(body_details(b""), Value::Null);
    }

    /// Every admin route that changes something either audits itself in its transaction
    /// (identity routes, listed here) or has a named action in `ADMIN_ACTIONS`: a new admin
    /// route cannot land with only the derived fallback name.
    #[test]
    fn every_admin_change_route_has_a_named_action_or_audits_itself() {
        const AUDITS_ITSELF: &[&str] = &["/v1/admin/users", "/v1/admin/roles"];
        let document = serde_json::to_value(crate::openapi::document()).unwrap();
        let mut missing = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let method = method.to_uppercase();
                if !is_admin_change(&Method::from_bytes(method.as_bytes()).unwrap(), path) {
                    continue;
                }
                let named = ADMIN_ACTIONS.iter().any(|(m, r, ..)| *m == method && r == path);
                let own = AUDITS_ITSELF.iter().any(|prefix| path.starts_with(prefix));
                if !named && !own {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        assert!(missing.is_empty(), "admin changes without a named audit action: {missing:?}");
        for (method, route, action, ..) in ADMIN_ACTIONS {
            assert!(document["paths"][route][method.to_lowercase()].is_object(), "{method} {route} is not served");
            assert!(action.contains('.'), "{action}");
        }
    }
}
