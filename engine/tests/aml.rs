//! The pure AML evaluation: thresholds, velocity windows over time given as data, severity
//! (block > review > flag, every matched rule listed), disabled rules, and config checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use tally_engine::aml::{
    AmlAction, AmlRule, AmlRuleKind, AmlSubject, RuleConfigError, ThresholdRule, VELOCITY_ENTRIES_MAX, VelocityRule,
    VelocityWindow, evaluate, velocity_horizon_seconds,
};
use tally_engine::{AmountError, Currency, Timestamp, TransferKind};

fn rule(n: u128, kind: AmlRuleKind, action: AmlAction) -> AmlRule {
    AmlRule {
        id: uuid::Uuid::from_u128(n),
        name: format!("rule {n}"),
        kind,
        action,
        enabled: true,
        created_at: Timestamp::from_micros(0),
        updated_at: Timestamp::from_micros(0),
    }
}

fn threshold(amount: rust_decimal::Decimal, kind: Option<TransferKind>) -> AmlRuleKind {
    AmlRuleKind::Threshold(ThresholdRule::new(amount, Currency::USD, kind).unwrap())
}

fn subject(amount: rust_decimal::Decimal, seconds: i64) -> AmlSubject {
    AmlSubject {
        kind: TransferKind::Internal,
        amount,
        currency: Currency::USD,
        at: Timestamp::from_micros(seconds * 1_000_000),
    }
}

#[test]
fn a_threshold_matches_at_and_above_its_amount_in_its_currency_and_type_only() {
    let rules = [rule(1, threshold(dec!(50), None), AmlAction::Flag)];
    let empty = VelocityWindow::default();
    assert_eq!(evaluate(&rules, &subject(dec!(49.99), 0), &empty).action, None);
    assert_eq!(evaluate(&rules, &subject(dec!(50), 0), &empty).action, Some(AmlAction::Flag));
    let euros = AmlSubject { currency: Currency::EUR, ..subject(dec!(500), 0) };
    assert_eq!(evaluate(&rules, &euros, &empty).action, None, "another currency");
    let external_only = [rule(2, threshold(dec!(1), Some(TransferKind::External)), AmlAction::Block)];
    assert_eq!(evaluate(&external_only, &subject(dec!(9), 0), &empty).action, None);
    let external = AmlSubject { kind: TransferKind::External, ..subject(dec!(9), 0) };
    assert_eq!(evaluate(&external_only, &external, &empty).action, Some(AmlAction::Block));
    let adjustment = AmlSubject { kind: TransferKind::AdminCredit, ..subject(dec!(9000), 0) };
    assert_eq!(evaluate(&rules, &adjustment, &empty).action, None, "adjustments are not screened");
}

#[test]
fn the_most_severe_action_wins_and_every_matched_rule_is_listed() {
    let mut off = rule(4, threshold(dec!(1), None), AmlAction::Block);
    off.enabled = false;
    let rules = [
        rule(1, threshold(dec!(10), None), AmlAction::Flag),
        rule(2, threshold(dec!(20), None), AmlAction::Review),
        rule(3, threshold(dec!(1000), None), AmlAction::Block),
        off,
    ];
    let decision = evaluate(&rules, &subject(dec!(25), 0), &VelocityWindow::default());
    assert_eq!(decision.action, Some(AmlAction::Review));
    let ids: Vec<u128> = decision.matched.iter().map(|matched| matched.rule_id.as_u128()).collect();
    assert_eq!(ids, [1, 2], "the disabled block rule never matches");
    assert!(AmlAction::Block > AmlAction::Review && AmlAction::Review > AmlAction::Flag);
}

#[test]
fn velocity_counts_and_sums_the_window_including_this_transfer_and_forgets_what_left_it() {
    let by_count = [rule(
        1,
        AmlRuleKind::Velocity(VelocityRule::new(60, Some(2), None, Currency::USD).unwrap()),
        AmlAction::Block,
    )];
    let mut window = VelocityWindow::default();
    for second in [0, 10] {
        let now = subject(dec!(1), second);
        assert_eq!(evaluate(&by_count, &now, &window).action, None);
        window.note(&now, 60);
    }
    assert_eq!(evaluate(&by_count, &subject(dec!(1), 20), &window).action, Some(AmlAction::Block), "third in 60 s");
    assert_eq!(evaluate(&by_count, &subject(dec!(1), 61), &window).action, None, "the first left the window");

    let by_sum = [rule(
        2,
        AmlRuleKind::Velocity(VelocityRule::new(60, None, Some(dec!(25)), Currency::USD).unwrap()),
        AmlAction::Review,
    )];
    let mut window = VelocityWindow::default();
    window.note(&subject(dec!(10), 0), 60);
    window.note(&subject(dec!(10), 1), 60);
    assert_eq!(evaluate(&by_sum, &subject(dec!(5), 2), &window).action, None, "25 is not more than 25");
    assert_eq!(evaluate(&by_sum, &subject(dec!(5.01), 2), &window).action, Some(AmlAction::Review));
    let euros = AmlSubject { currency: Currency::EUR, ..subject(dec!(100), 2) };
    assert_eq!(evaluate(&by_sum, &euros, &window).action, None);
    assert_eq!(velocity_horizon_seconds(&by_sum), Some(60));
    assert_eq!(velocity_horizon_seconds(&[]), None);
}

#[test]
fn a_forgotten_transfer_no_longer_counts_and_only_a_matching_one_is_forgotten() {
    let by_count =
        [rule(1, AmlRuleKind::Velocity(VelocityRule::new(60, Some(1), None, Currency::USD).unwrap()), AmlAction::Flag)];
    let mut window = VelocityWindow::default();
    window.note(&subject(dec!(1), 0), 60);
    window.note(&subject(dec!(2), 10), 60);
    assert_eq!(evaluate(&by_count, &subject(dec!(1), 20), &window).action, Some(AmlAction::Flag));
    // Not noted at or after 11 s, another amount, another currency: nothing to forget.
    assert!(!window.forget(Currency::USD, dec!(2), Timestamp::from_micros(11_000_000)));
    assert!(!window.forget(Currency::USD, dec!(3), Timestamp::from_micros(0)));
    assert!(!window.forget(Currency::EUR, dec!(2), Timestamp::from_micros(0)));
    assert_eq!(window.len(), 2);
    assert!(window.forget(Currency::USD, dec!(2), Timestamp::from_micros(10_000_000)));
    assert_eq!(window.len(), 1);
    assert!(window.forget(Currency::USD, dec!(1), Timestamp::from_micros(0)));
    assert_eq!(evaluate(&by_count, &subject(dec!(1), 20), &window).action, None, "nothing left to count");
}

#[test]
fn of_two_alike_transfers_the_oldest_is_forgotten_so_the_newer_one_keeps_counting() {
    // One earlier transfer in the window: a second one trips it.
    let by_count =
        [rule(1, AmlRuleKind::Velocity(VelocityRule::new(60, Some(1), None, Currency::USD).unwrap()), AmlAction::Flag)];
    let mut window = VelocityWindow::default();
    window.note(&subject(dec!(5), 0), 60);
    window.note(&subject(dec!(5), 30), 60);
    assert!(window.forget(Currency::USD, dec!(5), Timestamp::from_micros(0)));
    // At 70 s the entry of 0 s would have left the window; the one of 30 s has not.
    assert_eq!(evaluate(&by_count, &subject(dec!(1), 70), &window).action, Some(AmlAction::Flag));
}

/// The window's entries are bounded, but not what it counts: past the bound the oldest entry
/// is merged into a later one, so a sum rule sees every piece of a split. Before, the oldest
/// were dropped, and 1,300 transfers of 0.01 passed a rule blocking above 12.00 an hour (a
/// review found it). Other currencies keep their own entries.
#[test]
fn a_window_is_bounded_and_still_sums_every_piece_of_a_split() {
    let sum_rule = [rule(
        1,
        AmlRuleKind::Velocity(VelocityRule::new(3600, None, Some(dec!(12.00)), Currency::USD).unwrap()),
        AmlAction::Block,
    )];
    let count_rule = [rule(
        2,
        AmlRuleKind::Velocity(VelocityRule::new(3600, Some(1_024), None, Currency::USD).unwrap()),
        AmlAction::Flag,
    )];
    let mut window = VelocityWindow::default();
    window.note(&AmlSubject { currency: Currency::EUR, ..subject(dec!(5), 0) }, 3600);
    let mut first_blocked = None;
    for piece in 1..=1_300_i64 {
        let next = subject(dec!(0.01), piece);
        if first_blocked.is_none() && evaluate(&sum_rule, &next, &window).action == Some(AmlAction::Block) {
            first_blocked = Some(piece);
        }
        window.note(&next, 3600);
    }
    assert_eq!(window.len(), VELOCITY_ENTRIES_MAX);
    assert_eq!(first_blocked, Some(1_201), "blocked once the pieces would sum past 12.00");
    assert_eq!(
        evaluate(&count_rule, &subject(dec!(0.01), 1_301), &window).action,
        Some(AmlAction::Flag),
        "counted too"
    );
    let euros = [rule(
        3,
        AmlRuleKind::Velocity(VelocityRule::new(3600, None, Some(dec!(4.99)), Currency::EUR).unwrap()),
        AmlAction::Block,
    )];
    let one_euro = AmlSubject { currency: Currency::EUR, ..subject(dec!(0.01), 1_301) };
    assert_eq!(evaluate(&euros, &one_euro, &window).action, Some(AmlAction::Block), "the EUR entry kept its own sum");
    // Merged entries count from their newest piece's time: an hour after the last piece, all are gone.
    assert_eq!(evaluate(&sum_rule, &subject(dec!(0.01), 1_300 + 3_601), &window).action, None);
}

#[test]
fn configurations_are_checked_at_the_currency_scale() {
    assert_eq!(
        ThresholdRule::new(dec!(-1), Currency::USD, None),
        Err(RuleConfigError::Amount(AmountError::NotPositive))
    );
    assert!(matches!(ThresholdRule::new(dec!(1.001), Currency::USD, None), Err(RuleConfigError::Amount(_))));
    assert!(matches!(ThresholdRule::new(dec!(1.5), Currency::JPY, None), Err(RuleConfigError::Amount(_))));
    assert_eq!(
        ThresholdRule::new(dec!(1), Currency::USD, Some(TransferKind::AdminDebit)),
        Err(RuleConfigError::TransferType)
    );
    assert_eq!(ThresholdRule::new(dec!(1.5), Currency::USD, None).unwrap().amount.to_string(), "1.50");
    assert_eq!(VelocityRule::new(60, None, None, Currency::USD), Err(RuleConfigError::NoLimit));
    assert_eq!(VelocityRule::new(0, Some(1), None, Currency::USD), Err(RuleConfigError::WindowSeconds));
    assert_eq!(VelocityRule::new(60, Some(0), None, Currency::USD), Err(RuleConfigError::MaxCount));
    assert_eq!(
        VelocityRule::new(60, Some(VELOCITY_ENTRIES_MAX as u32 + 1), None, Currency::USD),
        Err(RuleConfigError::MaxCount)
    );
    assert!(matches!(VelocityRule::new(60, None, Some(dec!(0)), Currency::USD), Err(RuleConfigError::MaxAmount(_))));
}
