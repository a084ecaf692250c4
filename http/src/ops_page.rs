//! `GET /ops`: the operators' live page. One HTML file with its CSS and JavaScript inline
//! (`http/assets/ops/index.html`), compiled into the binary: no CDN, no external asset, so it
//! works on an isolated operations network. The page itself carries no data and needs no
//! token; it logs in through `POST /v1/auth/login` (or takes `#token=...` from the URL
//! fragment, for automation), keeps the access token in memory only, and polls
//! `GET /v1/admin/actors` and then `GET /v1/admin/cluster` (both `ops:read`) — the API's own
//! authorization guards every figure. Charts are hand-written SVG; rates and percentiles come
//! from the difference between two polls of the counters (`request_stats.rs`, the engine's
//! health report). The **Cluster** section shows the node that answered (the shards' owner), the
//! nodes with their heartbeat age, shards owned and fenced commits, and shard moves: a shard
//! whose owner changed or whose epoch rose between two polls, counted since the page opened with
//! the last few listed, beside the lease takes (the sum of the epochs, which a reload keeps).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page, HTML with inline CSS and JavaScript.
pub const PAGE: &str = include_str!("../assets/ops/index.html");

/// Only this page's own inline script and stylesheet (by their SHA-256, as `/admin` does: an
/// injected `<script>`, handler or style attribute would not run), and requests to this
/// origin: the page cannot load or send anything elsewhere, and cannot be framed (the token
/// lives in its memory). It admitted any inline script and style before (a review noted it).
static CONTENT_SECURITY_POLICY: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        crate::admin_page::csp_hash(inline(PAGE, "<script>", "</script>")),
        crate::admin_page::csp_hash(inline(PAGE, "<style>", "</style>")),
    );
    // ASCII by construction; should it ever fail, the strictest policy rather than none.
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The text of the page's one element between `open` and `close` (its inline script or style).
fn inline<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page.find(open).map_or(0, |at| at + open.len());
    let end = page[start..].find(close).map_or(page.len(), |at| start + at);
    &page[start..end]
}

#[utoipa::path(
    get,
    path = "/ops",
    tag = "operations",
    responses((status = 200, description = "The operators' live page (HTML, no external assets); its data needs `ops:read`", content_type = "text/html", body = String))
)]
pub async fn page() -> Response {
    self_contained_page(PAGE, CONTENT_SECURITY_POLICY.clone())
}

/// A page compiled into the binary (`/ops`, `/admin`), served under its policy: never cached
/// (a new binary serves a new page), never sniffed as anything but HTML, and its address never
/// sent on as a referrer (a `#token=` fragment is not sent, but the path need not be either).
pub(crate) fn self_contained_page(html: &'static str, content_security_policy: HeaderValue) -> Response {
    let mut response = html.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_no_external_resource() {
        // The SVG namespace is a name, not a request.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!page.contains(needle), "the page must be self-contained, found {needle:?}");
        }
    }

    #[test]
    fn the_page_polls_the_health_and_cluster_apis_and_logs_in_through_the_api() {
        assert!(PAGE.contains("/v1/admin/actors"));
        assert!(PAGE.contains("/v1/admin/cluster"));
        assert!(PAGE.contains("/v1/auth/login"));
    }
}
