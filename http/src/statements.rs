//! Statements: `GET /v1/admin/statements` (`transfers:read`) and, for an account's owner,
//! `GET /v1/accounts/{id}/statement` (API.md *1.1* "Ledger views"): the ledger lines
//! (postings) of a period as JSON pages, or the whole period as a streamed CSV file. Both
//! routes are the same code below (`check_period`, `check_rest`, `answer`); the customer's is
//! the admin's with the scope fixed to one account the caller owns.
//!
//! What a line carries is enough to reconcile it without another call: the posting's id (a
//! name-based UUID of its account and posting number, as in
//! `GET /v1/accounts/{id}/transactions`), the
//! transfer, the account and its owner, currency, direction, amount, the account's balance
//! after the posting, the transfer's type, reference and description, and its time.
//!
//! Decisions (API.md is silent; see docs/api-decisions.md):
//! - `from` and `to` are required UTC dates, both inclusive, `from <= to`, at most
//!   `STATEMENT_DAYS_MAX` days. A posting belongs to the day it was booked (its journal batch
//!   committed, which is when the balance changed), as in the transactions listing and the
//!   balance history; a pending transfer's postings belong to the day it was executed.
//! - At most one of `account_id` and `user_id`; neither is the whole ledger, system accounts
//!   included, so an auditor can check that debits equal credits per currency (over a period
//!   whose edges no transfer straddled: a transfer's two legs can be booked by two commits,
//!   milliseconds apart, on either side of midnight; see docs/api-decisions.md). An unknown
//!   account or user is `404`: an empty statement would look like "no activity" to a typo.
//! - Lines come account by account (in account id order), each account's oldest first in the
//!   order it applied them, so an account's `balance_after` runs forward line by line; the
//!   cursor is the last line's place (account, booking time, posting number). Journals are per
//!   shard, so there is no one global sequence to order the whole ledger by; per account there
//!   is, and that is what a statement reconciles.
//! - `format=csv` is the whole period in one file: `cursor` and `limit` are refused with it
//!   rather than silently ignored.
//! - The CSV streams in chunks of `CSV_CHUNK_ROWS` read one after the other by keyset, so the
//!   server holds one chunk whatever the period's size. Every check, and the first chunk's
//!   read and writing, happen before the answer starts, so those failures are problem+json. A failure
//!   after the first byte cannot change the status any more: the stream ends with an error,
//!   which makes hyper abort the chunked body without its terminating chunk, so the client sees
//!   a broken transfer, never a file that looks complete.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_actors::EngineError;
use tally_engine::{AccountId, Currency, Timestamp, UserId};
use tally_persistence::reads::listing::{DAY_MICROS, PostingPosition};
use tally_persistence::reads::statement::{StatementFilter, StatementLine, StatementScope};
use tally_persistence::reads::{AccountReads, StatementReads};
use time::Date;
use time::macros::format_description;

use crate::accounts::owned_account;
use crate::auth::Authorized;
use crate::auth::api_keys::{AccountsRead, Scoped};
use crate::auth::permissions::TransfersRead;
use crate::input::IdPath;
use crate::pagination::{parse_posting_cursor, posting_cursor};
use crate::problem::{ApiError, request_id};
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{money, rfc3339};

/// Lines per JSON page when the client names no limit.
pub const STATEMENT_LIMIT_DEFAULT: u32 = 100;

/// Lines per JSON page at most (API.md). A line is a row of one query, no live read, so a
/// page can be larger than a listing's.
pub const STATEMENT_LIMIT_MAX: u32 = 500;

/// Days a statement covers at most: a year, leap day included. Longer periods are several
/// statements; this bounds what one request can ask the database to scan.
pub const STATEMENT_DAYS_MAX: i64 = 366;

/// Lines the CSV reads per query: ~300 bytes each, so ~300 KB of rows and text in memory at
/// once, while a million lines take a thousand queries, each one index range.
pub const CSV_CHUNK_ROWS: u32 = 1_000;

const STATEMENT_TAG: &str = "statement";

/// The customer's statement pages with its own cursors: a cursor of one route is refused by
/// the other, as between every two listings.
const ACCOUNT_STATEMENT_TAG: &str = "account-statement";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive; at most 366 days after `from`'s start.
    pub to: Option<String>,
    /// One account's lines (not with `user_id`).
    pub account_id: Option<String>,
    /// The lines of every account of this user (not with `account_id`).
    pub user_id: Option<String>,
    /// `credit` or `debit`.
    pub direction: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 500, default 100 (JSON only).
    pub limit: Option<String>,
    /// `json` (default) or `csv` (the whole period, streamed, as an attachment).
    pub format: Option<String>,
}

/// The query of `GET /v1/accounts/{id}/statement`: the admin's without the scope parameters
/// (the path names the account).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountStatementQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive; at most 366 days after `from`'s start.
    pub to: Option<String>,
    /// `credit` or `debit`.
    pub direction: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 500, default 100 (JSON only).
    pub limit: Option<String>,
    /// `json` (default) or `csv` (the whole period, streamed, as an attachment).
    pub format: Option<String>,
}

/// The CSV's columns: `StatementLineView`'s fields, in order (a test holds them equal).
const CSV_COLUMNS: [&str; 12] = [
    "id",
    "transfer_id",
    "account_id",
    "user_id",
    "currency",
    "direction",
    "amount",
    "balance_after",
    "transfer_type",
    "reference",
    "description",
    "created_at",
];

/// One ledger line (a posting).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementLineView {
    /// The posting's id: a name-based UUID (v5) of its account and the account's posting
    /// number, stable across reads.
    pub id: String,
    pub transfer_id: String,
    pub account_id: String,
    /// The account's owner; `null` for system accounts.
    pub user_id: Option<String>,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    /// `credit` or `debit`.
    pub direction: &'static str,
    pub amount: String,
    pub balance_after: String,
    /// `internal`, `external`, `admin_credit` or `admin_debit`.
    pub transfer_type: String,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// When the posting was booked: the commit of the journal batch that wrote it, which is
    /// when the balance changed (a pending transfer posts when executed).
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementPage {
    pub items: Vec<StatementLineView>,
    pub next_cursor: Option<String>,
}

impl StatementLineView {
    fn of(line: StatementLine) -> Result<StatementLineView, String> {
        let id = line.position.public_id();
        let currency = Currency::from_code(&line.currency)
            .ok_or_else(|| format!("posting {id} has unknown currency {:?}", line.currency))?;
        let created_at = rfc3339(Timestamp::from_micros(line.booked_at))
            .map_err(|_| format!("posting {id} has time {} out of range", line.booked_at))?;
        Ok(StatementLineView {
            id: id.to_string(),
            transfer_id: line.transfer.to_string(),
            account_id: line.position.account.to_string(),
            user_id: line.owner.map(|owner| owner.to_string()),
            currency: currency.code(),
            direction: if line.credit { "credit" } else { "debit" },
            amount: money(line.amount, currency),
            balance_after: money(line.balance_after, currency),
            transfer_type: line.transfer_kind,
            reference: line.reference,
            description: line.description,
            created_at,
        })
    }
}

/// The midnight (UTC, microseconds) that starts the day `text` names, which must be exactly
/// `YYYY-MM-DD`.
fn day_start(field: &str, text: Option<&str>) -> Result<i64, ApiError> {
    let text = text.ok_or_else(|| ApiError::field(field, "is required (a date YYYY-MM-DD)"))?;
    let date = Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| ApiError::field(field, "must be a date YYYY-MM-DD"))?;
    i64::try_from(date.midnight().assume_utc().unix_timestamp_nanos() / 1_000)
        .map_err(|_| ApiError::field(field, "must be a date YYYY-MM-DD"))
}

fn uuid_param(field: &str, text: Option<&str>) -> Result<Option<uuid::Uuid>, ApiError> {
    text.map(|text| uuid::Uuid::try_parse(text).map_err(|_| ApiError::field(field, "must be a UUID"))).transpose()
}

/// A checked request: the filter, and the page (JSON) or nothing (CSV).
struct Checked {
    filter: StatementFilter,
    page: PageAsked,
    /// The cursors' tag of the route.
    tag: &'static str,
    /// The CSV's file name (`statement-<from>-<to>.csv`; the customer's names its account).
    file_name: String,
}

/// `(from, to)` as the filter takes them: the first day's midnight, and the midnight after
/// the last day (exclusive), checked: both given, in order, at most `STATEMENT_DAYS_MAX` days.
fn check_period(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
    let from = day_start("from", from)?;
    let to_day = day_start("to", to)?;
    if to_day < from {
        return Err(ApiError::field("to", "must not be before from"));
    }
    if (to_day - from) / DAY_MICROS + 1 > STATEMENT_DAYS_MAX {
        return Err(ApiError::field("to", format!("a statement covers at most {STATEMENT_DAYS_MAX} days")));
    }
    Ok((from, to_day + DAY_MICROS))
}

/// `(after, limit)` of a JSON page; `None` for the CSV.
type PageAsked = Option<(Option<PostingPosition>, u32)>;

/// The direction, and the page (JSON) or `None` (CSV), checked in the query's order.
fn check_rest(
    tag: &str,
    direction: Option<&str>,
    format: Option<&str>,
    cursor: Option<&str>,
    limit: Option<&str>,
) -> Result<(Option<bool>, PageAsked), ApiError> {
    let credit = match direction {
        None => None,
        Some("credit") => Some(true),
        Some("debit") => Some(false),
        Some(_) => return Err(ApiError::field("direction", "must be credit or debit")),
    };
    let csv = match format {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::field("format", "must be json or csv")),
    };
    let page = if csv {
        if cursor.is_some() {
            return Err(ApiError::field("cursor", "the CSV is the whole period; it takes no cursor"));
        }
        if limit.is_some() {
            return Err(ApiError::field("limit", "the CSV is the whole period; it takes no limit"));
        }
        None
    } else {
        let limit = match limit {
            None => STATEMENT_LIMIT_DEFAULT,
            Some(text) => match text.parse::<u32>() {
                Ok(limit) if (1..=STATEMENT_LIMIT_MAX).contains(&limit) => limit,
                _ => {
                    return Err(ApiError::field(
                        "limit",
                        format!("must be an integer from 1 to {STATEMENT_LIMIT_MAX}"),
                    ));
                }
            },
        };
        Some((parse_posting_cursor(tag, cursor)?, limit))
    };
    Ok((credit, page))
}

/// Every check of the admin's query that needs no store, in the order of its parameters.
fn check(params: &StatementQuery) -> Result<Checked, ApiError> {
    let (from, to) = check_period(params.from.as_deref(), params.to.as_deref())?;
    let account = uuid_param("account_id", params.account_id.as_deref())?;
    let user = uuid_param("user_id", params.user_id.as_deref())?;
    let scope = match (account, user) {
        (Some(_), Some(_)) => return Err(ApiError::field("user_id", "give account_id or user_id, not both")),
        (Some(account), None) => StatementScope::Account(AccountId::from_uuid(account)),
        (None, Some(user)) => StatementScope::Owner(UserId::from_uuid(user)),
        (None, None) => StatementScope::All,
    };
    let (credit, page) = check_rest(
        STATEMENT_TAG,
        params.direction.as_deref(),
        params.format.as_deref(),
        params.cursor.as_deref(),
        params.limit.as_deref(),
    )?;
    Ok(Checked {
        filter: StatementFilter { scope, credit, from, to },
        page,
        tag: STATEMENT_TAG,
        // The dates were checked to be exactly YYYY-MM-DD, so the name needs no escaping.
        file_name: format!(
            "statement-{}-{}.csv",
            params.from.as_deref().unwrap_or_default(),
            params.to.as_deref().unwrap_or_default()
        ),
    })
}

/// The customer's query, checked as the admin's, for the one account `account`.
fn check_account(params: &AccountStatementQuery, account: AccountId) -> Result<Checked, ApiError> {
    let (from, to) = check_period(params.from.as_deref(), params.to.as_deref())?;
    let (credit, page) = check_rest(
        ACCOUNT_STATEMENT_TAG,
        params.direction.as_deref(),
        params.format.as_deref(),
        params.cursor.as_deref(),
        params.limit.as_deref(),
    )?;
    Ok(Checked {
        filter: StatementFilter { scope: StatementScope::Account(account), credit, from, to },
        page,
        tag: ACCOUNT_STATEMENT_TAG,
        file_name: format!(
            "statement-{account}-{}-{}.csv",
            params.from.as_deref().unwrap_or_default(),
            params.to.as_deref().unwrap_or_default()
        ),
    })
}

/// `404` if the statement names an account or user that does not exist.
async fn check_exists(state: &AppState, scope: StatementScope) -> Result<(), ApiError> {
    match scope {
        StatementScope::All => Ok(()),
        StatementScope::Account(id) => match state.engine()?.account(id).await {
            Ok(_) => Ok(()),
            Err(EngineError::NotFound) => Err(ApiError::not_found("account")),
            Err(other) => Err(other.into()),
        },
        StatementScope::Owner(id) => match state.identity().users.user_by_id(id).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("user")),
        },
    }
}

/// `GET /v1/admin/statements?from&to&account_id|user_id&direction&cursor&limit&format` → a
/// page of ledger lines, account by account and oldest first within each, or (`format=csv`)
/// the whole period as a CSV file.
#[utoipa::path(
    get,
    path = "/v1/admin/statements",
    tag = "admin",
    params(StatementQuery),
    responses((
        status = 200,
        description = "A page of ledger lines (JSON), or with `format=csv` the whole period as an RFC 4180 \
                       CSV attachment (`Content-Disposition: attachment; filename=\"statement-<from>-<to>.csv\"`), \
                       header row first, CRLF line ends, amounts at the currency's scale. The CSV is streamed: \
                       an error after the first byte aborts the transfer (no terminating chunk), so a \
                       complete download is a complete statement.",
        content(
            (StatementPage = "application/json"),
            (String = "text/csv")
        )
    )),
    security(("bearer" = []))
)]
pub async fn statements(
    State(state): State<AppState>,
    _admin: Authorized<TransfersRead>,
    ApiQuery(params): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let checked = check(&params)?;
    check_exists(&state, checked.filter.scope).await?;
    answer(&state, checked).await
}

/// `GET /v1/accounts/{id}/statement?from&to&direction&cursor&limit&format` → the owner's
/// statement of one account: the admin statement's lines, pages and CSV.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/statement",
    tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "The account id"), AccountStatementQuery),
    description = "The account's ledger lines (postings) of a period, oldest first, exactly as in                    `GET /v1/admin/statements?account_id=`: `from` and `to` are required UTC dates, both inclusive,                    at most 366 days; a line belongs to the UTC day it was booked (a pending transfer's on the day it was executed); `balance_after` runs                    forward line by line. JSON pages of 1 to 500 lines (default 100) with an opaque cursor, or                    with `format=csv` the whole period as one RFC 4180 attachment                    (`statement-<account>-<from>-<to>.csv`), streamed in constant memory; `cursor` and `limit`                    with `format=csv` are `400`. Another user's account, or one that does not exist, is `404`                    (as `GET /v1/accounts/{id}`); parameters are checked first (`400`). API keys need                    `accounts:read`.",
    responses((
        status = 200,
        description = "A page of ledger lines (JSON), or with `format=csv` the whole period as a CSV attachment;                        an error after the first byte aborts the transfer (no terminating chunk).",
        content(
            (StatementPage = "application/json"),
            (String = "text/csv")
        )
    )),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn account_statement(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<AccountsRead>,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<AccountStatementQuery>,
) -> Result<Response, ApiError> {
    let account = AccountId::from_uuid(id);
    let checked = check_account(&params, account)?;
    owned_account(state.engine()?, account, caller.user_id, "account").await?;
    answer(&state, checked).await
}

/// The statement `checked` asks for: a JSON page, or the whole period as a CSV stream.
async fn answer(state: &AppState, checked: Checked) -> Result<Response, ApiError> {
    let reads = state.identity().reads.clone();
    match checked.page {
        Some((after, limit)) => json_page(reads.as_ref(), &checked.filter, checked.tag, after, limit).await,
        None => csv(reads, checked).await,
    }
}

async fn json_page(
    reads: &dyn AccountReads,
    filter: &StatementFilter,
    tag: &str,
    after: Option<PostingPosition>,
    limit: u32,
) -> Result<Response, ApiError> {
    // One line more than asked says whether another page follows.
    let mut lines = reads.statement_lines(filter, after, limit + 1).await?;
    let more = lines.len() > limit as usize;
    lines.truncate(limit as usize);
    let next_cursor = if more { lines.last().map(|line| posting_cursor(tag, line.position)) } else { None };
    let items =
        lines.into_iter().map(StatementLineView::of).collect::<Result<Vec<_>, _>>().map_err(ApiError::internal)?;
    Ok(axum::Json(StatementPage { items, next_cursor }).into_response())
}

/// CSV text of `lines` (RFC 4180: CRLF line ends, a field quoted, its quotes doubled, only
/// when it holds a comma, quote, CR or LF), after the header row if `header`. The columns are
/// `StatementLineView`'s fields in order, as in the JSON pages.
fn csv_chunk(lines: Vec<StatementLine>, header: bool) -> Result<Bytes, String> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .has_headers(false)
        .from_writer(Vec::with_capacity(lines.len() * 320));
    // Written here, not from the first row, so a period without lines still has its header.
    if header {
        out.write_record(CSV_COLUMNS).map_err(|error| format!("statement CSV: {error}"))?;
    }
    for line in lines {
        out.serialize(StatementLineView::of(line)?).map_err(|error| format!("statement CSV: {error}"))?;
    }
    let bytes = out.into_inner().map_err(|error| format!("statement CSV: {}", error.error()))?;
    Ok(Bytes::from(bytes))
}

/// The walk of a CSV: the next chunk starts after `after`.
struct CsvWalk {
    reads: Arc<dyn AccountReads>,
    filter: StatementFilter,
    after: Option<PostingPosition>,
    /// The header and first chunk, read and written before the answer started (so their
    /// failure is a problem+json).
    first: Option<Bytes>,
    done: bool,
    request_id: String,
}

impl CsvWalk {
    /// The next chunk of the file, or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.done {
            return Ok(None);
        }
        // Let hyper send what it holds before the next read. It writes to the socket only when
        // the body is not ready, so without this turn a read that is ready at once (the thread
        // was descheduled while Postgres answered) hands it the next chunk, or the error, in the
        // same poll: an error then drops the connection with the header still unsent, and the
        // client sees a closed connection instead of an answer that started and broke off.
        tokio::task::yield_now().await;
        let read = self.reads.statement_lines(&self.filter, self.after, CSV_CHUNK_ROWS).await;
        let lines = read.map_err(|error| self.fail(format!("statement read failed mid-stream: {error}")))?;
        self.done = lines.len() < CSV_CHUNK_ROWS as usize;
        self.after = lines.last().map(|line| line.position).or(self.after);
        if lines.is_empty() {
            return Ok(None);
        }
        csv_chunk(lines, false).map(Some).map_err(|detail| self.fail(detail))
    }

    /// Logs a failure after the answer started and ends the stream with an error, which
    /// aborts the response.
    fn fail(&mut self, detail: String) -> std::io::Error {
        self.done = true;
        tracing::error!(request_id = %self.request_id, %detail, "statement CSV aborted");
        std::io::Error::other(detail)
    }
}

async fn csv(reads: Arc<dyn AccountReads>, checked: Checked) -> Result<Response, ApiError> {
    let lines = reads.statement_lines(&checked.filter, None, CSV_CHUNK_ROWS).await?;
    let done = lines.len() < CSV_CHUNK_ROWS as usize;
    let after = lines.last().map(|line| line.position);
    let first = csv_chunk(lines, true).map_err(ApiError::internal)?;
    let walk = CsvWalk { reads, filter: checked.filter, after, first: Some(first), done, request_id: request_id() };
    let stream = futures::stream::try_unfold(walk, |mut walk| async move {
        Ok::<_, std::io::Error>(walk.next_chunk().await?.map(|bytes| (bytes, walk)))
    });
    // The name holds only checked dates and a UUID, so it needs no escaping.
    let disposition = format!("attachment; filename=\"{}\"", checked.file_name);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal("statement file name is not a header"))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_csv_header_is_the_views_fields_and_fields_are_quoted_only_when_they_must_be() {
        let line = |reference: &str| StatementLineView {
            id: "p".to_owned(),
            transfer_id: "t".to_owned(),
            account_id: "a".to_owned(),
            user_id: None,
            currency: "USD",
            direction: "credit",
            amount: "1.00".to_owned(),
            balance_after: "1.00".to_owned(),
            transfer_type: "internal".to_owned(),
            reference: Some(reference.to_owned()),
            description: None,
            created_at: "2025-06-15T00:00:00Z".to_owned(),
        };
        let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        for reference in ["plain", "a,b", "say \"hi\"", "two\nlines", "cr\r", ""] {
            out.serialize(line(reference)).unwrap();
        }
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let rows: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(rows[0], CSV_COLUMNS.join(","), "the view's fields are the documented columns, in order");
        let references: Vec<&str> = rows[1..7].iter().map(|row| row.split_once("internal,").unwrap().1).collect();
        assert_eq!(
            references,
            [
                "plain,,2025-06-15T00:00:00Z",
                "\"a,b\",,2025-06-15T00:00:00Z",
                "\"say \"\"hi\"\"\",,2025-06-15T00:00:00Z",
                "\"two\nlines\",,2025-06-15T00:00:00Z",
                "\"cr\r\",,2025-06-15T00:00:00Z",
                ",,2025-06-15T00:00:00Z",
            ]
        );
    }

    #[test]
    fn the_period_is_checked_before_anything_else() {
        let params = |from: &str, to: &str| StatementQuery {
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
            account_id: None,
            user_id: None,
            direction: None,
            cursor: None,
            limit: None,
            format: None,
        };
        let checked = check(&params("2024-02-28", "2024-03-01")).unwrap();
        assert_eq!(checked.filter.to - checked.filter.from, 3 * DAY_MICROS, "both days inclusive, leap day included");
        assert!(check(&params("2024-01-01", "2024-12-31")).is_ok(), "366 days");
        assert!(check(&params("2024-01-01", "2025-01-01")).is_err(), "367 days");
        assert!(check(&params("2024-03-02", "2024-03-01")).is_err());
        assert!(check(&params("2024-3-1", "2024-03-01")).is_err());
        assert!(check(&params("2024-02-30", "2024-03-01")).is_err());
    }
}
