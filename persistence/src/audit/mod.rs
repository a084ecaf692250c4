//! The audit log (DESIGN.md §7, API.md "Tamper evidence"): every admin change and every
//! security event, in the ledger's database, hash-chained so that editing, inserting or
//! deleting an entry is detectable by recomputing the chain (`verify_chain`, run by `tally
//! verify`).
//!
//! **The chain.** Entry `seq` (1, 2, 3, … without gaps) carries `prev_hash`, the `hash` of
//! entry `seq - 1` (64 zeros for the first), and
//! `hash = hex(SHA-256(raw bytes of prev_hash ‖ canonical(entry)))`, where `canonical` is
//! defined by `canonical` below and documented for outside verifiers in `docs/audit.md`.
//! The head row (`audit_head`: the newest `seq` and `hash`) is updated with each append, so
//! deleting the newest entries is detectable too.
//!
//! **One writer at a time, in the writer's transaction.** `append` (`sql.rs`; `postgres::append`
//! and `sqlite::append` for a caller holding one backend's transaction) runs inside the
//! transaction that makes the change being recorded: Postgres locks the head row
//! `FOR UPDATE` (every writer, whatever its process, queues there, and a rolled-back change
//! leaves no entry); SQLite callers begin their transaction `IMMEDIATE` (the file's one
//! write lock). An append is the last statement before commit, so the head row is held for
//! one insert and one update. `AuditStore::append` is the same in a transaction of its own,
//! for events whose change is written elsewhere (a session ended by its actor, a login).
//!
//! Nothing here knows JSON: `details` is text the HTTP layer wrote, kept and hashed byte for
//! byte.

mod sql;

/// The append for store methods written once (`crate::sql`), on either backend's transaction.
pub(crate) use sql::AppendAudit;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::store::StoreError;

/// The `prev_hash` of the first entry: 32 zero bytes, in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Tags the canonical form, so a later version of it can be told apart.
const CANONICAL_VERSION: &str = "tally-audit-v1";

pub use tally_engine::audit::{ActorKind, AuditRecord};

/// An entry as stored: a record placed in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
    /// Set when a stored column is not the form the hash covers: SQLite keeps ids as text and
    /// the chain hashes their hyphenated lowercase form, so `id` or `subject_user_id` rewritten
    /// in upper case passed the hash while hiding the entry from the listings' text
    /// comparisons (a user's activity). `verify_chain` refuses such an entry. `None` on
    /// Postgres, whose `UUID` columns have one form.
    pub stored_form: Option<String>,
}

/// The newest entry's position: what `GET /v1/admin/audit/head` shows for anchoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// 0 while the log is empty.
    pub seq: u64,
    pub hash: String,
}

/// What an audit listing filters on; `None` is "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    /// Actions starting with this (the activity feed asks for `auth.`).
    pub action_prefix: Option<String>,
    pub target_id: Option<String>,
    pub subject_user: Option<UserId>,
    /// `at >= from`.
    pub from: Option<Timestamp>,
    /// `at < to`.
    pub to: Option<Timestamp>,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `record` in a transaction of its own.
    async fn append(&self, record: &AuditRecord) -> Result<AuditEntry, StoreError>;

    /// Up to `limit` entries matching `filter` with `seq < before` (all if `None`), newest
    /// first.
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    async fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// Up to `limit` entries with `seq > after`, oldest first (what verification walks).
    async fn audit_entries_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Appends one field to a canonical form: a netstring (`<byte length>:<bytes>,`) when
/// present, `-,` when absent. A netstring starts with a digit, so absent and empty differ,
/// and the lengths make the concatenation unambiguous whatever the fields contain.
fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => {
            out.extend_from_slice(value.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b',');
        }
        None => out.extend_from_slice(b"-,"),
    }
}

/// The canonical bytes of an entry: the version tag, then every column but the two hashes, in
/// this order, each as `field` writes it. Integers are decimal; ids hyphenated lowercase.
pub fn canonical(seq: u64, record: &AuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + record.details.len());
    field(&mut out, Some(CANONICAL_VERSION));
    field(&mut out, Some(&seq.to_string()));
    field(&mut out, Some(&record.id.hyphenated().to_string()));
    field(&mut out, Some(&record.at.as_micros().to_string()));
    field(&mut out, Some(record.actor_kind.as_str()));
    field(&mut out, record.actor_id.as_deref());
    field(&mut out, Some(&record.action));
    field(&mut out, record.target_type.as_deref());
    field(&mut out, record.target_id.as_deref());
    field(&mut out, record.subject_user.map(|user| user.as_uuid().hyphenated().to_string()).as_deref());
    field(&mut out, Some(&record.request_id));
    field(&mut out, record.ip.as_deref());
    field(&mut out, record.user_agent.as_deref());
    field(&mut out, Some(&record.details));
    out
}

/// The 32 bytes of a SHA-256 written as 64 hex digits; `None` for anything else.
fn hash_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    data_encoding::HEXLOWER_PERMISSIVE.decode(text.as_bytes()).ok()
}

fn hex_encode(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The hash of entry `seq` holding `record` after an entry whose hash is `prev_hash`; `None`
/// if `prev_hash` is not 64 hex digits (a stored value someone broke).
pub fn chain_hash(prev_hash: &str, seq: u64, record: &AuditRecord) -> Option<String> {
    let prev = hash_bytes(prev_hash)?;
    let mut input = prev;
    input.extend_from_slice(&canonical(seq, record));
    Some(hex_encode(digest(&SHA256, &input).as_ref()))
}

/// Places `record` after `head`: the entry to insert and the head after it.
pub(crate) fn next_entry(head: &AuditHead, record: &AuditRecord) -> Result<AuditEntry, StoreError> {
    let seq = head.seq.checked_add(1).ok_or_else(|| StoreError::Corrupt("audit sequence exhausted".to_owned()))?;
    let hash = chain_hash(&head.hash, seq, record)
        .ok_or_else(|| StoreError::Corrupt(format!("audit head hash {:?} is not a SHA-256 in hex", head.hash)))?;
    Ok(AuditEntry { seq, record: record.clone(), prev_hash: head.hash.clone(), hash, stored_form: None })
}

pub(crate) fn seq_to_db(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq} beyond BIGINT")))
}

pub(crate) fn seq_from_db(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative audit seq {seq}")))
}

/// The first place a chain does not hold, as `tally verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// The entry named (for a truncated log, the head's seq).
    pub seq: u64,
    pub id: Option<Uuid>,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "audit entry seq {} (id {id}): {}", self.seq, self.reason),
            None => write!(f, "audit seq {}: {}", self.seq, self.reason),
        }
    }
}

/// What walking a chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
    pub head: AuditHead,
    pub first_break: Option<ChainBreak>,
}

/// Entries read per query while verifying: a few hundred kilobytes at a time, so a log of
/// any length is checked in constant memory.
pub const VERIFY_CHUNK_ENTRIES: u32 = 1_000;

/// Recomputes the whole chain, oldest first: every `seq` follows the previous one, every
/// `prev_hash` is the previous `hash`, every `hash` is what the entry's contents give, and
/// the head names the last entry. Stops at the first break.
pub async fn verify_chain(store: &dyn AuditStore) -> Result<ChainReport, StoreError> {
    verify_chain_anchored(store, &[]).await
}

/// `verify_chain`, also checking that each of `anchors` (heads copied elsewhere, `tally verify
/// --audit-head`) names an entry of the chain: the entry at its `seq` exists and has its
/// `hash`. A log cut short, or rewritten and re-hashed up to a forged head, no longer holds
/// the anchored entry.
///
/// The walk runs on a live store, so it does not read one snapshot: entries appended while it
/// walks are fine. The head is read first and checked as an anchor (every entry up to it was
/// committed with it, so the walk must meet it), and read again after the walk: the walk may
/// not end past that second head (no entry is ever committed beyond the head), and where it
/// ends at the head's seq, the hashes must agree. Reading the head once, first, and comparing
/// it with the walk's last entry reported appends made meanwhile as tampering.
pub async fn verify_chain_anchored(store: &dyn AuditStore, anchors: &[AuditHead]) -> Result<ChainReport, StoreError> {
    let head = store.audit_head().await?;
    let mut anchors: Vec<(AuditHead, bool)> = anchors.iter().map(|anchor| (anchor.clone(), false)).collect();
    anchors.push((head.clone(), true));
    anchors.sort_by_key(|(anchor, _)| anchor.seq);
    let mut expected_seq = 1_u64;
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut entries = 0_u64;
    let mut next_anchor = 0_usize;
    let broken = |entry: &AuditEntry, reason: String| ChainBreak { seq: entry.seq, id: Some(entry.record.id), reason };
    // An anchor at seq 0 names the empty log, whose "hash" is the genesis value.
    if let Some(first_break) = check_anchors(&anchors, &mut next_anchor, 0, GENESIS_HASH) {
        return Ok(ChainReport { entries, head, first_break: Some(first_break) });
    }
    loop {
        let chunk = store.audit_entries_after(expected_seq - 1, VERIFY_CHUNK_ENTRIES).await?;
        if chunk.is_empty() {
            break;
        }
        for entry in &chunk {
            let first_break = if entry.seq != expected_seq {
                Some(ChainBreak {
                    seq: expected_seq,
                    id: None,
                    reason: format!("missing: the next entry stored is seq {}", entry.seq),
                })
            } else if let Some(stored_form) = &entry.stored_form {
                Some(broken(entry, stored_form.clone()))
            } else if entry.prev_hash != expected_prev {
                Some(broken(
                    entry,
                    format!(
                        "prev_hash {} is not the hash {} of entry {} (one of the two was altered)",
                        entry.prev_hash,
                        expected_prev,
                        entry.seq - 1
                    ),
                ))
            } else {
                match chain_hash(&entry.prev_hash, entry.seq, &entry.record) {
                    Some(hash) if hash == entry.hash => check_anchors(&anchors, &mut next_anchor, entry.seq, &hash),
                    Some(hash) => Some(broken(
                        entry,
                        format!("stored hash {} does not match its contents (they hash to {hash})", entry.hash),
                    )),
                    None => Some(broken(entry, "prev_hash is not a SHA-256 in hex".to_owned())),
                }
            };
            if let Some(first_break) = first_break {
                return Ok(ChainReport { entries, head, first_break: Some(first_break) });
            }
            entries += 1;
            expected_prev = entry.hash.clone();
            expected_seq += 1;
        }
    }
    let last_seq = expected_seq - 1;
    if let Some((anchor, is_head)) = anchors.get(next_anchor) {
        return Ok(ChainReport {
            entries,
            head: head.clone(),
            first_break: Some(anchor_break(anchor, *is_head, last_seq, &expected_prev)),
        });
    }
    // Entries committed during the walk moved the head on; none may lie past it.
    let later = store.audit_head().await?;
    let first_break = if last_seq > later.seq || (last_seq == later.seq && later.hash != expected_prev) {
        Some(anchor_break(&later, true, last_seq, &expected_prev))
    } else {
        None
    };
    Ok(ChainReport { entries, head, first_break })
}

/// Checks the anchors (sorted by seq, from `*next` on) at `seq`, whose entry hashes to `hash`:
/// `None` when each one there names that hash, else the break. An anchor at a lower seq than
/// `seq` was passed by the walk without meeting its entry, which cannot happen on an unbroken
/// walk (the walk meets every seq in order) but is answered as a break all the same.
fn check_anchors(anchors: &[(AuditHead, bool)], next: &mut usize, seq: u64, hash: &str) -> Option<ChainBreak> {
    while let Some((anchor, is_head)) = anchors.get(*next) {
        if anchor.seq > seq {
            return None;
        }
        if anchor.seq < seq || anchor.hash != hash {
            return Some(anchor_break(anchor, *is_head, seq, hash));
        }
        *next += 1;
    }
    None
}

/// The break of a head or anchor that the chain does not hold: the entry it names is gone,
/// or has another hash.
fn anchor_break(anchor: &AuditHead, is_head: bool, seq: u64, hash: &str) -> ChainBreak {
    let who = if is_head { "the head" } else { "the anchored head" };
    let found = if anchor.seq > seq {
        format!("the log ends at seq {seq} hash {hash}")
    } else {
        format!("entry seq {seq} has hash {hash}")
    };
    ChainBreak {
        seq: anchor.seq.max(seq),
        id: None,
        reason: format!(
            "{who} names seq {} hash {}, but {found} (entries removed, or the head or the log altered)",
            anchor.seq, anchor.hash
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(details: &str) -> AuditRecord {
        AuditRecord {
            id: Uuid::from_u128(1),
            at: Timestamp::from_micros(1_700_000_000_000_000),
            actor_kind: ActorKind::User,
            actor_id: Some("u-1".to_owned()),
            action: "user.block".to_owned(),
            target_type: Some("user".to_owned()),
            target_id: Some("u-2".to_owned()),
            subject_user: None,
            request_id: "r-1".to_owned(),
            ip: None,
            user_agent: None,
            details: details.to_owned(),
        }
    }

    #[test]
    fn absent_and_empty_fields_encode_apart_and_lengths_keep_fields_apart() {
        let mut absent = record("{}");
        absent.ip = None;
        let mut empty = record("{}");
        empty.ip = Some(String::new());
        assert_ne!(canonical(1, &absent), canonical(1, &empty));
        // Moving a character from one field to the next changes the bytes.
        let mut a = record("{}");
        a.actor_id = Some("ab".to_owned());
        a.action = "c".to_owned();
        let mut b = record("{}");
        b.actor_id = Some("a".to_owned());
        b.action = "bc".to_owned();
        assert_ne!(canonical(1, &a), canonical(1, &b));
        let text = String::from_utf8(canonical(7, &absent)).unwrap();
        assert!(text.starts_with("14:tally-audit-v1,1:7,36:00000000-0000-0000-0000-000000000001,"), "{text}");
    }

    #[test]
    fn each_hash_depends_on_the_previous_one_and_on_every_field() {
        let first = chain_hash(GENESIS_HASH, 1, &record("{}")).unwrap();
        assert_eq!(first.len(), 64);
        assert_ne!(chain_hash(GENESIS_HASH, 1, &record("{\"x\":1}")).unwrap(), first);
        assert_ne!(chain_hash(GENESIS_HASH, 2, &record("{}")).unwrap(), first);
        assert_ne!(chain_hash(&first, 1, &record("{}")).unwrap(), first);
        assert_eq!(chain_hash("zz", 1, &record("{}")), None);
    }

    /// A chain in memory, to walk `verify_chain` through each kind of break.
    struct Chain {
        entries: std::sync::Mutex<Vec<AuditEntry>>,
        head: std::sync::Mutex<AuditHead>,
    }

    impl Chain {
        fn of(n: u64) -> Chain {
            let chain = Chain {
                entries: std::sync::Mutex::new(Vec::new()),
                head: std::sync::Mutex::new(AuditHead { seq: 0, hash: GENESIS_HASH.to_owned() }),
            };
            for i in 0..n {
                let head = chain.head.lock().unwrap().clone();
                let mut record = record(&format!("{{\"n\":{i}}}"));
                record.id = Uuid::from_u128(u128::from(i) + 1);
                let entry = next_entry(&head, &record).unwrap();
                *chain.head.lock().unwrap() = AuditHead { seq: entry.seq, hash: entry.hash.clone() };
                chain.entries.lock().unwrap().push(entry);
            }
            chain
        }
    }

    #[async_trait]
    impl AuditStore for Chain {
        async fn append(&self, _: &AuditRecord) -> Result<AuditEntry, StoreError> {
            unreachable!("not used by verification")
        }

        async fn audit_page(&self, _: &AuditFilter, _: Option<u64>, _: u32) -> Result<Vec<AuditEntry>, StoreError> {
            unreachable!("not used by verification")
        }

        async fn audit_head(&self) -> Result<AuditHead, StoreError> {
            Ok(self.head.lock().unwrap().clone())
        }

        async fn audit_entries_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
            let entries = self.entries.lock().unwrap();
            Ok(entries.iter().filter(|entry| entry.seq > after).take(limit as usize).cloned().collect())
        }
    }

    #[tokio::test]
    async fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let chain = Chain::of(2_500);
        let report = verify_chain(&chain).await.unwrap();
        assert_eq!(report.entries, 2_500, "walked across chunks");
        assert_eq!(report.first_break, None);

        // An edited entry: its own hash no longer matches.
        let chain = Chain::of(5);
        chain.entries.lock().unwrap()[2].record.details = "{\"n\":99}".to_owned();
        let found = verify_chain(&chain).await.unwrap().first_break.unwrap();
        assert_eq!((found.seq, found.id), (3, Some(Uuid::from_u128(3))));
        assert!(found.reason.contains("does not match its contents"), "{found}");

        // An edited entry whose hash was recomputed: the next link breaks.
        let chain = Chain::of(5);
        {
            let mut entries = chain.entries.lock().unwrap();
            entries[2].record.details = "{\"n\":99}".to_owned();
            entries[2].hash = chain_hash(&entries[2].prev_hash, 3, &entries[2].record).unwrap();
        }
        let found = verify_chain(&chain).await.unwrap().first_break.unwrap();
        assert_eq!(found.seq, 4);
        assert!(found.reason.contains("prev_hash"), "{found}");

        // A deleted entry in the middle, and the newest entry deleted.
        let chain = Chain::of(5);
        chain.entries.lock().unwrap().remove(1);
        let found = verify_chain(&chain).await.unwrap().first_break.unwrap();
        assert_eq!((found.seq, found.id), (2, None));
        let chain = Chain::of(5);
        chain.entries.lock().unwrap().pop();
        let found = verify_chain(&chain).await.unwrap().first_break.unwrap();
        assert_eq!(found.seq, 5);
        assert!(found.reason.contains("head"), "{found}");
    }
}
