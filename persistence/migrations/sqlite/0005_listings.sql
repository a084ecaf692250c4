-- Indexes for the HTTP listings, as migrations/postgres/0005_listings.sql (GET /v1/transfers,
-- /v1/admin/transfers, /v1/admin/accounts,
-- /v1/accounts/{id}/transactions). Every listing pages newest first by (created_at, id), a
-- keyset cursor, so each index ends in those two columns and a page is one index range scan.

-- A customer's transfers are those whose source or destination they own: the source side
-- is served by transfers_by_source (0001); this is the destination side.
CREATE INDEX transfers_by_destination ON transfers (destination_id, created_at);
-- The admin listing, unfiltered and by status.
CREATE INDEX transfers_by_created ON transfers (created_at, id);
CREATE INDEX transfers_by_status_created ON transfers (status, created_at, id);
-- The admin account listing, unfiltered and by each filter.
CREATE INDEX accounts_by_created ON accounts (created_at, id);
CREATE INDEX accounts_by_status_created ON accounts (status, created_at, id);
CREATE INDEX accounts_by_currency_created ON accounts (currency, created_at, id);
