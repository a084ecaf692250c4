//! The routes of the API, by who calls them: `customer.rs`, `admin.rs`, `ops.rs` and
//! `webhooks.rs`, one router each. `app` (lib.rs) merges the four and puts every layer over all
//! of them, so no route escapes the metrics, the audit or the limits (`http_metrics.rs` checks
//! each operation of the OpenAPI document is counted).

mod admin;
mod customer;
mod ops;
mod webhooks;

pub use admin::admin;
pub use customer::customer;
pub use ops::ops;
pub use webhooks::webhooks;

/// The source of the four routers, for the tests that check the route table against the
/// OpenAPI document and the admin console's script: the one list of routes is the router.
#[cfg(test)]
pub(crate) const SOURCES: [&str; 4] =
    [include_str!("customer.rs"), include_str!("admin.rs"), include_str!("ops.rs"), include_str!("webhooks.rs")];
