//! The small runtime each SQL store runs its queries on: the pool's connections and background
//! tasks then never depend on which runtime the caller is on (the journal writer's, an actix
//! arbiter's, the HTTP runtime's, a CLI's), and dropping a store never drops a runtime inside
//! another runtime's async context (which would panic).

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

use crate::store::StoreError;

pub struct StoreRuntime {
    handle: Handle,
    /// In an `Option` so `Drop` can take it and shut it down in the background.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for StoreRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRuntime").finish_non_exhaustive()
    }
}

impl StoreRuntime {
    /// One worker thread: it only drives the connections' I/O; the database does the work.
    pub fn new(thread_name: &str) -> Result<StoreRuntime, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|error| StoreError::Unavailable(format!("store runtime: {error}")))?;
        Ok(StoreRuntime { handle: runtime.handle().clone(), runtime: Some(runtime) })
    }

    /// Runs `work` on the store's runtime and waits for it from the caller's.
    pub async fn run<T, Fut>(&self, work: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.handle.spawn(work).await.map_err(|error| StoreError::Unavailable(format!("store task: {error}")))?
    }
}

impl StoreRuntime {
    /// Starts a background task on the store's runtime; it ends with its work or the runtime.
    pub fn spawn<Fut>(&self, work: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(work));
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
