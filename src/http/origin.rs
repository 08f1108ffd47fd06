//! Cross-site writes: a state-changing request (any method but GET, HEAD
//! and OPTIONS) outside `/hooks` is refused when a browser says it comes
//! from another site; a JSON body must be declared JSON ([`require_json`]),
//! which a cross-site form cannot do.
//!
//! A browser marks every request it sends: `Sec-Fetch-Site` (all current
//! browsers) and `Origin` (on every POST). A request from the pages' own
//! script says `same-origin` and names the server's origin; a cross-site
//! form or fetch says `cross-site` or `same-site` and names its own page.
//! Clients that are not browsers (`hookci`, curl) send neither and pass:
//! they hold the admin token themselves, which is what the writes check.
//!
//! The server's own origin is `public_url`'s, or the authority the request
//! was sent to (its `Host` header): without a `public_url` (or with port 0)
//! the pages are opened by whatever name reaches the server, and a browser
//! only sets `Origin` to the `Host` it sends when the page that asks was
//! loaded from that very host and port (the rule Go's
//! `http.CrossOriginProtection` uses). A DNS-rebinding page passes this
//! check but is a different origin to the browser, so it holds neither the
//! token (kept in that origin's sessionStorage) nor its Basic credentials.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Refuses a cross-site write (403) before any handler, token check or
/// body read.
pub async fn refuse_cross_site(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if is_safe(req.method()) || super::is_hook_path(req.uri().path()) {
        return next.run(req).await;
    }
    if let Err(e) = check(&state.config().public_url, req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The checks of a write, from its headers alone.
fn check(public_url: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(cross_site());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = origin
            .to_str()
            .ok()
            .is_some_and(|o| is_own_origin(public_url, headers, o));
        if !own {
            return Err(cross_site());
        }
    }
    Ok(())
}

/// 415 unless the request says `Content-Type: application/json` (with or
/// without parameters): a route that reads a JSON body checks this before
/// reading it. Browsers send other types only from forms and simple
/// requests, the kinds another site can make.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON sent with Content-Type: application/json",
        ))
    }
}

fn cross_site() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "this request comes from another site, and writes are accepted only from hookci's own pages or a client that is not a browser",
    )
}

/// True when `origin` is `public_url`'s origin, or names the host and port
/// the request was sent to (`Host`).
fn is_own_origin(public_url: &str, headers: &HeaderMap, origin: &str) -> bool {
    // `null` (a sandboxed frame, a file, a redirect across sites) never parses
    // to a tuple origin, so it is foreign.
    let Ok(url) = reqwest::Url::parse(origin) else {
        return false;
    };
    let given = url.origin();
    if !given.is_tuple() {
        return false;
    }
    if reqwest::Url::parse(public_url).is_ok_and(|u| u.origin() == given) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    reqwest::Url::parse(&format!("{}://{host}", url.scheme()))
        .is_ok_and(|u| u.path() == "/" && u.origin() == given)
}

/// `Content-Type: application/json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const URL: &str = "https://ci.example.com";

    fn status(pairs: &[(&'static str, &'static str)]) -> Option<u16> {
        check(URL, &headers(pairs))
            .err()
            .map(|e| e.status().as_u16())
    }

    #[test]
    fn browsers_from_elsewhere_are_refused_and_others_pass() {
        assert_eq!(status(&[]), None, "curl, hookci");
        assert_eq!(status(&[("sec-fetch-site", "same-origin")]), None);
        assert_eq!(status(&[("sec-fetch-site", "none")]), None);
        assert_eq!(status(&[("sec-fetch-site", "cross-site")]), Some(403));
        assert_eq!(status(&[("sec-fetch-site", "same-site")]), Some(403));
        assert_eq!(status(&[("origin", "https://ci.example.com")]), None);
        assert_eq!(status(&[("origin", "https://ci.example.com:443")]), None);
        assert_eq!(status(&[("origin", "https://evil.example")]), Some(403));
        assert_eq!(status(&[("origin", "null")]), Some(403));
        assert_eq!(status(&[("origin", "http://ci.example.com")]), Some(403));
        // Without public_url's name: the host the request was sent to.
        assert_eq!(
            status(&[
                ("origin", "http://10.0.0.5:8787"),
                ("host", "10.0.0.5:8787")
            ]),
            None
        );
        assert_eq!(
            status(&[
                ("origin", "http://10.0.0.5:8787"),
                ("host", "10.0.0.5:9999")
            ]),
            Some(403)
        );
        assert_eq!(
            status(&[("origin", "http://evil.example"), ("host", "10.0.0.5")]),
            Some(403)
        );
        assert_eq!(
            status(&[
                ("origin", "http://a@evil.example"),
                ("host", "evil.example/x")
            ]),
            Some(403)
        );
    }

    #[test]
    fn a_json_body_must_be_declared_json() {
        fn json(pairs: &[(&'static str, &'static str)]) -> Option<u16> {
            require_json(&headers(pairs))
                .err()
                .map(|e| e.status().as_u16())
        }
        assert_eq!(json(&[("content-type", "application/json")]), None);
        assert_eq!(
            json(&[("content-type", "Application/JSON; charset=utf-8")]),
            None
        );
        assert_eq!(json(&[("content-type", "text/plain")]), Some(415));
        assert_eq!(
            json(&[("content-type", "application/x-www-form-urlencoded")]),
            Some(415)
        );
        assert_eq!(json(&[]), Some(415));
    }
}
