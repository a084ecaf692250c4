//! What the stores keep for customer wallets and crypto operations beyond the journal's
//! ledger rows: wallet profiles (asset, deposit address) and the read side of wallet
//! postings and crypto operations (`migrations/*/0008_wallets.sql`).

use tally_engine::{Currency, Timestamp, UserId, WalletId};

/// A customer wallet as the API shows it: one asset, one deposit address. The ledger side
/// (positions, holds) is the engine's `Wallet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletProfile {
    pub wallet: WalletId,
    pub owner: UserId,
    pub asset: Currency,
    pub deposit_address: String,
    pub created_at: Timestamp,
}

/// Which wallets an admin's listing shows (`WalletStore::wallet_profiles_page`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalletFilter {
    pub asset: Option<Currency>,
    pub owner: Option<UserId>,
}

impl WalletFilter {
    pub fn matches(&self, profile: &WalletProfile) -> bool {
        self.asset.is_none_or(|asset| profile.asset == asset) && self.owner.is_none_or(|owner| profile.owner == owner)
    }
}

/// Wallet profiles per owner are few (one per asset); this bounds a listing anyway.
pub const WALLETS_PER_OWNER_MAX: i64 = 256;
