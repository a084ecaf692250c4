//! `GET /admin`: the admins' console. Like `/ops` it is one HTML page compiled into the
//! binary (`http/assets/admin/`: the markup, one stylesheet and one script, inlined here) and
//! loads nothing from anywhere: no CDN, no font, no image, so it works on an isolated network
//! and nothing outside Tally can change what runs in an admin's browser.
//!
//! The page holds no data and needs no token to be served. It logs in through the public API
//! (`POST /v1/auth/login`, then `POST /v1/auth/mfa/verify` when TOTP is on; or `#token=` from
//! the URL fragment, for automation), keeps its tokens in memory only, reads the admin's
//! effective permissions from `GET /v1/users/me` and offers only what they allow. Every figure
//! and every decision goes through the same API routes as any other client, with the admin's
//! own token, so the API's authorization is the console's: the page hides what it cannot do,
//! and the API refuses it anyway (`403`, which the page shows as such).
//!
//! The Content-Security-Policy admits exactly this page's one script and one stylesheet by
//! their SHA-256 (no `'unsafe-inline'`): an injected `<script>`, inline event handler or style
//! attribute would not run, and the page may connect only to its own origin.

use std::sync::LazyLock;

use axum::http::HeaderValue;
use axum::response::Response;
use base64::Engine as _;

/// The markup, with `{{style}}` and `{{script}}` where the two are inlined.
const MARKUP: &str = include_str!("../assets/admin/index.html");
/// The stylesheet, inlined into the one `<style>` element.
pub const STYLE: &str = include_str!("../assets/admin/admin.css");
/// The script, inlined into the one `<script>` element.
pub const SCRIPT: &str = include_str!("../assets/admin/admin.js");

/// The page as served and the policy that admits exactly its script and stylesheet.
struct Page {
    html: String,
    content_security_policy: HeaderValue,
}

/// `'sha256-<base64>'`: a CSP source matching an inline element whose text is `text`.
pub(crate) fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(text.as_bytes())))
}

/// Built once: the hashes depend only on the compiled-in assets.
static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = MARKUP.replacen("{{style}}", STYLE, 1).replacen("{{script}}", SCRIPT, 1);
    // Only this page's own script and stylesheet (by hash), and requests to this origin: the
    // page cannot load or send anything elsewhere, cannot submit a form anywhere, and cannot
    // be framed (its tokens live in its memory).
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE),
    );
    // The policy is ASCII (base64, quotes, letters); a failure here would be a bug in this
    // function, and then the page is served with the strictest policy rather than none.
    let content_security_policy =
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    Page { html, content_security_policy }
});

/// The page as served (tests read it).
pub fn html() -> &'static str {
    &PAGE.html
}

#[utoipa::path(
    get,
    path = "/admin",
    tag = "operations",
    description = "The admins' console: one HTML page with no external assets (its script and stylesheet are \
                   admitted by hash in its Content-Security-Policy). It logs in through this API (password, then \
                   a TOTP code when required; or `#token=ACCESS_TOKEN` for automation) and uses only the public \
                   API with the admin's own permissions: the pending-transfer queue and decisions (execute, \
                   stepped up when the admin has TOTP on; reject; cancel), AML flags, users and accounts, \
                   adjustments, the audit log. Served without a token: it carries no data.",
    responses((status = 200, description = "The admins' console (HTML, no external assets)", content_type = "text/html", body = String))
)]
pub async fn page() -> Response {
    crate::ops_page::self_contained_page(html(), PAGE.content_security_policy.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_no_external_resource() {
        let page = html().replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "src=", "<link", "@import", "url(", "//cdn"] {
            assert!(!page.contains(needle), "the page must be self-contained, found {needle:?}");
        }
    }

    #[test]
    fn the_page_has_exactly_one_script_and_one_stylesheet_and_both_are_in_the_policy() {
        let page = html();
        assert_eq!(page.matches("<script").count(), 1, "one script element");
        assert_eq!(page.matches("<style").count(), 1, "one style element");
        assert!(!page.contains("{{"), "every placeholder is filled");
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")), "the script is inlined as hashed");
        assert!(page.contains(&format!("<style>{STYLE}</style>")), "the stylesheet is inlined as hashed");
        let policy = PAGE.content_security_policy.to_str().unwrap_or_default();
        assert!(policy.contains(&csp_hash(SCRIPT)) && policy.contains(&csp_hash(STYLE)), "{policy}");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
        assert!(policy.contains("connect-src 'self'") && policy.contains("default-src 'none'"), "{policy}");
    }

    #[test]
    fn the_markup_has_no_inline_handlers_or_style_attributes_the_policy_would_block() {
        // The policy admits the script and stylesheet by hash only: an `onclick=` or a
        // `style=` attribute would silently do nothing, so none may be written, in the
        // markup or by the script.
        let page = html().to_ascii_lowercase();
        for needle in [" onclick=", " onsubmit=", " onload=", " oninput=", " onchange=", " style=", "javascript:"] {
            assert!(!page.contains(needle), "found {needle:?}");
        }
        for needle in ["innerhtml", "outerhtml", "insertadjacenthtml", "document.write", "eval(", "new function"] {
            assert!(
                !SCRIPT.to_ascii_lowercase().contains(needle),
                "the script builds DOM nodes, not HTML text: {needle:?}"
            );
        }
    }

    #[test]
    fn the_page_uses_only_routes_the_api_serves() {
        // Every `/v1/...` path the script names is one the router registers (its `{id}`
        // segments written as the script builds them).
        let routes = crate::routes::SOURCES.concat();
        for path in SCRIPT.split('"').filter(|text| text.starts_with("/v1/")) {
            let path = path.split('?').next().unwrap_or(path);
            // A path the script continues with an id is the route with `{id}` there.
            let route = if path.ends_with('/') { format!("{path}{{id}}") } else { path.to_owned() };
            assert!(routes.contains(&format!("\"{route}")), "the script calls {path}, which routes/ does not route");
        }
    }
}
