#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use tally_engine::{AccountKind, AccountSnapshot, TransferKind, TransferRequest};

use super::*;

fn t(n: u128) -> TransferId {
    TransferId::from_u128(n)
}

fn event(
    seq: u64,
    account: u128,
    event: AccountEvent,
    balance: Decimal,
    held: Decimal,
    version: u64,
) -> SequencedRecord {
    SequencedRecord {
        seq,
        record: Record::Account {
            account: AccountId::from_u128(account),
            currency: Currency::USD,
            event,
            after: AccountSnapshot { balance, held, credit_limit: dec!(0), status: AccountStatus::Active, version },
        },
    }
}

fn transfer(id: TransferId, status: TransferStatus, step: SagaStep) -> Transfer {
    let mut transfer = Transfer::start(TransferRequest {
        id,
        kind: TransferKind::Internal,
        source: AccountId::from_u128(1),
        destination: AccountId::from_u128(2),
        amount: dec!(30),
        currency: Currency::USD,
        fee: dec!(0),
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: None,
        created_at: Timestamp::default(),
        metadata: Default::default(),
    });
    transfer.status = status;
    transfer.step = step;
    transfer
}

fn state(seq: u64, transfer: Transfer) -> SequencedRecord {
    SequencedRecord { seq, record: Record::Transfer(Box::new(transfer)) }
}

/// Plans `records`; with `flush`, then writes every pending snapshot in the same batch (as a
/// direct commit does).
fn build(records: Vec<SequencedRecord>, plan_state: &mut PlanState, flush: bool) -> BatchPlan {
    let mut plan = BatchPlan::build(0, &Arc::new(records), plan_state, Timestamp::from_micros(1_000), 0);
    if flush {
        plan_state.begin_flush();
        plan.snapshots = plan_state.next_flush_slice(usize::MAX);
    }
    plan
}

/// A whole saga: its start, hold, credit, post and final state.
fn saga(first_seq: u64, id: TransferId) -> Vec<SequencedRecord> {
    vec![
        state(first_seq, transfer(id, TransferStatus::Processing, SagaStep::Started)),
        event(first_seq + 1, 1, AccountEvent::Held { transfer: id, amount: dec!(30) }, dec!(100), dec!(30), 1),
        event(
            first_seq + 2,
            2,
            AccountEvent::Credited { transfer: id, amount: dec!(30), admitted: false },
            dec!(30),
            dec!(0),
            1,
        ),
        event(first_seq + 3, 1, AccountEvent::Posted { transfer: id, amount: dec!(30) }, dec!(70), dec!(0), 2),
        state(first_seq + 4, transfer(id, TransferStatus::Completed, SagaStep::Posted)),
    ]
}

#[test]
fn a_saga_inside_one_batch_is_one_new_row_in_its_final_state_and_its_hold_never_touches_the_store() {
    let mut plan_state = PlanState::default();
    let plan = build(saga(10, t(5)), &mut plan_state, false);
    assert_eq!(plan.transfers_new.len(), 1, "written once, as new");
    assert_eq!(plan.transfers_new[0].transfer.status, TransferStatus::Completed);
    assert!(plan.transfers_upsert.is_empty());
    assert!(plan.holds_placed.is_empty() && plan.holds_removed.is_empty(), "the hold netted out");
    assert_eq!(plan.postings.len(), 2);
    assert_eq!((plan.postings[0].account, plan.postings[0].version), (AccountId::from_u128(2), 1));
    assert_eq!((plan.postings[1].balance_after, plan.postings[1].version), (dec!(70), 2));
    assert!(plan.snapshots.is_empty(), "no flush asked for");
    assert_eq!(plan_state.dirty_snapshots(), 2, "both balances wait for the next flush");
    assert_eq!(plan_state.transfers_in_flight(), 0);
}

#[test]
fn a_saga_cut_after_a_posting_is_written_processing_with_its_legs_then_replaced_by_its_final_state() {
    let mut plan_state = PlanState::default();
    let records = saga(10, t(5));
    let first = build(records[..3].to_vec(), &mut plan_state, false);
    assert!(first.transfers_upsert.is_empty(), "the store has no row of it yet");
    assert_eq!(first.transfers_new.len(), 1, "money moved: recovery must know the transfer");
    let row = &first.transfers_new[0];
    assert_eq!(row.transfer.status, TransferStatus::Processing);
    assert_eq!(row.legs, vec![(AccountId::from_u128(2), 1)], "the credit is the one leg so far");
    assert_eq!(first.holds_placed.len(), 1, "the hold outlives the batch");
    let second = build(records[3..].to_vec(), &mut plan_state, false);
    assert!(second.transfers_new.is_empty());
    assert_eq!(second.transfers_upsert.len(), 1, "the row written before is replaced");
    assert_eq!(second.transfers_upsert[0].transfer.status, TransferStatus::Completed);
    assert!(second.transfers_upsert[0].legs.is_empty(), "a final row needs no legs");
    assert_eq!(second.holds_removed.len(), 1);
    assert_eq!(plan_state.transfers_in_flight(), 0);
}

#[test]
fn a_saga_cut_twice_carries_every_leg_so_far_into_its_processing_rows() {
    let mut plan_state = PlanState::default();
    let records = saga(10, t(5));
    let first = build(records[..3].to_vec(), &mut plan_state, false);
    assert_eq!(first.transfers_new[0].legs, vec![(AccountId::from_u128(2), 1)]);
    // The post, with the transfer still processing: its row is replaced with both legs.
    let second = build(records[3..4].to_vec(), &mut plan_state, false);
    assert!(second.transfers_new.is_empty());
    assert_eq!(second.transfers_upsert.len(), 1);
    assert_eq!(second.transfers_upsert[0].legs, vec![(AccountId::from_u128(2), 1), (AccountId::from_u128(1), 2)]);
    assert_eq!(plan_state.transfers_in_flight(), 1);
    let third = build(records[4..].to_vec(), &mut plan_state, false);
    assert_eq!(third.transfers_upsert[0].transfer.status, TransferStatus::Completed);
    assert!(third.transfers_upsert[0].legs.is_empty(), "a final row needs no legs");
    assert_eq!(plan_state.transfers_in_flight(), 0);
}

#[test]
fn a_saga_cut_before_any_posting_writes_nothing_for_the_transfer_until_it_ends() {
    let mut plan_state = PlanState::default();
    let records = saga(10, t(5));
    let first = build(records[..2].to_vec(), &mut plan_state, false);
    assert!(first.transfers_new.is_empty() && first.transfers_upsert.is_empty());
    assert_eq!(plan_state.transfers_in_flight(), 1, "remembered for the batch that ends it");
    let second = build(records[2..].to_vec(), &mut plan_state, false);
    assert_eq!(second.transfers_new.len(), 1, "no row existed: still a plain insert");
    assert_eq!(second.transfers_new[0].transfer.status, TransferStatus::Completed);
}

#[test]
fn a_pending_transfer_resumed_later_is_an_upsert_of_the_row_that_exists() {
    let mut plan_state = PlanState::default();
    let id = t(6);
    let pending = vec![
        state(1, transfer(id, TransferStatus::Processing, SagaStep::Started)),
        event(2, 1, AccountEvent::Held { transfer: id, amount: dec!(30) }, dec!(100), dec!(30), 0),
        state(3, transfer(id, TransferStatus::Pending, SagaStep::Held)),
    ];
    let first = build(pending, &mut plan_state, false);
    assert_eq!(first.transfers_new.len(), 1, "a pending transfer is written once, as new");
    assert_eq!(first.holds_placed.len(), 1);
    // After a restart the writer knows nothing of it: an admin executes it.
    let mut restarted = PlanState::default();
    let executed = vec![
        state(1, transfer(id, TransferStatus::Processing, SagaStep::Held)),
        event(2, 2, AccountEvent::Credited { transfer: id, amount: dec!(30), admitted: false }, dec!(30), dec!(0), 1),
        event(3, 1, AccountEvent::Posted { transfer: id, amount: dec!(30) }, dec!(70), dec!(0), 1),
        state(4, transfer(id, TransferStatus::Completed, SagaStep::Posted)),
    ];
    let second = build(executed, &mut restarted, false);
    assert!(second.transfers_new.is_empty(), "its row exists");
    assert_eq!(second.transfers_upsert.len(), 1);
    assert_eq!(second.holds_removed.len(), 1);
}

#[test]
fn a_flush_writes_one_snapshot_per_account_changed_since_the_last_one_newest_first_wins() {
    let mut plan_state = PlanState::default();
    build(saga(10, t(5)), &mut plan_state, false);
    let plan = build(saga(20, t(6)), &mut plan_state, true);
    assert_eq!(plan.snapshots.len(), 2, "two accounts, however many postings");
    let source = plan.snapshots.iter().find(|s| s.account == AccountId::from_u128(1)).unwrap();
    assert_eq!(source.version, 2, "the newest posting's version");
    assert!(!plan_state.has_dirty_snapshots(), "the flush took them all");
    plan_state.restore_snapshots(&plan);
    assert_eq!(plan_state.dirty_snapshots(), 2, "a failed flush gives them back");
}

#[test]
fn a_flush_is_written_a_slice_per_batch_in_account_order_and_newer_balances_wait_for_the_next() {
    let mut plan_state = PlanState::default();
    let credit = |seq: u64, account: u128, balance: Decimal, version: u64| {
        event(
            seq,
            account,
            AccountEvent::Credited { transfer: t(seq.into()), amount: dec!(1), admitted: false },
            balance,
            dec!(0),
            version,
        )
    };
    let changes: Vec<_> = (1..=5).map(|account| credit(account as u64, account, dec!(1), 1)).collect();
    build(changes, &mut plan_state, false);
    plan_state.begin_flush();
    assert!(plan_state.flush_under_way());
    let slice = |plan: &BatchPlan| plan.snapshots.iter().map(|s| (s.account, s.version)).collect::<Vec<_>>();
    let a = AccountId::from_u128;

    let first =
        BatchPlan::build(0, &Arc::new(vec![credit(6, 1, dec!(2), 2)]), &mut plan_state, Timestamp::default(), 2);
    assert_eq!(slice(&first), vec![(a(1), 1), (a(2), 1)], "the lowest accounts first, as set aside");
    let second =
        BatchPlan::build(0, &Arc::new(vec![credit(7, 4, dec!(2), 2)]), &mut plan_state, Timestamp::default(), 2);
    assert_eq!(slice(&second), vec![(a(3), 1), (a(4), 1)], "the flush's balance of 4, not the batch's newer one");
    let third = BatchPlan::build(0, &Arc::new(Vec::new()), &mut plan_state, Timestamp::default(), 2);
    assert_eq!(slice(&third), vec![(a(5), 1)]);
    assert!(!plan_state.flush_under_way());
    assert_eq!(plan_state.dirty_snapshots(), 2, "accounts 1 and 4 changed during the flush: the next one's");

    // A slice that failed goes back into the flush under way, ahead of newer balances.
    let changes: Vec<_> = (1..=3).map(|account| credit(10 + account as u64, account, dec!(3), 3)).collect();
    build(changes, &mut plan_state, false);
    plan_state.begin_flush();
    let failed = BatchPlan::build(0, &Arc::new(Vec::new()), &mut plan_state, Timestamp::default(), 2);
    assert_eq!(slice(&failed), vec![(a(1), 3), (a(2), 3)]);
    plan_state.restore_snapshots(&failed);
    let retried = BatchPlan::build(0, &Arc::new(Vec::new()), &mut plan_state, Timestamp::default(), 10);
    assert_eq!(slice(&retried), vec![(a(1), 3), (a(2), 3), (a(3), 3), (a(4), 2)]);
    assert!(!plan_state.has_dirty_snapshots());
}

#[test]
fn accounts_opened_and_status_changes_are_written_with_their_batch() {
    let mut plan_state = PlanState::default();
    let opened =
        Account::open(AccountId::from_u128(1), None, Currency::USD, AccountKind::User, dec!(0), Timestamp::default());
    let mut blocked = event(
        2,
        1,
        AccountEvent::StatusChanged { status: AccountStatus::Blocked, owner: None, opened_at: Timestamp::default() },
        dec!(0),
        dec!(0),
        0,
    );
    if let Record::Account { after, .. } = &mut blocked.record {
        after.status = AccountStatus::Blocked;
    }
    let plan = build(
        vec![SequencedRecord { seq: 1, record: Record::AccountOpened(Box::new(opened)) }, blocked],
        &mut plan_state,
        false,
    );
    assert_eq!(plan.accounts_opened.len(), 1);
    assert_eq!(plan.account_settings, vec![(AccountId::from_u128(1), AccountStatus::Blocked, dec!(0), 2)]);
}

#[test]
fn a_hold_removed_and_placed_again_in_one_batch_is_deleted_then_written_anew() {
    let mut plan_state = PlanState::default();
    let transfer = t(7);
    let records = vec![
        // The hold was placed in an earlier batch; this one releases it and places it again.
        event(20, 1, AccountEvent::Released { transfer, amount: dec!(10) }, dec!(100), dec!(0), 0),
        event(21, 1, AccountEvent::Held { transfer, amount: dec!(12) }, dec!(100), dec!(12), 0),
        // Placed, removed and placed again within the batch: only the last placement is new.
        event(22, 2, AccountEvent::Held { transfer, amount: dec!(1) }, dec!(100), dec!(1), 0),
        event(23, 2, AccountEvent::Released { transfer, amount: dec!(1) }, dec!(100), dec!(0), 0),
        event(24, 2, AccountEvent::Held { transfer, amount: dec!(2) }, dec!(100), dec!(2), 0),
    ];
    let plan = build(records, &mut plan_state, false);
    assert_eq!(plan.holds_removed, vec![(AccountId::from_u128(1), transfer)]);
    assert_eq!(
        plan.holds_placed,
        vec![(AccountId::from_u128(1), transfer, dec!(12), 21), (AccountId::from_u128(2), transfer, dec!(2), 24)]
    );
}

fn audit_record(action: &str) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::from_u128(99),
        at: Timestamp::from_micros(5),
        actor_kind: tally_engine::audit::ActorKind::User,
        actor_id: Some("admin".to_owned()),
        action: action.to_owned(),
        target_type: Some("transfer".to_owned()),
        target_id: Some(t(5).to_string()),
        subject_user: None,
        request_id: "req-1".to_owned(),
        ip: None,
        user_agent: None,
        details: "{}".to_owned(),
    }
}

#[test]
fn an_audit_record_rides_in_its_batch_and_changes_nothing_else_it_writes() {
    let mut plan_state = PlanState::default();
    let mut records = saga(10, t(5));
    records.push(SequencedRecord { seq: 15, record: Record::Audit(Box::new(audit_record("transfer.execute"))) });
    let audited = build(records, &mut plan_state, false);
    assert_eq!(audited.audits, vec![audit_record("transfer.execute")], "appended by the batch's transaction");
    let plain = build(saga(20, t(6)), &mut PlanState::default(), false);
    assert!(plain.audits.is_empty(), "ordinary traffic carries none");
    // The rest of the plan is what the saga alone writes: no posting, row or event of its own.
    assert_eq!(audited.postings.len(), plain.postings.len());
    assert_eq!(audited.transfers_new.len(), plain.transfers_new.len());
    assert_eq!(audited.events.len(), plain.events.len());
    assert_eq!(audited.last_seq, 15, "it takes its place in the journal's sequence");
}

#[test]
fn a_journal_keeps_back_the_hold_of_a_saga_cut_before_any_posting_and_writes_it_with_the_first_row() {
    let mut plan_state = PlanState::for_journal();
    let records = saga(10, t(5));
    let hold = (AccountId::from_u128(1), t(5));
    let first = build(records[..2].to_vec(), &mut plan_state, false);
    assert!(first.holds_placed.is_empty(), "no row of its transfer: the hold is kept back");
    assert_eq!(first.holds_kept, vec![(hold.0, hold.1, dec!(30))]);
    assert_eq!(plan_state.holds_kept(), 1);
    let second = build(records[2..3].to_vec(), &mut plan_state, false);
    assert_eq!(second.transfers_new.len(), 1, "money moved: the processing row is written");
    assert_eq!(second.holds_placed, vec![(hold.0, hold.1, dec!(30), 11)], "and the hold with it, at its own seq");
    assert_eq!(second.holds_settled, vec![hold]);
    assert_eq!(plan_state.holds_kept(), 0);
    let third = build(records[3..].to_vec(), &mut plan_state, false);
    assert_eq!(third.holds_removed, vec![hold], "now in the store: deleted when posted");
    assert!(third.holds_settled.is_empty());
}

#[test]
fn a_kept_hold_posted_before_its_transfer_has_a_row_is_never_written() {
    let mut plan_state = PlanState::for_journal();
    let records = saga(10, t(5));
    build(records[..2].to_vec(), &mut plan_state, false);
    let second = build(records[2..].to_vec(), &mut plan_state, false);
    assert!(second.holds_placed.is_empty() && second.holds_removed.is_empty(), "nothing to write or delete");
    assert_eq!(second.holds_settled, vec![(AccountId::from_u128(1), t(5))]);
    assert_eq!(second.transfers_new.len(), 1);
    assert_eq!(plan_state.holds_kept(), 0);
}

#[test]
fn a_kept_hold_goes_to_the_store_with_its_pending_transfer() {
    let mut plan_state = PlanState::for_journal();
    let id = t(7);
    let first = build(
        vec![
            state(1, transfer(id, TransferStatus::Processing, SagaStep::Started)),
            event(2, 1, AccountEvent::Held { transfer: id, amount: dec!(30) }, dec!(100), dec!(30), 0),
        ],
        &mut plan_state,
        false,
    );
    assert_eq!(first.holds_kept.len(), 1);
    let second = build(vec![state(3, transfer(id, TransferStatus::Pending, SagaStep::Held))], &mut plan_state, false);
    assert_eq!(second.transfers_new.len(), 1);
    assert_eq!(second.holds_placed, vec![(AccountId::from_u128(1), id, dec!(30), 2)]);
}

#[test]
fn holds_of_transfers_the_journal_does_not_run_and_of_direct_commits_are_written_as_placed() {
    // A hold with no saga of this journal behind it (an atomic batch's phase 1, a crypto
    // operation): written.
    let mut plan_state = PlanState::for_journal();
    let alone = build(
        vec![event(1, 1, AccountEvent::Held { transfer: t(8), amount: dec!(5) }, dec!(100), dec!(5), 0)],
        &mut plan_state,
        false,
    );
    assert_eq!(alone.holds_placed.len(), 1);
    assert!(alone.holds_kept.is_empty());
    // Direct commits keep nothing back: nothing would read a kept hold.
    let mut direct = PlanState::default();
    let first = build(saga(10, t(9))[..2].to_vec(), &mut direct, false);
    assert_eq!(first.holds_placed.len(), 1);
    assert!(first.holds_kept.is_empty());
}

/// An admission is written with its batch and deleted by the credit that keeps it (or its
/// withdrawal); one kept or withdrawn within its own batch touches nothing. A credit that
/// kept no promise (`admitted: false`, every ordinary transfer's) touches nothing either.
#[test]
fn admissions_are_written_and_deleted_netted_per_batch() {
    let bob = AccountId::from_u128(2);
    let admitted =
        |seq, id| event(seq, 2, AccountEvent::CreditAdmitted { transfer: id, amount: dec!(5) }, dec!(0), dec!(0), 0);
    let credited = |seq, id, admitted| {
        event(seq, 2, AccountEvent::Credited { transfer: id, amount: dec!(5), admitted }, dec!(5), dec!(0), 1)
    };
    let withdrawn =
        |seq, id| event(seq, 2, AccountEvent::CreditWithdrawn { transfer: id, amount: dec!(5) }, dec!(0), dec!(0), 0);
    let mut plan_state = PlanState::default();

    let plan = build(vec![admitted(1, t(1)), admitted(2, t(2))], &mut plan_state, false);
    assert_eq!(plan.admissions_placed, vec![(bob, t(1), dec!(5), 1), (bob, t(2), dec!(5), 2)]);
    assert!(plan.admissions_removed.is_empty());

    let plan =
        build(vec![credited(3, t(1), true), withdrawn(4, t(2)), credited(5, t(3), false)], &mut plan_state, false);
    assert_eq!(plan.admissions_removed, vec![(bob, t(1)), (bob, t(2))]);
    assert!(plan.admissions_placed.is_empty());

    let plan = build(
        vec![admitted(6, t(4)), credited(7, t(4), true), admitted(8, t(5)), withdrawn(9, t(5))],
        &mut plan_state,
        false,
    );
    assert!(plan.admissions_placed.is_empty() && plan.admissions_removed.is_empty(), "{plan:?}");
}
