-- Pricing configuration in SQLite, mirroring migrations/postgres/0006_finance.sql. Amounts and
-- rates are TEXT (exact decimals), booleans INTEGER 0/1, ids hyphenated UUID text.

CREATE TABLE fx_rates (
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    rate TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (from_currency, to_currency),
    CHECK (from_currency <> to_currency)
) STRICT;

CREATE TABLE fee_rules (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    transfer_type TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('flat', 'percentage', 'tiered')),
    flat_amount TEXT,
    percentage TEXT,
    min_fee TEXT,
    max_fee TEXT,
    tiers TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX fee_rules_one_enabled ON fee_rules (transfer_type, currency) WHERE enabled;

CREATE TABLE transfer_type_settings (
    code TEXT NOT NULL PRIMARY KEY,
    enabled INTEGER NOT NULL,
    execution_mode TEXT NOT NULL CHECK (execution_mode IN ('auto', 'manual')),
    min_amount TEXT,
    max_amount TEXT
) STRICT;
