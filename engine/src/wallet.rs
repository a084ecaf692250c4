//! Multi-asset wallets: one position per asset, each with its own holds. A wallet applies the
//! same hold / release / post / credit steps as an account, per asset, so crypto flows are
//! sagas of the same shape as transfers.

use rust_decimal::Decimal;

use crate::account::{AccountStatus, StatusAction};
use crate::currency::Currency;
use crate::ids::{Timestamp, TransferId, UserId, WalletId};
use crate::money::Overflow;
use crate::position::{FundsRejection, Position};
use crate::rejection::{CreditRejection, HoldRejection, StatusRejection};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub id: WalletId,
    pub owner: UserId,
    pub status: AccountStatus,
    /// One position per asset, in the order assets first arrived. A wallet holds a handful of
    /// assets, so a vector beats a map in both memory and speed.
    pub assets: Vec<(Currency, Position)>,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalletCommand {
    Hold { transfer: TransferId, asset: Currency, amount: Decimal },
    Release { transfer: TransferId, asset: Currency },
    Post { transfer: TransferId, asset: Currency },
    Credit { transfer: TransferId, asset: Currency, amount: Decimal },
    SetStatus { action: StatusAction },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletEvent {
    Held { transfer: TransferId, asset: Currency, amount: Decimal },
    Released { transfer: TransferId, asset: Currency, amount: Decimal },
    Posted { transfer: TransferId, asset: Currency, amount: Decimal },
    Credited { transfer: TransferId, asset: Currency, amount: Decimal },
    StatusChanged { status: AccountStatus },
}

/// Any rejection a wallet can answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletRejection {
    #[error(transparent)]
    Hold(#[from] HoldRejection),
    #[error(transparent)]
    Credit(#[from] CreditRejection),
    #[error(transparent)]
    Status(#[from] StatusRejection),
}

impl WalletEvent {
    /// The asset the event changes, if any.
    pub fn asset(&self) -> Option<Currency> {
        match self {
            WalletEvent::Held { asset, .. }
            | WalletEvent::Released { asset, .. }
            | WalletEvent::Posted { asset, .. }
            | WalletEvent::Credited { asset, .. } => Some(*asset),
            WalletEvent::StatusChanged { .. } => None,
        }
    }
}

impl Wallet {
    pub fn open(id: WalletId, owner: UserId, created_at: Timestamp) -> Wallet {
        Wallet { id, owner, status: AccountStatus::Active, assets: Vec::new(), created_at }
    }

    pub fn position(&self, asset: Currency) -> Option<&Position> {
        self.assets.iter().find(|(candidate, _)| *candidate == asset).map(|(_, position)| position)
    }

    fn position_mut(&mut self, asset: Currency) -> &mut Position {
        let index = match self.assets.iter().position(|(candidate, _)| *candidate == asset) {
            Some(index) => index,
            None => {
                self.assets.push((asset, Position::default()));
                self.assets.len() - 1
            }
        };
        &mut self.assets[index].1
    }

    pub fn decide(&self, command: &WalletCommand) -> Result<Option<WalletEvent>, WalletRejection> {
        match command {
            WalletCommand::Hold { transfer, asset, amount } => {
                let position = self.position(*asset);
                if position.and_then(|position| position.hold_of(*transfer)).is_some() {
                    return Ok(None);
                }
                if self.status != AccountStatus::Active {
                    return Err(HoldRejection::NotActive { status: self.status }.into());
                }
                let empty = Position::default();
                match position.unwrap_or(&empty).check_hold(*transfer, *amount) {
                    Ok(true) => Ok(Some(WalletEvent::Held { transfer: *transfer, asset: *asset, amount: *amount })),
                    Ok(false) => Ok(None),
                    Err(FundsRejection::InsufficientFunds { available, requested }) => {
                        Err(HoldRejection::InsufficientFunds { available, requested }.into())
                    }
                    Err(FundsRejection::Overflow) => Err(HoldRejection::Overflow.into()),
                }
            }
            WalletCommand::Release { transfer, asset } => Ok(self
                .position(*asset)
                .and_then(|position| position.hold_of(*transfer))
                .map(|amount| WalletEvent::Released { transfer: *transfer, asset: *asset, amount })),
            WalletCommand::Post { transfer, asset } => Ok(self
                .position(*asset)
                .and_then(|position| position.hold_of(*transfer))
                .map(|amount| WalletEvent::Posted { transfer: *transfer, asset: *asset, amount })),
            WalletCommand::Credit { transfer, asset, amount } => {
                if self.position(*asset).is_some_and(|position| position.credited_recently(*transfer)) {
                    return Ok(None);
                }
                if self.status != AccountStatus::Active {
                    return Err(CreditRejection::NotActive { status: self.status }.into());
                }
                let empty = Position::default();
                match self.position(*asset).unwrap_or(&empty).check_credit(*transfer, *amount) {
                    Ok(true) => Ok(Some(WalletEvent::Credited { transfer: *transfer, asset: *asset, amount: *amount })),
                    Ok(false) => Ok(None),
                    Err(Overflow) => Err(CreditRejection::Overflow.into()),
                }
            }
            WalletCommand::SetStatus { action } => {
                if self.status == AccountStatus::Closed {
                    return Err(StatusRejection::Closed.into());
                }
                let status = match action {
                    StatusAction::Block => AccountStatus::Blocked,
                    StatusAction::Unblock => AccountStatus::Active,
                    StatusAction::Close => {
                        if let Some((_, position)) =
                            self.assets.iter().find(|(_, position)| !position.balance.is_zero() || position.has_holds())
                        {
                            return Err(
                                StatusRejection::NotEmpty { balance: position.balance, held: position.held }.into()
                            );
                        }
                        AccountStatus::Closed
                    }
                };
                Ok((status != self.status).then_some(WalletEvent::StatusChanged { status }))
            }
        }
    }

    pub fn apply(&mut self, event: &WalletEvent) -> Result<(), Overflow> {
        match event {
            WalletEvent::Held { transfer, asset, amount } => self.position_mut(*asset).apply_hold(*transfer, *amount),
            WalletEvent::Released { transfer, asset, .. } => {
                self.position_mut(*asset).apply_release(*transfer).map(|_| ())
            }
            WalletEvent::Posted { transfer, asset, amount } => {
                let position = self.position_mut(*asset);
                match position.apply_post(*transfer)? {
                    Some(_) => Ok(()),
                    None => position.apply_debit(*amount),
                }
            }
            WalletEvent::Credited { transfer, asset, amount } => {
                self.position_mut(*asset).apply_credit(*transfer, *amount)
            }
            WalletEvent::StatusChanged { status } => {
                self.status = *status;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn wallet() -> Wallet {
        Wallet::open(WalletId::from_u128(1), UserId::from_u128(2), Timestamp::default())
    }

    fn run(wallet: &mut Wallet, command: WalletCommand) -> Result<(), WalletRejection> {
        if let Some(event) = wallet.decide(&command)? {
            wallet.apply(&event).expect("no overflow");
        }
        Ok(())
    }

    #[test]
    fn each_asset_has_its_own_balance_and_holds() {
        let mut wallet = wallet();
        let t = |n| TransferId::from_u128(n);
        run(&mut wallet, WalletCommand::Credit { transfer: t(1), asset: Currency::BTC, amount: dec!(1.5) }).unwrap();
        run(&mut wallet, WalletCommand::Credit { transfer: t(2), asset: Currency::ETH, amount: dec!(3) }).unwrap();
        run(&mut wallet, WalletCommand::Hold { transfer: t(3), asset: Currency::BTC, amount: dec!(1) }).unwrap();
        assert_eq!(
            run(&mut wallet, WalletCommand::Hold { transfer: t(4), asset: Currency::BTC, amount: dec!(1) }),
            Err(HoldRejection::InsufficientFunds { available: dec!(0.5), requested: dec!(1) }.into())
        );
        run(&mut wallet, WalletCommand::Hold { transfer: t(4), asset: Currency::ETH, amount: dec!(3) }).unwrap();
        run(&mut wallet, WalletCommand::Post { transfer: t(3), asset: Currency::BTC }).unwrap();
        run(&mut wallet, WalletCommand::Release { transfer: t(4), asset: Currency::ETH }).unwrap();
        let btc = wallet.position(Currency::BTC).unwrap();
        let eth = wallet.position(Currency::ETH).unwrap();
        assert_eq!((btc.balance, btc.held), (dec!(0.5), dec!(0)));
        assert_eq!((eth.balance, eth.held), (dec!(3), dec!(0)));
    }

    #[test]
    fn holding_an_asset_never_received_is_insufficient_funds() {
        let wallet = wallet();
        let command =
            WalletCommand::Hold { transfer: TransferId::from_u128(1), asset: Currency::USDC, amount: dec!(1) };
        assert_eq!(
            wallet.decide(&command),
            Err(HoldRejection::InsufficientFunds { available: dec!(0), requested: dec!(1) }.into())
        );
    }

    #[test]
    fn a_wallet_with_money_cannot_close_and_a_blocked_one_refuses_credits() {
        let mut wallet = wallet();
        let t = TransferId::from_u128(1);
        run(&mut wallet, WalletCommand::Credit { transfer: t, asset: Currency::BTC, amount: dec!(1) }).unwrap();
        assert!(matches!(
            wallet.decide(&WalletCommand::SetStatus { action: StatusAction::Close }),
            Err(WalletRejection::Status(StatusRejection::NotEmpty { .. }))
        ));
        run(&mut wallet, WalletCommand::SetStatus { action: StatusAction::Block }).unwrap();
        let credit =
            WalletCommand::Credit { transfer: TransferId::from_u128(2), asset: Currency::BTC, amount: dec!(1) };
        assert_eq!(wallet.decide(&credit), Err(CreditRejection::NotActive { status: AccountStatus::Blocked }.into()));
    }
}
