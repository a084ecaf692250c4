//! Fresh Postgres databases for tests, on the throwaway cluster `scripts/test` starts.

use sqlx::Connection;

/// The admin URL of the test cluster. `scripts/test` starts the cluster and sets it; a test
/// that needs Postgres fails with this message rather than silently skipping.
pub fn admin_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("TALLY_TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway Postgres")
    })
}

/// Creates an empty database with a unique name and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let admin = admin_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(&admin).await.expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut connection).await.expect("create database");
    connection.close().await.expect("close");
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("unexpected admin url {admin}"),
    }
}

/// A migrated Postgres store on a fresh database, and its URL (to reopen it).
pub async fn fresh_store(prefix: &str) -> (std::sync::Arc<tally_persistence::postgres::PgStore>, String) {
    let url = fresh_database(prefix).await;
    let store = tally_persistence::postgres::PgStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (std::sync::Arc::new(store), url)
}
