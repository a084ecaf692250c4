-- Transfer metadata (issue 15, API.md 1.1): the client's own key-value pairs as one JSON
-- object of string values (text), or NULL for none. SQLite has no index over JSON contents;
-- the listings' `metadata.KEY=VALUE` filters are checked with `json_extract` on the rows of
-- the range another filter narrows (the customer's own accounts, one account, or at most a
-- bounded number of rows per page: docs/ledger-views.md, "Transfer metadata and listing
-- filters"), so no index is added and a transfer without metadata costs one NULL.
ALTER TABLE transfers ADD COLUMN metadata TEXT;
