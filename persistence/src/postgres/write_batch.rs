//! A small journal batch as one call of `tally_write_batch` (migration 0060; 0061 writes its
//! events as one row): the fence, postings, events, new and replaced transfer rows, holds
//! removed and placed, and the batch's link of the hash chain, each passed as whole columns
//! (arrays). Sent alone, the call is its own implicit transaction: one round trip
//! (`postgres::write_plan` decides which batches).
//!
//! Why: written as a dozen statements (three `COPY`s of two round trips each, the holds, the
//! upsert, the fence, `BEGIN`, `COMMIT`), each round trip wakes the Postgres backend and then
//! this writer. At 1,000 transfers/s, when a batch carries a few transfers, that was 4.3 sends
//! to Postgres per transfer and most of the server's CPU (`README.md`, "Benchmarks").

use rust_decimal::Decimal;
use sqlx::postgres::PgConnection;
use tally_engine::{ErrorCode, PendingReason};
use uuid::Uuid;

use super::{classify, leg_position, seq_to_db, version_to_db};
use crate::batch::{BatchPlan, TransferRow};
use crate::store::StoreError;
use crate::store::corrupt;

/// The call, its arguments typed so Postgres picks the function without guessing.
const CALL: &str = "SELECT tally_write_batch(
    $1::int2, $2::int8, $3::int8, $4::int8, $5::int8, $6::bytea, $7::bytea,
    $8::uuid[], $9::int8[], $10::int8[], $11::uuid[], $12::text[], $13::text[], $14::numeric[], $15::numeric[],
    $16::int2[], $17::int8[],
    $18::uuid[], $19::text[], $20::text[], $21::text[], $22::uuid[], $23::uuid[], $24::numeric[], $25::text[],
    $26::numeric[], $27::numeric[], $28::numeric[], $29::text[], $30::text[], $31::text[], $32::text[],
    $33::text[], $34::text[], $35::text[], $36::uuid[], $37::uuid[], $38::text[], $39::text[], $40::int8[],
    $41::int8[], $42::int8[], $43::text[], $44::int8[], $45::int4[], $46::int4[], $47::bool[], $48::uuid[],
    $49::int8[],
    $50::int2, $51::int8, $52::int8[], $53::text[], $54::uuid[], $55::text[],
    $56::uuid[], $57::uuid[], $58::uuid[], $59::uuid[], $60::numeric[], $61::int8[])";

/// Writes `plan` on `connection` as one statement, which is its own transaction.
pub(super) async fn write(connection: &mut PgConnection, plan: &BatchPlan) -> Result<(), StoreError> {
    let shard = i16::try_from(plan.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?;
    // A batch without records (a snapshot flush) advances no fence and writes no link.
    let fenced = !plan.records.is_empty();
    let digest = fenced.then(|| crate::events::chain::batch_digest(plan));
    let postings = Postings::of(plan)?;
    let transfers = Transfers::of(&plan.transfers_new, &plan.transfers_upsert)?;
    let events = &plan.events;
    let event_seqs = events.iter().map(|e| seq_to_db(e.seq)).collect::<Result<Vec<_>, _>>()?;
    let placed = &plan.holds_placed;
    let placed_seqs = placed.iter().map(|(_, _, _, seq)| seq_to_db(*seq)).collect::<Result<Vec<_>, _>>()?;
    sqlx::query(CALL)
        .bind(fenced.then_some(shard))
        .bind(seq_to_db(plan.first_seq.saturating_sub(1))?)
        .bind(seq_to_db(plan.last_seq)?)
        .bind(plan.booked_at.as_micros())
        .bind(seq_to_db(plan.first_seq)?)
        .bind(digest.as_ref().map(|digest| digest.as_slice()))
        .bind(crate::events::chain::GENESIS.as_slice())
        .bind(postings.account)
        .bind(postings.booked_at)
        .bind(postings.version)
        .bind(postings.transfer)
        .bind(postings.currency)
        .bind(postings.direction)
        .bind(postings.amount)
        .bind(postings.balance_after)
        .bind(postings.shard)
        .bind(postings.seq)
        .bind(transfers.id)
        .bind(transfers.kind)
        .bind(transfers.status)
        .bind(transfers.step)
        .bind(transfers.source)
        .bind(transfers.destination)
        .bind(transfers.amount)
        .bind(transfers.currency)
        .bind(transfers.fee)
        .bind(transfers.fx_rate)
        .bind(transfers.destination_amount)
        .bind(transfers.destination_currency)
        .bind(transfers.pending_reason)
        .bind(transfers.failure_reason)
        .bind(transfers.reference)
        .bind(transfers.description)
        .bind(transfers.beneficiary_name)
        .bind(transfers.beneficiary_iban)
        .bind(transfers.initiated_by)
        .bind(transfers.key_scope)
        .bind(transfers.key)
        .bind(transfers.fingerprint)
        .bind(transfers.created_at)
        .bind(transfers.completed_at)
        .bind(transfers.seq)
        .bind(transfers.metadata)
        .bind(transfers.pending_expires_at)
        .bind(transfers.leg_from)
        .bind(transfers.leg_to)
        .bind(transfers.upsert)
        .bind(transfers.leg_accounts)
        .bind(transfers.leg_versions)
        .bind(shard)
        .bind(plan.booked_at.as_micros())
        .bind(event_seqs)
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.object).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.as_deref()).collect::<Vec<_>>())
        .bind(plan.holds_removed.iter().map(|(account, _)| account.as_uuid()).collect::<Vec<_>>())
        .bind(plan.holds_removed.iter().map(|(_, transfer)| transfer.as_uuid()).collect::<Vec<_>>())
        .bind(placed.iter().map(|(account, _, _, _)| account.as_uuid()).collect::<Vec<_>>())
        .bind(placed.iter().map(|(_, transfer, _, _)| transfer.as_uuid()).collect::<Vec<_>>())
        .bind(placed.iter().map(|(_, _, amount, _)| *amount).collect::<Vec<_>>())
        .bind(placed_seqs)
        .execute(connection)
        .await
        .map_err(classify)?;
    Ok(())
}

/// The batch's postings as columns.
struct Postings {
    account: Vec<Uuid>,
    booked_at: Vec<i64>,
    version: Vec<i64>,
    transfer: Vec<Uuid>,
    currency: Vec<&'static str>,
    direction: Vec<&'static str>,
    amount: Vec<Decimal>,
    balance_after: Vec<Decimal>,
    shard: Vec<i16>,
    seq: Vec<i64>,
}

impl Postings {
    fn of(plan: &BatchPlan) -> Result<Postings, StoreError> {
        let n = plan.postings.len();
        let mut columns = Postings {
            account: Vec::with_capacity(n),
            booked_at: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            transfer: Vec::with_capacity(n),
            currency: Vec::with_capacity(n),
            direction: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
            balance_after: Vec::with_capacity(n),
            shard: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
        };
        for posting in &plan.postings {
            columns.account.push(posting.account.as_uuid());
            columns.booked_at.push(posting.booked_at.as_micros());
            columns.version.push(version_to_db(posting.version)?);
            columns.transfer.push(posting.transfer.as_uuid());
            columns.currency.push(posting.currency.code());
            columns.direction.push(posting.direction.as_str());
            columns.amount.push(posting.amount);
            columns.balance_after.push(posting.balance_after);
            columns.shard.push(i16::try_from(posting.shard).map_err(|_| corrupt("shard beyond SMALLINT"))?);
            columns.seq.push(seq_to_db(posting.seq)?);
        }
        Ok(columns)
    }
}

/// The batch's transfer rows as columns: new rows (`upsert` false) then the rows that replace
/// stored ones (true). A row's legs are the slice `leg_from..=leg_to` (1-based) of the two
/// flat leg arrays; `leg_to < leg_from` for a row without legs. Also the columns of the `COPY`
/// path's upsert (`postgres::upsert_transfers`), which ignores `upsert`.
pub(super) struct Transfers<'a> {
    pub(super) id: Vec<Uuid>,
    pub(super) kind: Vec<&'static str>,
    pub(super) status: Vec<&'static str>,
    pub(super) step: Vec<&'static str>,
    pub(super) source: Vec<Uuid>,
    pub(super) destination: Vec<Uuid>,
    pub(super) amount: Vec<Decimal>,
    pub(super) currency: Vec<&'static str>,
    pub(super) fee: Vec<Decimal>,
    pub(super) fx_rate: Vec<Option<Decimal>>,
    pub(super) destination_amount: Vec<Decimal>,
    pub(super) destination_currency: Vec<&'static str>,
    pub(super) pending_reason: Vec<Option<&'static str>>,
    pub(super) failure_reason: Vec<Option<&'static str>>,
    pub(super) reference: Vec<Option<&'a str>>,
    pub(super) description: Vec<Option<&'a str>>,
    pub(super) beneficiary_name: Vec<Option<&'a str>>,
    pub(super) beneficiary_iban: Vec<Option<&'a str>>,
    pub(super) initiated_by: Vec<Option<Uuid>>,
    pub(super) key_scope: Vec<Option<Uuid>>,
    pub(super) key: Vec<Option<&'a str>>,
    pub(super) fingerprint: Vec<Option<&'a str>>,
    pub(super) created_at: Vec<i64>,
    pub(super) completed_at: Vec<Option<i64>>,
    pub(super) seq: Vec<i64>,
    pub(super) metadata: Vec<Option<String>>,
    pub(super) pending_expires_at: Vec<Option<i64>>,
    pub(super) leg_from: Vec<i32>,
    pub(super) leg_to: Vec<i32>,
    pub(super) upsert: Vec<bool>,
    pub(super) leg_accounts: Vec<Uuid>,
    pub(super) leg_versions: Vec<i64>,
}

impl<'a> Transfers<'a> {
    pub(super) fn of(new: &'a [TransferRow], replacing: &'a [TransferRow]) -> Result<Transfers<'a>, StoreError> {
        let n = new.len() + replacing.len();
        let mut columns = Transfers {
            id: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            step: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            destination: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
            currency: Vec::with_capacity(n),
            fee: Vec::with_capacity(n),
            fx_rate: Vec::with_capacity(n),
            destination_amount: Vec::with_capacity(n),
            destination_currency: Vec::with_capacity(n),
            pending_reason: Vec::with_capacity(n),
            failure_reason: Vec::with_capacity(n),
            reference: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            beneficiary_name: Vec::with_capacity(n),
            beneficiary_iban: Vec::with_capacity(n),
            initiated_by: Vec::with_capacity(n),
            key_scope: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
            fingerprint: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            completed_at: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            pending_expires_at: Vec::with_capacity(n),
            leg_from: Vec::with_capacity(n),
            leg_to: Vec::with_capacity(n),
            upsert: Vec::with_capacity(n),
            leg_accounts: Vec::new(),
            leg_versions: Vec::new(),
        };
        for row in new {
            columns.push(row, false)?;
        }
        for row in replacing {
            columns.push(row, true)?;
        }
        Ok(columns)
    }

    fn push(&mut self, row: &'a TransferRow, upsert: bool) -> Result<(), StoreError> {
        let t = &row.transfer;
        self.id.push(t.id.as_uuid());
        self.kind.push(t.kind.as_str());
        self.status.push(t.status.as_str());
        self.step.push(t.step.as_str());
        self.source.push(t.source.as_uuid());
        self.destination.push(t.destination.as_uuid());
        self.amount.push(t.amount);
        self.currency.push(t.currency.code());
        self.fee.push(t.fee);
        self.fx_rate.push(t.fx_rate);
        self.destination_amount.push(t.destination_amount);
        self.destination_currency.push(t.destination_currency.code());
        self.pending_reason.push(t.pending_reason.map(PendingReason::as_str));
        self.failure_reason.push(t.failure_reason.map(ErrorCode::as_str));
        self.reference.push(t.reference.as_deref());
        self.description.push(t.description.as_deref());
        self.beneficiary_name.push(t.beneficiary.as_ref().map(|b| b.name.as_str()));
        self.beneficiary_iban.push(t.beneficiary.as_ref().map(|b| b.iban.as_str()));
        self.initiated_by.push(t.initiated_by.map(|user| user.as_uuid()));
        self.key_scope.push(t.idempotency.as_ref().map(|i| i.scope));
        self.key.push(t.idempotency.as_ref().map(|i| &*i.key));
        self.fingerprint.push(t.idempotency.as_ref().map(|i| &*i.fingerprint));
        self.created_at.push(t.created_at.as_micros());
        self.completed_at.push(t.completed_at.map(|at| at.as_micros()));
        self.seq.push(seq_to_db(row.seq)?);
        self.metadata.push(crate::metadata::to_db(&t.metadata));
        self.pending_expires_at.push(t.pending_expires_at.map(|at| at.as_micros()));
        self.upsert.push(upsert);
        self.leg_from.push(leg_position(self.leg_accounts.len() + 1)?);
        for (account, version) in &row.legs {
            self.leg_accounts.push(account.as_uuid());
            self.leg_versions.push(version_to_db(*version)?);
        }
        self.leg_to.push(leg_position(self.leg_accounts.len())?);
        Ok(())
    }
}
