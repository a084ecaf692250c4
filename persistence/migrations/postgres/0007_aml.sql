-- AML rules and the flags they raise (engine/src/aml.rs).

-- Rules are written by admins straight to the store (then swapped into the engine's memory);
-- a rule's configuration is one column per field so the database checks its shape.
CREATE TABLE aml_rules (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('threshold', 'velocity')),
    action TEXT NOT NULL CHECK (action IN ('flag', 'review', 'block')),
    enabled BOOLEAN NOT NULL,
    currency TEXT NOT NULL,
    -- threshold
    amount NUMERIC,
    transfer_type TEXT,
    -- velocity
    window_seconds BIGINT,
    max_count BIGINT,
    max_amount NUMERIC,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Flags are written by the journal with the transfer that raised them (`seq`), and updated
-- in place once when an analyst resolves them.
CREATE TABLE aml_flags (
    id UUID PRIMARY KEY,
    transfer_id UUID NOT NULL,
    account_id UUID NOT NULL,
    user_id UUID,
    rule_id UUID NOT NULL,
    rule_name TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'cleared', 'false_positive')),
    notes TEXT,
    amount NUMERIC NOT NULL,
    currency TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolved_by UUID,
    seq BIGINT NOT NULL
);
CREATE INDEX aml_flags_newest ON aml_flags (created_at DESC, id DESC);
CREATE INDEX aml_flags_by_status ON aml_flags (status, created_at DESC, id DESC);
CREATE INDEX aml_flags_by_account ON aml_flags (account_id, created_at DESC, id DESC);
