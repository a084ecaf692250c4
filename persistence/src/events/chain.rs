//! The journal's hash chain (API.md *1.1* "Tamper evidence", DESIGN.md §11).
//!
//! Every committed batch of records writes one `journal_batches` row `(shard, first_seq,
//! last_seq, hash)` in its own transaction, where
//!
//! ```text
//! hash   = SHA-256(prev ‖ digest)        prev: the shard's previous batch's hash, or 32 zero bytes
//! digest = SHA-256(line of each posting of the batch, by seq ‖ line of each event, by seq)
//! ```
//!
//! A batch's digest covers the rows it wrote that are never changed afterwards: its postings
//! (the money) and its events (which carry each transfer's state after the change). Rows that
//! are rewritten later by design (transfer rows replaced by their final state, holds, balance
//! snapshots) are not in it: they are derived from the postings, and `tally check` proves that
//! they agree. A line is text with fields separated by `|` and ended by `\n`:
//!
//! ```text
//! p|<seq>|<account uuid>|<version>|<booked_at µs>|<transfer uuid>|<currency>|<direction>|<amount>|<balance_after>
//! e|<seq>|<type>|<object uuid>|<occurred_at µs>|<byte length of data, or -1>|<data>
//! ```
//!
//! with decimals in their normalised form (no trailing zeros), so both stores' columns give
//! the same text. Postgres links the chain in SQL (`sha256(prev || digest)` in the insert,
//! reading the previous row it can see once the batch before it has committed); SQLite in
//! Rust. `verify` (run by `tally verify`) recomputes every shard's chain from the stored rows
//! and names the first batch that does not match.

use aws_lc_rs::digest::{Context, SHA256};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::batch::BatchPlan;

/// The `prev` of a shard's first batch.
pub const GENESIS: [u8; 32] = [0; 32];

/// One posting as the digest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainPosting {
    pub seq: u64,
    pub account: Uuid,
    pub version: u64,
    pub booked_at: i64,
    pub transfer: Uuid,
    pub currency: String,
    pub direction: String,
    pub amount: Decimal,
    pub balance_after: Decimal,
}

/// One event as the digest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEvent {
    pub seq: u64,
    pub kind: String,
    pub object: Uuid,
    pub occurred_at: i64,
    pub data: Option<String>,
}

/// One stored link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLink {
    pub shard: u16,
    pub first_seq: u64,
    pub last_seq: u64,
    pub hash: Vec<u8>,
}

/// The newest link of one shard (for anchoring elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub shard: u16,
    pub last_seq: u64,
    pub hash: Vec<u8>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainReport {
    /// Every link matches; how many batches were checked.
    Intact { batches: u64 },
    /// The first batch (in shard order, then seq) that does not match, and why.
    Broken { shard: u16, first_seq: u64, last_seq: u64, reason: String },
}

fn decimal_text(value: Decimal) -> String {
    value.normalize().to_string()
}

fn posting_line(context: &mut Context, posting: &ChainPosting) {
    let line = format!(
        "p|{}|{}|{}|{}|{}|{}|{}|{}|{}\n",
        posting.seq,
        posting.account.hyphenated(),
        posting.version,
        posting.booked_at,
        posting.transfer.hyphenated(),
        posting.currency,
        posting.direction,
        decimal_text(posting.amount),
        decimal_text(posting.balance_after),
    );
    context.update(line.as_bytes());
}

fn event_line(context: &mut Context, event: &ChainEvent) {
    let length = event.data.as_ref().map_or(-1, |data| data.len() as i64);
    let head =
        format!("e|{}|{}|{}|{}|{}|", event.seq, event.kind, event.object.hyphenated(), event.occurred_at, length);
    context.update(head.as_bytes());
    if let Some(data) = &event.data {
        context.update(data.as_bytes());
    }
    context.update(b"\n");
}

/// The digest of a batch's rows, each list in seq order.
pub fn digest_rows(postings: &[ChainPosting], events: &[ChainEvent]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    for posting in postings {
        posting_line(&mut context, posting);
    }
    for event in events {
        event_line(&mut context, event);
    }
    to_array(context.finish().as_ref())
}

/// The digest of what `plan` writes (the same rows `verify` reads back).
pub fn batch_digest(plan: &BatchPlan) -> [u8; 32] {
    let mut postings: Vec<ChainPosting> = plan
        .postings
        .iter()
        .map(|posting| ChainPosting {
            seq: posting.seq,
            account: posting.account.as_uuid(),
            version: posting.version,
            booked_at: posting.booked_at.as_micros(),
            transfer: posting.transfer.as_uuid(),
            currency: posting.currency.code().to_owned(),
            direction: posting.direction.as_str().to_owned(),
            amount: posting.amount,
            balance_after: posting.balance_after,
        })
        .collect();
    postings.sort_by_key(|posting| posting.seq);
    let events: Vec<ChainEvent> = plan
        .events
        .iter()
        .map(|event| ChainEvent {
            seq: event.seq,
            kind: event.kind.as_str().to_owned(),
            object: event.object,
            occurred_at: plan.booked_at.as_micros(),
            data: event.data.clone(),
        })
        .collect();
    digest_rows(&postings, &events)
}

/// `SHA-256(prev ‖ digest)`.
pub fn link(prev: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(prev);
    context.update(digest);
    to_array(context.finish().as_ref())
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(&bytes[..32]);
    out
}

pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Walks one shard's chain: `links` in seq order, and the shard's postings and events in seq
/// order. `committed_seq` is the shard's committed sequence (the head must reach it).
pub fn verify_shard(
    shard: u16,
    links: &[BatchLink],
    postings: &[ChainPosting],
    events: &[ChainEvent],
    committed_seq: u64,
) -> Result<u64, ChainReport> {
    let broken = |link: &BatchLink, reason: String| ChainReport::Broken {
        shard,
        first_seq: link.first_seq,
        last_seq: link.last_seq,
        reason,
    };
    let Some(first) = links.first() else {
        // No batch since the chain began (migration 0040): nothing may claim to be newer.
        return Ok(0);
    };
    // Rows before the first link are history from before the chain began.
    let mut posting_at = postings.partition_point(|posting| posting.seq < first.first_seq);
    let mut event_at = events.partition_point(|event| event.seq < first.first_seq);
    let mut prev: Vec<u8> = GENESIS.to_vec();
    let mut expected_first: Option<u64> = None;
    for link in links {
        if let Some(expected) = expected_first
            && link.first_seq != expected
        {
            return Err(broken(link, format!("does not follow the previous batch (expected first seq {expected})")));
        }
        let posting_end = posting_at + postings[posting_at..].partition_point(|posting| posting.seq <= link.last_seq);
        let event_end = event_at + events[event_at..].partition_point(|event| event.seq <= link.last_seq);
        let digest = digest_rows(&postings[posting_at..posting_end], &events[event_at..event_end]);
        let hash = link_hash(&prev, &digest);
        if hash.as_slice() != link.hash.as_slice() {
            return Err(broken(link, format!("hash {} recomputed as {} from its rows", hex(&link.hash), hex(&hash))));
        }
        prev = link.hash.clone();
        posting_at = posting_end;
        event_at = event_end;
        expected_first = Some(link.last_seq + 1);
    }
    let last = links.last().unwrap_or(first);
    if posting_at < postings.len() || event_at < events.len() {
        return Err(broken(last, "rows with a later seq than the last batch of the chain".to_owned()));
    }
    if last.last_seq != committed_seq {
        return Err(broken(
            last,
            format!("the chain ends at seq {} but the shard committed up to {committed_seq}", last.last_seq),
        ));
    }
    Ok(links.len() as u64)
}

fn link_hash(prev: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    link(prev, digest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;

    use super::*;

    fn posting(seq: u64, amount: Decimal) -> ChainPosting {
        ChainPosting {
            seq,
            account: Uuid::from_u128(1),
            version: seq,
            booked_at: 10,
            transfer: Uuid::from_u128(2),
            currency: "EUR".to_owned(),
            direction: "debit".to_owned(),
            amount,
            balance_after: dec!(0),
        }
    }

    fn chain_of(batches: &[(u64, u64, Vec<ChainPosting>)]) -> Vec<BatchLink> {
        let mut prev = GENESIS.to_vec();
        batches
            .iter()
            .map(|(first, last, rows)| {
                let hash = link(&prev, &digest_rows(rows, &[])).to_vec();
                prev = hash.clone();
                BatchLink { shard: 0, first_seq: *first, last_seq: *last, hash }
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_an_edited_posting_names_its_batch() {
        let rows = vec![posting(1, dec!(1.50)), posting(3, dec!(2)), posting(5, dec!(7))];
        let links = chain_of(&[(1, 2, rows[..1].to_vec()), (3, 4, rows[1..2].to_vec()), (5, 6, rows[2..].to_vec())]);
        assert_eq!(verify_shard(0, &links, &rows, &[], 6), Ok(3));
        // The same amount written with another scale is the same amount.
        let mut rescaled = rows.clone();
        rescaled[0].amount = dec!(1.5000);
        assert_eq!(verify_shard(0, &links, &rescaled, &[], 6), Ok(3));
        let mut edited = rows.clone();
        edited[1].amount = dec!(2.01);
        match verify_shard(0, &links, &edited, &[], 6) {
            Err(ChainReport::Broken { first_seq: 3, last_seq: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deleted_batch_a_late_row_and_a_short_head_are_found() {
        let rows = vec![posting(1, dec!(1)), posting(3, dec!(2))];
        let links = chain_of(&[(1, 2, rows[..1].to_vec()), (3, 4, rows[1..].to_vec())]);
        assert!(verify_shard(0, &links[1..], &rows, &[], 4).is_err());
        let mut extra = rows.clone();
        extra.push(posting(9, dec!(1)));
        assert!(verify_shard(0, &links, &extra, &[], 4).is_err());
        assert!(verify_shard(0, &links, &rows, &[], 5).is_err());
    }
}
