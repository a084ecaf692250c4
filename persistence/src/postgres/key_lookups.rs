//! Idempotency-key look-ups, grouped: every transfer under a key first asks the store whether
//! the key already names a transfer, and under load those questions arrive by the thousand per
//! second. One query per question cost a round trip and a statement execution each (16–20 % of
//! the server's samples in `scripts/bench`'s flamegraphs); here the questions that queue up
//! while earlier queries run are answered together by one `UNNEST` join, the way the journal
//! groups commits. At low load a question is asked at once, alone, so nothing waits for
//! company.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgPool;
use tally_engine::Transfer;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::classify;
use crate::ledger_sql::transfer_from_row;
use crate::runtime::StoreRuntime;
use crate::store::{Loaded, StoreError};

/// The most questions one query answers (its two arrays stay a few tens of kilobytes).
const LOOKUPS_PER_QUERY_MAX: usize = 2048;

/// Queries running at once. While they run, new questions queue and are answered together by
/// the next one; more in flight would mean smaller groups and more executions. The journal
/// writer and activations use the pool's other connections.
const QUERIES_IN_FLIGHT_MAX: usize = 2;

type Answer = Result<Option<Loaded<Transfer>>, StoreError>;

struct Lookup {
    scope: Uuid,
    key: String,
    answer: oneshot::Sender<Answer>,
}

/// The sending side; the grouping task ends when this is dropped (with the store).
pub(super) struct KeyLookups {
    sender: mpsc::UnboundedSender<Lookup>,
}

impl KeyLookups {
    pub(super) fn start(runtime: &StoreRuntime, pool: PgPool) -> KeyLookups {
        let (sender, receiver) = mpsc::unbounded_channel();
        runtime.spawn(group(receiver, pool));
        KeyLookups { sender }
    }

    /// The transfer `key` names in `scope`, if any. Unbounded queueing is safe here: every
    /// caller is a request already admitted by the HTTP layer's concurrency limit.
    pub(super) async fn find(&self, scope: Uuid, key: String) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Lookup { scope, key, answer })
            .map_err(|_| StoreError::Unavailable("idempotency look-ups stopped".to_owned()))?;
        answered.await.map_err(|_| StoreError::Unavailable("idempotency look-up dropped".to_owned()))?
    }
}

async fn group(mut receiver: mpsc::UnboundedReceiver<Lookup>, pool: PgPool) {
    let permits = Arc::new(Semaphore::new(QUERIES_IN_FLIGHT_MAX));
    while let Some(first) = receiver.recv().await {
        // Wait for a free query slot *before* draining: what queues meanwhile joins this group.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        let mut lookups = vec![first];
        while lookups.len() < LOOKUPS_PER_QUERY_MAX {
            match receiver.try_recv() {
                Ok(lookup) => lookups.push(lookup),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, lookups).await;
            drop(permit);
        });
    }
}

async fn answer(pool: &PgPool, lookups: Vec<Lookup>) {
    let scopes: Vec<Uuid> = lookups.iter().map(|lookup| lookup.scope).collect();
    let keys: Vec<&str> = lookups.iter().map(|lookup| lookup.key.as_str()).collect();
    // `IS NOT NULL` lets the planner use the partial unique index on (scope, key).
    let rows = sqlx::query(
        "SELECT t.* FROM transfers t \
         JOIN UNNEST($1::uuid[], $2::text[]) AS k(scope, key) \
           ON t.idempotency_scope = k.scope AND t.idempotency_key = k.key \
         WHERE t.idempotency_key IS NOT NULL",
    )
    .bind(&scopes)
    .bind(&keys)
    .fetch_all(pool)
    .await
    .map_err(classify);
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            for lookup in lookups {
                let _ = lookup.answer.send(Err(error.clone()));
            }
            return;
        }
    };
    // A key asked twice in one group joins twice; the map keeps one answer per key.
    let mut found: HashMap<(Uuid, String), Answer> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let scope: Result<Uuid, _> = row.try_get("idempotency_scope");
        let key: Result<String, _> = row.try_get("idempotency_key");
        match (scope, key) {
            (Ok(scope), Ok(key)) => {
                found.insert((scope, key), transfer_from_row(row).map(Some));
            }
            (Err(error), _) | (_, Err(error)) => {
                let error = classify(error);
                for lookup in lookups {
                    let _ = lookup.answer.send(Err(error.clone()));
                }
                return;
            }
        }
    }
    for lookup in lookups {
        let answer = match found.get(&(lookup.scope, lookup.key)) {
            Some(answer) => answer.clone(),
            None => Ok(None),
        };
        // The asker may have gone (its request was cancelled): nothing to do.
        let _ = lookup.answer.send(answer);
    }
}
