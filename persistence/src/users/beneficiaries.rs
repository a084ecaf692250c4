//! Saved beneficiaries (migration 0030): the payees a customer keeps for external transfers.
//! Implemented by both identity stores with one text (`beneficiaries_sql.rs`);
//! creating and deleting append their audit entry in the same transaction.
//!
//! A beneficiary never changes once saved (there is no edit: a new name or IBAN is a new
//! beneficiary), so a `beneficiary_id` names one payee for good. Deleting marks the row
//! (`deleted_at`) instead of removing it, so that a transfer retried under its
//! Idempotency-Key after its beneficiary was deleted can still be recognised as the same
//! request (the HTTP layer decides when a deleted one may be resolved; see
//! `http/src/beneficiaries.rs`).

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::audit::AuditRecord;
use crate::store::StoreError;

/// A saved payee as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedBeneficiary {
    pub id: Uuid,
    pub user: UserId,
    pub name: String,
    /// The electronic form (no spaces, upper case), checked by the HTTP layer.
    pub iban: String,
    pub created_at: Timestamp,
    /// `Some` once deleted: no longer listed or usable for a new transfer.
    pub deleted_at: Option<Timestamp>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateBeneficiaryError {
    /// The user already holds the most live beneficiaries allowed.
    #[error("the user already holds {0} beneficiaries")]
    LimitReached(u32),
    /// The user already holds a live beneficiary with this IBAN.
    #[error("a beneficiary with this IBAN is already saved")]
    IbanTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait BeneficiaryStore: Send + Sync + 'static {
    /// Inserts `beneficiary` (live) and appends `audit`, in one transaction, unless its user
    /// already holds `live_max` live beneficiaries or a live one with the same IBAN. The count
    /// and the insert are one serialised step per user, so concurrent creates cannot pass the
    /// bound together.
    async fn create_beneficiary(
        &self,
        beneficiary: &SavedBeneficiary,
        live_max: u32,
        audit: &AuditRecord,
    ) -> Result<(), CreateBeneficiaryError>;

    /// The user's live beneficiaries, newest first (`created_at`, then id), at most `limit`.
    async fn live_beneficiaries(&self, user: UserId, limit: u32) -> Result<Vec<SavedBeneficiary>, StoreError>;

    /// One of `user`'s beneficiaries, live or deleted; `None` if there is none with this id
    /// or it is another user's.
    async fn beneficiary(&self, user: UserId, id: Uuid) -> Result<Option<SavedBeneficiary>, StoreError>;

    /// Marks `user`'s live beneficiary `id` deleted at `now` and appends `audit`, in one
    /// transaction. False (nothing written) if the user has no live beneficiary with this id.
    async fn delete_beneficiary(
        &self,
        user: UserId,
        id: Uuid,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
}
