-- Webhook subscriptions and their delivery log, as migrations/postgres/0041_webhooks.sql.
CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    position TEXT NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    shard INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    first_attempt_at INTEGER NOT NULL,
    next_attempt_at INTEGER,
    delivered_at INTEGER,
    PRIMARY KEY (subscription_id, shard, seq)
) STRICT, WITHOUT ROWID;
