//! The ledger as the database holds it, read without the code under test, and an RFC 4180
//! reader independent of the writer under test: what the statement tests (the admin's and
//! the account owner's) check their answers against.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::Connection;

use crate::http::{Backend, TestServer};

pub const HEADER: [&str; 12] = [
    "id",
    "transfer_id",
    "account_id",
    "user_id",
    "currency",
    "direction",
    "amount",
    "balance_after",
    "transfer_type",
    "reference",
    "description",
    "created_at",
];

// ---------------------------------------------------------------------------------------------
// The ledger as the database holds it, read without the code under test.

#[derive(Clone, Debug)]
pub struct LedgerLine {
    /// The account's posting number.
    pub version: i64,
    pub transfer: String,
    pub account: String,
    pub owner: Option<String>,
    pub currency: String,
    pub direction: String,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub kind: String,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// When the posting was booked.
    pub created_at: i64,
}

type PostingRow = (String, i64, i64, String, String, String, String, String);
type TransferRow = (String, String, Option<String>, Option<String>);
type AccountRow = (String, Option<String>);

const POSTINGS_SQL: &str = "SELECT CAST(account_id AS TEXT), booked_at, version, CAST(transfer_id AS TEXT), currency,
        direction, CAST(amount AS TEXT), CAST(balance_after AS TEXT) FROM postings
        ORDER BY account_id, booked_at, version";
const TRANSFERS_SQL: &str = "SELECT CAST(id AS TEXT), kind, reference, description FROM transfers";
const ACCOUNTS_SQL: &str = "SELECT CAST(id AS TEXT), CAST(owner_id AS TEXT) FROM accounts";

/// Every posting, account by account (id order), each account's in booking and posting order,
/// joined in Rust with its transfer and account.
pub async fn ledger(server: &TestServer) -> Vec<LedgerLine> {
    let (postings, transfers, accounts): (Vec<PostingRow>, Vec<TransferRow>, Vec<AccountRow>) = match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            (
                sqlx::query_as(POSTINGS_SQL).fetch_all(&mut db).await.unwrap(),
                sqlx::query_as(TRANSFERS_SQL).fetch_all(&mut db).await.unwrap(),
                sqlx::query_as(ACCOUNTS_SQL).fetch_all(&mut db).await.unwrap(),
            )
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            (
                sqlx::query_as(POSTINGS_SQL).fetch_all(&mut db).await.unwrap(),
                sqlx::query_as(TRANSFERS_SQL).fetch_all(&mut db).await.unwrap(),
                sqlx::query_as(ACCOUNTS_SQL).fetch_all(&mut db).await.unwrap(),
            )
        }
    };
    let transfers: HashMap<String, TransferRow> = transfers.into_iter().map(|row| (row.0.clone(), row)).collect();
    let owners: HashMap<String, Option<String>> = accounts.into_iter().collect();
    postings
        .into_iter()
        .map(|(account, created_at, version, transfer, currency, direction, amount, balance_after)| {
            let (_, kind, reference, description) = transfers[&transfer].clone();
            LedgerLine {
                version,
                owner: owners[&account].clone(),
                transfer,
                account,
                currency,
                direction,
                amount: Decimal::from_str(&amount).unwrap(),
                balance_after: Decimal::from_str(&balance_after).unwrap(),
                kind,
                reference,
                description,
                created_at,
            }
        })
        .collect()
}

/// Runs one statement of SQL against the server's database, behind its back.
pub async fn execute(server: &TestServer, sql: &str) {
    match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
    }
}

/// Moves the transfer's postings to another booking time.
pub async fn set_booked_at(server: &TestServer, transfer: &str, booked_at: i64) {
    execute(server, &format!("UPDATE postings SET booked_at = {booked_at} WHERE transfer_id = '{transfer}'")).await;
}

/// The posting's id as the API writes it: a name-based UUID (v5) of its account and number.
pub fn posting_id(account: &str, version: i64) -> String {
    let account = uuid::Uuid::parse_str(account).unwrap();
    uuid::Uuid::new_v5(&account, &u64::try_from(version).unwrap().to_be_bytes()).to_string()
}

pub fn scale(currency: &str) -> u32 {
    match currency {
        "JPY" => 0,
        "ETH" => 18,
        "BTC" => 8,
        "USDC" => 6,
        _ => 2,
    }
}

/// An amount as the API must write it: exactly the currency's scale, equal in value.
#[track_caller]
pub fn assert_amount(text: &str, expected: Decimal, currency: &str) {
    let value = Decimal::from_str(text).unwrap_or_else(|_| panic!("{text:?} is not a decimal"));
    assert_eq!(value, expected, "amount {text}");
    assert_eq!(value.scale(), scale(currency), "{text} is at {currency}'s scale");
    assert!(!text.contains('e') && !text.contains('E'), "{text} is plain decimal");
}

pub fn micros_of(rfc3339: &str) -> i64 {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap()
}

/// Asserts a JSON line is exactly the ledger's posting.
#[track_caller]
pub fn assert_json_line(item: &Value, line: &LedgerLine) {
    assert_eq!(item["id"], posting_id(&line.account, line.version));
    assert_eq!(item["transfer_id"], line.transfer);
    assert_eq!(item["account_id"], line.account);
    assert_eq!(item["user_id"].as_str().map(str::to_owned), line.owner);
    assert_eq!(item["currency"], line.currency);
    assert_eq!(item["direction"], line.direction);
    assert_amount(item["amount"].as_str().unwrap(), line.amount, &line.currency);
    assert_amount(item["balance_after"].as_str().unwrap(), line.balance_after, &line.currency);
    assert_eq!(item["transfer_type"], line.kind);
    assert_eq!(item["reference"].as_str().map(str::to_owned), line.reference);
    assert_eq!(item["description"].as_str().map(str::to_owned), line.description);
    assert_eq!(micros_of(item["created_at"].as_str().unwrap()), line.created_at);
}

/// Asserts a CSV record is exactly the ledger's posting (empty field for none).
#[track_caller]
pub fn assert_csv_record(record: &[String], line: &LedgerLine) {
    assert_eq!(record.len(), HEADER.len(), "{record:?}");
    assert_eq!(record[0], posting_id(&line.account, line.version));
    assert_eq!(record[1], line.transfer);
    assert_eq!(record[2], line.account);
    assert_eq!(record[3], line.owner.clone().unwrap_or_default());
    assert_eq!(record[4], line.currency);
    assert_eq!(record[5], line.direction);
    assert_amount(&record[6], line.amount, &line.currency);
    assert_amount(&record[7], line.balance_after, &line.currency);
    assert_eq!(record[8], line.kind);
    assert_eq!(record[9], line.reference.clone().unwrap_or_default());
    assert_eq!(record[10], line.description.clone().unwrap_or_default());
    assert_eq!(micros_of(&record[11]), line.created_at);
}

// ---------------------------------------------------------------------------------------------
// An RFC 4180 reader, independent of the writer under test: fed bytes in any chunks, it
// yields records and refuses anything the RFC does not allow (a bare quote in an unquoted
// field, a lone CR or LF outside quotes, text after a closing quote).

#[derive(Default)]
pub struct CsvReader {
    state: CsvState,
    field: Vec<u8>,
    record: Vec<String>,
    records: Vec<Vec<String>>,
}

#[derive(Default, PartialEq, Eq, Debug)]
pub enum CsvState {
    #[default]
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
    Cr,
}

impl CsvReader {
    fn end_field(&mut self) {
        let field = std::mem::take(&mut self.field);
        self.record.push(String::from_utf8(field).expect("fields are UTF-8"));
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state = match (&self.state, byte) {
                (CsvState::FieldStart, b'"') => CsvState::Quoted,
                (CsvState::FieldStart | CsvState::Unquoted | CsvState::QuoteInQuoted, b',') => {
                    self.end_field();
                    CsvState::FieldStart
                }
                (CsvState::FieldStart | CsvState::Unquoted | CsvState::QuoteInQuoted, b'\r') => {
                    self.end_field();
                    CsvState::Cr
                }
                (CsvState::FieldStart | CsvState::Unquoted, b'"' | b'\n') => {
                    panic!("byte {byte:?} outside quotes in {:?}", self.record)
                }
                (CsvState::FieldStart | CsvState::Unquoted, _) => {
                    self.field.push(byte);
                    CsvState::Unquoted
                }
                (CsvState::Quoted, b'"') => CsvState::QuoteInQuoted,
                (CsvState::Quoted, _) => {
                    self.field.push(byte);
                    CsvState::Quoted
                }
                (CsvState::QuoteInQuoted, b'"') => {
                    self.field.push(b'"');
                    CsvState::Quoted
                }
                (CsvState::QuoteInQuoted, _) => panic!("text after a closing quote in {:?}", self.record),
                (CsvState::Cr, b'\n') => {
                    let record = std::mem::take(&mut self.record);
                    self.records.push(record);
                    CsvState::FieldStart
                }
                (CsvState::Cr, _) => panic!("CR without LF after {:?}", self.record),
            };
        }
    }

    /// The records so far, leaving the reader ready for more bytes.
    pub fn take(&mut self) -> Vec<Vec<String>> {
        std::mem::take(&mut self.records)
    }

    /// Asserts the input ended at the end of a record (CRLF last).
    pub fn finish(&self) {
        assert_eq!(self.state, CsvState::FieldStart, "the file ends with CRLF");
        assert!(self.field.is_empty() && self.record.is_empty(), "no partial record at the end");
    }
}

pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut reader = CsvReader::default();
    reader.feed(text.as_bytes());
    reader.finish();
    reader.take()
}
