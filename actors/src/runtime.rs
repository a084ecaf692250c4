//! The runtime: one single-threaded actix arbiter per core, and nothing else on the hot path.
//!
//! Each thread serves HTTP connections (the `http` crate runs its listeners here through
//! `spawn_local_each`), the account and wallet actors of the shards it owns, the sagas whose
//! source it owns, and its shards' journal writers. A transfer whose accounts live on the
//! request's thread never wakes another thread.
//!
//! Work for another thread travels through that thread's *inbox*: a queue and one wake-up.
//! A sender pushes a job; only the push that finds the queue empty wakes the thread, and the
//! thread runs every queued job in one go. Under load a thread is rarely asleep, so most
//! pushes cost a lock and no system call; when it is asleep, one wake-up carries every step
//! queued for it meanwhile.
//!
//! actix cannot start an actor outside its own runtime (it panics outside a `LocalSet`), so
//! everything that starts an actor or spawns a saga goes through `run_on` / `spawn_on`, which
//! accept work from any thread and run it on the right one.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use actix::{Arbiter, ArbiterHandle, System};
use tokio::sync::Notify;

/// A unit of work for a thread: runs on that thread, inside its actix runtime.
pub type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// The index of the runtime thread this is, if it is one (set when the thread starts).
    static CURRENT_THREAD: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// Counts a runtime instance so that a thread of one runtime is never mistaken for a thread
/// of another (tests start several engines in one process).
static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

/// One thread's queue of jobs from other threads.
#[derive(Default)]
struct Inbox {
    jobs: Mutex<Queue>,
    wake: Notify,
    /// Times the drain task woke (each carries every job queued meanwhile), and jobs run.
    wakeups: AtomicU64,
    jobs_run: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Set when the runtime stops: jobs are dropped (and with them whatever reply channels
    /// they hold, so their waiters learn the work will not run) instead of queued.
    closed: bool,
}

impl Inbox {
    /// Queues `job`; false (and the job dropped) if the thread has stopped.
    fn push(&self, job: Job) -> bool {
        let mut queue = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.closed {
            return false;
        }
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push(job);
        drop(queue);
        // Only the first job of a batch wakes the thread: the drain task takes the whole
        // queue when it runs, so later jobs ride along. A wake-up that finds the task busy
        // is stored as a permit and costs no system call.
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Refuses every later job and drops the queued ones.
    fn close(&self) {
        let jobs = {
            let mut queue = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.closed = true;
            std::mem::take(&mut queue.jobs)
        };
        drop(jobs);
    }

    /// Runs forever on the inbox's thread: waits for a wake-up, then runs every queued job.
    async fn drain(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            std::mem::swap(&mut batch, &mut self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).jobs);
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            self.jobs_run.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for job in batch.drain(..) {
                // A job that panics must not end the drain task, which would leave every later
                // job for this thread (steps, answers, actor starts) unrun for good.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a job sent to a runtime thread panicked; the thread goes on");
                }
            }
        }
    }
}

struct Worker {
    arbiter: ArbiterHandle,
    inbox: Arc<Inbox>,
}

/// How often threads woke for work from other threads, and how much each wake-up carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    pub wakeups: u64,
    pub jobs: u64,
}

/// Where an entity lives: its shard (the unit that owns actors and, with the per-shard
/// journal, durability) and the thread that serves that shard.
///
/// The shard of an id is a fixed function of the id's bits, stable across processes, Rust
/// versions and restarts: what a shard owns must not move when the binary changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    shards: usize,
    threads: usize,
}

impl Placement {
    pub fn new(shards: usize, threads: usize) -> Placement {
        Placement { shards: shards.max(1), threads: threads.max(1) }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard of the entity whose id is `id` (a UUID's 128 bits). Both halves are folded
    /// in and mixed (Fibonacci hashing), so v4 and v7 ids and the system accounts' fixed ids,
    /// which differ only in their low bits, all spread evenly.
    pub fn shard_of(&self, id: u128) -> usize {
        let folded = (id as u64) ^ ((id >> 64) as u64);
        let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        (mixed % self.shards as u64) as usize
    }

    /// The thread that serves `shard`.
    pub fn thread_of_shard(&self, shard: usize) -> usize {
        shard % self.threads
    }

    /// The thread that serves the entity whose id is `id`.
    pub fn thread_of(&self, id: u128) -> usize {
        self.thread_of_shard(self.shard_of(id))
    }
}

pub struct Runtime {
    id: u64,
    workers: Vec<Worker>,
    system: System,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("threads", &self.workers.len()).finish()
    }
}

impl Runtime {
    /// Starts the actix system on a thread of its own (it only supervises the arbiters) and
    /// `threads` arbiter threads, each with its inbox.
    pub fn start(threads: usize) -> std::io::Result<Arc<Runtime>> {
        let count = threads.max(1);
        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("tally-actix".to_owned()).spawn(move || {
            let system = actix::System::new();
            let arbiters: std::io::Result<Vec<Arbiter>> =
                system.block_on(async { (0..count).map(|_| Arbiter::try_new()).collect() });
            let arbiters = match arbiters {
                Ok(arbiters) => arbiters,
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            let workers: Vec<Worker> = arbiters
                .iter()
                .enumerate()
                .map(|(index, arbiter)| {
                    let inbox = Arc::new(Inbox::default());
                    let drain = Arc::clone(&inbox);
                    arbiter.spawn_fn(move || {
                        CURRENT_THREAD.with(|current| current.set(Some((id, index))));
                        actix::spawn(drain.drain());
                    });
                    Worker { arbiter: arbiter.handle(), inbox }
                })
                .collect();
            if sender.send(Ok((System::current(), workers))).is_err() {
                return;
            }
            if let Err(error) = system.run() {
                tracing::error!(%error, "actix system stopped with an error");
            }
            for arbiter in arbiters {
                arbiter.stop();
                let _ = arbiter.join();
            }
        })?;
        let (system, workers) =
            receiver.recv().map_err(|_| std::io::Error::other("the actix system thread did not start"))??;
        Ok(Arc::new(Runtime { id, workers, system, thread: Mutex::new(Some(thread)) }))
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The index of the calling thread if it is one of this runtime's threads.
    pub fn current_thread(&self) -> Option<usize> {
        CURRENT_THREAD.with(Cell::get).and_then(|(runtime, index)| (runtime == self.id).then_some(index))
    }

    /// Runs `job` on thread `thread`, through its inbox. From that thread itself this wakes no
    /// other thread: the job runs when the thread's drain task next runs. (It is not run
    /// inline: a caller on the thread may be a task outside actix's `LocalSet`, such as one
    /// made by `tokio::spawn`, where starting an actor or a local task would panic.) Returns
    /// false if the runtime has stopped.
    pub fn run_on(&self, thread: usize, job: impl FnOnce() + Send + 'static) -> bool {
        let Some(worker) = self.workers.get(thread) else { return false };
        worker.inbox.push(Box::new(job))
    }

    /// Runs `future` as a task of its own on thread `thread`. Returns false if the runtime has
    /// stopped.
    pub fn spawn_on(&self, thread: usize, future: impl Future<Output = ()> + Send + 'static) -> bool {
        self.run_on(thread, move || {
            actix::spawn(future);
        })
    }

    /// Starts one task on every thread, made on that thread by `make(thread)`: the future
    /// need not be `Send`, so it may hold thread-local state (the HTTP listeners).
    pub fn spawn_local_each<F, Fut>(&self, make: F) -> bool
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let make = Arc::new(make);
        (0..self.threads()).all(|thread| {
            let make = Arc::clone(&make);
            self.run_on(thread, move || {
                actix::spawn(make(thread));
            })
        })
    }

    /// The arbiter of thread `thread` (clamped to the last), for actix's `start_in_arbiter`.
    pub(crate) fn arbiter(&self, thread: usize) -> &ArbiterHandle {
        let index = thread.min(self.workers.len().saturating_sub(1));
        &self.workers[index].arbiter
    }

    /// Wake-ups and jobs of every inbox since start.
    pub fn inbox_stats(&self) -> InboxStats {
        self.workers.iter().fold(InboxStats::default(), |total, worker| InboxStats {
            wakeups: total.wakeups + worker.inbox.wakeups.load(Ordering::Relaxed),
            jobs: total.jobs + worker.inbox.jobs_run.load(Ordering::Relaxed),
        })
    }

    /// Stops every thread and waits for them. Idempotent. Jobs still queued are dropped.
    pub fn stop(&self) {
        let thread = self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        for worker in &self.workers {
            worker.inbox.close();
        }
        if thread.is_some() {
            self.system.stop();
        }
        // Joining from one of our own threads would wait for itself: signal and leave.
        if self.current_thread().is_some() || System::try_current().is_some() {
            return;
        }
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("actix system thread panicked");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Work that must finish once started, polled in its caller's task while the caller waits, and
/// moved to a task of its own on `thread` if the caller is dropped first (a request whose
/// client went away). The work is boxed, so it keeps its place in memory when it moves.
pub struct RunToEnd<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    runtime: Arc<Runtime>,
    thread: usize,
}

impl<T: Send + 'static> RunToEnd<T> {
    pub fn new(work: Pin<Box<dyn Future<Output = T> + Send>>, runtime: Arc<Runtime>, thread: usize) -> Self {
        RunToEnd { work: Some(work), runtime, thread }
    }
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        // `None` only after it answered, and a finished future is not polled again.
        let Some(work) = this.work.as_mut() else { return Poll::Pending };
        let output = std::task::ready!(work.as_mut().poll(cx));
        this.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // Its output has no one to go to; the work itself must still end. If the runtime
            // has stopped, the work is dropped with it, as every queued task is.
            self.runtime.spawn_on(self.thread, async move {
                let _ = work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn placement_is_a_fixed_function_of_the_id_and_spreads_ids_evenly() {
        let placement = Placement::new(4, 2);
        // Pinned: a shard's data must never move to another shard when the binary changes.
        assert_eq!(placement.shard_of(0x0000_0000_0000_7a11_0000_0000_0001_0000), 1);
        assert_eq!(placement.shard_of(0x0192_a3b4_c5d6_7e8f_9a0b_1c2d_3e4f_5a6b), 1);
        let mut counts = [0_u32; 4];
        let mut seed = 7_u128;
        for _ in 0..40_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            counts[placement.shard_of(seed)] += 1;
        }
        assert!(counts.iter().all(|&n| (9_000..11_000).contains(&n)), "{counts:?}");
        assert_eq!(placement.thread_of_shard(3), 1);
    }

    #[tokio::test]
    async fn jobs_run_on_the_thread_they_name_and_a_thread_knows_its_index() {
        let runtime = Runtime::start(2).unwrap();
        for thread in 0..2 {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let inner = Arc::clone(&runtime);
            assert!(runtime.run_on(thread, move || {
                let _ = sender.send(inner.current_thread());
            }));
            assert_eq!(receiver.await.unwrap(), Some(thread));
        }
        assert_eq!(runtime.current_thread(), None, "the test's thread is not a runtime thread");
        runtime.stop();
    }

    #[tokio::test]
    async fn work_whose_caller_goes_away_still_runs_to_its_end() {
        let runtime = Runtime::start(1).unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finished, done) = tokio::sync::oneshot::channel();
        let work = Box::pin(async move {
            let _ = released.await;
            let _ = finished.send(7);
            7
        });
        let mut caller = RunToEnd::new(work, Arc::clone(&runtime), 0);
        // The caller polls once (the work waits), then goes away.
        assert!(futures::poll!(&mut caller).is_pending());
        drop(caller);
        release.send(()).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), done).await.unwrap().unwrap(), 7);
        // Not dropped: the caller gets the output.
        let answered = RunToEnd::new(Box::pin(async { 8 }), Arc::clone(&runtime), 0).await;
        assert_eq!(answered, 8);
        runtime.stop();
    }

    #[tokio::test]
    async fn a_job_that_panics_leaves_the_thread_running_the_jobs_after_it() {
        let runtime = Runtime::start(1).unwrap();
        // Queued together, so that one wake-up of the drain task carries all three.
        let (release, released) = std::sync::mpsc::channel::<()>();
        runtime.run_on(0, move || {
            let _ = released.recv_timeout(Duration::from_secs(5));
        });
        let (before_sender, before) = tokio::sync::oneshot::channel();
        runtime.run_on(0, move || {
            let _ = before_sender.send(1);
        });
        runtime.run_on(0, || panic!("a job's bug"));
        let (after_sender, after) = tokio::sync::oneshot::channel();
        runtime.run_on(0, move || {
            let _ = after_sender.send(2);
        });
        release.send(()).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), before).await.unwrap().unwrap(), 1);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), after).await.unwrap().unwrap(),
            2,
            "the job after the panic ran"
        );
        // And later jobs, on a later wake-up, still run.
        let (later_sender, later) = tokio::sync::oneshot::channel();
        assert!(runtime.run_on(0, move || {
            let _ = later_sender.send(3);
        }));
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), later).await.unwrap().unwrap(), 3);
        runtime.stop();
    }

    #[tokio::test]
    async fn one_wake_up_carries_every_job_queued_while_the_thread_was_busy() {
        let runtime = Runtime::start(1).unwrap();
        // Keep the thread busy, queue a thousand jobs meanwhile, then let it go.
        let (started, busy) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        runtime.run_on(0, move || {
            let _ = started.send(());
            let _ = released.recv_timeout(Duration::from_secs(5));
        });
        busy.recv().unwrap();
        let before = runtime.inbox_stats();
        let done = Arc::new(AtomicU64::new(0));
        for _ in 0..1_000 {
            let done = Arc::clone(&done);
            runtime.run_on(0, move || {
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        release.send(()).unwrap();
        for _ in 0..500 {
            if done.load(Ordering::Relaxed) == 1_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(done.load(Ordering::Relaxed), 1_000);
        let after = runtime.inbox_stats();
        assert_eq!(after.jobs - before.jobs, 1_000);
        assert!(after.wakeups - before.wakeups <= 2, "{before:?} → {after:?}: the jobs rode one wake-up");
        runtime.stop();
    }
}
