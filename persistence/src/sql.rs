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

/// Postgres's spelling of what the two backends spell differently.
pub(crate) struct PostgresDialect;

impl PostgresDialect {
    /// The larger of two values.
    pub const GREATEST: &'static str = "GREATEST";
    /// Appended to a `SELECT` to lock the rows it reads until commit.
    pub const FOR_UPDATE: &'static str = " FOR UPDATE";
}

/// SQLite's spelling of what the two backends spell differently.
pub(crate) struct SqliteDialect;

impl SqliteDialect {
    pub const GREATEST: &'static str = "MAX";
    /// Nothing: SQLite has no row locks; a writer's transaction begins `IMMEDIATE` and holds the
    /// database's one write lock instead.
    pub const FOR_UPDATE: &'static str = "";
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

/// A store whose queries run on its own runtime against a pool of either backend: both
/// identity stores (`PgUserStore`, `SqliteUserStore`). The domain traits written with
/// [`on_backend!`] are implemented once for every `SqlStore`.
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

native_column!(i64, i32, bool, String, Vec<u8>);

impl Column for Uuid {
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, StoreError> {
        row.try_get(name).map_err(crate::postgres::classify)
    }

    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, StoreError> {
        let text: String = row.try_get(name).map_err(crate::sqlite::classify)?;
        Uuid::parse_str(&text).map_err(|error| corrupt(format!("{name} {text:?} is not a UUID: {error}")))
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
}
