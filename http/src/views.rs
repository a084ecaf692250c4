//! What the API answers with: accounts and transfers as JSON objects. Money is a string with
//! exactly the currency's decimals (`"125.50"`, `"7"` for JPY), never a JSON number; times are
//! RFC 3339 UTC with microseconds; ids are UUID strings.

use rust_decimal::Decimal;
use serde::Serialize;
use tally_engine::money::{push_decimal, with_currency_scale};
use tally_engine::{Account, Currency, Timestamp, Transfer, TransferKind};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::json::write;
use crate::problem::ApiError;

/// `2024-05-01T12:00:00.000000Z`: fixed width, so times sort as text too. Written digit by
/// digit: the `time` crate's formatter walks a format description on every call, and a
/// transfer's answer and its event render four times each (under callgrind ~2,000 instructions
/// per time, 3.9 % of the server's instructions per transfer; this path takes ~150).
pub fn rfc3339(at: Timestamp) -> Result<String, ApiError> {
    let mut text = String::with_capacity(27);
    push_rfc3339(&mut text, at)?;
    Ok(text)
}

/// `rfc3339(at)` appended to `text`.
fn push_rfc3339(text: &mut String, at: Timestamp) -> Result<(), ApiError> {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_micros()) * 1_000)
        .map_err(|error| ApiError::internal(format!("timestamp {} out of range: {error}", at.as_micros())))?;
    let Ok(year @ 0..=9999) = u32::try_from(time.year()) else {
        text.push_str(&rfc3339_described(time, at)?);
        return Ok(());
    };
    push_digits(text, year, 4);
    text.push('-');
    push_digits(text, u32::from(u8::from(time.month())), 2);
    text.push('-');
    push_digits(text, u32::from(time.day()), 2);
    text.push('T');
    push_digits(text, u32::from(time.hour()), 2);
    text.push(':');
    push_digits(text, u32::from(time.minute()), 2);
    text.push(':');
    push_digits(text, u32::from(time.second()), 2);
    text.push('.');
    push_digits(text, time.microsecond(), 6);
    text.push('Z');
    Ok(())
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(text: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        text.push(char::from_digit(value / 10_u32.pow(place) % 10, 10).unwrap_or('0'));
    }
}

/// The same format by the `time` crate's description: years outside 0–9999, and the reference
/// the fast path is tested against.
fn rfc3339_described(time: OffsetDateTime, at: Timestamp) -> Result<String, ApiError> {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time.format(format)
        .map_err(|error| ApiError::internal(format!("timestamp {} not formattable: {error}", at.as_micros())))
}

/// An amount as the API writes it: the currency's scale exactly.
pub fn money(value: Decimal, currency: Currency) -> String {
    let mut text = String::with_capacity(24);
    push_decimal(&mut text, with_currency_scale(value, currency));
    text
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    /// `null` for system accounts (settlement, fees, FX clearing).
    pub user_id: Option<String>,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    pub status: &'static str,
    pub balance: String,
    pub held: String,
    pub available_balance: String,
    pub credit_limit: String,
    pub created_at: String,
}

impl AccountView {
    pub fn of(account: &Account) -> Result<AccountView, ApiError> {
        let currency = account.currency;
        let available = account
            .available()
            .map_err(|_| ApiError::internal(format!("account {}: available balance overflows", account.id)))?;
        Ok(AccountView {
            id: account.id.to_string(),
            user_id: account.owner.map(|owner| owner.to_string()),
            currency: currency.code(),
            status: account.status.as_str(),
            balance: money(account.balance(), currency),
            held: money(account.held(), currency),
            available_balance: money(available, currency),
            credit_limit: money(account.credit_limit(), currency),
            created_at: rfc3339(account.created_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub transfer_id: String,
    pub amount: String,
}

/// The admin view of an account: the account, its kind, every live hold, and its newest AML
/// flags (`aml::ACCOUNT_FLAGS_MAX`; the flag listing has them all).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminAccountView {
    #[serde(flatten)]
    pub account: AccountView,
    pub kind: &'static str,
    pub holds: Vec<HoldView>,
    pub aml_flags: Vec<crate::aml::AmlFlagView>,
}

impl AdminAccountView {
    pub fn of(account: &Account) -> Result<AdminAccountView, ApiError> {
        let mut holds: Vec<HoldView> = account
            .position
            .holds()
            .map(|(transfer, amount)| HoldView {
                transfer_id: transfer.to_string(),
                amount: money(amount, account.currency),
            })
            .collect();
        // Holds live in a map; a stable order keeps the answer reproducible.
        holds.sort_by(|a, b| a.transfer_id.cmp(&b.transfer_id));
        Ok(AdminAccountView {
            account: AccountView::of(account)?,
            kind: account.kind.as_str(),
            holds,
            aml_flags: Vec::new(),
        })
    }
}

/// The payee of an external transfer, as the transfer holds it (a saved beneficiary's
/// `id` and `created_at` are not part of the transfer).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TransferBeneficiary)]
pub struct BeneficiaryView {
    pub name: String,
    pub iban: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `processing`, `pending`, `completed`, `failed`, `rejected`, `cancelled` or `expired`
    /// (a pending transfer no one decided by its `pending_expires_at`; terminal, hold released).
    #[schema(pattern = "^(processing|pending|completed|failed|rejected|cancelled|expired)$")]
    pub status: &'static str,
    pub source_account_id: String,
    /// For `external` transfers, the settlement account the money leaves Tally through.
    pub destination_account_id: String,
    pub amount: String,
    pub currency: &'static str,
    pub fee: String,
    /// `null` when no conversion happened.
    pub fx_rate: Option<String>,
    pub destination_amount: String,
    pub destination_currency: &'static str,
    pub total_debited: String,
    pub pending_reason: Option<&'static str>,
    /// The error code the transfer failed with (`INSUFFICIENT_FUNDS`, ...).
    pub failure_reason: Option<&'static str>,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// Where an `external` transfer pays out; `null` otherwise.
    pub beneficiary: Option<BeneficiaryView>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// The client's own key-value pairs given at creation, keys sorted; `{}` when none.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When this transfer, if still `pending`, ends `expired` (its hold released): its
    /// `pending_expires_in`, else its type's `pending_timeout_secs`, counted from
    /// `created_at`. `null`: it waits for a decision however long (or it never was pending).
    /// Kept once the transfer is decided, as the deadline it had.
    pub pending_expires_at: Option<String>,
}

impl TransferView {
    pub fn of(transfer: &Transfer) -> Result<TransferView, ApiError> {
        let total = transfer
            .total_debited()
            .map_err(|_| ApiError::internal(format!("transfer {}: total overflows", transfer.id)))?;
        Ok(TransferView {
            id: transfer.id.to_string(),
            kind: transfer.kind.as_str(),
            status: transfer.status.as_str(),
            source_account_id: transfer.source.to_string(),
            destination_account_id: transfer.destination.to_string(),
            amount: money(transfer.amount, transfer.currency),
            currency: transfer.currency.code(),
            fee: money(transfer.fee, transfer.currency),
            fx_rate: transfer.fx_rate.map(|rate| rate.normalize().to_string()),
            destination_amount: money(transfer.destination_amount, transfer.destination_currency),
            destination_currency: transfer.destination_currency.code(),
            total_debited: money(total, transfer.currency),
            pending_reason: transfer.pending_reason.map(|reason| reason.as_str()),
            failure_reason: transfer.failure_reason.map(|code| code.as_str()),
            reference: transfer.reference.as_deref().map(str::to_owned),
            description: transfer.description.as_deref().map(str::to_owned),
            beneficiary: transfer
                .beneficiary
                .as_ref()
                .filter(|_| transfer.kind == TransferKind::External)
                .map(|beneficiary| BeneficiaryView { name: beneficiary.name.clone(), iban: beneficiary.iban.clone() }),
            created_at: rfc3339(transfer.created_at)?,
            completed_at: transfer.completed_at.map(rfc3339).transpose()?,
            metadata: crate::metadata::view(&transfer.metadata),
            pending_expires_at: transfer.pending_expires_at.map(rfc3339).transpose()?,
        })
    }

    /// `serde_json::to_string(&TransferView::of(transfer)?)`, written field by field: the same
    /// bytes (`transfer_json_is_the_views_serialization`, over random transfers with every
    /// optional field and text that needs escaping), without the view's dozen `String`s or
    /// serde_json escaping ids, amounts and times byte by byte. A transfer's event and its
    /// answer are this text (`events.rs`): under `scripts/callgrind` it took ~13,000
    /// instructions per transfer by way of the view. A field added to the view must be added
    /// here too; the test fails until it is.
    pub fn json(transfer: &Transfer) -> Result<String, ApiError> {
        let total = transfer
            .total_debited()
            .map_err(|_| ApiError::internal(format!("transfer {}: total overflows", transfer.id)))?;
        let mut out = String::with_capacity(720);
        out.push('{');
        write::field(&mut out, "id");
        write::uuid(&mut out, transfer.id.as_uuid());
        write::field(&mut out, "type");
        write::plain(&mut out, transfer.kind.as_str());
        write::field(&mut out, "status");
        write::plain(&mut out, transfer.status.as_str());
        write::field(&mut out, "source_account_id");
        write::uuid(&mut out, transfer.source.as_uuid());
        write::field(&mut out, "destination_account_id");
        write::uuid(&mut out, transfer.destination.as_uuid());
        write::field(&mut out, "amount");
        push_money(&mut out, transfer.amount, transfer.currency);
        write::field(&mut out, "currency");
        write::plain(&mut out, transfer.currency.code());
        write::field(&mut out, "fee");
        push_money(&mut out, transfer.fee, transfer.currency);
        write::field(&mut out, "fx_rate");
        match transfer.fx_rate {
            Some(rate) => push_display(&mut out, rate.normalize()),
            None => out.push_str("null"),
        }
        write::field(&mut out, "destination_amount");
        push_money(&mut out, transfer.destination_amount, transfer.destination_currency);
        write::field(&mut out, "destination_currency");
        write::plain(&mut out, transfer.destination_currency.code());
        write::field(&mut out, "total_debited");
        push_money(&mut out, total, transfer.currency);
        write::field(&mut out, "pending_reason");
        write::option(&mut out, transfer.pending_reason.map(|reason| reason.as_str()), write::plain);
        write::field(&mut out, "failure_reason");
        write::option(&mut out, transfer.failure_reason.map(|code| code.as_str()), write::plain);
        write::field(&mut out, "reference");
        write::option(&mut out, transfer.reference.as_deref(), write::text);
        write::field(&mut out, "description");
        write::option(&mut out, transfer.description.as_deref(), write::text);
        write::field(&mut out, "beneficiary");
        match transfer.beneficiary.as_ref().filter(|_| transfer.kind == TransferKind::External) {
            Some(beneficiary) => {
                out.push_str("{\"name\":");
                write::text(&mut out, &beneficiary.name);
                out.push_str(",\"iban\":");
                write::text(&mut out, &beneficiary.iban);
                out.push('}');
            }
            None => out.push_str("null"),
        }
        write::field(&mut out, "created_at");
        push_time(&mut out, transfer.created_at)?;
        write::field(&mut out, "completed_at");
        match transfer.completed_at {
            Some(at) => push_time(&mut out, at)?,
            None => out.push_str("null"),
        }
        write::field(&mut out, "metadata");
        out.push('{');
        // Sorted by key with keys unique (`Metadata`), as the view's `BTreeMap` writes them.
        for (i, (key, value)) in transfer.metadata.pairs().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write::text(&mut out, key);
            out.push(':');
            write::text(&mut out, value);
        }
        out.push('}');
        write::field(&mut out, "pending_expires_at");
        match transfer.pending_expires_at {
            Some(at) => push_time(&mut out, at)?,
            None => out.push_str("null"),
        }
        out.push('}');
        Ok(out)
    }
}

fn push_money(out: &mut String, value: Decimal, currency: Currency) {
    push_display(out, with_currency_scale(value, currency));
}

/// A number's text as a JSON string (digits, sign and point need no escaping).
fn push_display(out: &mut String, value: Decimal) {
    out.push('"');
    push_decimal(out, value);
    out.push('"');
}

fn push_time(out: &mut String, at: Timestamp) -> Result<(), ApiError> {
    out.push('"');
    push_rfc3339(out, at)?;
    out.push('"');
    Ok(())
}

/// The admin view of a transfer: the transfer plus who initiated it and how far its saga got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminTransferView {
    #[serde(flatten)]
    pub transfer: TransferView,
    /// The user on whose behalf it ran; `null` for system-made transfers.
    pub user_id: Option<String>,
    pub saga_step: &'static str,
}

impl AdminTransferView {
    pub fn of(transfer: &Transfer) -> Result<AdminTransferView, ApiError> {
        Ok(AdminTransferView {
            transfer: TransferView::of(transfer)?,
            user_id: transfer.initiated_by.map(|user| user.to_string()),
            saga_step: transfer.step.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn transfer_json_is_the_views_serialization() {
        use tally_engine::transfer::Beneficiary;
        use tally_engine::{
            AccountId, ErrorCode, Metadata, PendingReason, TransferId, TransferRequest, TransferStatus,
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift: reproducible.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Text a client may send: quotes, backslashes, control characters, non-ASCII.
        let texts = ["wrk", "invoice \"7\"", "back\\slash", "tab\tnew\nline\u{1}\u{1f}", "café ✓ 🙂", "</script>", ""];
        let kinds =
            [TransferKind::Internal, TransferKind::External, TransferKind::AdminCredit, TransferKind::AdminDebit];
        let currencies = [Currency::USD, Currency::JPY, Currency::KWD, Currency::BTC, Currency::ETH];
        let text = |n: u64| texts[(n % texts.len() as u64) as usize].to_owned();
        for i in 0..2_000_u64 {
            let currency = currencies[(next() % 5) as usize];
            let destination_currency = currencies[(next() % 5) as usize];
            let signed = |n: u64| i64::try_from(n >> 4).unwrap() * if n.is_multiple_of(2) { 1 } else { -1 };
            let metadata = Metadata::new(
                (0..next() % 4)
                    .map(|k| (format!("key_{k}_{}", next() % 100), text(next()).replace(char::is_control, "") + "v"))
                    .collect(),
            )
            .unwrap();
            let mut transfer = Transfer::start(TransferRequest {
                id: TransferId::from_u128(u128::from(next()) << 64 | u128::from(next())),
                kind: kinds[(i % 4) as usize],
                source: AccountId::from_u128(u128::from(next())),
                destination: AccountId::from_u128(u128::from(next()) << 32),
                amount: Decimal::new(signed(next()), (next() % 9) as u32),
                currency,
                fee: Decimal::new(signed(next()) % 1_000_000, (next() % 4) as u32),
                reference: (next() % 3 != 0).then(|| text(next()).into()),
                description: (next() % 3 == 0).then(|| text(next()).into()),
                beneficiary: (next() % 2 == 0).then(|| Beneficiary { name: text(next()), iban: text(next()) }),
                initiated_by: None,
                created_at: Timestamp::from_micros(i64::try_from(next() % 253_402_300_799_999_999).unwrap()),
                metadata,
            });
            transfer.status = TransferStatus::ALL[(i % 7) as usize];
            transfer.destination_currency = destination_currency;
            transfer.destination_amount = Decimal::new(signed(next()) % 10_000_000_000, (next() % 6) as u32);
            transfer.fx_rate = (next() % 2 == 0).then(|| Decimal::new(i64::try_from(next() >> 20).unwrap(), 9));
            transfer.pending_reason =
                [None, Some(PendingReason::ManualExecution), Some(PendingReason::AmlReview)][(next() % 3) as usize];
            transfer.failure_reason = (next() % 4 == 0).then_some(ErrorCode::InsufficientFunds);
            transfer.completed_at = (next() % 2 == 0).then(|| Timestamp::from_micros((next() >> 12) as i64));
            transfer.pending_expires_at = (next() % 3 == 0).then(|| Timestamp::from_micros((next() >> 12) as i64));
            let Ok(view) = TransferView::of(&transfer) else {
                assert!(TransferView::json(&transfer).is_err(), "both refuse a total that overflows");
                continue;
            };
            assert_eq!(TransferView::json(&transfer).unwrap(), serde_json::to_string(&view).unwrap(), "{transfer:?}");
        }
    }

    #[test]
    fn times_are_rfc_3339_utc_with_microseconds() {
        assert_eq!(rfc3339(Timestamp::from_micros(0)).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(Timestamp::from_micros(1_714_564_800_123_456)).unwrap(), "2024-05-01T12:00:00.123456Z");
    }

    #[test]
    fn the_digit_by_digit_path_writes_what_the_time_crates_description_writes() {
        let described = |micros: i64| {
            let at = Timestamp::from_micros(micros);
            let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).unwrap();
            rfc3339_described(time, at).unwrap()
        };
        // Edges (before 1970, leap days, the last microsecond of 9999), then a spread.
        let mut samples =
            vec![0, -1, -62_167_219_200_000_000, 951_782_400_000_000, 1_709_164_799_999_999, 253_402_300_799_999_999];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..10_000 {
            // xorshift: reproducible, and over the whole range 0000–9999.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x.rem_euclid(315_537_897_600_000_000) - 62_167_219_200_000_000);
        }
        for micros in samples {
            assert_eq!(rfc3339(Timestamp::from_micros(micros)).unwrap(), described(micros), "at {micros} µs");
        }
    }

    #[test]
    fn money_has_exactly_the_currency_scale() {
        assert_eq!(money(dec!(125.5), Currency::USD), "125.50");
        assert_eq!(money(dec!(7), Currency::JPY), "7");
        assert_eq!(money(dec!(0), Currency::BTC), "0.00000000");
        assert_eq!(money(dec!(0.000000000000000001), Currency::ETH), "0.000000000000000001");
    }
}
