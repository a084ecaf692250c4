//! The OpenAPI 3.1 description of the API, generated from the code: each handler carries a
//! `#[utoipa::path]` next to its signature and each body and view derives `ToSchema`, so the
//! document moves with the code. `GET /openapi.json` serves it; `GET /docs` renders it with
//! Swagger UI, whose assets are compiled into the binary (no network, no CDN).
//!
//! What is added here rather than per route, because it is true of every route:
//! - a `default` response: every error is `application/problem+json` (`Problem`);
//! - the security schemes (`bearer` access tokens, `api_key` for machine clients);
//! - the `X-Request-Id` header on every answer, `Retry-After` on errors, and `Location` and
//!   `Idempotent-Replayed` on the answers listed in `LOCATION` and `REPLAYED`.
//!
//! A unit test checks that every route `app()` registers is documented and nothing else is.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::problem::FieldError;

/// A currency or asset code Tally knows, as an enumeration built from the engine's table (so
/// a new currency is documented the moment it exists).
#[derive(Debug)]
pub struct CurrencyCode;

impl utoipa::PartialSchema for CurrencyCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let codes: Vec<&'static str> = tally_engine::Currency::all().map(|currency| currency.code()).collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(codes))
            .description(Some("ISO 4217 code, or an asset code (BTC, ETH, USDC)"))
            .examples(["USD"])
            .into()
    }
}

impl ToSchema for CurrencyCode {}

/// The shape of every error answer (RFC 9457). Documentation only: `problem.rs` writes the
/// real thing, and a test there checks the two agree field for field.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// A URI naming the problem kind, e.g. `https://tally.dev/problems/insufficient-funds`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// The error code of API.md ("INSUFFICIENT_FUNDS", "VALIDATION_ERROR", ...).
    pub code: String,
    pub detail: String,
    /// The request's id, also in the `X-Request-Id` header and the server's log line.
    pub request_id: String,
    /// One entry per invalid field, for `VALIDATION_ERROR`.
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "A transaction engine for money. Amounts are strings at the currency's scale; \
                       every error is application/problem+json; money-moving POSTs take an \
                       Idempotency-Key (one fresh key per request: a key is looked up among requests of its \
                       own kind, so the same key on two endpoints makes two requests). A request still unanswered after 10 s is answered 503 if it is a read \
                       (nothing changed) and 500 if it is a write (its outcome is unknown: retry under the \
                       same Idempotency-Key, which answers with it). Identity decisions the contract leaves open (self-service, roles, \
                       admin user views, mail, the audit log and its hash chain) are stated on each \
                       operation and collected in docs/identity.md and docs/audit.md; those of the ledger \
                       views (saved beneficiaries, crypto histories, the owner's statement, verification \
                       limits) in docs/ledger-views.md.",
        version = "1.1",
    ),
    paths(
        crate::health::live,
        crate::health::ready,
        crate::auth::routes::jwks,
        crate::auth::routes::register,
        crate::auth::routes::login,
        crate::auth::routes::refresh,
        crate::auth::routes::me,
        crate::auth::mfa::setup,
        crate::auth::mfa::confirm,
        crate::auth::mfa::verify,
        crate::auth::stepup::begin,
        crate::auth::stepup::verify,
        crate::auth::api_keys::create,
        crate::auth::api_keys::list,
        crate::auth::api_keys::delete,
        crate::auth::sessions::logout,
        crate::auth::sessions::list,
        crate::auth::sessions::delete,
        crate::auth::admin_users::list,
        crate::auth::admin_users::create,
        crate::auth::admin_users::grant,
        crate::auth::admin_users::revoke,
        crate::auth::admin_users::set_status,
        crate::auth::admin_users::catalog,
        crate::auth::admin_users::count,
        crate::auth::admin_users::get_one,
        crate::auth::admin_users::update,
        crate::auth::admin_users::password_reset,
        crate::auth::admin_users::sessions,
        crate::auth::admin_users::end_user_sessions,
        crate::auth::admin_users::set_verification,
        crate::auth::roles::list,
        crate::auth::roles::create,
        crate::auth::roles::get,
        crate::auth::roles::update,
        crate::auth::roles::delete,
        crate::auth::roles::assign,
        crate::auth::roles::unassign,
        crate::auth::self_service::update_me,
        crate::auth::self_service::change_password,
        crate::auth::self_service::forgot_password,
        crate::auth::self_service::reset_password,
        crate::auth::self_service::request_verification,
        crate::auth::self_service::confirm_verification,
        crate::auth::self_service::activity,
        crate::auth::mfa::status,
        crate::auth::mfa::disable,
        crate::auth::mfa::regenerate_backup_codes,
        crate::auth::sessions::end_others,
        crate::audit::list,
        crate::audit::head,
        crate::events::feed,
        crate::webhooks::create,
        crate::webhooks::list,
        crate::webhooks::get,
        crate::webhooks::update,
        crate::webhooks::delete,
        crate::webhooks::replay,
        crate::webhooks::deliveries,
        crate::accounts::open,
        crate::accounts::list,
        crate::accounts::get,
        crate::transfers::types,
        crate::transfers::create,
        crate::transfers::quote,
        crate::transfers::get,
        crate::transfers::cancel,
        crate::batch::create,
        crate::listings::customer_transfers,
        crate::listings::admin_transfers,
        crate::listings::admin_transfer_count,
        crate::listings::admin_accounts,
        crate::listings::admin_account_count,
        crate::ledger::transactions,
        crate::ledger::balance_history,
        crate::accounts_summary::summary,
        crate::statements::statements,
        crate::admin::adjust,
        crate::admin::get_transfer,
        crate::admin::execute,
        crate::admin::reject,
        crate::admin::cancel_transfer,
        crate::admin::open_account,
        crate::admin::get_account,
        crate::crypto::admin_wallets,
        crate::crypto::admin_wallet,
        crate::admin::set_account_status,
        crate::pricing::list_fx_rates,
        crate::pricing::put_fx_rate,
        crate::pricing::list_fee_rules,
        crate::pricing::create_fee_rule,
        crate::pricing::get_fee_rule,
        crate::pricing::put_fee_rule,
        crate::pricing::list_transfer_types,
        crate::pricing::put_transfer_type,
        crate::ops::actors,
        crate::cluster::admin_cluster,
        crate::ops::release,
        crate::aml::list_rules,
        crate::aml::create_rule,
        crate::aml::get_rule,
        crate::aml::put_rule,
        crate::aml::delete_rule,
        crate::aml::list_flags,
        crate::aml::count_flags,
        crate::aml::get_flag,
        crate::aml::resolve_flag,
        crate::ops_page::page,
        crate::admin_page::page,
        crate::metrics::scrape,
        crate::crypto::open_wallet,
        crate::crypto::list_wallets,
        crate::crypto::get_wallet,
        crate::crypto::quote,
        crate::crypto::place_order,
        crate::crypto::get_order,
        crate::crypto::withdraw,
        crate::crypto::get_withdrawal,
        crate::crypto::custodian_webhook,
        crate::beneficiaries::list,
        crate::beneficiaries::create,
        crate::beneficiaries::get,
        crate::beneficiaries::delete,
        crate::crypto_history::orders,
        crate::crypto_history::withdrawals,
        crate::crypto_history::wallet_transactions,
        crate::statements::account_statement,
        crate::point_in_time::balance,
        crate::limits::list,
        crate::limits::put_level,
        crate::limits::mine,
    ),
    components(schemas(ProblemDoc, FieldError, CurrencyCode)),
    modifiers(&Everywhere),
)]
pub struct ApiDoc;

/// Adds what every operation shares (see the module comment).
struct Everywhere;

impl Modify for Everywhere {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An RS256 access token (15 minutes) from login, MFA verification or refresh. A token that \
                         verified and has expired answers `401 TOKEN_EXPIRED` (refresh it); any other bad token, or \
                         one whose session has ended, answers `401 UNAUTHENTICATED` (log in again).",
                    ))
                    .build(),
            ),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        let problem = ResponseBuilder::new()
            .description("An error, as RFC 9457 problem details")
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        // `Problem.code`: every code of the contract, with its status (QUARANTINED included:
        // an actor that keeps failing refuses writes with it until an operator releases it).
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(problem))) =
            components.schemas.get_mut("Problem")
        {
            let codes: Vec<&'static str> = tally_engine::ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
            let statuses = tally_engine::ErrorCode::ALL
                .iter()
                .map(|code| format!("`{}` {}", code.as_str(), code.http_status()))
                .collect::<Vec<_>>()
                .join(", ");
            let description = format!(
                "The error code of API.md, with its status: {statuses}. `TOKEN_EXPIRED`: the access token verified \
                 and expired (refresh it). `INVALID_CODE`: a wrong, expired or used one-time code. \
                 `EMAIL_NOT_VERIFIED`: money-moving routes with `TALLY_REQUIRE_VERIFIED_EMAIL=true`. \
                 `VERIFICATION_LIMIT_EXCEEDED`: the caller's verification level does not allow the amount now \
                 (see `GET /v1/users/me/limits`). `VALIDATION_ERROR` also comes with `405` (with `Allow`), \
                 `413` and `415`, the HTTP-level refusals the contract has no code of their own for. \
                 `QUARANTINED`: the account or wallet keeps failing and refuses writes until an operator releases \
                 it (`Retry-After` is set)."
            );
            let code = utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .enum_values(Some(codes))
                .description(Some(description))
                .build();
            problem.properties.insert("code".to_owned(), code.into());
        }
        // utoipa names an operation after its handler, and handlers in different modules share
        // names (`list`, `create`): OpenAPI requires unique ids, and client generators collide
        // on repeated ones. A repeated name is replaced by one made of the method and path.
        let mut uses = std::collections::BTreeMap::<String, usize>::new();
        for (_, _, operation) in operations(openapi) {
            if let Some(id) = &operation.operation_id {
                *uses.entry(id.clone()).or_default() += 1;
            }
        }
        for (method, path, operation) in operations(openapi) {
            operation.responses.responses.entry("default".to_owned()).or_insert_with(|| problem.clone().into());
            if operation.operation_id.as_ref().is_none_or(|id| uses.get(id).copied().unwrap_or(0) > 1) {
                operation.operation_id = Some(operation_name(method, &path));
            }
            for (status, response) in operation.responses.responses.iter_mut() {
                let utoipa::openapi::RefOr::T(response) = response else { continue };
                response.headers.insert(
                    "X-Request-Id".to_owned(),
                    header(
                        "The request's id (as a problem's `request_id` and the server's log line); a client's own \
                     `X-Request-Id` of 1 to 64 letters, digits and `-_.:` is kept",
                    ),
                );
                if status == "default" {
                    response.headers.insert(
                        "Retry-After".to_owned(),
                        header("Seconds to wait before retrying: on `429` and `503` (and `QUARANTINED`)"),
                    );
                }
                let at = (method, path.as_str(), status.as_str());
                if LOCATION.contains(&at) {
                    response.headers.insert("Location".to_owned(), header("The path of what the request made"));
                }
                if REPLAYED.contains(&at) {
                    response.headers.insert(
                        "Idempotent-Replayed".to_owned(),
                        header("`true` when the answer repeats what an earlier request under the same Idempotency-Key made"),
                    );
                }
            }
        }
    }
}

/// `(method, path, status)` of the answers that carry `Location` (the handlers set it: `accounts::created`,
/// `transfers::transfer_answer` and the few that set it themselves).
const LOCATION: [(&str, &str, &str); 15] = [
    ("post", "/v1/transfers", "201"),
    ("post", "/v1/transfers", "202"),
    ("post", "/v1/admin/adjustments", "201"),
    ("post", "/v1/accounts", "201"),
    ("post", "/v1/admin/accounts", "201"),
    ("post", "/v1/api-keys", "201"),
    ("post", "/v1/admin/aml/rules", "201"),
    ("post", "/v1/admin/fee-rules", "201"),
    ("post", "/v1/admin/webhooks", "201"),
    ("post", "/v1/admin/users", "201"),
    ("post", "/v1/admin/roles", "201"),
    ("post", "/v1/wallets", "201"),
    ("post", "/v1/crypto/orders", "201"),
    ("post", "/v1/crypto/withdrawals", "202"),
    ("post", "/v1/beneficiaries", "201"),
];

/// `(method, path, status)` of the answers that carry `Idempotent-Replayed: true` on a repeat.
const REPLAYED: [(&str, &str, &str); 6] = [
    ("post", "/v1/transfers", "201"),
    ("post", "/v1/transfers", "202"),
    ("post", "/v1/admin/adjustments", "201"),
    ("post", "/v1/transfers/batch", "200"),
    ("post", "/v1/crypto/orders", "201"),
    ("post", "/v1/crypto/withdrawals", "202"),
];

/// A string response header with its description.
fn header(description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String))
        .description(Some(description))
        .build()
}

/// Every operation of the document with its method and path.
fn operations(openapi: &mut Document) -> impl Iterator<Item = (&'static str, String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ]
        .into_iter()
        .filter_map(move |(method, operation)| operation.as_mut().map(|operation| (method, path.clone(), operation)))
    })
}

/// `post_admin_webhooks_by_id_replay` for `POST /v1/admin/webhooks/{id}/replay`.
fn operation_name(method: &str, path: &str) -> String {
    let mut name = method.to_owned();
    for segment in path.split('/').filter(|segment| !segment.is_empty() && *segment != "v1") {
        name.push('_');
        match segment.strip_prefix('{').and_then(|segment| segment.strip_suffix('}')) {
            Some(parameter) => {
                name.push_str("by_");
                name.push_str(parameter);
            }
            None => name.extend(segment.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })),
        }
    }
    name
}

/// The document as JSON, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: std::sync::OnceLock<Document> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> axum::Json<&'static Document> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every route `routes/` registers, read from its source: the one list of
    /// routes is the router, and this keeps the document honest about it.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let source = crate::routes::SOURCES.concat();
        let mut routes = BTreeSet::new();
        for chunk in source.split(".route(\"").skip(1) {
            let (path, rest) = chunk.split_once('"').unwrap();
            let call = rest.split(")\n").next().unwrap();
            for method in ["get", "post", "put", "delete", "patch"] {
                if call.contains(&format!("{method}(")) {
                    routes.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
        routes
    }

    /// Routes that are not part of the API's contract surface and so are not documented.
    const UNDOCUMENTED: [&str; 2] = ["/openapi.json", "/docs"];

    #[test]
    fn every_registered_route_is_documented_and_nothing_else_is() {
        let document = serde_json::to_value(document()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let registered: BTreeSet<_> = registered_routes()
            .into_iter()
            .filter(|(_, path)| !UNDOCUMENTED.iter().any(|prefix| path.starts_with(prefix)))
            .collect();
        assert!(registered.len() > 20, "the route scan found too few routes: {registered:?}");
        let missing: Vec<_> = registered.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(missing.is_empty(), "routes without documentation: {missing:?}");
        assert!(extra.is_empty(), "documented routes the router does not serve: {extra:?}");
    }

    /// OpenAPI: "The id MUST be unique among all operations described in the API" (`list` was
    /// nine operations' id, found by a validator).
    #[test]
    fn every_operation_has_an_id_of_its_own() {
        let document = serde_json::to_value(document()).unwrap();
        let mut seen = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
                assert!(seen.insert(id.to_owned()), "{method} {path}: {id} is another operation's id too");
            }
        }
        assert_eq!(operation_name("post", "/v1/admin/webhooks/{id}/replay"), "post_admin_webhooks_by_id_replay");
    }

    /// Found by a conformance review: the stepped-up routes that did not say so, and a
    /// transfer's payee described as a saved beneficiary (with `id` and `created_at` it never
    /// has), which failed every external transfer against the schema.
    #[test]
    fn stepped_up_routes_declare_their_header_and_a_transfer_s_payee_is_name_and_iban() {
        let document = serde_json::to_value(document()).unwrap();
        for (method, path) in [
            ("post", "/v1/transfers"),
            ("post", "/v1/transfers/batch"),
            ("post", "/v1/users/me/password"),
            ("delete", "/v1/users/me/mfa/totp"),
            ("post", "/v1/users/me/mfa/backup-codes"),
            ("post", "/v1/admin/webhooks"),
            ("patch", "/v1/admin/webhooks/{id}"),
            ("post", "/v1/admin/webhooks/{id}/replay"),
        ] {
            let parameters = document["paths"][path][method]["parameters"].as_array().cloned().unwrap_or_default();
            assert!(
                parameters.iter().any(|parameter| parameter["name"] == "X-Step-Up-Token"),
                "{method} {path} does not declare X-Step-Up-Token"
            );
        }
        let schemas = &document["components"]["schemas"];
        let payee = serde_json::to_string(&schemas["TransferView"]["properties"]["beneficiary"]).unwrap();
        assert!(payee.contains("#/components/schemas/TransferBeneficiary"), "{payee}");
        assert_eq!(schemas["TransferBeneficiary"]["required"], serde_json::json!(["name", "iban"]));
        assert_eq!(
            schemas["BeneficiaryView"]["required"],
            serde_json::json!(["id", "name", "iban", "created_at"]),
            "the saved beneficiary keeps its own schema"
        );
    }

    /// Every answer names `X-Request-Id`, errors `Retry-After`, and the answers listed in
    /// `LOCATION` and `REPLAYED` (each of which the document has: a stale entry fails) their
    /// headers. That the handlers send them is tested by each route's suite.
    #[test]
    fn response_headers_are_declared_where_they_are_sent() {
        let document = serde_json::to_value(document()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let headers = &response["headers"];
                    assert!(headers["X-Request-Id"].is_object(), "{method} {path} {status}");
                    let at = (method.as_str(), path.as_str(), status.as_str());
                    assert_eq!(headers["Location"].is_object(), LOCATION.contains(&at), "{at:?}");
                    assert_eq!(headers["Idempotent-Replayed"].is_object(), REPLAYED.contains(&at), "{at:?}");
                    assert_eq!(headers["Retry-After"].is_object(), status == "default", "{at:?}");
                }
            }
        }
        for (method, path, status) in LOCATION.iter().chain(&REPLAYED) {
            assert!(document["paths"][path][method]["responses"][status].is_object(), "{method} {path} {status}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_operation_answers_problems_by_default() {
        let document = serde_json::to_value(document()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let default = &operation["responses"]["default"]["content"]["application/problem+json"];
                assert!(default.is_object(), "{method} {path} lacks the problem+json default");
            }
        }
    }

    #[test]
    fn the_documented_problem_has_exactly_the_fields_errors_are_written_with() {
        let document = serde_json::to_value(document()).unwrap();
        let properties: BTreeSet<String> =
            document["components"]["schemas"]["Problem"]["properties"].as_object().unwrap().keys().cloned().collect();
        let written = crate::problem::tests::written_problem_fields();
        assert_eq!(properties, written);
    }
}
