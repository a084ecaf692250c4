//! Store code written once for both SQL backends.
//!
//! Postgres and SQLite differ in a few places that matter to a query: how an id or an amount
//! is stored (`uuid`/`NUMERIC` against hyphenated text/decimal text), how a write transaction
//! starts (SQLite takes its write lock up front with `BEGIN IMMEDIATE`), a handful of function
//! names, and how an error is classified. Everything else — the SQL text with `$1`-style
//! parameters (sqlx's SQLite driver binds `$N` by number, as Postgres does), the binds, the
//! row decoding and the logic around them — is the same. So a store method is written once,
//! inside [`on_backend!`], which compiles its body once per backend with these names in scope:
//!
//! - `classify`: that backend's error classification (`postgres::classify`, `sqlite::classify`);
//! - `dialect`: that backend's [`PostgresDialect`]/[`SqliteDialect`] constants;
//!
//! and the row helpers here ([`SqlRow::decode`], [`Id`]) work on either backend's row and query.
//! Each body is type-checked against the real driver, so nothing is dispatched at run time
//! beyond the one `match` on the pool.

use std::future::Future;

use rust_decimal::Decimal;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgPool, PgRow, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqlitePool, SqliteRow, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Row, Sqlite, Transaction, Type, ValueRef};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::runtime::StoreRuntime;
use crate::store::{StoreError, corrupt};

/// A pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum SqlPool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$sql_pool` holds; the
/// body is compiled once per backend (see the module documentation for the names it sees).
macro_rules! on_backend {
    ($sql_pool:expr, |$pool:ident| $body:expr) => {
        match $sql_pool {
            $crate::sql::SqlPool::Postgres($pool) => {
                #[allow(unused_imports)]
                use $crate::postgres::classify;
                #[allow(unused_imports)]
                use $crate::sql::PostgresDialect as dialect;
                $body
            }
            $crate::sql::SqlPool::Sqlite($pool) => {
                #[allow(unused_imports)]
                use $crate::sql::SqliteDialect as dialect;
                #[allow(unused_imports)]
                use $crate::sqlite::classify;
                $body
            }
        }
    };
}
pub(crate) use on_backend;

/// The common shape of a store method: `$body` run on the store's runtime ([`SqlStore`]) and
/// compiled once per backend ([`on_backend!`]). Evaluates to the body's `Result`.
macro_rules! run_on_backend {
    ($store:expr, |$pool:ident| $body:expr) => {
        $store.run_sql(move |sql_pool| async move { $crate::sql::on_backend!(sql_pool, |$pool| $body) }).await
    };
}
pub(crate) use run_on_backend;

/// Implements `$trait` for both backends' connections (`PgConnection`, `SqliteConnection`)
/// with the same items, each compiled with that backend's `classify` and `dialect` in scope:
/// for queries that run inside a caller's transaction (`transaction.role_rows(…)`).
macro_rules! impl_for_connections {
    (impl $trait:path { $($items:tt)* }) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::postgres::classify;
            #[allow(unused_imports)]
            use $crate::sql::PostgresDialect as dialect;
            impl $trait for sqlx::PgConnection { $($items)* }
        };
        const _: () = {
            #[allow(unused_imports)]
            use $crate::sql::SqliteDialect as dialect;
            #[allow(unused_imports)]
            use $crate::sqlite::classify;
            impl $trait for sqlx::SqliteConnection { $($items)* }
        };
    };
}
pub(crate) use impl_for_connections;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Applies the store's backend's versioned migrations (`persistence/migrations/<backend>`) not
/// yet applied. Idempotent: applied migrations are recorded in `_sqlx_migrations` and skipped,
/// so the ledger and identity stores, which share one migration set, may run it in either
/// order (Postgres serialises concurrent migrators with an advisory lock).
pub(crate) async fn migrate(store: &impl SqlStore) -> Result<(), StoreError> {
    run_on_backend!(store, |pool| {
        dialect::MIGRATIONS.run(&pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => classify(error),
            // A migration that fails, or one changed or missing after it was applied: the
            // schema is not the one this build knows, and retrying will not change that.
            other => StoreError::Corrupt(format!("migration: {other}")),
        })
    })
}

/// Postgres's spelling of what the two backends spell differently.
pub(crate) struct PostgresDialect;

impl PostgresDialect {
    /// The migrations of this backend.
    pub const MIGRATIONS: &'static sqlx::migrate::Migrator = &POSTGRES_MIGRATIONS;
    /// The larger of two values.
    pub const GREATEST: &'static str = "GREATEST";
    /// Locks the rows a `SELECT` read until the transaction ends.
    pub const FOR_UPDATE: &'static str = "FOR UPDATE";
    /// Locks the rows a `SELECT` read against change (not against other readers).
    pub const FOR_SHARE: &'static str = "FOR SHARE";
    /// Whether a subquery in `FROM` may refer to the tables before it (`CROSS JOIN LATERAL`).
    pub const HAS_LATERAL: bool = true;
    /// The dialect the transfer listings' query builder writes.
    pub const TRANSFER_QUERIES: crate::reads::transfer_query::Dialect = crate::reads::transfer_query::Dialect::Postgres;

    /// The elements of list parameter `$n` ([`Ids`], [`Texts`]) as a table with one column,
    /// `value`: `SELECT value FROM {each(2)}`, `x IN (SELECT value FROM {each(2)})`.
    pub fn each(n: u8) -> String {
        format!("UNNEST(${n}) AS list(value)")
    }
}

/// SQLite's spelling of what the two backends spell differently.
pub(crate) struct SqliteDialect;

impl SqliteDialect {
    pub const MIGRATIONS: &'static sqlx::migrate::Migrator = &SQLITE_MIGRATIONS;
    pub const GREATEST: &'static str = "MAX";
    /// Nothing: a write transaction begun `IMMEDIATE` ([`BeginWrite`]) already holds the
    /// database's write lock, so no other writer can change what it read.
    pub const FOR_UPDATE: &'static str = "";
    pub const FOR_SHARE: &'static str = "";
    pub const HAS_LATERAL: bool = false;
    pub const TRANSFER_QUERIES: crate::reads::transfer_query::Dialect = crate::reads::transfer_query::Dialect::Sqlite;

    /// A list parameter is a JSON array on SQLite.
    pub fn each(n: u8) -> String {
        format!("json_each(${n})")
    }
}

/// Starting a transaction that will write.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;

    async fn begin_write(&self) -> Result<Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for PgPool {
    type Database = Postgres;

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite for SqlitePool {
    type Database = Sqlite;

    /// IMMEDIATE takes the write lock at once instead of upgrading a read lock mid-way (which
    /// fails with `SQLITE_BUSY` when another writer got there first).
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Starting a read-only transaction that sees one snapshot for all its statements.
pub(crate) trait BeginSnapshot {
    type Database: sqlx::Database;

    async fn begin_snapshot(&self) -> Result<Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginSnapshot for PgPool {
    type Database = Postgres;

    /// READ COMMITTED would take a snapshot per statement.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await
    }
}

impl BeginSnapshot for SqlitePool {
    type Database = Sqlite;

    /// A WAL read transaction sees one committed state from its first read on.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin().await
    }
}

/// A journal sequence number as stored (`BIGINT`/`INTEGER`, signed 64-bit).
pub(crate) fn seq_to_db(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| corrupt(format!("sequence number {seq} beyond 64-bit INTEGER")))
}

/// A stored journal sequence number, refusing what no journal writes.
pub(crate) fn seq_of(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative sequence number {value}")))
}

/// A stored name (a status, a kind, a currency) read with `parse`; a name no version of Tally
/// writes is corrupt data.
pub(crate) fn parse<T>(text: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| corrupt(format!("unknown {what} {text:?}")))
}

/// The name of the unique constraint a violation broke, if the error is one. SQLite does not
/// name the constraint; its message names the columns instead ("UNIQUE constraint failed:
/// users.email_normalized"), which serves the same test: does it mention the column?
pub(crate) fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            Some(database.constraint().unwrap_or(database.message()).to_owned())
        }
        _ => None,
    }
}

/// A store whose queries run on its own runtime against a pool of either backend: the identity
/// stores ([`IdentitySql`]) and the ledger stores ([`LedgerSql`]).
pub(crate) trait SqlStore: Send + Sync + 'static {
    fn sql_pool(&self) -> SqlPool;

    fn sql_runtime(&self) -> &StoreRuntime;

    /// Runs `work` with the pool on the store's runtime.
    fn run_sql<T, F, Fut>(&self, work: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(SqlPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.sql_runtime().run(work(self.sql_pool()))
    }
}

/// The identity stores (`PgUserStore`, `SqliteUserStore`): identity's domain traits, the read
/// models and the event feed are implemented once for every `IdentitySql` store.
pub(crate) trait IdentitySql: SqlStore {}

/// The ledger stores (`PgStore`, `SqliteStore`): their configuration tables (pricing, AML)
/// are written once for every `LedgerSql` store.
pub(crate) trait LedgerSql: SqlStore {}

/// An id as a query parameter: a native `uuid` on Postgres, hyphenated lowercase text on
/// SQLite (as every id column there is stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Id(pub Uuid);

impl From<UserId> for Id {
    fn from(user: UserId) -> Id {
        Id(user.as_uuid())
    }
}

impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buffer)
    }
}

impl Decode<'_, Postgres> for Id {
    fn decode(value: PgValueRef<'_>) -> Result<Id, BoxDynError> {
        <Uuid as Decode<Postgres>>::decode(value).map(Id)
    }
}

impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(&self, buffer: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.hyphenated().to_string(), buffer)
    }
}

impl Decode<'_, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'_>) -> Result<Id, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Id(Uuid::parse_str(text)?))
    }
}

/// An exact decimal (an amount, a rate) as a query parameter: `NUMERIC` on Postgres, its
/// decimal text with its scale on SQLite (as every decimal column there is stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exact(pub Decimal);

impl Type<Postgres> for Exact {
    fn type_info() -> PgTypeInfo {
        <Decimal as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Exact {
    fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Decimal as Encode<Postgres>>::encode_by_ref(&self.0, buffer)
    }
}

impl Type<Sqlite> for Exact {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Exact {
    fn encode_by_ref(&self, buffer: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buffer)
    }
}

/// A list of ids as one query parameter, read with [`PostgresDialect::each`]: a `uuid[]` on
/// Postgres, a JSON array of id text on SQLite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ids(pub Vec<Uuid>);

/// A list of text values as one query parameter: a `text[]` on Postgres, a JSON array on
/// SQLite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Texts(pub Vec<String>);

impl Type<Postgres> for Ids {
    fn type_info() -> PgTypeInfo {
        <Vec<Uuid> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Ids {
    fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<Uuid> as Encode<Postgres>>::encode_by_ref(&self.0, buffer)
    }
}

impl Type<Sqlite> for Ids {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Ids {
    fn encode_by_ref(&self, buffer: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        let ids: Vec<String> = self.0.iter().map(|id| id.hyphenated().to_string()).collect();
        <String as Encode<Sqlite>>::encode(serde_json::to_string(&ids)?, buffer)
    }
}

impl Type<Postgres> for Texts {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Texts {
    fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<String> as Encode<Postgres>>::encode_by_ref(&self.0, buffer)
    }
}

impl Type<Sqlite> for Texts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Texts {
    fn encode_by_ref(&self, buffer: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(&self.0)?, buffer)
    }
}

/// A value that can be read from a column of either backend's rows.
pub(crate) trait Column: Sized {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError>;

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError>;
}

/// Reads a column the same way on either backend's row.
pub(crate) trait SqlRow {
    /// The column `name` as a `T`; a value of the wrong type or shape is corrupt data.
    fn decode<T: Column>(&self, name: &str) -> Result<T, StoreError>;
}

impl SqlRow for PgRow {
    fn decode<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        T::from_postgres(self, name)
    }
}

impl SqlRow for SqliteRow {
    fn decode<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        T::from_sqlite(self, name)
    }
}

/// Types both drivers decode natively, alike.
macro_rules! native_column {
    ($($type:ty),*) => {$(
        impl Column for $type {
            fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
                row.try_get(name).map_err(crate::postgres::classify)
            }

            fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
                row.try_get(name).map_err(crate::sqlite::classify)
            }
        }
    )*};
}

native_column!(i64, i32, i16, bool, String, Vec<u8>);

impl Column for Uuid {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        row.try_get(name).map_err(crate::postgres::classify)
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let text: String = row.try_get(name).map_err(crate::sqlite::classify)?;
        Uuid::parse_str(&text).map_err(|error| corrupt(format!("{name} {text:?} is not a UUID: {error}")))
    }
}

/// A UUID column read for a hash chain's verification, with the stored text when it is not
/// the canonical form (hyphenated, lower case) the chains hash. SQLite keeps ids as text, and
/// `Uuid` parses any spelling: an id rewritten in upper case decoded to the same value and
/// re-encoded to the hashed form, so verification passed, while every query comparing the
/// text (a listing's filter, a join) no longer matched it. Postgres' `UUID` has one form.
pub(crate) struct StoredUuid {
    pub id: Uuid,
    /// The stored text, when it is not `id`'s canonical form.
    pub other_form: Option<String>,
}

impl StoredUuid {
    /// Why the column breaks the chain, if it does: `what` names the row and column.
    pub fn refusal(&self, what: &str) -> Option<String> {
        self.other_form.as_ref().map(|text| {
            format!("{what} is stored as {text:?}, not the form the chain hashes ({})", self.id.hyphenated())
        })
    }
}

impl Column for StoredUuid {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        Ok(StoredUuid { id: Uuid::from_postgres(row, name)?, other_form: None })
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let text: String = row.try_get(name).map_err(crate::sqlite::classify)?;
        let id = Uuid::parse_str(&text).map_err(|error| corrupt(format!("{name} {text:?} is not a UUID: {error}")))?;
        let other_form = (text != id.hyphenated().to_string()).then_some(text);
        Ok(StoredUuid { id, other_form })
    }
}

/// Amounts: `NUMERIC` on Postgres, their exact decimal text (scale included) on SQLite.
impl Column for Decimal {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        row.try_get(name).map_err(crate::postgres::classify)
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let text: String = row.try_get(name).map_err(crate::sqlite::classify)?;
        crate::sqlite::decimal_from_db(&text, name)
    }
}

/// Instants are microseconds since the epoch on both backends.
impl Column for Timestamp {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        i64::from_postgres(row, name).map(Timestamp::from_micros)
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        i64::from_sqlite(row, name).map(Timestamp::from_micros)
    }
}

impl Column for UserId {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        Uuid::from_postgres(row, name).map(UserId::from_uuid)
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        Uuid::from_sqlite(row, name).map(UserId::from_uuid)
    }
}

/// A nullable column: `NULL` is `None`, anything else must decode as a `T`.
impl<T: Column> Column for Option<T> {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        let value = row.try_get_raw(name).map_err(crate::postgres::classify)?;
        if value.is_null() { Ok(None) } else { T::from_postgres(row, name).map(Some) }
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let value = row.try_get_raw(name).map_err(crate::sqlite::classify)?;
        if value.is_null() { Ok(None) } else { T::from_sqlite(row, name).map(Some) }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    async fn memory_pool() -> SqlPool {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        SqlPool::Sqlite(sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap())
    }

    /// `$N` parameters bind by number on SQLite, reused and out of order, as on Postgres: the
    /// shared SQL text relies on it. (Postgres runs the same bodies in the conformance suite.)
    #[tokio::test]
    async fn dollar_parameters_bind_by_number_on_sqlite() {
        let pool = memory_pool().await;
        let (first, second, again): (i64, String, i64) = on_backend!(pool, |pool| {
            sqlx::query_as("SELECT $2, $1, $2").bind("text").bind(7_i64).fetch_one(&pool).await.unwrap()
        });
        assert_eq!((first, second.as_str(), again), (7, "text", 7));
    }

    #[tokio::test]
    async fn columns_decode_ids_amounts_and_nulls_on_sqlite() {
        let pool = memory_pool().await;
        let id = Uuid::now_v7();
        let row = on_backend!(pool, |pool| {
            let row = sqlx::query("SELECT $1 AS id, '12.50' AS amount, NULL AS missing, 5 AS at")
                .bind(Id(id))
                .fetch_one(&pool)
                .await
                .unwrap();
            (
                row.decode::<Uuid>("id").unwrap(),
                row.decode::<Decimal>("amount").unwrap(),
                row.decode::<Option<i64>>("missing").unwrap(),
                row.decode::<Option<Timestamp>>("at").unwrap(),
                row.decode::<Uuid>("amount").is_err(),
            )
        });
        assert_eq!(row, (id, Decimal::new(1250, 2), None, Some(Timestamp::from_micros(5)), true));
    }

    #[tokio::test]
    async fn list_parameters_are_tables_of_values_on_sqlite() {
        let pool = memory_pool().await;
        let mut ids = vec![Uuid::new_v4(), Uuid::new_v4()];
        ids.sort();
        let (read_ids, texts): (Vec<Uuid>, Vec<String>) = on_backend!(pool, |pool| {
            let rows = sqlx::query(&format!("SELECT value FROM {} ORDER BY value", dialect::each(1)))
                .bind(Ids(ids.clone()))
                .fetch_all(&pool)
                .await
                .unwrap();
            let read_ids = rows.iter().map(|row| row.decode("value").unwrap()).collect();
            let texts = sqlx::query_scalar(&format!(
                "SELECT value FROM {} WHERE value IN (SELECT value FROM {}) ORDER BY value",
                dialect::each(1),
                dialect::each(2)
            ))
            .bind(Texts(vec!["b".into(), "a\"quoted\"".into(), "c".into()]))
            .bind(Texts(vec!["a\"quoted\"".into(), "c".into()]))
            .fetch_all(&pool)
            .await
            .unwrap();
            (read_ids, texts)
        });
        assert_eq!(read_ids, ids);
        assert_eq!(texts, ["a\"quoted\"", "c"]);
    }
}
