-- Hexadecimal chain transaction hashes (64 hex digits, with or without `0x`) are kept in lower
-- case from now on (`canonical_tx_hash` in actors/src/crypto.rs): `0x5C50…` and `0x5c50…` are
-- one transaction, and a deposit is credited once per hash. Hashes stored before in another
-- case are lowered here, unless the lowered hash is already stored for the same kind (the
-- transaction was then credited twice before this fix; `tally check` cannot see that, and an
-- operator has to settle it by hand, so the row is left as it is).
UPDATE crypto_ops AS c SET tx_hash = lower(c.tx_hash)
WHERE c.tx_hash ~ '^(0[xX])?[0-9A-Fa-f]{64}$'
  AND c.tx_hash <> lower(c.tx_hash)
  AND NOT EXISTS (SELECT 1 FROM crypto_ops AS o WHERE o.kind = c.kind AND o.tx_hash = lower(c.tx_hash));
