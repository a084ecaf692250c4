//! The transport's floor: what one single-transfer request costs the server before Tally does
//! any work.
//!
//! Tally's own HTTP server (`tally_http::server`: one `SO_REUSEPORT` listener per runtime
//! thread, hyper with the same connection settings) serving one route, `POST /v1/transfers`,
//! that reads the request's body and answers `201` with a fixed transfer of the size Tally
//! answers. No middleware, no JSON parsing, no engine, no journal, no database.
//!
//! `scripts/bench`'s `floor` scenario drives it with the `wrk` scenario's script, so its CPU
//! per request is the part of a transfer's CPU that HTTP/1.1 over loopback costs on the
//! machine (the kernel's TCP on both ends of loopback is charged to the sender, hyper's parse
//! and write, the runtime's polling), measured the same way as Tally's.
//!
//! ```text
//! http-floor 127.0.0.1:0 2      # address, threads; prints the bound address, runs until killed
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use tally_actors::Runtime;
use tally_http::server::{Server, ServerConfig};

/// A completed internal transfer as Tally answers it (the same fields, a representative size).
const ANSWER: &str = r#"{"id":"01a23b05-8c1f-7342-b4d5-0056ebc825e2","type":"internal","status":"completed","source_account_id":"01a23b05-8b1e-72a1-b23b-ff4dfff5eb65","destination_account_id":"01a23b05-8b23-707f-87da-38d64d90470d","amount":"0.01","currency":"USD","fee":"0.00","fx_rate":null,"destination_amount":"0.01","destination_currency":"USD","total_debited":"0.01","pending_reason":null,"failure_reason":null,"reference":"wrk","description":null,"beneficiary":null,"created_at":"2026-12-03T08:29:09.023834Z","completed_at":"2026-12-03T08:29:09.024431Z","metadata":{},"pending_expires_at":null}"#;

async fn create(body: Bytes) -> impl IntoResponse {
    // The body is read whole, as Tally's JSON extractor reads it, and otherwise ignored.
    std::hint::black_box(body);
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], ANSWER)
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr =
        args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned()).parse().map_err(|error| format!("address: {error}"))?;
    let threads: usize = match args.next() {
        Some(text) => text.parse().map_err(|error| format!("threads: {error}"))?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let runtime = Runtime::start(threads).map_err(|error| format!("starting the runtime: {error}"))?;
    let app = Router::new().route("/v1/transfers", post(create));
    let server = Server::start(&runtime, listen, app, ServerConfig::default())
        .map_err(|error| format!("binding {listen}: {error}"))?;
    println!("{}", server.local_addr());
    // Serves on the runtime's threads until the process is killed.
    loop {
        std::thread::park();
    }
}
