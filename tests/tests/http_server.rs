//! The server as the public internet meets it, against a real `tally serve` (embedded SQLite):
//! a client that sends half a header is disconnected when the header-read timeout passes, a
//! kept-alive connection left idle is closed, and connections beyond the per-node bound are
//! answered `503 OVERLOADED` and closed — while a well-behaved client is served throughout. A
//! second server on the same port is refused at start, not given half the connections, and a
//! request time-out setting out of range stops the start.

use std::time::{Duration, Instant};

use tally_tests::server::{TallyServer, TempSqlite, read_until_closed, tally_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_SECS: u64 = 3;
const CONNECTIONS_MAX: usize = 64;

async fn server() -> (TallyServer, TempSqlite) {
    let db = TempSqlite::new("server-limits");
    let timeout = TIMEOUT_SECS.to_string();
    let max = CONNECTIONS_MAX.to_string();
    let server = TallyServer::start(
        &db.url(),
        &[("TALLY_HTTP_TIMEOUT_SECS", timeout.as_str()), ("TALLY_HTTP_CONNECTIONS_MAX", max.as_str())],
    )
    .await;
    (server, db)
}

#[tokio::test]
async fn half_headers_are_cut_off_at_the_timeout_and_connections_past_the_bound_get_503() {
    let (server, _dir) = server().await;
    let address = format!("127.0.0.1:{}", server.port);
    // Clients that send half a request header and stop, until the node refuses one: every
    // slot is then taken.
    let mut slow = Vec::new();
    let half_header = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for _ in 0..CONNECTIONS_MAX - 2 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(half_header).await.expect("half a header");
        slow.push(stream);
    }
    let refused_at = loop {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(half_header).await.expect("half a header");
        // A refused connection is answered at once; an accepted one hears nothing.
        let (answer, _) = read_until_closed(&mut stream, Instant::now() + Duration::from_millis(100)).await;
        if !answer.is_empty() {
            break String::from_utf8_lossy(&answer).into_owned();
        }
        slow.push(stream);
        assert!(slow.len() <= CONNECTIONS_MAX, "more than {CONNECTIONS_MAX} connections held open");
    };
    assert!(slow.len() + 2 >= CONNECTIONS_MAX, "refused early, at {} connections: {refused_at}", slow.len());
    // Past the bound: answered 503 problem+json at once, then closed.
    for attempt in 0..8 {
        let text = if attempt == 0 {
            refused_at.clone()
        } else {
            let mut stream = TcpStream::connect(&address).await.expect("connect");
            let (answer, closed) = read_until_closed(&mut stream, Instant::now() + Duration::from_secs(5)).await;
            assert!(closed, "the refused connection is closed");
            String::from_utf8_lossy(&answer).into_owned()
        };
        assert!(text.starts_with("HTTP/1.1 503"), "over the bound: {text}");
        assert!(text.contains("application/problem+json") && text.contains("\"code\":\"OVERLOADED\""), "{text}");
        assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    }
    // The slow ones are disconnected once the header-read timeout passes, none much later.
    let started = Instant::now();
    for stream in &mut slow {
        let (_, closed) = read_until_closed(stream, Instant::now() + Duration::from_secs(TIMEOUT_SECS + 5)).await;
        assert!(closed, "a half header is cut off");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(TIMEOUT_SECS + 4), "all cut off within the timeout: {took:?}");
    // Their slots are free again: a well-behaved request is served.
    let response = reqwest::get(format!("{}/health/live", server.base_url())).await.expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_and_a_busy_one_is_not() {
    let (server, _dir) = server().await;
    let address = format!("127.0.0.1:{}", server.port);
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut idle = TcpStream::connect(&address).await.expect("connect");
    idle.write_all(request).await.expect("request");
    let mut busy = TcpStream::connect(&address).await.expect("connect");
    // The busy client sends a request every half second, for longer than the timeout.
    let mut answers = 0;
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS + 2);
    while Instant::now() < deadline {
        busy.write_all(request).await.expect("a kept-alive connection stays open while used");
        let mut buffer = [0_u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut buffer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0 && buffer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..n]));
        answers += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answers >= 4);
    // The idle one got its answer, then was closed when it stayed idle past the timeout.
    let (answer, closed) = read_until_closed(&mut idle, Instant::now() + Duration::from_secs(TIMEOUT_SECS + 5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle kept-alive connection is closed");
}

/// The listeners share their port with `SO_REUSEPORT`, which would also let a second process
/// join them and take a share of the connections. A second `tally serve` on the port is
/// refused at start with a clear error, and the first one goes on serving.
#[tokio::test]
async fn a_second_server_on_the_same_port_is_refused_at_start() {
    let (server, _dir) = server().await;
    let listen = format!("127.0.0.1:{}", server.port);
    let (status, said) = tokio::task::spawn_blocking(move || {
        start_and_wait(
            &listen,
            &[("TALLY_ADMIN_EMAIL", "second@tally.test"), ("TALLY_ADMIN_PASSWORD", "Sec0nd!password")],
        )
    })
    .await
    .expect("the second server ran");
    assert!(status.is_some_and(|status| !status.success()), "the second server must exit with an error: {said}");
    assert!(said.contains("another process listens on it"), "the error names the cause: {said}");
    let response = reqwest::get(format!("{}/health/ready", server.base_url())).await.expect("the first one serves");
    assert_eq!(response.status(), 200);
}

/// `TALLY_REQUEST_TIMEOUT_SECS` outside 1–3,600 (or not a number) stops the start with a message
/// that names the setting; nothing is served with a time limit the operator did not mean.
#[test]
fn a_request_time_out_setting_out_of_range_stops_the_start() {
    for value in ["0", "3601", "ten", "-5"] {
        let (status, said) = start_and_wait("127.0.0.1:0", &[("TALLY_REQUEST_TIMEOUT_SECS", value)]);
        assert!(status.is_some_and(|status| !status.success()), "{value:?} must stop the start: {said}");
        assert!(said.contains("TALLY_REQUEST_TIMEOUT_SECS must be a whole number from 1 to 3600"), "{value:?}: {said}");
    }
}

/// `TALLY_JOURNAL_LINGER_US` past 50 ms (or not a number) stops the start with a message that
/// names the setting: every acknowledgement would wait that long.
#[test]
fn a_journal_linger_past_its_bound_stops_the_start() {
    for (value, message) in [
        ("50001", "TALLY_JOURNAL_LINGER_US must be at most 50000"),
        ("1e3", "TALLY_JOURNAL_LINGER_US must be a whole number"),
        ("-1", "TALLY_JOURNAL_LINGER_US must be a whole number"),
    ] {
        let (status, said) = start_and_wait("127.0.0.1:0", &[("TALLY_JOURNAL_LINGER_US", value)]);
        assert!(status.is_some_and(|status| !status.success()), "{value:?} must stop the start: {said}");
        assert!(said.contains(message), "{value:?}: {said}");
    }
}

/// Starts `tally serve` on `listen` with a fresh SQLite database and `env`, and waits up to 30 s
/// for it to exit: how it exited (`None`: it served on, and was stopped) and what it logged.
// Test code: a failed expect is a failed test.
#[allow(clippy::expect_used)]
fn start_and_wait(listen: &str, env: &[(&str, &str)]) -> (Option<std::process::ExitStatus>, String) {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let db = TempSqlite::new("server-start");
    let data_dir = std::env::temp_dir().join(format!("tally-server-start-data-{name}"));
    let log = std::env::temp_dir().join(format!("tally-server-start-{name}.log"));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut server = std::process::Command::new(tally_bin())
        .arg("serve")
        .env("TALLY_LISTEN", listen)
        .env("TALLY_DATABASE_URL", db.url())
        .env("TALLY_DATA_DIR", &data_dir)
        .env("TALLY_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start tally serve");
    let status = exit_within(&mut server, Duration::from_secs(30));
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&data_dir);
    (status, said)
}

/// How `child` exited within `limit`, or `None` (then it is killed): a server that should have
/// refused to start fails its test instead of hanging it.
fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
