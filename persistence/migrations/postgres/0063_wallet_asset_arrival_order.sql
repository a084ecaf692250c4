-- A wallet's assets are listed, and rebuilt, in the order they first arrived.
--
-- They were ordered by `first_seq`, the journal sequence number of the record that brought
-- each asset. Sequences are per shard, and a wallet's records can come through several shards'
-- journals (a crypto operation's records go to its own shard's journal, not the wallet's), so
-- two assets' numbers need not be comparable. An identity filled at insert orders them by the
-- commit that first stored them, which is what SQLite's `ordinal` (`INTEGER PRIMARY KEY`) does,
-- so the two schemas now agree. Existing rows keep the order they had.
ALTER TABLE wallet_assets ADD COLUMN ordinal BIGINT;
UPDATE wallet_assets AS a SET ordinal = o.n
FROM (SELECT wallet_id, asset, row_number() OVER (ORDER BY first_seq, wallet_id, asset) AS n FROM wallet_assets) AS o
WHERE a.wallet_id = o.wallet_id AND a.asset = o.asset;
CREATE SEQUENCE wallet_assets_ordinal_seq OWNED BY wallet_assets.ordinal;
SELECT setval('wallet_assets_ordinal_seq', COALESCE(MAX(ordinal), 0) + 1, false) FROM wallet_assets;
ALTER TABLE wallet_assets
    ALTER COLUMN ordinal SET DEFAULT nextval('wallet_assets_ordinal_seq'),
    ALTER COLUMN ordinal SET NOT NULL,
    DROP COLUMN first_seq;
