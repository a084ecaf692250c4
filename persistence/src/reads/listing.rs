//! The listings' read model: pages of transfers, accounts and an account's postings, newest
//! first (transfers oldest first too, `Order`), with a keyset cursor (the last row's position), so a page is one index range scan
//! and rows inserted meanwhile never shift a later page.
//!
//! Like `AccountReads`, these read the write-behind tables: a row is as fresh as the last group
//! commit. Every transfer and account is durable before its creator hears of it, so whatever a
//! client was told exists is listed. Listings return ids (and positions); callers read each
//! transfer or account's live state from the engine.

use async_trait::async_trait;
use rust_decimal::Decimal;
use tally_engine::{AccountId, TransferId, UserId};

use crate::store::StoreError;

/// A row's place in a listing: `(created_at, id)`, compared as a pair. Transfer
/// and account ids are UUIDv7s made from their creation time to the microsecond, so the pair
/// orders as the id alone does and a page is one range of the primary key (or of an index
/// ending in the id). Transfers made before ids were time-ordered (migration 0021) have
/// random v4 ids, nearly all of which sort above every time-ordered one: in a store upgraded
/// from before 0021 they list first, in random order, and new transfers after them. A store
/// created at 0021 or later has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub created_at: i64,
    pub id: uuid::Uuid,
}

/// A posting's place in the ledger: its account, the time its batch was booked and the
/// account's posting number. Postings are keyed by exactly this, so an account's history and
/// a statement page are each one range of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PostingPosition {
    pub account: uuid::Uuid,
    pub booked_at: i64,
    pub version: u64,
}

impl PostingPosition {
    /// The posting's public id: a name-based UUID (v5) of its account and posting number,
    /// the same on every read, different for every posting.
    pub fn public_id(&self) -> uuid::Uuid {
        uuid::Uuid::new_v5(&self.account, &self.version.to_be_bytes())
    }
}

/// Which transfers to list, and which end of the listing comes first (a count ignores the
/// order). Every filter given must match (API.md 1.1; docs/ledger-views.md, "Transfer
/// metadata and listing filters", says which index serves each).
#[derive(Clone, Debug, Default)]
pub struct TransferFilter {
    /// Only transfers whose source or destination account this user owns.
    pub party: Option<UserId>,
    /// Only transfers in this status (`processing`, `pending`, ...).
    pub status: Option<String>,
    pub order: Order,
    /// Only transfers of this type (`internal`, `external`, `admin_credit`, `admin_debit`).
    pub kind: Option<String>,
    /// Only transfers whose source or destination is this account (with `party`, and only if
    /// that user owns it).
    pub account: Option<AccountId>,
    /// Only transfers with exactly this reference.
    pub reference: Option<String>,
    /// Only transfers whose `amount` (in its source currency) is at least this.
    pub min_amount: Option<Decimal>,
    /// Only transfers whose `amount` is at most this.
    pub max_amount: Option<Decimal>,
    /// Created at or after this instant (microseconds since the epoch).
    pub from: Option<i64>,
    /// Created before this instant (exclusive).
    pub to: Option<i64>,
    /// Only transfers whose metadata holds every one of these pairs (keys unique).
    pub metadata: Vec<(String, String)>,
    /// How many rows of a table-wide range one page may examine for the filters no index
    /// serves (`None`: `TRANSFER_SCAN_ROWS_MAX`). Tests lower it to walk the bound.
    pub scan_rows_max: Option<u32>,
}

/// At most this many transfer rows are examined for one page of a table-wide listing (the
/// admin's, without `user_id`, `account_id` or, on Postgres, metadata) when it filters on
/// what no index serves (`type`, `reference`, amounts, and on SQLite metadata): a page that
/// finds fewer matches than asked in that many rows ends early with a cursor to continue.
/// 10,000 rows of an index range are a few milliseconds of reading; a page never becomes a
/// scan of the whole table.
pub const TRANSFER_SCAN_ROWS_MAX: u32 = 10_000;

/// One page of a transfer listing: the rows found and, when the page stopped at its scan
/// bound before finding enough, the position of the last row it examined (a cursor there
/// continues the listing without repeating or skipping a row).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferPage {
    pub rows: Vec<(TransferId, Position)>,
    pub scanned_to: Option<Position>,
}

/// The smallest transfer id made at `micros` or later: ids are UUIDv7 of their creation time
/// to the microsecond (`Engine::new_id_at`: 48 bits of milliseconds, then the microseconds in
/// the 12 bits of `rand_a`), so `created_at >= t` is `id >= id_floor(t)` and a creation-time
/// bound is a range of every transfer index (each ends in the id).
pub fn id_floor(micros: i64) -> uuid::Uuid {
    let micros = u64::try_from(micros).unwrap_or(0);
    let millis = micros / 1_000;
    if millis > 0xFFFF_FFFF_FFFF {
        return uuid::Uuid::max();
    }
    let sub_millis = (micros % 1_000) as u16;
    let bits = (u128::from(millis) << 80) | (0x7_u128 << 76) | (u128::from(sub_millis) << 64) | (0x2_u128 << 62);
    uuid::Uuid::from_u128(bits)
}

/// Which end of a transfer listing comes first. Listings are newest first; a work queue (the
/// pending transfers waiting for an admin's decision) is worked oldest first, and walking it
/// newest first would reach the oldest only after every page. Transfers page by id (ids are
/// time-ordered, see `Position`), so both directions are ranges of the same indexes (the
/// primary key, `transfers_not_completed_by_status`, `transfers_by_source` and
/// `transfers_by_destination`), read forwards or backwards from the cursor. Oldest first,
/// transfers from before migration 0021 (random v4 ids) come last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

impl Order {
    /// The keyset condition and `ORDER BY` direction of a page after a cursor's transfer id,
    /// as SQL fragments (rows strictly after the cursor in this order), and the id every
    /// transfer is after when there is no cursor.
    pub(crate) const fn keyset(self) -> (&'static str, &'static str, uuid::Uuid) {
        match self {
            Order::NewestFirst => ("<", "DESC", uuid::Uuid::max()),
            Order::OldestFirst => (">", "ASC", uuid::Uuid::nil()),
        }
    }
}

/// Which accounts to list (the admin listing).
#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    pub status: Option<String>,
    pub currency: Option<String>,
    pub owner: Option<UserId>,
    /// A prefix of the account id (as lowercase hyphenated text) or of the owner's normalized
    /// email. Already lowercased and free of LIKE wildcards (the caller checks it).
    pub search: Option<String>,
}

/// One posting of an account, with its transfer's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostingRow {
    pub position: PostingPosition,
    pub transfer: TransferId,
    pub credit: bool,
    pub amount: Decimal,
    pub currency: String,
    pub balance_after: Decimal,
    pub description: Option<String>,
}

/// Which postings of an account to list.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostingFilter {
    /// `Some(true)`: credits only; `Some(false)`: debits only.
    pub credit: Option<bool>,
    /// Booking time, inclusive, microseconds since the epoch.
    pub from: Option<i64>,
    /// Booking time, exclusive.
    pub to: Option<i64>,
}

/// Microseconds in a day: balance history buckets by UTC day.
pub const DAY_MICROS: i64 = 86_400_000_000;

#[async_trait]
pub trait LedgerReads: Send + Sync + 'static {
    /// At most `limit` transfers matching `filter`, in `filter.order`, strictly after `after`.
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<TransferPage, StoreError>;

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError>;

    /// At most `limit` accounts matching `filter`, newest first, strictly after `after`.
    async fn account_page(
        &self,
        filter: &AccountFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(AccountId, Position)>, StoreError>;

    async fn count_accounts(&self, filter: &AccountFilter) -> Result<u64, StoreError>;

    /// At most `limit` postings of `account` matching `filter`, newest first (the account's
    /// posting order), strictly before `before`.
    async fn posting_page(
        &self,
        account: AccountId,
        filter: PostingFilter,
        before: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<PostingRow>, StoreError>;

    /// The balance after the account's last posting booked before `before` (the opening
    /// balance of a history), if any.
    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError>;

    /// For each UTC day (days since the epoch) from `from`'s day on that has postings of the
    /// account, the balance after the day's last posting, in day order.
    async fn daily_closing_balances(&self, account: AccountId, from: i64) -> Result<Vec<(i64, Decimal)>, StoreError>;
}

#[async_trait]
impl<R: LedgerReads + ?Sized> LedgerReads for std::sync::Arc<R> {
    async fn transfer_page(
        &self,
        filter: &TransferFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<TransferPage, StoreError> {
        (**self).transfer_page(filter, after, limit).await
    }

    async fn count_transfers(&self, filter: &TransferFilter) -> Result<u64, StoreError> {
        (**self).count_transfers(filter).await
    }

    async fn account_page(
        &self,
        filter: &AccountFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<(AccountId, Position)>, StoreError> {
        (**self).account_page(filter, after, limit).await
    }

    async fn count_accounts(&self, filter: &AccountFilter) -> Result<u64, StoreError> {
        (**self).count_accounts(filter).await
    }

    async fn posting_page(
        &self,
        account: AccountId,
        filter: PostingFilter,
        before: Option<PostingPosition>,
        limit: u32,
    ) -> Result<Vec<PostingRow>, StoreError> {
        (**self).posting_page(account, filter, before, limit).await
    }

    async fn balance_before(&self, account: AccountId, before: i64) -> Result<Option<Decimal>, StoreError> {
        (**self).balance_before(account, before).await
    }

    async fn daily_closing_balances(&self, account: AccountId, from: i64) -> Result<Vec<(i64, Decimal)>, StoreError> {
        (**self).daily_closing_balances(account, from).await
    }
}

/// A count from SQL (`BIGINT`) as the API's unsigned count.
pub(crate) fn count(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative count {value}")))
}

/// The SQL `LIKE` pattern of a prefix. `search` is checked by the caller to hold no `%`, `_`
/// or `\`, so it needs no escaping.
pub(crate) fn prefix_pattern(search: &str) -> String {
    format!("{search}%")
}

/// A posting number read back from the database.
pub(crate) fn posting_number(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative posting number {value}")))
}

/// A posting number as the database's `BIGINT`.
pub(crate) fn posting_number_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
