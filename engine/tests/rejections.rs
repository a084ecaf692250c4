//! Table tests of every rejection the engine can answer with, walked in the order the variants
//! are declared (which is the order they are checked: an operation answers with the first
//! reason that applies). Each precedence row breaks one reason and every reason declared after
//! it, so a check that ran in the wrong order would answer with a later variant and fail.

// Helper functions outside `#[test]` build fixtures with `unwrap`/`panic`; a failure there is a
// failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_engine::rejection::{CreditRejection, HoldRejection};
use tally_engine::system_accounts::{self, SYSTEM_KINDS};
use tally_engine::{
    Account, AccountCommand, AccountEvent, AccountId, AccountKind, AccountRejection, AccountStatus, AmountError,
    CreateTransferRejection, Currency, ErrorCode, ExecutionMode, PendingReason, StatusAction, StatusRejection,
    Timestamp, Transfer, TransferId, TransferKind, TransferRequest, TransferStatus, TransferTypeSettings,
    TransitionRejection, UserId, parse_amount,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const SOURCE: AccountId = AccountId::from_u128(0x1001);
const DESTINATION: AccountId = AccountId::from_u128(0x1002);

fn transfer_id(n: u128) -> TransferId {
    TransferId::from_u128(n)
}

/// A user account in `currency` with the given balance and credit limit, active, no holds.
/// The balance is set directly because these tests are about the decision, not about how the
/// balance got there.
fn user_account(currency: Currency, balance: Decimal, credit_limit: Decimal) -> Account {
    let mut account = Account::open(
        SOURCE,
        Some(UserId::from_u128(7)),
        currency,
        AccountKind::User,
        credit_limit,
        Timestamp::from_micros(1),
    );
    account.position.balance = balance;
    account
}

fn system_account(kind: AccountKind, currency: Currency, balance: Decimal) -> Account {
    let mut account = Account::open(
        system_accounts::system_account_id(kind, currency),
        None,
        currency,
        kind,
        Decimal::ZERO,
        Timestamp::from_micros(1),
    );
    account.position.balance = balance;
    account
}

fn with_status(mut account: Account, status: AccountStatus) -> Account {
    account.status = status;
    account
}

/// Places a hold the way recovery restores one: through `apply`, without a funds check, so a
/// fixture can hold amounts a live `decide` would refuse.
fn with_hold(mut account: Account, transfer: TransferId, amount: Decimal) -> Account {
    account.apply(&AccountEvent::Held { transfer, amount }).unwrap();
    account
}

/// A valid internal request: 50.00 USD, no fee, two distinct accounts.
fn request() -> TransferRequest {
    TransferRequest {
        id: transfer_id(1),
        kind: TransferKind::Internal,
        source: SOURCE,
        destination: DESTINATION,
        amount: dec!(50),
        currency: Currency::USD,
        fee: dec!(0),
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: Some(UserId::from_u128(7)),
        created_at: Timestamp::from_micros(1),
        metadata: Default::default(),
    }
}

/// Enabled, automatic, and limits 10..=100 so that the default request (50) sits inside them.
fn settings() -> TransferTypeSettings {
    TransferTypeSettings {
        enabled: true,
        execution_mode: ExecutionMode::Auto,
        min_amount: Some(dec!(10)),
        max_amount: Some(dec!(100)),
        pending_timeout_secs: None,
    }
}

/// The position of a create-transfer rejection in its enum's declaration order. The match has
/// no wildcard, so adding a variant fails to compile until it is placed here and in the tables.
fn declared_rank(rejection: &CreateTransferRejection) -> usize {
    match rejection {
        CreateTransferRejection::InvalidAmount(_) => 0,
        CreateTransferRejection::InvalidFee => 1,
        CreateTransferRejection::SameAccount => 2,
        CreateTransferRejection::TransferTypeDisabled => 3,
        CreateTransferRejection::AmountLimitExceeded => 4,
        CreateTransferRejection::FxRateNotFound { .. } => 5,
        CreateTransferRejection::ConvertsToNothing => 6,
        CreateTransferRejection::SourceNotFound => 7,
        CreateTransferRejection::SourceNotActive { .. } => 8,
        CreateTransferRejection::SourceCurrencyMismatch { .. } => 9,
        CreateTransferRejection::InsufficientFunds { .. } => 10,
        CreateTransferRejection::DestinationNotFound => 11,
        CreateTransferRejection::DestinationNotActive { .. } => 12,
        CreateTransferRejection::DestinationCurrencyMismatch { .. } => 13,
        CreateTransferRejection::Overflow => 14,
        CreateTransferRejection::Blocked => 15,
    }
}

// ---------------------------------------------------------------------------------------------
// TransferRequest::validate
// ---------------------------------------------------------------------------------------------

#[test]
fn validate_refuses_each_invalid_amount_with_its_amount_error() {
    let usd_max = Currency::USD.amount_max();
    let jpy_max = Currency::JPY.amount_max();
    let cases: Vec<(Decimal, Currency, AmountError)> = vec![
        (dec!(0), Currency::USD, AmountError::NotPositive),
        (dec!(0.00), Currency::USD, AmountError::NotPositive),
        (dec!(-1), Currency::USD, AmountError::NotPositive),
        (dec!(-0.01), Currency::USD, AmountError::NotPositive),
        (dec!(1.001), Currency::USD, AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 }),
        (dec!(1.5), Currency::JPY, AmountError::TooManyDecimals { currency: Currency::JPY, scale_max: 0 }),
        (dec!(0.000000001), Currency::BTC, AmountError::TooManyDecimals { currency: Currency::BTC, scale_max: 8 }),
        (dec!(1.0000001), Currency::USDC, AmountError::TooManyDecimals { currency: Currency::USDC, scale_max: 6 }),
        (dec!(1.2345), Currency::KWD, AmountError::TooManyDecimals { currency: Currency::KWD, scale_max: 3 }),
        (usd_max + dec!(0.01), Currency::USD, AmountError::AboveMaximum { currency: Currency::USD, max: usd_max }),
        (jpy_max + dec!(1), Currency::JPY, AmountError::AboveMaximum { currency: Currency::JPY, max: jpy_max }),
        // Negative and over-precise at once: the sign is checked first.
        (dec!(-1.001), Currency::USD, AmountError::NotPositive),
        // Over-precise and above the maximum at once: the decimals are checked first.
        (usd_max + dec!(0.001), Currency::USD, AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 }),
    ];
    // A permissive type, so only the amount itself can be refused.
    let open = TransferTypeSettings::internal_default();
    for (amount, currency, expected) in cases {
        let result = TransferRequest { amount, currency, ..request() }.validate(&open);
        assert_eq!(result, Err(CreateTransferRejection::InvalidAmount(expected)), "{amount} {currency}");
    }
}

#[test]
fn validate_accepts_boundary_amounts_and_rescales_them_to_the_currency() {
    let open = TransferTypeSettings::internal_default();
    let cases: Vec<(Decimal, Currency, &str)> = vec![
        // Trailing zeros beyond the scale are not significant, so they are accepted and dropped.
        (dec!(1.000), Currency::USD, "1.00"),
        (dec!(0.01), Currency::USD, "0.01"),
        (Currency::USD.amount_max(), Currency::USD, "1000000000000.00"),
        (Currency::JPY.amount_max(), Currency::JPY, "1000000000000000"),
        (dec!(0.00000001), Currency::BTC, "0.00000001"),
        (dec!(1.5), Currency::KWD, "1.500"),
    ];
    for (amount, currency, expected) in cases {
        let valid = TransferRequest { amount, currency, ..request() }.validate(&open).unwrap();
        assert_eq!(valid.amount.to_string(), expected, "{amount} {currency}");
    }
}

#[test]
fn validate_refuses_a_negative_or_over_precise_fee_and_rescales_a_good_one() {
    let open = TransferTypeSettings::internal_default();
    let refused: Vec<(Decimal, Currency)> = vec![
        (dec!(-0.01), Currency::USD),
        (dec!(-5), Currency::USD),
        (dec!(0.001), Currency::USD),
        (dec!(0.5), Currency::JPY),
        (dec!(0.000000001), Currency::BTC),
    ];
    for (fee, currency) in refused {
        let result = TransferRequest { fee, currency, ..request() }.validate(&open);
        assert_eq!(result, Err(CreateTransferRejection::InvalidFee), "fee {fee} {currency}");
    }
    let valid = TransferRequest { fee: dec!(0.500), ..request() }.validate(&open).unwrap();
    assert_eq!(valid.fee.to_string(), "0.50", "a fee is written at the currency's scale");
    let free = TransferRequest { fee: dec!(0), ..request() }.validate(&open).unwrap();
    assert_eq!(free.fee.to_string(), "0.00", "a zero fee is allowed");
}

#[test]
fn validate_refuses_a_transfer_to_the_source_account_itself() {
    let result = TransferRequest { destination: SOURCE, ..request() }.validate(&settings());
    assert_eq!(result, Err(CreateTransferRejection::SameAccount));
}

#[test]
fn validate_refuses_a_disabled_transfer_type() {
    let disabled = TransferTypeSettings { enabled: false, ..settings() };
    assert_eq!(request().validate(&disabled), Err(CreateTransferRejection::TransferTypeDisabled));
}

#[test]
fn validate_refuses_amounts_outside_the_type_limits_and_accepts_the_limits_themselves() {
    let cases: Vec<(Decimal, Result<(), CreateTransferRejection>)> = vec![
        (dec!(9.99), Err(CreateTransferRejection::AmountLimitExceeded)),
        (dec!(10), Ok(())),
        (dec!(100), Ok(())),
        (dec!(100.01), Err(CreateTransferRejection::AmountLimitExceeded)),
    ];
    for (amount, expected) in cases {
        let result = TransferRequest { amount, ..request() }.validate(&settings()).map(|_| ());
        assert_eq!(result, expected, "amount {amount} against limits 10..=100");
    }
    let only_min = TransferTypeSettings { max_amount: None, ..settings() };
    assert_eq!(
        TransferRequest { amount: dec!(5), ..request() }.validate(&only_min),
        Err(CreateTransferRejection::AmountLimitExceeded)
    );
    assert!(TransferRequest { amount: dec!(1000000), ..request() }.validate(&only_min).is_ok());
}

#[test]
fn validate_refuses_a_fee_that_overflows_the_total_with_overflow() {
    // The fee has no maximum of its own, so only the checked sum amount + fee catches it.
    let result = TransferRequest { fee: Decimal::MAX, ..request() }.validate(&settings());
    assert_eq!(result, Err(CreateTransferRejection::Overflow));
}

/// One way to break each request-alone check, named by the rejection it should cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Break {
    Amount,
    Fee,
    SameAccount,
    Disabled,
    Limit,
    Overflow,
}

/// In declaration order of the rejections they cause (checked by a test below).
const BREAKS: [Break; 6] =
    [Break::Amount, Break::Fee, Break::SameAccount, Break::Disabled, Break::Limit, Break::Overflow];

fn expected_for(first: Break) -> CreateTransferRejection {
    match first {
        Break::Amount => CreateTransferRejection::InvalidAmount(AmountError::NotPositive),
        Break::Fee => CreateTransferRejection::InvalidFee,
        Break::SameAccount => CreateTransferRejection::SameAccount,
        Break::Disabled => CreateTransferRejection::TransferTypeDisabled,
        Break::Limit => CreateTransferRejection::AmountLimitExceeded,
        Break::Overflow => CreateTransferRejection::Overflow,
    }
}

/// Applies each break to the valid request and settings. A zero amount is also below the
/// limit's minimum, so breaking the amount breaks the limit too; the limit break itself lowers
/// the maximum instead, so it stays independent of the amount.
fn broken(breaks: &[Break]) -> (TransferRequest, TransferTypeSettings) {
    let (mut request, mut settings) = (request(), settings());
    for broken in breaks {
        match broken {
            Break::Amount => request.amount = dec!(0),
            Break::Fee => request.fee = dec!(-1),
            Break::SameAccount => request.destination = request.source,
            Break::Disabled => settings.enabled = false,
            Break::Limit => settings.max_amount = Some(dec!(1)),
            Break::Overflow => request.fee = Decimal::MAX,
        }
    }
    (request, settings)
}

/// A fee cannot be both invalid (negative or over-precise) and large enough to overflow the
/// total, since an over-precise fee is at most `Decimal::MAX / 10^(scale+1)`.
fn compatible(breaks: &[Break]) -> bool {
    !(breaks.contains(&Break::Fee) && breaks.contains(&Break::Overflow))
}

#[test]
fn the_request_breaks_are_listed_in_the_declaration_order_of_their_rejections() {
    // The precedence tables read "earlier in BREAKS" as "declared earlier"; this keeps them honest.
    let ranks: Vec<usize> = BREAKS.into_iter().map(|broken| declared_rank(&expected_for(broken))).collect();
    assert!(ranks.windows(2).all(|pair| pair[0] < pair[1]), "{ranks:?}");
}

#[test]
fn each_request_break_alone_causes_its_own_rejection() {
    // Guards the precedence tables below: if a break did not cause its reason on its own, the
    // tables could pass for the wrong reason.
    for reason in BREAKS {
        let (request, settings) = broken(&[reason]);
        assert_eq!(request.validate(&settings), Err(expected_for(reason)), "{reason:?}");
    }
    let (request, settings) = broken(&[]);
    assert!(request.validate(&settings).is_ok(), "the unbroken request is valid");
}

#[test]
fn validate_answers_with_the_first_declared_reason_when_a_row_breaks_it_and_every_later_one() {
    for (k, reason) in BREAKS.into_iter().enumerate() {
        let mut breaks: Vec<Break> = BREAKS[k..].to_vec();
        if !compatible(&breaks) {
            breaks.retain(|other| *other != Break::Overflow);
        }
        let (request, settings) = broken(&breaks);
        let rejection = request.validate(&settings).unwrap_err();
        assert_eq!(rejection, expected_for(reason), "row {k} breaks {breaks:?}");
        // Stated directly: the answer is the earliest declared of all the reasons broken.
        let earliest = breaks.iter().map(|broken| declared_rank(&expected_for(*broken))).min();
        assert_eq!(Some(declared_rank(&rejection)), earliest, "row {k} breaks {breaks:?}");
    }
}

#[test]
fn validate_answers_with_the_first_declared_reason_for_every_combination_of_breaks() {
    // All 63 non-empty subsets, minus the few with incompatible fee breaks: stronger than the
    // staircase above because it also mixes reasons that are not adjacent.
    let mut checked = 0;
    for mask in 1_u32..(1 << BREAKS.len()) {
        let breaks: Vec<Break> =
            BREAKS.into_iter().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, b)| b).collect();
        if !compatible(&breaks) {
            continue;
        }
        let (request, settings) = broken(&breaks);
        assert_eq!(request.validate(&settings), Err(expected_for(breaks[0])), "breaks {breaks:?}");
        checked += 1;
    }
    assert_eq!(checked, 63 - 16, "every compatible subset was checked");
}

// ---------------------------------------------------------------------------------------------
// Account::decide_hold
// ---------------------------------------------------------------------------------------------

struct HoldRow {
    name: &'static str,
    account: Account,
    amount: Decimal,
    currency: Currency,
    expected: Result<Option<AccountEvent>, HoldRejection>,
}

#[test]
fn decide_hold_walks_not_active_then_currency_then_funds_then_overflow() {
    let new = transfer_id(1);
    let earlier = transfer_id(99);
    let rows = vec![
        HoldRow {
            name: "blocked, wrong currency and no funds: not active",
            account: with_status(user_account(Currency::USD, dec!(0), dec!(0)), AccountStatus::Blocked),
            amount: dec!(5),
            currency: Currency::EUR,
            expected: Err(HoldRejection::NotActive { status: AccountStatus::Blocked }),
        },
        HoldRow {
            name: "closed, wrong currency and no funds: not active",
            account: with_status(user_account(Currency::USD, dec!(0), dec!(0)), AccountStatus::Closed),
            amount: dec!(5),
            currency: Currency::EUR,
            expected: Err(HoldRejection::NotActive { status: AccountStatus::Closed }),
        },
        HoldRow {
            name: "active, wrong currency and no funds: currency mismatch",
            account: user_account(Currency::USD, dec!(0), dec!(0)),
            amount: dec!(5),
            currency: Currency::EUR,
            expected: Err(HoldRejection::CurrencyMismatch { account: Currency::USD, amount: Currency::EUR }),
        },
        HoldRow {
            name: "balance 10 + credit 5 - held 3 = 12 is short of 12.01: insufficient, credit counted",
            account: with_hold(user_account(Currency::USD, dec!(10), dec!(5)), earlier, dec!(3)),
            amount: dec!(12.01),
            currency: Currency::USD,
            expected: Err(HoldRejection::InsufficientFunds { available: dec!(12), requested: dec!(12.01) }),
        },
        HoldRow {
            name: "funds short and the held total would overflow: insufficient comes first",
            account: with_hold(user_account(Currency::USD, Decimal::MAX, dec!(0)), earlier, Decimal::MAX),
            amount: dec!(1),
            currency: Currency::USD,
            expected: Err(HoldRejection::InsufficientFunds { available: dec!(0), requested: dec!(1) }),
        },
        HoldRow {
            name: "available itself overflows (balance MAX plus a credit limit): overflow",
            account: user_account(Currency::USD, Decimal::MAX, dec!(1)),
            amount: dec!(1),
            currency: Currency::USD,
            expected: Err(HoldRejection::Overflow),
        },
        HoldRow {
            name: "a settlement account at Decimal::MIN cannot post one more unit: overflow",
            account: system_account(AccountKind::Settlement, Currency::USD, Decimal::MIN),
            amount: dec!(1),
            currency: Currency::USD,
            expected: Err(HoldRejection::Overflow),
        },
        HoldRow {
            name: "exactly the available amount, credit limit included: held",
            account: with_hold(user_account(Currency::USD, dec!(10), dec!(5)), earlier, dec!(3)),
            amount: dec!(12),
            currency: Currency::USD,
            expected: Ok(Some(AccountEvent::Held { transfer: new, amount: dec!(12) })),
        },
        HoldRow {
            name: "an empty account may hold up to its credit limit: held",
            account: user_account(Currency::USD, dec!(0), dec!(100)),
            amount: dec!(100),
            currency: Currency::USD,
            expected: Ok(Some(AccountEvent::Held { transfer: new, amount: dec!(100) })),
        },
    ];
    for row in rows {
        assert_eq!(row.account.decide_hold(new, row.amount, row.currency), row.expected, "{}", row.name);
    }
}

#[test]
fn a_repeated_hold_succeeds_with_nothing_to_apply_even_after_the_account_is_blocked() {
    let transfer = transfer_id(1);
    let account = user_account(Currency::USD, dec!(100), dec!(0));
    let event = account.decide_hold(transfer, dec!(40), Currency::USD).unwrap().unwrap();
    let mut account = account;
    account.apply(&event).unwrap();
    account
        .apply(&AccountEvent::StatusChanged {
            status: AccountStatus::Blocked,
            owner: account.owner,
            opened_at: account.created_at,
        })
        .unwrap();

    // The saga retrying its step 2 must hear success, not "not active", or it would fail a
    // transfer whose hold is in place.
    assert_eq!(account.decide_hold(transfer, dec!(40), Currency::USD), Ok(None));
    // A new transfer is still refused: the repeat rule covers only the hold already placed.
    assert_eq!(
        account.decide_hold(transfer_id(2), dec!(1), Currency::USD),
        Err(HoldRejection::NotActive { status: AccountStatus::Blocked })
    );
    assert_eq!(account.held(), dec!(40), "the repeat held nothing more");
}

#[test]
fn system_accounts_never_answer_insufficient_funds() {
    let huge = Currency::USD.amount_max();
    for kind in SYSTEM_KINDS {
        let mut account = system_account(kind, Currency::USD, dec!(0));
        // Three maximal holds in a row, each posted, drive the balance far below zero.
        for n in 1..=3 {
            let event = account.decide_hold(transfer_id(n), huge, Currency::USD);
            assert_eq!(event, Ok(Some(AccountEvent::Held { transfer: transfer_id(n), amount: huge })), "{kind:?}");
            account.apply(&event.unwrap().unwrap()).unwrap();
            let posted = account.decide(&AccountCommand::Post { transfer: transfer_id(n) }).unwrap().unwrap();
            account.apply(&posted).unwrap();
        }
        assert_eq!(account.balance(), -huge * dec!(3), "{kind:?} went negative without bound");
    }
    // The same amount on a user account is refused, so the test would notice if system accounts
    // lost their exemption by accident in the fixture rather than in the engine.
    let user = user_account(Currency::USD, dec!(0), dec!(0));
    assert_eq!(
        user.decide_hold(transfer_id(1), huge, Currency::USD),
        Err(HoldRejection::InsufficientFunds { available: dec!(0), requested: huge })
    );
}

#[test]
fn system_accounts_from_the_fixed_table_are_unlimited_and_cannot_change_status() {
    for account in system_accounts::all_system_accounts(Timestamp::from_micros(1)) {
        assert!(account.position.unlimited, "{:?} {}", account.kind, account.currency);
        assert!(matches!(
            account.decide_hold(transfer_id(1), account.currency.amount_max(), account.currency),
            Ok(Some(AccountEvent::Held { .. }))
        ));
        assert_eq!(account.decide_status(StatusAction::Block), Err(StatusRejection::SystemAccount));
    }
}

#[test]
fn a_blocked_account_still_posts_and_releases_holds_placed_before_the_block() {
    // An admin may execute or reject a pending transfer of a since-blocked account; refusing
    // either would strand the hold.
    let account = with_hold(user_account(Currency::USD, dec!(100), dec!(0)), transfer_id(1), dec!(30));
    let account = with_hold(account, transfer_id(2), dec!(20));
    let mut account = with_status(account, AccountStatus::Blocked);
    let posted = account.decide(&AccountCommand::Post { transfer: transfer_id(1) }).unwrap();
    assert_eq!(posted, Some(AccountEvent::Posted { transfer: transfer_id(1), amount: dec!(30) }));
    account.apply(&posted.unwrap()).unwrap();
    let released = account.decide(&AccountCommand::Release { transfer: transfer_id(2) }).unwrap();
    assert_eq!(released, Some(AccountEvent::Released { transfer: transfer_id(2), amount: dec!(20) }));
    account.apply(&released.unwrap()).unwrap();
    assert_eq!((account.balance(), account.held()), (dec!(70), dec!(0)));
}

// ---------------------------------------------------------------------------------------------
// Account::decide_credit
// ---------------------------------------------------------------------------------------------

/// Name, account, amount, currency, expected answer.
type CreditRow = (&'static str, Account, Decimal, Currency, Result<Option<AccountEvent>, CreditRejection>);

#[test]
fn decide_credit_walks_not_active_then_currency_then_overflow() {
    let transfer = transfer_id(1);
    let near_max = Decimal::MAX - dec!(1);
    let rows: Vec<CreditRow> = vec![
        (
            "blocked, wrong currency and would overflow: not active",
            with_status(user_account(Currency::USD, Decimal::MAX, dec!(0)), AccountStatus::Blocked),
            dec!(1),
            Currency::EUR,
            Err(CreditRejection::NotActive { status: AccountStatus::Blocked }),
        ),
        (
            "closed, wrong currency and would overflow: not active",
            with_status(user_account(Currency::USD, Decimal::MAX, dec!(0)), AccountStatus::Closed),
            dec!(1),
            Currency::EUR,
            Err(CreditRejection::NotActive { status: AccountStatus::Closed }),
        ),
        (
            "active, wrong currency and would overflow: currency mismatch",
            user_account(Currency::USD, Decimal::MAX, dec!(0)),
            dec!(1),
            Currency::EUR,
            Err(CreditRejection::CurrencyMismatch { account: Currency::USD, amount: Currency::EUR }),
        ),
        (
            "balance MAX - 1 plus 2: overflow",
            user_account(Currency::USD, near_max, dec!(0)),
            dec!(2),
            Currency::USD,
            Err(CreditRejection::Overflow),
        ),
        (
            "balance MAX - 1 plus 1 lands exactly on MAX: credited",
            user_account(Currency::USD, near_max, dec!(0)),
            dec!(1),
            Currency::USD,
            Ok(Some(AccountEvent::Credited { transfer, amount: dec!(1), admitted: false })),
        ),
    ];
    for (name, account, amount, currency, expected) in rows {
        assert_eq!(account.decide_credit(transfer, amount, currency), expected, "{name}");
    }
}

#[test]
fn a_repeated_credit_on_an_active_account_has_nothing_to_apply() {
    let mut account = user_account(Currency::USD, dec!(0), dec!(0));
    let event = account.decide_credit(transfer_id(1), dec!(5), Currency::USD).unwrap().unwrap();
    account.apply(&event).unwrap();
    assert_eq!(account.decide_credit(transfer_id(1), dec!(5), Currency::USD), Ok(None));
    assert_eq!(account.balance(), dec!(5));
}

// ---------------------------------------------------------------------------------------------
// Account::decide_status and SetCreditLimit
// ---------------------------------------------------------------------------------------------

/// Name, account, action, expected answer (the status a change moves to).
type StatusRow = (String, Account, StatusAction, Result<Option<AccountStatus>, StatusRejection>);

#[test]
fn decide_status_walks_system_account_then_closed_then_not_empty() {
    let mut rows: Vec<StatusRow> = Vec::new();
    // A system account is refused before anything else, even one forced to closed with money.
    for kind in SYSTEM_KINDS {
        for action in [StatusAction::Block, StatusAction::Unblock, StatusAction::Close] {
            rows.push((
                format!("{kind:?} closed with balance, {action:?}: system account"),
                with_status(system_account(kind, Currency::USD, dec!(5)), AccountStatus::Closed),
                action,
                Err(StatusRejection::SystemAccount),
            ));
        }
    }
    // A closed account is refused before its (impossible but forced) balance is looked at.
    for action in [StatusAction::Block, StatusAction::Unblock, StatusAction::Close] {
        rows.push((
            format!("closed with balance, {action:?}: closed"),
            with_status(user_account(Currency::USD, dec!(5), dec!(0)), AccountStatus::Closed),
            action,
            Err(StatusRejection::Closed),
        ));
    }
    rows.extend([
        (
            "positive balance, close: not empty".to_owned(),
            user_account(Currency::USD, dec!(5), dec!(0)),
            StatusAction::Close,
            Err(StatusRejection::NotEmpty { balance: dec!(5), held: dec!(0) }),
        ),
        (
            "blocked, balance drawn on credit, close: not empty".to_owned(),
            with_status(user_account(Currency::USD, dec!(-5), dec!(10)), AccountStatus::Blocked),
            StatusAction::Close,
            Err(StatusRejection::NotEmpty { balance: dec!(-5), held: dec!(0) }),
        ),
        (
            "zero balance but a hold on credit, close: not empty".to_owned(),
            with_hold(user_account(Currency::USD, dec!(0), dec!(10)), transfer_id(1), dec!(4)),
            StatusAction::Close,
            Err(StatusRejection::NotEmpty { balance: dec!(0), held: dec!(4) }),
        ),
        (
            "empty and active, close: closed".to_owned(),
            user_account(Currency::USD, dec!(0.00), dec!(10)),
            StatusAction::Close,
            Ok(Some(AccountStatus::Closed)),
        ),
        (
            "empty and blocked, close: closed".to_owned(),
            with_status(user_account(Currency::USD, dec!(0), dec!(0)), AccountStatus::Blocked),
            StatusAction::Close,
            Ok(Some(AccountStatus::Closed)),
        ),
        (
            "active with money, block: blocking needs no empty account".to_owned(),
            user_account(Currency::USD, dec!(5), dec!(0)),
            StatusAction::Block,
            Ok(Some(AccountStatus::Blocked)),
        ),
        (
            "already blocked, block: nothing to apply".to_owned(),
            with_status(user_account(Currency::USD, dec!(5), dec!(0)), AccountStatus::Blocked),
            StatusAction::Block,
            Ok(None),
        ),
        (
            "already active, unblock: nothing to apply".to_owned(),
            user_account(Currency::USD, dec!(5), dec!(0)),
            StatusAction::Unblock,
            Ok(None),
        ),
    ]);
    for (name, account, action, expected) in rows {
        let decided = account.decide_status(action);
        // Every status change carries the account's owner and opening time (for its event).
        if let Ok(Some(AccountEvent::StatusChanged { owner, opened_at, .. })) = &decided {
            assert_eq!((*owner, *opened_at), (account.owner, account.created_at), "{name}");
        }
        let decided = decided.map(|event| {
            event.map(|event| match event {
                AccountEvent::StatusChanged { status, .. } => status,
                other => panic!("{name}: decided {other:?}"),
            })
        });
        assert_eq!(decided, expected, "{name}");
    }
}

#[test]
fn a_negative_credit_limit_is_refused_and_zero_or_positive_is_accepted() {
    let account = user_account(Currency::USD, dec!(0), dec!(10));
    let refused = account.decide(&AccountCommand::SetCreditLimit { credit_limit: dec!(-0.01) });
    assert_eq!(refused, Err(AccountRejection::NegativeCreditLimit));
    assert_eq!(refused.unwrap_err().code(), ErrorCode::ValidationError);
    for credit_limit in [dec!(0), dec!(100)] {
        assert_eq!(
            account.decide(&AccountCommand::SetCreditLimit { credit_limit }),
            Ok(Some(AccountEvent::CreditLimitChanged { credit_limit }))
        );
    }
}

#[test]
fn decide_wraps_each_step_rejection_in_the_account_rejection() {
    let blocked = with_status(user_account(Currency::USD, dec!(0), dec!(0)), AccountStatus::Blocked);
    let hold = AccountCommand::Hold { transfer: transfer_id(1), amount: dec!(1), currency: Currency::USD };
    let credit = AccountCommand::Credit { transfer: transfer_id(1), amount: dec!(1), currency: Currency::USD };
    let close = AccountCommand::SetStatus { action: StatusAction::Close };
    let not_active = AccountStatus::Blocked;
    assert_eq!(blocked.decide(&hold), Err(AccountRejection::Hold(HoldRejection::NotActive { status: not_active })));
    assert_eq!(
        blocked.decide(&credit),
        Err(AccountRejection::Credit(CreditRejection::NotActive { status: not_active }))
    );
    let settlement = system_account(AccountKind::Settlement, Currency::USD, dec!(0));
    assert_eq!(settlement.decide(&close), Err(AccountRejection::Status(StatusRejection::SystemAccount)));
}

// ---------------------------------------------------------------------------------------------
// Error codes and HTTP statuses
// ---------------------------------------------------------------------------------------------

#[test]
fn every_create_transfer_rejection_maps_to_its_code_and_status() {
    let usd = Currency::USD;
    let eur = Currency::EUR;
    let blocked = AccountStatus::Blocked;
    let rows: Vec<(CreateTransferRejection, &str, u16)> = vec![
        (CreateTransferRejection::InvalidAmount(AmountError::NotANumber), "VALIDATION_ERROR", 400),
        (CreateTransferRejection::InvalidFee, "VALIDATION_ERROR", 400),
        (CreateTransferRejection::SameAccount, "VALIDATION_ERROR", 400),
        (CreateTransferRejection::TransferTypeDisabled, "TRANSFER_TYPE_DISABLED", 422),
        (CreateTransferRejection::AmountLimitExceeded, "AMOUNT_LIMIT_EXCEEDED", 422),
        (CreateTransferRejection::FxRateNotFound { from: usd, to: eur }, "FX_RATE_NOT_FOUND", 422),
        (CreateTransferRejection::ConvertsToNothing, "AMOUNT_LIMIT_EXCEEDED", 422),
        (CreateTransferRejection::SourceNotFound, "NOT_FOUND", 404),
        (CreateTransferRejection::SourceNotActive { status: blocked }, "ACCOUNT_NOT_ACTIVE", 422),
        (CreateTransferRejection::SourceCurrencyMismatch { account: usd, amount: eur }, "CURRENCY_MISMATCH", 422),
        (
            CreateTransferRejection::InsufficientFunds { available: dec!(1), requested: dec!(2) },
            "INSUFFICIENT_FUNDS",
            422,
        ),
        (CreateTransferRejection::DestinationNotFound, "NOT_FOUND", 404),
        (CreateTransferRejection::DestinationNotActive { status: blocked }, "ACCOUNT_NOT_ACTIVE", 422),
        (CreateTransferRejection::DestinationCurrencyMismatch { account: usd, amount: eur }, "CURRENCY_MISMATCH", 422),
        (CreateTransferRejection::Overflow, "AMOUNT_LIMIT_EXCEEDED", 422),
        (CreateTransferRejection::Blocked, "TRANSFER_BLOCKED", 422),
    ];
    // The rows are in declaration order and cover every variant exactly once.
    let ranks: Vec<usize> = rows.iter().map(|(rejection, _, _)| declared_rank(rejection)).collect();
    assert_eq!(ranks, (0..16).collect::<Vec<_>>());
    for (rejection, code, status) in rows {
        assert_eq!(rejection.code().as_str(), code, "{rejection:?}");
        assert_eq!(rejection.code().http_status(), status, "{rejection:?}");
    }
}

#[test]
fn account_status_and_transition_rejections_map_to_their_codes_and_statuses() {
    let blocked = AccountStatus::Blocked;
    let usd = Currency::USD;
    let eur = Currency::EUR;
    let account_rows: Vec<(AccountRejection, &str, u16)> = vec![
        (HoldRejection::NotActive { status: blocked }.into(), "ACCOUNT_NOT_ACTIVE", 422),
        (HoldRejection::CurrencyMismatch { account: usd, amount: eur }.into(), "CURRENCY_MISMATCH", 422),
        (HoldRejection::InsufficientFunds { available: dec!(0), requested: dec!(1) }.into(), "INSUFFICIENT_FUNDS", 422),
        (HoldRejection::Overflow.into(), "AMOUNT_LIMIT_EXCEEDED", 422),
        (CreditRejection::NotActive { status: AccountStatus::Closed }.into(), "ACCOUNT_NOT_ACTIVE", 422),
        (CreditRejection::CurrencyMismatch { account: usd, amount: eur }.into(), "CURRENCY_MISMATCH", 422),
        (CreditRejection::Overflow.into(), "AMOUNT_LIMIT_EXCEEDED", 422),
        (StatusRejection::SystemAccount.into(), "FORBIDDEN", 403),
        (StatusRejection::Closed.into(), "CONFLICT", 409),
        (StatusRejection::NotEmpty { balance: dec!(1), held: dec!(0) }.into(), "ACCOUNT_NOT_EMPTY", 409),
        (AccountRejection::NegativeCreditLimit, "VALIDATION_ERROR", 400),
    ];
    for (rejection, code, status) in account_rows {
        assert_eq!(rejection.code().as_str(), code, "{rejection:?}");
        assert_eq!(rejection.code().http_status(), status, "{rejection:?}");
    }
    let status_rows: Vec<(StatusRejection, &str, u16)> = vec![
        (StatusRejection::SystemAccount, "FORBIDDEN", 403),
        (StatusRejection::Closed, "CONFLICT", 409),
        (StatusRejection::NotEmpty { balance: dec!(0), held: dec!(1) }, "ACCOUNT_NOT_EMPTY", 409),
    ];
    for (rejection, code, status) in status_rows {
        assert_eq!((rejection.code().as_str(), rejection.code().http_status()), (code, status), "{rejection:?}");
    }
    let transition_rows: Vec<(TransitionRejection, &str, u16)> = vec![
        (TransitionRejection::NotFound, "NOT_FOUND", 404),
        (TransitionRejection::NotPending { status: TransferStatus::Completed }, "NOT_PENDING", 409),
        (TransitionRejection::NotCancellable { status: TransferStatus::Completed }, "NOT_CANCELLABLE", 409),
    ];
    for (rejection, code, status) in transition_rows {
        assert_eq!((rejection.code().as_str(), rejection.code().http_status()), (code, status), "{rejection:?}");
    }
}

#[test]
fn source_and_destination_step_rejections_become_the_matching_transfer_rejection() {
    let usd = Currency::USD;
    let eur = Currency::EUR;
    let closed = AccountStatus::Closed;
    let source_rows = vec![
        (HoldRejection::NotActive { status: closed }, CreateTransferRejection::SourceNotActive { status: closed }),
        (
            HoldRejection::CurrencyMismatch { account: usd, amount: eur },
            CreateTransferRejection::SourceCurrencyMismatch { account: usd, amount: eur },
        ),
        (
            HoldRejection::InsufficientFunds { available: dec!(3), requested: dec!(4) },
            CreateTransferRejection::InsufficientFunds { available: dec!(3), requested: dec!(4) },
        ),
        (HoldRejection::Overflow, CreateTransferRejection::Overflow),
    ];
    for (hold, expected) in source_rows {
        assert_eq!(CreateTransferRejection::from_source(hold.clone()), expected, "{hold:?}");
    }
    let destination_rows = vec![
        (
            CreditRejection::NotActive { status: closed },
            CreateTransferRejection::DestinationNotActive { status: closed },
        ),
        (
            CreditRejection::CurrencyMismatch { account: usd, amount: eur },
            CreateTransferRejection::DestinationCurrencyMismatch { account: usd, amount: eur },
        ),
        (CreditRejection::Overflow, CreateTransferRejection::Overflow),
    ];
    for (credit, expected) in destination_rows {
        assert_eq!(CreateTransferRejection::from_destination(credit.clone()), expected, "{credit:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Transfer::transition
// ---------------------------------------------------------------------------------------------

const ALL_STATUSES: [TransferStatus; 7] = TransferStatus::ALL;

fn transfer_in(status: TransferStatus) -> Transfer {
    let mut transfer = Transfer::start(request());
    transfer.status = status;
    transfer
}

#[test]
fn every_transition_out_of_a_terminal_status_fails_and_changes_nothing() {
    for from in ALL_STATUSES.into_iter().filter(|status| status.is_terminal()) {
        for next in ALL_STATUSES {
            let mut transfer = transfer_in(from);
            let before = transfer.clone();
            let expected = if next == TransferStatus::Cancelled {
                TransitionRejection::NotCancellable { status: from }
            } else {
                TransitionRejection::NotPending { status: from }
            };
            assert_eq!(transfer.transition(next, Timestamp::from_micros(9)), Err(expected), "{from:?} -> {next:?}");
            assert_eq!(transfer, before, "{from:?} -> {next:?} left the transfer untouched");
        }
    }
}

#[test]
fn a_pending_transfer_can_be_cancelled_and_is_stamped_and_loses_its_pending_reason() {
    let mut transfer = transfer_in(TransferStatus::Pending);
    transfer.pending_reason = Some(PendingReason::ManualExecution);
    assert_eq!(transfer.transition(TransferStatus::Cancelled, Timestamp::from_micros(9)), Ok(()));
    assert_eq!(transfer.status, TransferStatus::Cancelled);
    assert_eq!(transfer.completed_at, Some(Timestamp::from_micros(9)));
    assert_eq!(transfer.pending_reason, None);
}

#[test]
fn disallowed_transitions_from_live_statuses_name_the_current_status() {
    let rows: Vec<(TransferStatus, TransferStatus, TransitionRejection)> = vec![
        (
            TransferStatus::Completed,
            TransferStatus::Cancelled,
            TransitionRejection::NotCancellable { status: TransferStatus::Completed },
        ),
        (
            TransferStatus::Processing,
            TransferStatus::Processing,
            TransitionRejection::NotPending { status: TransferStatus::Processing },
        ),
        (
            TransferStatus::Processing,
            TransferStatus::Cancelled,
            TransitionRejection::NotCancellable { status: TransferStatus::Processing },
        ),
        (
            TransferStatus::Processing,
            TransferStatus::Rejected,
            TransitionRejection::NotPending { status: TransferStatus::Processing },
        ),
        (
            TransferStatus::Pending,
            TransferStatus::Pending,
            TransitionRejection::NotPending { status: TransferStatus::Pending },
        ),
        (
            TransferStatus::Pending,
            TransferStatus::Completed,
            TransitionRejection::NotPending { status: TransferStatus::Pending },
        ),
        (
            TransferStatus::Pending,
            TransferStatus::Failed,
            TransitionRejection::NotPending { status: TransferStatus::Pending },
        ),
    ];
    for (from, next, expected) in rows {
        let mut transfer = transfer_in(from);
        assert_eq!(transfer.transition(next, Timestamp::from_micros(9)), Err(expected), "{from:?} -> {next:?}");
        assert_eq!(transfer.status, from);
    }
}

#[test]
fn allowed_transitions_succeed_and_only_terminal_ones_are_stamped() {
    let rows: Vec<(TransferStatus, TransferStatus, bool)> = vec![
        (TransferStatus::Processing, TransferStatus::Completed, true),
        (TransferStatus::Processing, TransferStatus::Failed, true),
        (TransferStatus::Processing, TransferStatus::Pending, false),
        (TransferStatus::Pending, TransferStatus::Processing, false),
        (TransferStatus::Pending, TransferStatus::Rejected, true),
        (TransferStatus::Pending, TransferStatus::Cancelled, true),
    ];
    for (from, next, stamped) in rows {
        let mut transfer = transfer_in(from);
        assert_eq!(transfer.transition(next, Timestamp::from_micros(9)), Ok(()), "{from:?} -> {next:?}");
        assert_eq!(transfer.status, next);
        assert_eq!(transfer.completed_at.is_some(), stamped, "{from:?} -> {next:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// parse_amount: rows the unit tests in money.rs do not cover
// ---------------------------------------------------------------------------------------------

#[test]
fn parse_amount_respects_each_currency_scale_at_its_edge() {
    let accepted: Vec<(&str, Currency, &str)> = vec![
        ("0.12345678", Currency::BTC, "0.12345678"),
        ("1.123456", Currency::USDC, "1.123456"),
        ("1.234", Currency::KWD, "1.234"),
        ("1.5", Currency::KWD, "1.500"),
        ("1000000000000000", Currency::JPY, "1000000000000000"),
        ("1000000000", Currency::BTC, "1000000000.00000000"),
        // Leading zeros are harmless digits, and the value is rescaled.
        ("007.50", Currency::USD, "7.50"),
        ("0001", Currency::JPY, "1"),
    ];
    for (text, currency, expected) in accepted {
        assert_eq!(parse_amount(text, currency).map(|amount| amount.to_string()), Ok(expected.to_owned()), "{text}");
    }
    let refused: Vec<(&str, Currency, AmountError)> = vec![
        ("0.123456789", Currency::BTC, AmountError::TooManyDecimals { currency: Currency::BTC, scale_max: 8 }),
        ("1.1234567", Currency::USDC, AmountError::TooManyDecimals { currency: Currency::USDC, scale_max: 6 }),
        ("1.2345", Currency::KWD, AmountError::TooManyDecimals { currency: Currency::KWD, scale_max: 3 }),
        // Decimals are counted as written, so a zero fraction still counts for JPY.
        ("1.0", Currency::JPY, AmountError::TooManyDecimals { currency: Currency::JPY, scale_max: 0 }),
        (
            "1000000000000001",
            Currency::JPY,
            AmountError::AboveMaximum { currency: Currency::JPY, max: dec!(1000000000000000) },
        ),
        (
            "1000000000.00000001",
            Currency::BTC,
            AmountError::AboveMaximum { currency: Currency::BTC, max: dec!(1000000000) },
        ),
    ];
    for (text, currency, expected) in refused {
        assert_eq!(parse_amount(text, currency), Err(expected), "{text} {currency}");
    }
}

#[test]
fn parse_amount_answers_with_the_first_declared_reason_when_several_apply() {
    let rows: Vec<(&str, Currency, AmountError)> = vec![
        // Negative and over-precise: not positive comes before too many decimals.
        ("-1.001", Currency::USD, AmountError::NotPositive),
        // Zero written with too many decimals: not positive comes first.
        ("0.000", Currency::USD, AmountError::NotPositive),
        ("000", Currency::USD, AmountError::NotPositive),
        // Over-precise and above the maximum: too many decimals comes first.
        ("1000000000000.001", Currency::USD, AmountError::TooManyDecimals { currency: Currency::USD, scale_max: 2 }),
        // A sign on something that is not a number is not a number.
        ("-abc", Currency::USD, AmountError::NotANumber),
    ];
    for (text, currency, expected) in rows {
        assert_eq!(parse_amount(text, currency), Err(expected), "{text} {currency}");
    }
}

#[test]
fn parse_amount_refuses_separators_and_non_ascii_digits() {
    for text in ["1,50", "1_000", "1 000", "\u{ff11}", "\u{0663}", "1.5\n", "0x10"] {
        assert_eq!(parse_amount(text, Currency::USD), Err(AmountError::NotANumber), "{text:?}");
    }
}

#[test]
fn parse_amount_accepts_text_exactly_at_the_length_limit() {
    // 64 characters is the longest text allowed; the money.rs tests cover 65 being refused.
    let text = format!("{}1", "0".repeat(63));
    assert_eq!(text.len(), 64);
    assert_eq!(parse_amount(&text, Currency::USD), Ok(dec!(1.00)));
}

#[test]
fn a_repeated_credit_succeeds_even_after_the_account_was_blocked() {
    // A saga that lost the reply to its credit retries it; refusing the repeat would make the
    // saga release a source hold for money the destination already received.
    let mut account = tally_engine::Account::open(
        tally_engine::AccountId::from_u128(1),
        None,
        tally_engine::Currency::USD,
        tally_engine::AccountKind::User,
        rust_decimal::Decimal::ZERO,
        tally_engine::Timestamp::default(),
    );
    let transfer = tally_engine::TransferId::from_u128(9);
    let amount = rust_decimal_macros::dec!(5);
    let event = account.decide_credit(transfer, amount, tally_engine::Currency::USD).unwrap().unwrap();
    account.apply(&event).unwrap();
    let block = account.decide_status(tally_engine::StatusAction::Block).unwrap().unwrap();
    account.apply(&block).unwrap();
    assert_eq!(account.decide_credit(transfer, amount, tally_engine::Currency::USD), Ok(None));
    let other = tally_engine::TransferId::from_u128(10);
    assert!(account.decide_credit(other, amount, tally_engine::Currency::USD).is_err(), "a new credit is refused");
}

// ---------------------------------------------------------------------------------------------
// Credit admissions (atomic batches, first phase)
// ---------------------------------------------------------------------------------------------

fn apply(account: &mut Account, command: AccountCommand) -> Result<Option<AccountEvent>, AccountRejection> {
    let event = account.decide(&command)?;
    if let Some(event) = &event {
        account.apply(event).unwrap();
    }
    Ok(event)
}

#[test]
fn an_admitted_credit_is_honoured_after_a_block_and_refused_without_admission() {
    let mut account = user_account(Currency::USD, dec!(0), dec!(0));
    let admitted = transfer_id(1);
    let admit = AccountCommand::AdmitCredit { transfer: admitted, amount: dec!(5), currency: Currency::USD };
    assert_eq!(
        apply(&mut account, admit),
        Ok(Some(AccountEvent::CreditAdmitted { transfer: admitted, amount: dec!(5) }))
    );
    assert_eq!(apply(&mut account, admit), Ok(None), "a repeated admission admits once");
    apply(&mut account, AccountCommand::SetStatus { action: StatusAction::Block }).unwrap();
    let credit = |transfer| AccountCommand::Credit { transfer, amount: dec!(5), currency: Currency::USD };
    assert_eq!(
        apply(&mut account, credit(transfer_id(2))),
        Err(AccountRejection::Credit(CreditRejection::NotActive { status: AccountStatus::Blocked })),
        "an unadmitted credit to a blocked account is refused"
    );
    assert_eq!(
        apply(&mut account, credit(admitted)),
        Ok(Some(AccountEvent::Credited { transfer: admitted, amount: dec!(5), admitted: true }))
    );
    assert_eq!(account.balance(), dec!(5));
    assert!(!account.position.has_admitted_credits(), "the landed credit is no longer outstanding");
}

#[test]
fn admissions_check_like_credits_and_an_account_with_one_cannot_close() {
    let mut account = user_account(Currency::USD, dec!(0), dec!(0));
    let eur = AccountCommand::AdmitCredit { transfer: transfer_id(1), amount: dec!(5), currency: Currency::EUR };
    assert_eq!(
        apply(&mut account, eur),
        Err(AccountRejection::Credit(CreditRejection::CurrencyMismatch {
            account: Currency::USD,
            amount: Currency::EUR
        }))
    );
    let admit = AccountCommand::AdmitCredit { transfer: transfer_id(2), amount: dec!(5), currency: Currency::USD };
    apply(&mut account, admit).unwrap();
    assert_eq!(
        apply(&mut account, AccountCommand::SetStatus { action: StatusAction::Close }),
        Err(AccountRejection::Status(StatusRejection::CreditPromised { promised: dec!(5) }))
    );
    assert_eq!(
        apply(&mut account, AccountCommand::WithdrawCredit { transfer: transfer_id(2) }),
        Ok(Some(AccountEvent::CreditWithdrawn { transfer: transfer_id(2), amount: dec!(5) }))
    );
    assert_eq!(apply(&mut account, AccountCommand::WithdrawCredit { transfer: transfer_id(2) }), Ok(None));
    assert!(apply(&mut account, AccountCommand::SetStatus { action: StatusAction::Close }).unwrap().is_some());
    let closed = AccountCommand::AdmitCredit { transfer: transfer_id(3), amount: dec!(5), currency: Currency::USD };
    assert_eq!(
        apply(&mut account, closed),
        Err(AccountRejection::Credit(CreditRejection::NotActive { status: AccountStatus::Closed }))
    );
    assert_eq!(account.balance(), dec!(0), "admissions move no money");
}
