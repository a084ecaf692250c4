-- Hexadecimal chain transaction hashes (64 hex digits, with or without `0x`) are kept in lower
-- case from now on (`canonical_tx_hash` in actors/src/crypto.rs): `0x5C50…` and `0x5c50…` are
-- one transaction, and a deposit is credited once per hash. Hashes stored before in another
-- case are lowered here, unless the lowered hash is already stored for the same kind (the
-- transaction was then credited twice before this fix; an operator has to settle it by hand,
-- so the row is left as it is).
UPDATE crypto_ops SET tx_hash = lower(tx_hash)
WHERE tx_hash IS NOT NULL
  AND tx_hash <> lower(tx_hash)
  AND (
    (length(tx_hash) = 64 AND lower(tx_hash) NOT GLOB '*[^0-9a-f]*')
    OR (length(tx_hash) = 66 AND lower(substr(tx_hash, 1, 2)) = '0x'
        AND lower(substr(tx_hash, 3)) NOT GLOB '*[^0-9a-f]*')
  )
  AND NOT EXISTS (
    SELECT 1 FROM crypto_ops AS o WHERE o.kind = crypto_ops.kind AND o.tx_hash = lower(crypto_ops.tx_hash)
  );
