//! `GET /`: the live dashboard, one self-contained page.
//!
//! The page (`dashboard.html`, embedded with `include_str!`) has no build
//! step and loads nothing from elsewhere: its script polls `/status` and
//! `/metrics` once a second, reads `/events/stream`, and calls the
//! mutating endpoints with the token the operator pastes in (kept in
//! `sessionStorage`). Everything it shows comes from those endpoints, so
//! it can show nothing the API does not.
//!
//! It is served with a strict `content-security-policy`: no source but
//! the page's own inline script and style (each marked with a nonce made
//! fresh for every response), `connect-src 'self'` for its calls, no
//! frames, forms or base URI. Data reaches the DOM only as text, so a route
//! name or an event detail cannot become markup; were one ever to, a
//! script without the nonce would still not run.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::proxy::body::Body;

/// The page, with `{{nonce}}` where each response's nonce goes.
const PAGE: &str = include_str!("dashboard.html");

/// The placeholder in [`PAGE`] that each response's nonce replaces.
const NONCE_PLACEHOLDER: &str = "{{nonce}}";

/// The dashboard page with its security headers.
pub(super) fn page() -> Response<Body> {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let mut response = Response::new(Body::full(PAGE.replace(NONCE_PLACEHOLDER, &nonce)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        headers.insert("content-security-policy", policy);
    }
    response
}

/// The page may run only its own inline script and style and talk only to
/// the admin port it came from.
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::{content_security_policy, page, NONCE_PLACEHOLDER, PAGE};

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "src=\"", "href=\"http"] {
            assert!(!PAGE.contains(needle), "the page mentions {needle:?}");
        }
        // Every script and style element carries the nonce; no inline
        // event handlers or style attributes, which the policy would block.
        assert_eq!(
            PAGE.matches("<script").count(),
            PAGE.matches("<script nonce=\"{{nonce}}\">").count()
        );
        assert_eq!(
            PAGE.matches("<style").count(),
            PAGE.matches("<style nonce=\"{{nonce}}\">").count()
        );
        for attribute in [" onclick=", " onload=", " style=\""] {
            assert!(!PAGE.contains(attribute), "the page uses {attribute:?}");
        }
    }

    #[test]
    fn each_response_has_its_own_nonce_in_page_and_policy() {
        let first = page();
        let second = page();
        let policy = |response: &http::Response<_>| {
            response.headers()["content-security-policy"]
                .to_str()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let (a, b) = (policy(&first), policy(&second));
        assert_ne!(a, b);
        assert!(
            a.starts_with("default-src 'none'; script-src 'nonce-"),
            "{a}"
        );
        assert!(a.contains("connect-src 'self'"), "{a}");
        assert!(!a.contains("unsafe"), "{a}");
        assert_eq!(content_security_policy("x").matches("'nonce-x'").count(), 2);
        assert!(PAGE.contains(NONCE_PLACEHOLDER));
    }
}
