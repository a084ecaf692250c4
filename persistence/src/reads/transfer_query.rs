//! The SQL of the transfer listings and their count, for both stores: one builder, so the
//! two dialects cannot disagree on what a filter means (as `batch.rs` is one write plan).
//!
//! Which index serves what (docs/ledger-views.md, "Transfer metadata and listing filters"):
//!
//! - a party (`/v1/transfers`, the admin's `user_id`) or an `account_id` picks the accounts'
//!   `transfers_by_source` and `transfers_by_destination` ranges; every other filter then
//!   narrows that party's or account's own transfers;
//! - `from`/`to` are id bounds (`listing::id_floor`): a range of every transfer index;
//! - `status`: `transfers_not_completed_by_status`, or the primary key skipping the few
//!   non-completed rows for `completed`;
//! - metadata on Postgres: `transfers_by_metadata` (GIN, `@>`), bounded by the transfers that
//!   carry the pairs;
//! - on a table-wide range, `type`, `reference`, the amounts and SQLite's metadata are checked
//!   on at most `scan_rows_max` rows per page (`floor`: the last row a page may examine).

use rust_decimal::Decimal;
use uuid::Uuid;

use super::listing::{Order, Position, TRANSFER_SCAN_ROWS_MAX, TransferFilter, id_floor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A value to bind, in placeholder order. Each store binds it in its own column types.
#[derive(Clone, Debug)]
pub enum Arg {
    Text(String),
    Int(i64),
    Id(Uuid),
    /// An amount: `NUMERIC` on Postgres, `amount_key` text on SQLite.
    Amount(Decimal),
}

/// An amount bound to a listing's query: `NUMERIC` on Postgres, `amount_key` text on SQLite
/// (what `SQLITE_AMOUNT_KEY` makes of the column it is compared with).
pub(crate) struct ListedAmount(pub Decimal);

impl sqlx::Type<sqlx::Postgres> for ListedAmount {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Decimal as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for ListedAmount {
    fn encode_by_ref(
        &self,
        buffer: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <Decimal as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buffer)
    }
}

impl sqlx::Type<sqlx::Sqlite> for ListedAmount {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for ListedAmount {
    fn encode_by_ref(
        &self,
        buffer: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<sqlx::Sqlite>>::encode(amount_key(self.0), buffer)
    }
}

#[derive(Debug)]
pub struct Query {
    pub sql: String,
    pub args: Vec<Arg>,
}

struct Builder {
    dialect: Dialect,
    args: Vec<Arg>,
}

impl Builder {
    fn new(dialect: Dialect) -> Builder {
        Builder { dialect, args: Vec::new() }
    }

    /// Binds `arg` and answers its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        match self.dialect {
            Dialect::Postgres => format!("${}", self.args.len()),
            Dialect::Sqlite => format!("?{}", self.args.len()),
        }
    }

    fn finish(self, sql: String) -> Query {
        Query { sql, args: self.args }
    }
}

/// SQLite keeps amounts as exact decimal text, which does not sort as numbers do (`"9.00"` >
/// `"10.00"`). This expression turns a stored amount (non-negative, plain digits, at most 28
/// decimals: `Decimal`'s `Display`) into text that sorts as the number: the integer part
/// left-padded to 30 digits, a point, the fraction right-padded to 28. `amount_key` makes the
/// same text of a bound in Rust. Exact: no float is involved.
const SQLITE_AMOUNT_KEY: &str = "(substr('000000000000000000000000000000' || CASE WHEN instr(amount, '.') > 0 \
     THEN substr(amount, 1, instr(amount, '.') - 1) ELSE amount END, -30, 30) || '.' || \
     substr(CASE WHEN instr(amount, '.') > 0 THEN substr(amount, instr(amount, '.') + 1) ELSE '' END || \
     '0000000000000000000000000000', 1, 28))";

/// The sortable text of a non-negative amount, as `SQLITE_AMOUNT_KEY` makes it of a column.
pub fn amount_key(amount: Decimal) -> String {
    let text = amount.abs().to_string();
    let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
    format!("{integer:0>30}.{fraction:0<28}")
}

/// Whether the listing reads a party's or an account's own ranges (else the whole table).
fn narrowed(filter: &TransferFilter) -> bool {
    filter.party.is_some() || filter.account.is_some()
}

/// Whether a table-wide page must bound what it examines: it filters on something no index
/// serves (on Postgres, metadata is served by its GIN index, which then bounds the read).
fn needs_scan_bound(dialect: Dialect, filter: &TransferFilter) -> bool {
    if narrowed(filter) {
        return false;
    }
    if dialect == Dialect::Postgres && !filter.metadata.is_empty() {
        return false;
    }
    filter.kind.is_some()
        || filter.reference.is_some()
        || filter.min_amount.is_some()
        || filter.max_amount.is_some()
        || !filter.metadata.is_empty()
}

/// The conditions an index range serves (creation window, status) and the others, on the
/// columns of `transfers`.
fn conditions(builder: &mut Builder, filter: &TransferFilter) -> (Vec<String>, Vec<String>) {
    let mut indexed = Vec::new();
    // Both the id bound (the range) and `created_at` (exact, and right for rows from before
    // ids were time-ordered, which the id bound alone would misplace).
    if let Some(from) = filter.from {
        let id = builder.arg(Arg::Id(id_floor(from)));
        let at = builder.arg(Arg::Int(from));
        indexed.push(format!("id >= {id} AND created_at >= {at}"));
    }
    if let Some(to) = filter.to {
        let id = builder.arg(Arg::Id(id_floor(to)));
        let at = builder.arg(Arg::Int(to));
        indexed.push(format!("id < {id} AND created_at < {at}"));
    }
    // Its own text per case so the planner sees which (partial) index fits.
    match filter.status.as_deref() {
        None => {}
        Some("completed") => indexed.push("status = 'completed'".to_owned()),
        Some(other) => {
            let status = builder.arg(Arg::Text(other.to_owned()));
            indexed.push(format!("status <> 'completed' AND status = {status}"));
        }
    }
    let mut residual = Vec::new();
    if let Some(kind) = &filter.kind {
        let kind = builder.arg(Arg::Text(kind.clone()));
        residual.push(format!("kind = {kind}"));
    }
    if let Some(reference) = &filter.reference {
        let reference = builder.arg(Arg::Text(reference.clone()));
        residual.push(format!("reference = {reference}"));
    }
    let amount = match builder.dialect {
        Dialect::Postgres => "amount",
        Dialect::Sqlite => SQLITE_AMOUNT_KEY,
    };
    if let Some(min) = filter.min_amount {
        let min = builder.arg(Arg::Amount(min));
        residual.push(format!("{amount} >= {min}"));
    }
    if let Some(max) = filter.max_amount {
        let max = builder.arg(Arg::Amount(max));
        residual.push(format!("{amount} <= {max}"));
    }
    if !filter.metadata.is_empty() {
        match builder.dialect {
            Dialect::Postgres => {
                let object = builder.arg(Arg::Text(crate::metadata::object_of(&filter.metadata)));
                residual.push(format!("metadata @> {object}::jsonb"));
            }
            Dialect::Sqlite => {
                for (key, value) in &filter.metadata {
                    // Keys are letters, digits and `_ - . :` (the API checks), so quoting the
                    // key in the path is enough.
                    let path = builder.arg(Arg::Text(format!("$.\"{key}\"")));
                    let value = builder.arg(Arg::Text(value.clone()));
                    residual.push(format!("json_extract(metadata, {path}) = {value}"));
                }
            }
        }
    }
    (indexed, residual)
}

fn and(conditions: &[String]) -> String {
    if conditions.is_empty() { "TRUE".to_owned() } else { conditions.join(" AND ") }
}

/// The ids of the accounts a narrowed listing reads: the party's (only `account` if given),
/// or the one account.
fn accounts(builder: &mut Builder, filter: &TransferFilter) -> String {
    match (filter.party, filter.account) {
        (Some(party), account) => {
            let party = builder.arg(Arg::Id(party.as_uuid()));
            match account {
                Some(account) => {
                    let account = builder.arg(Arg::Id(account.as_uuid()));
                    format!("SELECT id FROM accounts WHERE owner_id = {party} AND id = {account}")
                }
                None => format!("SELECT id FROM accounts WHERE owner_id = {party}"),
            }
        }
        (None, Some(account)) => {
            let account = builder.arg(Arg::Id(account.as_uuid()));
            format!("SELECT {account} AS id")
        }
        (None, None) => String::new(),
    }
}

/// The keyset comparison after the cursor, the `ORDER BY` direction, and the comparison that
/// keeps a page within its scan bound.
fn order_parts(order: Order) -> (&'static str, &'static str, &'static str) {
    let (after_op, direction, _) = order.keyset();
    let within = if after_op == "<" { ">=" } else { "<=" };
    (after_op, direction, within)
}

/// The query that finds where a table-wide page must stop examining rows (the
/// `scan_rows_max`-th row of its index range after the cursor), or `None` if the page needs
/// no bound.
pub fn scan_bound(dialect: Dialect, filter: &TransferFilter, after: Option<Position>) -> Option<Query> {
    if !needs_scan_bound(dialect, filter) {
        return None;
    }
    let mut builder = Builder::new(dialect);
    let (after_op, direction, _) = order_parts(filter.order);
    let (_, _, no_cursor) = filter.order.keyset();
    let after = builder.arg(Arg::Id(after.map_or(no_cursor, |position| position.id)));
    // Only the conditions an index range serves: the bound counts rows of that range.
    let range = TransferFilter {
        kind: None,
        reference: None,
        min_amount: None,
        max_amount: None,
        metadata: Vec::new(),
        ..filter.clone()
    };
    let (indexed, residual) = conditions(&mut builder, &range);
    debug_assert!(residual.is_empty());
    let offset = builder.arg(Arg::Int(i64::from(filter.scan_rows_max.unwrap_or(TRANSFER_SCAN_ROWS_MAX).max(1) - 1)));
    let sql = format!(
        "SELECT id, created_at FROM transfers WHERE id {after_op} {after} AND {}
         ORDER BY id {direction} LIMIT 1 OFFSET {offset}",
        and(&indexed)
    );
    Some(builder.finish(sql))
}

/// At most `limit` transfers matching `filter` strictly after `after` in `filter.order`, and
/// no further than `bound` (the last row the page may examine) if given.
pub fn page(
    dialect: Dialect,
    filter: &TransferFilter,
    after: Option<Position>,
    limit: u32,
    bound: Option<Uuid>,
) -> Query {
    let mut builder = Builder::new(dialect);
    let (after_op, direction, within) = order_parts(filter.order);
    let (_, _, no_cursor) = filter.order.keyset();
    let after = builder.arg(Arg::Id(after.map_or(no_cursor, |position| position.id)));
    let limit = builder.arg(Arg::Int(i64::from(limit)));
    let (mut indexed, residual) = conditions(&mut builder, filter);
    if let Some(bound) = bound {
        let bound = builder.arg(Arg::Id(bound));
        indexed.push(format!("id {within} {bound}"));
    }
    let all = and(&[indexed, residual].concat());
    let sql = match (dialect, narrowed(filter)) {
        (Dialect::Postgres, true) => {
            let accounts = accounts(&mut builder, filter);
            // Per account, at most a page from each of its two ranges, then merged: a transfer
            // between two of the party's accounts appears in both, hence the GROUP BY.
            format!(
                "SELECT x.id, x.created_at FROM ({accounts}) a CROSS JOIN LATERAL (
                     (SELECT id, created_at FROM transfers
                      WHERE source_id = a.id AND id {after_op} {after} AND {all}
                      ORDER BY id {direction} LIMIT {limit})
                     UNION ALL
                     (SELECT id, created_at FROM transfers
                      WHERE destination_id = a.id AND id {after_op} {after} AND {all}
                      ORDER BY id {direction} LIMIT {limit})
                 ) x
                 GROUP BY x.id, x.created_at ORDER BY x.id {direction} LIMIT {limit}"
            )
        }
        (Dialect::Sqlite, true) => {
            // SQLite reads the `OR` as a union of the accounts' index look-ups.
            let accounts = accounts(&mut builder, filter);
            format!(
                "SELECT id, created_at FROM transfers
                 WHERE (source_id IN ({accounts}) OR destination_id IN ({accounts}))
                   AND id {after_op} {after} AND {all}
                 ORDER BY id {direction} LIMIT {limit}"
            )
        }
        (_, false) => format!(
            "SELECT id, created_at FROM transfers WHERE id {after_op} {after} AND {all}
             ORDER BY id {direction} LIMIT {limit}"
        ),
    };
    builder.finish(sql)
}

/// How many transfers match `filter`. A count reads every row of its range (as any SQL count
/// does); it is an admin's figure, not a page.
pub fn count(dialect: Dialect, filter: &TransferFilter) -> Query {
    let mut builder = Builder::new(dialect);
    let (indexed, residual) = conditions(&mut builder, filter);
    let all = and(&[indexed, residual].concat());
    let sql = if narrowed(filter) {
        let accounts = accounts(&mut builder, filter);
        match dialect {
            Dialect::Postgres => format!(
                "SELECT COUNT(*) FROM (
                     SELECT id FROM transfers WHERE source_id IN ({accounts}) AND {all}
                     UNION
                     SELECT id FROM transfers WHERE destination_id IN ({accounts}) AND {all}
                 ) mine"
            ),
            Dialect::Sqlite => format!(
                "SELECT COUNT(*) FROM transfers
                 WHERE (source_id IN ({accounts}) OR destination_id IN ({accounts})) AND {all}"
            ),
        }
    } else {
        format!("SELECT COUNT(*) FROM transfers WHERE {all}")
    };
    builder.finish(sql)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn amount_keys_sort_as_the_numbers_do() {
        let amounts = [
            dec!(0),
            dec!(0.000000000000000001),
            dec!(0.5),
            dec!(9.99),
            dec!(10),
            dec!(10.00),
            dec!(10.01),
            dec!(123456789012345678901234567),
        ];
        for pair in amounts.windows(2) {
            assert!(amount_key(pair[0]) <= amount_key(pair[1]), "{} {}", pair[0], pair[1]);
            assert_eq!(amount_key(pair[0]) == amount_key(pair[1]), pair[0] == pair[1]);
        }
    }

    #[test]
    fn the_id_floor_orders_as_creation_time_does() {
        let at = 1_714_564_800_123_456;
        assert!(id_floor(at) < id_floor(at + 1));
        assert_eq!(id_floor(at).get_version_num(), 7);
        assert_eq!(id_floor(-5), id_floor(0));
        assert_eq!(id_floor(i64::MAX), Uuid::max());
    }
}
