//! The HTTP server as the public internet meets it, against a real `tally serve` (embedded
//! SQLite): connections that stall before choosing a protocol, over HTTP/2, or by not reading
//! their answers are closed within the timeout (each held its place under the connection bound
//! for ever until a review found them); errors that must be problem+json (an oversized signed
//! webhook body, Swagger UI's own errors, a path segment that is not UTF-8); the docs page's
//! security headers; and a client's `X-Request-Id` that cannot forge the log line's fields.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tally_tests::server::{Client, TallyServer, TempSqlite, read_until_closed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_SECS: u64 = 2;

async fn server(extra: &[(&str, &str)]) -> (TallyServer, TempSqlite) {
    let db = TempSqlite::new("hostile-clients");
    let timeout = TIMEOUT_SECS.to_string();
    let mut env = vec![("TALLY_HTTP_TIMEOUT_SECS", timeout.as_str())];
    env.extend_from_slice(extra);
    let server = TallyServer::start(&db.url(), &env).await;
    (server, db)
}

/// Status line and lower-cased header block of a raw HTTP/1.1 answer.
fn head_of(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head.to_ascii_lowercase())
}

/// hyper-util's `auto::Builder` first reads up to 24 bytes to tell HTTP/1 from an HTTP/2
/// preface, with no timer: the header-read timeout only starts once HTTP/1 is chosen. A client
/// that connects and sends nothing (or the first bytes of the preface) holds its slot forever;
/// enough of them and the node answers every new client `503 OVERLOADED`.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    const CONNECTIONS_MAX: usize = 8;
    let max = CONNECTIONS_MAX.to_string();
    let (server, _dir) = server(&[("TALLY_HTTP_CONNECTIONS_MAX", max.as_str())]).await;
    let address = format!("127.0.0.1:{}", server.port);
    let mut silent = Vec::new();
    for index in 0..CONNECTIONS_MAX {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        if index % 2 == 1 {
            // The start of the HTTP/2 preface, then nothing.
            stream.write_all(b"PRI * HTTP/2.0\r\n").await.expect("partial preface");
        }
        silent.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS + 4);
    let mut held = 0;
    for stream in &mut silent {
        let (_, closed) = read_until_closed(stream, deadline).await;
        if !closed {
            held += 1;
        }
    }
    assert_eq!(
        held,
        0,
        "{held} of {CONNECTIONS_MAX} silent connections still open {}s after connecting",
        TIMEOUT_SECS + 4
    );
    let response = reqwest::get(format!("{}/health/live", server.base_url())).await.expect("request");
    assert_eq!(response.status(), 200, "a well-behaved client is served once the silent ones are cut off");
}

/// HTTP/2 (prior knowledge) is served too, and neither the header-read timeout nor the
/// keep-alive idle timeout applies to it: an HTTP/2 connection left idle after its preface,
/// or one that sends half a HEADERS frame, is never closed.
#[tokio::test]
async fn an_idle_or_half_headed_http2_connection_is_closed_at_the_timeout() {
    let (server, _dir) = server(&[]).await;
    let address = format!("127.0.0.1:{}", server.port);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings = [0_u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let settings_ack = [0_u8, 0, 0, 4, 1, 0, 0, 0, 0];

    let mut idle = TcpStream::connect(&address).await.expect("connect");
    idle.write_all(preface).await.unwrap();
    idle.write_all(&settings).await.unwrap();
    let mut buffer = [0_u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await.expect("h2 answer").unwrap_or(0);
    if n == 0 {
        // HTTP/2 is not served (the preface was refused): nothing here can be held.
        return;
    }
    assert!(n >= 9 && buffer[3] == 4, "the server speaks HTTP/2: its first frame is SETTINGS ({:?})", &buffer[..n]);
    idle.write_all(&settings_ack).await.unwrap();

    let mut half = TcpStream::connect(&address).await.expect("connect");
    half.write_all(preface).await.unwrap();
    half.write_all(&settings).await.unwrap();
    // A HEADERS frame on stream 1 announcing 100 bytes of which 4 are sent.
    half.write_all(&[0, 0, 100, 1, 4, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41]).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS + 4);
    let (_, idle_closed) = read_until_closed(&mut idle, deadline).await;
    let (_, half_closed) = read_until_closed(&mut half, deadline).await;
    assert!(idle_closed, "an idle HTTP/2 connection is closed like an idle kept-alive HTTP/1.1 one");
    assert!(half_closed, "an HTTP/2 connection that sends half a header is cut off like an HTTP/1.1 one");
}

/// hyper's HTTP/2 server lets a connection carry 200 requests at once, so the node's bound on
/// connections (16,384) bounded the requests it holds only at 3.3 million. The server
/// announces a smaller number in its first `SETTINGS` frame (`HTTP2_STREAMS_MAX`).
#[tokio::test]
async fn an_http2_connection_is_told_how_many_requests_it_may_carry_at_once() {
    let (server, _dir) = server(&[]).await;
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", server.port)).await.expect("connect");
    // The client preface and an empty SETTINGS frame.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // The server's first frame is its SETTINGS: a 9-byte header, then 6 bytes per setting.
    let mut header = [0_u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header)).await.unwrap().unwrap();
    assert_eq!(header[3], 4, "a SETTINGS frame first");
    let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0_u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut payload)).await.unwrap().unwrap();
    let streams = payload
        .chunks_exact(6)
        .find(|setting| u16::from_be_bytes([setting[0], setting[1]]) == 3)
        .map(|setting| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
    assert_eq!(streams, Some(tally_http::server::HTTP2_STREAMS_MAX), "SETTINGS_MAX_CONCURRENT_STREAMS");
}

/// No write timeout: a client that asks for a large answer (the Swagger UI bundle, served
/// without a token) and never reads it stalls hyper's write forever, outside every timer
/// (the request time-out ends when the handler answers; the header-read timer only runs while
/// a request head is awaited). A few such clients hold every connection slot of the node.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_does_not_hold_its_connection_forever() {
    const CONNECTIONS_MAX: usize = 4;
    let max = CONNECTIONS_MAX.to_string();
    let (server, _dir) =
        server(&[("TALLY_HTTP_CONNECTIONS_MAX", max.as_str()), ("TALLY_REQUEST_TIMEOUT_SECS", "2")]).await;
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let path = "/docs/swagger-ui-bundle.js";
    let probe = reqwest::get(format!("{}{path}", server.base_url())).await.expect("bundle");
    assert_eq!(probe.status(), 200);
    assert!(probe.bytes().await.unwrap().len() > 1_000_000, "a large answer served without a token");

    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(8);
    let mut readers = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("pipelined requests");
        readers.push(stream);
    }
    // Header-read timeout + request time-out + slack: any write timeout of that order frees them.
    tokio::time::sleep(Duration::from_secs(TIMEOUT_SECS + 2 + 6)).await;
    let mut fresh = TcpStream::connect(address).await.expect("connect");
    fresh.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut fresh, Instant::now() + Duration::from_secs(5)).await;
    let (status, _) = head_of(&answer);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{CONNECTIONS_MAX} clients that never read still hold every slot 10 s later: {status}"
    );
    drop(readers);
}

/// The contract: every error, an oversized body included, is problem+json. The custodian
/// webhook (public, no token) takes its body as axum's raw `Bytes`, whose rejection is
/// axum's own `text/plain` 413.
#[tokio::test]
async fn an_oversized_body_on_the_custodian_webhook_is_answered_problem_json() {
    let (server, _dir) = server(&[]).await;
    let address = format!("127.0.0.1:{}", server.port);
    let size = tally_http::BODY_BYTES_MAX + 1;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /v1/webhooks/custodian HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Every byte announced, so the server reads them all and closes cleanly after its answer.
    let _ = stream.write_all(&vec![b' '; size]).await;
    let (answer, _) = read_until_closed(&mut stream, Instant::now() + Duration::from_secs(20)).await;
    let (status, head) = head_of(&answer);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(head.contains("content-type: application/problem+json"), "413 not problem+json:\n{head}");
}

/// `/docs/...` is Swagger UI's own handler: a file it does not have is an empty `404` with no
/// content type, and a path segment that is not UTF-8 is axum's `text/plain` 400.
#[tokio::test]
async fn errors_under_docs_are_problem_json() {
    let (server, _dir) = server(&[]).await;
    let http = reqwest::Client::new();
    for path in ["/docs/no-such-file.js", "/docs/%FF"] {
        let response = http.get(format!("{}{path}", server.base_url())).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap_or("").to_owned());
        let body = response.text().await.unwrap();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{path}: {status} answered {content_type:?} {body:?}"
        );
    }
}

/// `/admin` and `/ops` are served with a Content-Security-Policy (no framing), `nosniff`,
/// `no-referrer`; `/docs`, the third HTML page, where a user pastes a bearer token into
/// "Authorize", is served with none of them and can be framed.
#[tokio::test]
async fn the_docs_page_is_served_with_the_security_headers_of_the_other_pages() {
    let (server, _dir) = server(&[]).await;
    let response = reqwest::get(format!("{}/docs/", server.base_url())).await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
    assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{headers:?}");
    let framing_refused = headers
        .get("content-security-policy")
        .is_some_and(|policy| policy.to_str().unwrap().contains("frame-ancestors"))
        || headers.contains_key("x-frame-options");
    assert!(framing_refused, "/docs can be framed: {headers:?}");
}

/// Routes that take `Path<String>` directly (webhooks, limits, transfer types) answer a path
/// segment that is not UTF-8 after percent-decoding with axum's `text/plain` 400 (`ops.rs`
/// and `roles.rs` handle the same rejection as problem+json).
#[tokio::test]
async fn a_non_utf8_path_segment_on_admin_routes_is_answered_problem_json() {
    let (server, _dir) = server(&[]).await;
    let admin = Client::admin(&server).await;
    let cases = [
        (reqwest::Method::GET, "/v1/admin/webhooks/%FF", None),
        (reqwest::Method::PUT, "/v1/admin/limits/%FF", Some(serde_json::json!({}))),
        (reqwest::Method::PUT, "/v1/admin/transfer-types/%FF", Some(serde_json::json!({}))),
    ];
    for (method, path, body) in cases {
        let mut request = admin.http.request(method.clone(), format!("{}{path}", admin.base)).bearer_auth(&admin.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap_or("").to_owned());
        let text = response.text().await.unwrap();
        assert!((400..500).contains(&status), "{method} {path}: {status}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{method} {path}: {status} answered {content_type:?} {text:?}"
        );
    }
}

/// Removes ANSI colour sequences from a text log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` fields of a text log line, a double-quoted value read as one (with `\`
/// escapes), as a logfmt reader reads them.
fn fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && chars[i] != ' ' {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        if i >= chars.len() || chars[i] != '=' {
            continue;
        }
        i += 1;
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < chars.len() && chars[i] != ' ' {
                value.push(chars[i]);
                i += 1;
            }
        }
        fields.push((key, value));
    }
    fields
}

/// The client's `X-Request-Id` (any visible ASCII, spaces and `=` included) was written into
/// the text log line unquoted (`request_id = %id`), so a client forged the line's other fields:
/// a `404` on `/v1/nowhere` logged as a `201` on an admin route as well. An id with anything
/// but letters, digits and `-_.:` is now replaced by one of ours; a plain one is kept.
#[tokio::test]
async fn a_client_request_id_cannot_forge_fields_of_the_text_log_line() {
    let (server, _dir) = server(&[("TALLY_LOG", "info")]).await;
    let http = reqwest::Client::new();
    let forged = "rid-7c1 method=POST path=/v1/admin/users status=201";
    let response =
        http.get(format!("{}/v1/nowhere", server.base_url())).header("x-request-id", forged).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let answered = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_ne!(answered, forged, "a forged id is replaced");
    let plain = http
        .get(format!("{}/v1/elsewhere", server.base_url()))
        .header("x-request-id", "rid-7c2.a:b_c")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers().get("x-request-id").unwrap(), "rid-7c2.a:b_c", "a plain id is kept");
    let started = Instant::now();
    let line = loop {
        let log = server.log_text();
        if let Some(line) = log.lines().map(strip_ansi).find(|line| line.contains(&answered)) {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no log line for the request:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!line.contains("rid-7c1"), "nothing of the forged id is logged: {line}");
    let fields = fields(&line);
    let values = |key: &str| -> Vec<String> {
        fields.iter().filter(|(name, _)| name == key).map(|(_, value)| value.clone()).collect()
    };
    assert_eq!(values("status"), vec!["404".to_owned()], "one status, the real one: {line}");
    assert_eq!(values("path"), vec!["/v1/nowhere".to_owned()], "one path, the real one: {line}");
    assert_eq!(values("method"), vec!["GET".to_owned()], "one method, the real one: {line}");
}
