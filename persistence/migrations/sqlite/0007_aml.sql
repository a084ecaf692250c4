-- AML rules and the flags they raise (engine/src/aml.rs).
-- SQLite: ids and amounts are TEXT (exact), times INTEGER microseconds, booleans 0/1.

-- Rules are written by admins straight to the store (then swapped into the engine's memory);
-- a rule's configuration is one column per field so the database checks its shape.
CREATE TABLE aml_rules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('threshold', 'velocity')),
    action TEXT NOT NULL CHECK (action IN ('flag', 'review', 'block')),
    enabled INTEGER NOT NULL,
    currency TEXT NOT NULL,
    -- threshold
    amount TEXT,
    transfer_type TEXT,
    -- velocity
    window_seconds INTEGER,
    max_count INTEGER,
    max_amount TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Flags are written by the journal with the transfer that raised them (`seq`), and updated
-- in place once when an analyst resolves them.
CREATE TABLE aml_flags (
    id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    user_id TEXT,
    rule_id TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'cleared', 'false_positive')),
    notes TEXT,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT,
    seq INTEGER NOT NULL
);
CREATE INDEX aml_flags_newest ON aml_flags (created_at DESC, id DESC);
CREATE INDEX aml_flags_by_status ON aml_flags (status, created_at DESC, id DESC);
CREATE INDEX aml_flags_by_account ON aml_flags (account_id, created_at DESC, id DESC);
