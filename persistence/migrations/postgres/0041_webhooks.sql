-- Webhook subscriptions and their delivery log (issue 16; docs/events.md). `events` is '*' or
-- a comma-separated list of event types; `position` is where the subscription's deliveries
-- stand in the feed (`FeedPosition` text: the last seq delivered or given up per shard).
-- `secret` is kept as it is: a verifier must compute the same HMAC (like TOTP secrets).
CREATE TABLE webhook_subscriptions (
    id UUID PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    position TEXT NOT NULL
);

-- One row per (subscription, event) attempted: its latest state. Listed per subscription.
CREATE TABLE webhook_deliveries (
    subscription_id UUID NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    shard SMALLINT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    first_attempt_at BIGINT NOT NULL,
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    PRIMARY KEY (subscription_id, shard, seq)
);
