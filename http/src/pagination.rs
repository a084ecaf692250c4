//! `?limit=N&cursor=C` (API.md "Pagination"): the limit's default and bound, and the opaque
//! cursor. A cursor is the position of the last row of the previous page, base64url-encoded
//! with a version tag so its form can change without misreading old ones. Listings page by a
//! key (keyset), not an offset, so rows inserted meanwhile never shift or repeat a later page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tally_persistence::reads::crypto::WalletPostingPosition;
use tally_persistence::reads::listing::{Position, PostingPosition};

use crate::problem::ApiError;

/// Rows per page when the client names no limit: a screenful, and cheap (each row is one
/// live read from the engine).
pub const PAGE_LIMIT_DEFAULT: u32 = 50;

/// Rows per page at most. Each row of a transfer or account page is a point read of its live
/// state; 200 keep a page well under the request time-out on a busy store.
pub const PAGE_LIMIT_MAX: u32 = 200;

/// Longest cursor accepted: a cursor this API made is under 120 characters (a posting's, with
/// its account id, booking time and number, is the longest).
const CURSOR_LENGTH_MAX: usize = 128;

/// The page size asked for, checked: 1 to `PAGE_LIMIT_MAX`, default `PAGE_LIMIT_DEFAULT`.
pub fn limit(text: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = text else { return Ok(PAGE_LIMIT_DEFAULT) };
    match text.parse::<u32>() {
        Ok(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
        _ => Err(ApiError::field("limit", format!("must be an integer from 1 to {PAGE_LIMIT_MAX}"))),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::field("cursor", "is not a cursor this listing returned")
}

fn decode(text: &str, tag: &str) -> Result<String, ApiError> {
    if text.is_empty() || text.len() > CURSOR_LENGTH_MAX {
        return Err(bad_cursor());
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    text.strip_prefix(tag).map(str::to_owned).ok_or_else(bad_cursor)
}

/// The cursor after `position` in the listing `tag` names (a cursor of one listing is refused
/// by another).
pub fn position_cursor(tag: &str, position: Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}1:{}:{}", position.created_at, position.id))
}

pub fn parse_position_cursor(tag: &str, text: Option<&str>) -> Result<Option<Position>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let rest = decode(text, &format!("{tag}1:"))?;
    let (created_at, id) = rest.split_once(':').ok_or_else(bad_cursor)?;
    let created_at = created_at.parse::<i64>().map_err(|_| bad_cursor())?;
    let id = uuid::Uuid::try_parse(id).map_err(|_| bad_cursor())?;
    Ok(Some(Position { created_at, id }))
}

/// The cursor after the posting with sequence number `seq`.
pub fn seq_cursor(tag: &str, seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}1:{seq}"))
}

pub fn parse_seq_cursor(tag: &str, text: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let rest = decode(text, &format!("{tag}1:"))?;
    rest.parse::<u64>().map(Some).map_err(|_| bad_cursor())
}

/// The cursor after the posting at `position` (the account, booking time and posting number).
/// The `2` marks the form: cursors of the journal-sequence era (`1`) are refused as foreign.
pub fn posting_cursor(tag: &str, position: PostingPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}2:{}:{}:{}", position.account, position.booked_at, position.version))
}

pub fn parse_posting_cursor(tag: &str, text: Option<&str>) -> Result<Option<PostingPosition>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let rest = decode(text, &format!("{tag}2:"))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(account), Some(booked_at), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_cursor());
    };
    Ok(Some(PostingPosition {
        account: uuid::Uuid::try_parse(account).map_err(|_| bad_cursor())?,
        booked_at: booked_at.parse::<i64>().map_err(|_| bad_cursor())?,
        version: version.parse::<u64>().map_err(|_| bad_cursor())?,
    }))
}

/// The cursor before the wallet posting at `position` (booking time, shard, sequence). The `2`
/// marks the form: cursors of the one-journal era (`1`, a bare sequence) are refused as foreign.
pub fn wallet_posting_cursor(tag: &str, position: WalletPostingPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}2:{}:{}:{}", position.booked_at, position.shard, position.seq))
}

pub fn parse_wallet_posting_cursor(tag: &str, text: Option<&str>) -> Result<Option<WalletPostingPosition>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let rest = decode(text, &format!("{tag}2:"))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(booked_at), Some(shard), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_cursor());
    };
    Ok(Some(WalletPostingPosition {
        booked_at: booked_at.parse::<i64>().map_err(|_| bad_cursor())?,
        shard: shard.parse::<u16>().map_err(|_| bad_cursor())?,
        seq: seq.parse::<u64>().map_err(|_| bad_cursor())?,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_cursor_round_trips_and_is_refused_by_another_listing() {
        let position = Position { created_at: 1_700_000_000_000_000, id: uuid::Uuid::from_u128(7) };
        let cursor = position_cursor("transfers", position);
        assert_eq!(parse_position_cursor("transfers", Some(&cursor)).unwrap(), Some(position));
        assert!(parse_position_cursor("accounts", Some(&cursor)).is_err());
        assert!(parse_position_cursor("transfers", Some("not a cursor")).is_err());
        assert_eq!(parse_seq_cursor("postings", Some(&seq_cursor("postings", 42))).unwrap(), Some(42));
        let posting = PostingPosition { account: uuid::Uuid::from_u128(9), booked_at: -5, version: 3 };
        assert_eq!(
            parse_posting_cursor("postings", Some(&posting_cursor("postings", posting))).unwrap(),
            Some(posting)
        );
        assert!(parse_posting_cursor("statement", Some(&posting_cursor("postings", posting))).is_err());
        assert!(parse_posting_cursor("postings", Some(&seq_cursor("postings", 42))).is_err());
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None).unwrap(), PAGE_LIMIT_DEFAULT);
        assert_eq!(limit(Some("200")).unwrap(), 200);
        for bad in ["0", "201", "-1", "ten", ""] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
