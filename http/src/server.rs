//! `tally serve`'s HTTP server: one listener per runtime thread, each serving to the end every
//! connection it accepts, as actix-web's workers do.
//!
//! The listeners share one address through `SO_REUSEPORT`: the kernel spreads new connections
//! over them, and a connection then lives on the thread that accepted it, which also runs the
//! actors and sagas of that thread's shards. A request never crosses a thread to be parsed,
//! routed or answered.
//!
//! What a server on the public internet needs, each answered or closed cleanly:
//! - **Header-read timeout**: a client must deliver a request's complete header within
//!   `header_read_timeout` of the connection becoming ready for it (hyper starts the clock at
//!   accept, and on a kept-alive connection at the end of the previous response). A client
//!   that sends half a header and stops is disconnected when it passes.
//! - **Keep-alive idle timeout**: the same clock, so a kept-alive connection idle that long is
//!   closed. actix-web defaults both to 5 s; Tally uses 10 s for both (`TALLY_HTTP_TIMEOUT_SECS`).
//! - **Stalled connections**: hyper's clock runs only while an HTTP/1 connection waits for a
//!   request head. Before the protocol is chosen (hyper-util reads the first bytes to tell an
//!   HTTP/2 preface from HTTP/1 with no timer), on an HTTP/2 connection, and while an answer is
//!   being written to a client that does not read, nothing timed out, and such a connection
//!   held its place under the bound for ever (a review found all three). Each connection now
//!   has a watchdog (`Activity`, `stalled`): no handler running and not one byte read or
//!   written for `header_read_timeout` (sampled four times per period, so closed within 1.25
//!   of it) ends it, gracefully first (an HTTP/2 `GOAWAY`), then by closing the socket.
//!   Handlers may take their time (a long poll waits 30 s): the watchdog waits while one runs.
//! - **Connection bound**: at most `connections_max` open connections per node. Beyond it a
//!   new connection is answered `503 OVERLOADED` (problem+json, `Retry-After: 1`,
//!   `Connection: close`) and closed, so file descriptors can never run out under a flood.
//!   An HTTP/2 connection carries at most `HTTP2_STREAMS_MAX` requests at once (hyper's
//!   default is 200), so the bound on connections also bounds the requests a node holds.
//!
//! An address another process already listens on is refused at start-up, even one that
//! listens with `SO_REUSEPORT` too (see `refuse_a_port_in_use`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tally_actors::Runtime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt;

/// Requests at once on one HTTP/2 connection, announced in its `SETTINGS`. hyper's default of
/// 200 let 16,384 connections hold 3.3 million requests (each waiting under the concurrency
/// bound with its headers in memory; found by a review); 32 bounds them to half a million. A
/// client with more to send at once opens another connection or sends a batch.
pub const HTTP2_STREAMS_MAX: u32 = 32;

/// How the server treats connections. Every number is a bound with a reason.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Time to deliver a request's header, counted from the moment the connection is ready for
    /// it; also the keep-alive idle timeout (see the module's comment). 10 s is twice a slow
    /// mobile round trip's worst case and short enough that a slow-header flood holds each
    /// descriptor briefly.
    pub header_read_timeout: Duration,
    /// Open connections per node. 16,384 is far above what a load test or a fleet of clients
    /// with pools needs on two cores, and well under the default descriptor limit of a
    /// service (65,536 in systemd units), leaving room for the database and files.
    pub connections_max: usize,
    /// Kernel backlog of each listener: connections accepted by the kernel and not yet by us.
    pub backlog: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { header_read_timeout: Duration::from_secs(10), connections_max: 16_384, backlog: 4_096 }
    }
}

/// A running server: its address, and the switch that stops it.
pub struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// State every listener and connection of one server shares.
struct Shared {
    app: Router,
    config: ServerConfig,
    open: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

impl Server {
    /// Binds one listener per thread of `runtime` on `listen` and serves `app` on them. Binding
    /// happens here, so an address in use is an error now, not in a background task.
    pub fn start(runtime: &Runtime, listen: SocketAddr, app: Router, config: ServerConfig) -> std::io::Result<Server> {
        if listen.port() != 0 {
            refuse_a_port_in_use(listen)?;
        }
        let mut listeners = Vec::with_capacity(runtime.threads());
        let mut address = listen;
        for _ in 0..runtime.threads() {
            let listener = bind(address, config.backlog)?;
            // The first bind may have picked the port (`:0`); the others share it.
            address = listener.local_addr()?;
            listeners.push(Some(listener));
        }
        let (stop, stopped) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared { app, config, open: Arc::clone(&open), stop: stopped });
        let listeners = Arc::new(Mutex::new(listeners));
        let started = runtime.spawn_local_each(move |thread| {
            let listener = listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[thread].take();
            let shared = Arc::clone(&shared);
            async move {
                if let Some(listener) = listener {
                    accept_loop(listener, shared).await;
                }
            }
        });
        if !started {
            return Err(std::io::Error::other("the runtime stopped before the server started"));
        }
        Ok(Server { local_addr: address, stop, open })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, asks every open connection to finish its request in flight and close,
    /// and waits up to `grace` for them to do so.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.open.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Fails with `AddrInUse` if another socket listens on `address`. `SO_REUSEPORT`, which lets
/// this server's own listeners share the port, would also let a second process of the same
/// user (an old Tally left running, another instance started by mistake) join the group, and
/// the kernel would then split new connections between the two without a word. A socket
/// bound without it conflicts with any listener on the port, so binding one first, and
/// closing it, turns that silent sharing into a clear error at start-up.
fn refuse_a_port_in_use(address: SocketAddr) -> std::io::Result<()> {
    let probe = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    // Connections of an earlier run still in TIME_WAIT do not make the port in use.
    probe.set_reuse_address(true)?;
    probe.bind(&address.into()).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(error.kind(), "another process listens on it")
        } else {
            error
        }
    })
}

fn bind(address: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "a listener could not join its thread's runtime");
            return;
        }
    };
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve(stream, peer, &shared),
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: not fatal. Back
                    // off a little so a descriptor shortage does not spin the thread.
                    metrics::counter!("tally_http_accept_errors_total").increment(1);
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Serves one accepted connection on this thread until it closes, or refuses it over the bound.
fn serve(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    if shared.open.fetch_add(1, Ordering::AcqRel) >= shared.config.connections_max {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("tally_http_connections_refused_total").increment(1);
        tokio::task::spawn_local(refuse(stream));
        return;
    }
    metrics::gauge!("tally_http_connections_open").increment(1.0);
    let _ = stream.set_nodelay(true);
    let app = shared.app.clone();
    let activity = Arc::new(Activity::default());
    let handling = Arc::clone(&activity);
    // Handlers that need the client's address (the login limit, a session's ip) read it from
    // `ConnectInfo`, as under `axum::serve`.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let handler = Handling::start(&handling);
        async move {
            let response = app.oneshot(request).await.unwrap_or_else(|never| match never {});
            drop(handler);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(LocalExecutor);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(shared.config.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(HTTP2_STREAMS_MAX);
    let shared = Arc::clone(shared);
    tokio::task::spawn_local(async move {
        let io = Watched { io: stream, activity: Arc::clone(&activity) };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut stop = shared.stop.clone();
        let idle = shared.config.header_read_timeout;
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = stop.wait_for(|stopped| *stopped) => {
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
            () = stalled(&activity, idle) => {
                metrics::counter!("tally_http_stalled_connections_total").increment(1);
                connection.as_mut().graceful_shutdown();
                // A connection whose answer is stuck in a client that does not read never
                // finishes gracefully: it is dropped, which closes the socket.
                let _ = tokio::time::timeout(STALLED_GRACE, connection.as_mut()).await;
                Ok(())
            }
        };
        if let Err(error) = result
            && error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
        {
            metrics::counter!("tally_http_header_timeouts_total").increment(1);
        }
        metrics::gauge!("tally_http_connections_open").decrement(1.0);
        shared.open.fetch_sub(1, Ordering::AcqRel);
    });
}

/// How long a stalled connection may take to close gracefully before its socket is dropped.
const STALLED_GRACE: Duration = Duration::from_secs(1);

/// What a connection's watchdog looks at: how many reads and writes moved bytes, and how many
/// of its requests a handler is working on. Counters, not clocks: a transfer's path pays an
/// uncontended add per read or write, and no clock reading.
#[derive(Debug, Default)]
struct Activity {
    progress: AtomicU64,
    handling: AtomicUsize,
}

/// One request in a handler's hands, for as long as this lives (dropped also if the request's
/// future is, as when its connection ends).
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: &Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Handling(Arc::clone(activity))
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once `idle` passed with no handler running and no byte read or written. Sampled
/// four times per period, so a stall ends the connection between `idle` and 1.25 × `idle`
/// after its last byte.
async fn stalled(activity: &Activity, idle: Duration) {
    let tick = idle / 4;
    let mut seen = activity.progress.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.progress.load(Ordering::Relaxed);
        if now != seen || activity.handling.load(Ordering::Relaxed) > 0 {
            seen = now;
            quiet = Duration::ZERO;
            continue;
        }
        quiet += tick;
        if quiet >= idle {
            return;
        }
    }
}

/// A connection's socket, counting the reads and writes that move bytes (`Activity`).
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn moved(&self) {
        self.activity.progress.fetch_add(1, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(written)) if written > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(written)) if written > 0) {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Answers a connection over the bound with `503 OVERLOADED` and closes it. The answer is
/// written before the request is read, which HTTP/1.1 allows (an early response) and every
/// client reads as the response to its request.
async fn refuse(mut stream: TcpStream) {
    let body = format!(
        r#"{{"type":"https://tally.dev/problems/overloaded","title":"Service Unavailable","status":503,"code":"OVERLOADED","detail":"this node holds as many connections as it may; retry shortly","request_id":"{}"}}"#,
        uuid::Uuid::new_v4()
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Runs hyper's HTTP/2 stream tasks on the connection's own thread.
#[derive(Clone, Copy, Debug)]
struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: std::future::Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}
