//! The small runtime each identity store runs its queries on, as the ledger stores do: the
//! pool's I/O and background tasks then never depend on the caller's runtime (the HTTP
//! runtime, a test's runtime, a CLI's), and dropping the store never drops a runtime inside
//! another runtime's async context.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

use crate::store::StoreError;

pub(crate) struct StoreRuntime {
    handle: Handle,
    /// In an `Option` so `Drop` can take it and shut it down in the background: dropping a
    /// runtime inside another runtime's async context would panic.
    runtime: Option<Runtime>,
}

impl StoreRuntime {
    /// One worker thread: identity queries are few (a login, a registration, a key load) and
    /// short; the thread only drives their I/O.
    pub(crate) fn new(thread_name: &str) -> Result<StoreRuntime, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|error| StoreError::Unavailable(format!("store runtime: {error}")))?;
        Ok(StoreRuntime { handle: runtime.handle().clone(), runtime: Some(runtime) })
    }

    /// Runs `work` on the store's runtime and waits for it from the caller's.
    pub(crate) async fn run<T, Fut>(&self, work: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.handle.spawn(work).await.map_err(|error| StoreError::Unavailable(format!("store task: {error}")))?
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
