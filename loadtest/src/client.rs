//! A thin HTTP client over the Tally API: one `reqwest::Client` (connection pool) and helpers
//! that send JSON and hand back the status and the decoded body. It knows nothing of Tally's
//! types (the generator is a black box), only paths and JSON fields from API.md.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::LoadError;

/// How long one request may take before it counts as failed: far above any latency worth
/// measuring, so a hung server ends the run instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts of a set-up or verification read that the server answers `503` (`get_patiently`).
const UNAVAILABLE_ATTEMPTS: u32 = 10;

/// The longest wait between them, whatever `Retry-After` asks; one second when it is absent.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

/// Status and JSON body of an answer (`Value::Null` when the body is empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `Retry-After` header in seconds, when the server sent one.
    pub retry_after: Option<u64>,
}

impl Answer {
    /// The problem `code` of an error answer, or the bare status when the body has none.
    pub fn code(&self) -> String {
        self.body.get("code").and_then(Value::as_str).map_or_else(|| format!("HTTP_{}", self.status), str::to_owned)
    }

    /// The answer's body if its status is `expected`, else an error naming `step`.
    pub fn expect(self, step: &str, expected: &[u16]) -> Result<Value, LoadError> {
        if expected.contains(&self.status) {
            Ok(self.body)
        } else {
            Err(LoadError::Unexpected { step: step.to_owned(), status: self.status, body: self.body.to_string() })
        }
    }
}

/// The string field `field` of `body`, or an error naming `step`.
pub fn field(body: &Value, step: &str, field: &str) -> Result<String, LoadError> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LoadError::Missing { step: step.to_owned(), field: field.to_owned() })
}

/// A client of one Tally node, knowing the other nodes of its cluster (every `--base-url`).
/// All of them share one connection pool (`reqwest` keeps connections per host).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Every base URL, without a trailing `/`; never empty.
    base_urls: Arc<[String]>,
    /// The one this client sends to.
    base_url: String,
    /// Its index in `base_urls`.
    at: usize,
}

impl Client {
    /// A client of the first of `base_urls` (at least one).
    pub fn new(base_urls: &[String]) -> Result<Self, LoadError> {
        let base_urls: Arc<[String]> = base_urls.iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
        let base_url =
            base_urls.first().cloned().ok_or_else(|| LoadError::Config("--base-url needs at least one URL".into()))?;
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).tcp_nodelay(true).build()?;
        Ok(Self { http, base_urls, base_url, at: 0 })
    }

    /// How many base URLs (nodes) there are.
    pub fn nodes(&self) -> usize {
        self.base_urls.len()
    }

    /// The client of node `index` modulo the number of nodes, sharing this one's pool.
    pub fn node(&self, index: usize) -> Self {
        let at = index % self.base_urls.len();
        Self {
            http: self.http.clone(),
            base_urls: Arc::clone(&self.base_urls),
            base_url: self.base_urls[at].clone(),
            at,
        }
    }

    /// The client of the node after this one (itself when there is one node).
    pub fn next_node(&self) -> Self {
        self.node(self.at + 1)
    }

    /// The base URL this client sends to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST path` with a JSON body, an optional bearer token and optional `Idempotency-Key`.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: &Value,
    ) -> Result<Answer, LoadError> {
        let mut request = self.http.post(format!("{}{path}", self.base_url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        Self::answer(request).await
    }

    /// `POST path` with a JSON body as a machine client: `X-API-Key` instead of a bearer token.
    pub async fn post_with_api_key(
        &self,
        path: &str,
        api_key: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<Answer, LoadError> {
        let mut request = self.http.post(format!("{}{path}", self.base_url)).json(body).header("X-API-Key", api_key);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        Self::answer(request).await
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Answer, LoadError> {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::answer(request).await
    }

    /// `GET path`, tried again while the server answers `503 Service Unavailable`, waiting as
    /// its `Retry-After` asks (at most 5 s), up to ten attempts; then the last answer is
    /// returned. For the run's set-up and verification reads: they only observe, and a server
    /// that was briefly unavailable (its store stalled, say) must not end a run before or after
    /// the measured window. The measured load uses `get`: there a `503` is a result.
    ///
    /// With several nodes, a read that cannot reach its node (refused, reset, timed out) is
    /// sent to the next one, each node tried once, so a node killed during the run does not
    /// stop the verification; with one node the transport error is returned.
    pub async fn get_patiently(&self, path: &str, token: Option<&str>) -> Result<Answer, LoadError> {
        let mut attempt = 1;
        let mut node = self.clone();
        let mut unreachable = 0;
        loop {
            let answer = match node.get(path, token).await {
                Ok(answer) => answer,
                Err(LoadError::Http(_)) if unreachable + 1 < self.nodes() => {
                    unreachable += 1;
                    node = node.next_node();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if answer.status != 503 || attempt == UNAVAILABLE_ATTEMPTS {
                return Ok(answer);
            }
            let wait = answer.retry_after.map_or(RETRY_AFTER_DEFAULT, Duration::from_secs);
            tokio::time::sleep(wait.min(RETRY_AFTER_MAX)).await;
            attempt += 1;
        }
    }

    async fn answer(request: reqwest::RequestBuilder) -> Result<Answer, LoadError> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body, retry_after })
    }
}
