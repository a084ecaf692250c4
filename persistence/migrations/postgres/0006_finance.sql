-- Pricing configuration: FX rates, fee rules and transfer-type settings (issue 5).
-- Written by admins directly (not through the journal: it is configuration, not money), read
-- once at engine start into memory, where the hot path uses it.

-- One directed rate: one unit of from_currency buys `rate` units of to_currency. The inverse
-- pair is not implied; it has its own row if an admin set it.
CREATE TABLE fx_rates (
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    rate NUMERIC NOT NULL CHECK (rate > 0),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (from_currency, to_currency),
    CHECK (from_currency <> to_currency)
);

-- Fee rules. `tiers` is the rule's tier list in a plain text encoding (persistence/src/finance).
CREATE TABLE fee_rules (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    transfer_type TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('flat', 'percentage', 'tiered')),
    flat_amount NUMERIC,
    percentage NUMERIC,
    min_fee NUMERIC,
    max_fee NUMERIC,
    tiers TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- At most one enabled rule per (type, currency): which rule applies is never ambiguous.
CREATE UNIQUE INDEX fee_rules_one_enabled ON fee_rules (transfer_type, currency) WHERE enabled;

-- Transfer-type settings as an admin set them; a type with no row runs on its defaults.
CREATE TABLE transfer_type_settings (
    code TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    execution_mode TEXT NOT NULL CHECK (execution_mode IN ('auto', 'manual')),
    min_amount NUMERIC,
    max_amount NUMERIC
);
