//! Forwarding between cluster nodes, with real `tally serve` processes on 127.0.0.1 sharing one
//! Postgres: a request a standby forwards keeps its client's address on the owner, whatever
//! its path looks like (the proof covers the path as sent).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tally_tests::cluster::{start_node, wait_for_owner};
use tally_tests::postgres;
use tally_tests::server::{ADMIN_EMAIL, ADMIN_PASSWORD, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "forwarding-test-secret-xx-0123456789abcdef";

/// Sends one HTTP/1.1 request with the request target exactly as given (no client-side path
/// normalization), from `source`; returns the status and the JSON body.
async fn raw_request(
    source: IpAddr,
    to: SocketAddr,
    method: &str,
    target: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source, 0)).expect("bind the client's address");
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect");
    let body = body.to_string();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let json = match (text.find("\r\n\r\n"), text.rfind('}')) {
        (Some(head_end), Some(last)) if last > head_end => {
            let rest = &text[head_end + 4..=last];
            rest.find('{').and_then(|first| serde_json::from_str(&rest[first..]).ok()).unwrap_or_default()
        }
        _ => serde_json::Value::Null,
    };
    (status, json)
}

/// A standby signed a forwarded request's path as it received it (`forward::to_owner`: "t.node.
/// client.METHOD path"), but sent it through `reqwest`, whose URL parser normalizes the path
/// (dot segments removed: `/v1/auth/./login` becomes `/v1/auth/login`). The owner checked the
/// proof against the path it received, which differed, so the proof failed and the owner took
/// the standby's own address for the client's: a client that put a `./` in its path through a
/// standby had the owner record the standby's address as its IP (its session's `client_ip`, the
/// per-IP login and reset limits, the audit; found by a review). It signs the path as sent now.
///
/// The test's client speaks from 127.0.0.2; the standby reaches the owner from 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_keeps_its_clients_address_whatever_its_path_looks_like() {
    let client_ip = IpAddr::from([127, 0, 0, 2]);
    let database = postgres::fresh_database("review_forward_ip").await;
    let owner = start_node(&database, "a", SECRET, 5).await;
    let standby = start_node(&database, "b", SECRET, 5).await;
    let admin = Client::login(&owner.base_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(wait_for_owner(&admin, &[owner.base_url()], &[]).await, "a");
    let standby_address: SocketAddr = format!("127.0.0.1:{}", standby.port).parse().unwrap();
    let credentials = serde_json::json!({"identifier": ADMIN_EMAIL, "password": ADMIN_PASSWORD});

    // Control: a plain login through the standby is recorded with the client's address.
    let (status, body) = raw_request(client_ip, standby_address, "POST", "/v1/auth/login", &credentials).await;
    assert_eq!(status, 200, "{body}");
    let http =
        reqwest::Client::builder().local_address(client_ip).timeout(Duration::from_secs(30)).build().expect("client");
    let session_ip = |token: String| {
        let client = Client { http: http.clone(), base: owner.base_url(), token };
        async move {
            let (status, sessions) = client.get("/v1/users/me/sessions").await;
            assert_eq!(status, 200, "{sessions}");
            let current = sessions.as_array().unwrap().iter().find(|session| session["current"] == true).cloned();
            current.expect("the token's own session")["client_ip"].as_str().unwrap_or_default().to_owned()
        }
    };
    let plain = session_ip(body["access_token"].as_str().expect("access_token").to_owned()).await;
    assert_eq!(plain, client_ip.to_string(), "a plain forwarded login keeps the client's address");

    // The same login with a dot segment in its path. (The owner itself answers that path 404.)
    let owner_address: SocketAddr = format!("127.0.0.1:{}", owner.port).parse().unwrap();
    let (direct, _) = raw_request(client_ip, owner_address, "POST", "/v1/auth/./login", &credentials).await;
    let (status, body) = raw_request(client_ip, standby_address, "POST", "/v1/auth/./login", &credentials).await;
    eprintln!("POST /v1/auth/./login: {direct} on the owner, {status} through the standby");
    assert_eq!(status, 200, "{body}");
    {
        let dotted = session_ip(body["access_token"].as_str().expect("access_token").to_owned()).await;
        assert_eq!(
            dotted,
            client_ip.to_string(),
            "a login through the standby at /v1/auth/./login was recorded with the standby's address, not the \
             client's"
        );
    }
}
