//! How a standby node hands a request to the owner, and how the owner knows the request came
//! from a peer (`Tally-Cluster-Auth`, an HMAC of the cluster secret) and from which client
//! (`Tally-Forwarded-For`, trusted only with a valid `Tally-Cluster-Auth`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

/// The peer's proof: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<node>.<client>.<method> <path>")>`.
pub const AUTH: &str = "tally-cluster-auth";
/// The node that forwarded the request.
pub const FORWARDED_BY: &str = "tally-forwarded-by";
/// The client's address as the forwarding node saw it.
pub const FORWARDED_FOR: &str = "tally-forwarded-for";

/// How far a peer's clock and a request's trip may put `t` from this node's clock.
const AUTH_WINDOW_SECS: i64 = 60;

/// Headers that describe one hop (RFC 9110 §7.6.1) or that the forwarding itself sets: never
/// passed along.
pub(super) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | AUTH
            | FORWARDED_BY
            | FORWARDED_FOR
    )
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

fn signed_text(t: i64, node: &str, client: &str, method: &str, path: &str) -> String {
    format!("{t}.{node}.{client}.{method} {path}")
}

fn tag(secret: &str, text: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    data_encoding::HEXLOWER.encode(aws_lc_rs::hmac::sign(&key, text.as_bytes()).as_ref())
}

/// `t` and `v1` of a `Tally-Cluster-Auth` value.
pub(super) fn parse_proof(auth: &str) -> Option<(i64, Vec<u8>)> {
    let mut t = None;
    let mut v1 = None;
    for part in auth.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = data_encoding::HEXLOWER.decode(value.as_bytes()).ok(),
            _ => {}
        }
    }
    Some((t?, v1?))
}

/// Whether a proof's time `t` is within the window of this node's clock.
pub(super) fn fresh(t: i64) -> bool {
    // `t` comes from the request: `abs_diff` cannot overflow where `(now - t).abs()` could
    // (a panic in a debug build, a wrapped "fresh" in a release one).
    unix_now().abs_diff(t) <= AUTH_WINDOW_SECS.unsigned_abs()
}

/// The client address a peer vouches for, if `headers` carry a valid proof for this request.
pub fn vouched_client(secret: &str, headers: &HeaderMap, method: &str, path: &str) -> Option<SocketAddr> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (auth, node, client) = (text(AUTH)?, text(FORWARDED_BY)?, text(FORWARDED_FOR)?);
    let (t, v1) = parse_proof(auth)?;
    if !fresh(t) {
        return None;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    aws_lc_rs::hmac::verify(&key, signed_text(t, node, client, method, path).as_bytes(), &v1).ok()?;
    client.parse().ok()
}

/// Why a forwarded request has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnswered {
    /// No connection to the owner: the request never left (the caller answers 503).
    NotSent,
    /// Sent, then no answer (a reset, 30 s without a byte): the owner may have done it.
    Unknown,
}

/// Sends `request` to `owner_url` (the owning node's advertised base URL) as this node
/// (`node`), and answers with the owner's answer, streamed both ways.
pub async fn to_owner(
    client: &reqwest::Client,
    owner_url: &str,
    node: &str,
    secret: &str,
    request: Request,
) -> Result<Response, NotAnswered> {
    let (parts, body) = request.into_parts();
    let received = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    // The URL as it will go out: its parser normalises the path (`/v1/auth/./login` becomes
    // `/v1/auth/login`) and re-encodes some of the query, and the owner checks the proof
    // against what it receives. Signed as received, such a request failed the check and the
    // owner took the standby for the client (its address in sessions, audit and the per-IP
    // limits; found by a review).
    let target = reqwest::Url::parse(&format!("{}{received}", owner_url.trim_end_matches('/')))
        .map_err(|_| NotAnswered::NotSent)?;
    let path = match target.query() {
        Some(query) => format!("{}?{query}", target.path()),
        None => target.path().to_owned(),
    };
    let client_address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "0.0.0.0:0".to_owned(), |ConnectInfo(address)| address.to_string());
    let t = unix_now();
    let proof = tag(secret, &signed_text(t, node, &client_address, parts.method.as_str(), &path));
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let header = |text: &str| HeaderValue::from_str(text).map_err(|_| NotAnswered::NotSent);
    headers.insert(AUTH, header(&format!("t={t},v1={proof}"))?);
    headers.insert(FORWARDED_BY, header(node)?);
    headers.insert(FORWARDED_FOR, header(&client_address)?);
    let answer = client
        .request(parts.method, target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            // Debug, not warn: while an owner is down every request fails here until another
            // node takes over; `tally_cluster_forward_failures_total` counts them.
            tracing::debug!(%error, owner = owner_url, "forwarding to the owner failed");
            metrics::counter!("tally_cluster_forward_failures_total").increment(1);
            return Err(if error.is_connect() { NotAnswered::NotSent } else { NotAnswered::Unknown });
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) || name.as_str() == "content-length" {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    response.body(Body::from_stream(answer.bytes_stream())).map_err(|_| NotAnswered::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, t: i64, client: &str, method: &str, path: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let proof = tag(secret, &signed_text(t, "n1", client, method, path));
        headers.insert(AUTH, HeaderValue::from_str(&format!("t={t},v1={proof}")).unwrap());
        headers.insert(FORWARDED_BY, HeaderValue::from_static("n1"));
        headers.insert(FORWARDED_FOR, HeaderValue::from_str(client).unwrap());
        headers
    }

    #[test]
    fn a_peer_with_the_secret_vouches_for_its_client_and_nobody_else_can() {
        let secret = "a-cluster-secret-of-some-length";
        let now = unix_now();
        let headers = signed(secret, now, "203.0.113.9:5000", "POST", "/v1/transfers");
        assert_eq!(
            vouched_client(secret, &headers, "POST", "/v1/transfers"),
            Some("203.0.113.9:5000".parse().unwrap())
        );
        // Another secret, another request, another client, an old proof: not vouched.
        assert_eq!(vouched_client("another-secret-entirely-here", &headers, "POST", "/v1/transfers"), None);
        assert_eq!(vouched_client(secret, &headers, "GET", "/v1/transfers"), None);
        assert_eq!(vouched_client(secret, &headers, "POST", "/v1/transfers/batch"), None);
        let mut forged = headers.clone();
        forged.insert(FORWARDED_FOR, HeaderValue::from_static("198.51.100.1:1"));
        assert_eq!(vouched_client(secret, &forged, "POST", "/v1/transfers"), None);
        let stale = signed(secret, now - 3_600, "203.0.113.9:5000", "POST", "/v1/transfers");
        assert_eq!(vouched_client(secret, &stale, "POST", "/v1/transfers"), None);
        assert_eq!(vouched_client(secret, &HeaderMap::new(), "POST", "/v1/transfers"), None);
    }

    #[test]
    fn a_proof_time_at_either_end_of_the_range_is_stale_not_an_overflow() {
        // `t` is the client's: `now - t` overflowed for these (a panic in a debug build).
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            assert!(!fresh(t), "{t}");
        }
        let now = unix_now();
        assert!(fresh(now) && fresh(now - AUTH_WINDOW_SECS) && fresh(now + AUTH_WINDOW_SECS));
        assert!(!fresh(now - AUTH_WINDOW_SECS - 2) && !fresh(now + AUTH_WINDOW_SECS + 2));
    }
}
