-- Credits an account promised to accept: the first phase of an atomic batch admits each item's
-- credit at its destination, and the destination honours it in the third phase even if it was
-- blocked in between, and refuses to close while it has one. Kept here, like holds, so that an
-- account loaded again between the phases (after passivation, a panic, or a crash) still keeps
-- its promise. A row is written with the admission's record and deleted with the credit that
-- keeps it, or with its withdrawal (a batch abandoned: by the batch, or by recovery).
CREATE TABLE credit_admissions (
    account_id TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, transfer_id)
) STRICT;
