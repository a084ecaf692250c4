-- Transfer metadata (issue 15, API.md 1.1): the client's own key-value pairs, one JSON object
-- of string values, or NULL for none. Adding a nullable column without a default rewrites
-- nothing. A transfer without metadata costs one NULL field in its COPY row and nothing else:
-- it never enters the index below (partial), so the hot path writes no extra index entry.
ALTER TABLE transfers ADD COLUMN metadata JSONB;

-- The listings' `metadata.KEY=VALUE` filters: containment (`metadata @> '{"k":"v"}'`) is what
-- `jsonb_path_ops` indexes (one hash per key-value path, smaller than the default `jsonb_ops`
-- and enough for `@>`); every filter pair goes into one object, so all must match.
CREATE INDEX transfers_by_metadata ON transfers USING GIN (metadata jsonb_path_ops) WHERE metadata IS NOT NULL;
