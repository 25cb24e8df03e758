//! HTTP: a middleware in front of the whole router. The probes, the
//! metrics and the API's documentation stay open; sending events needs
//! `write`, every other route `read`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Auth, Scope};
use crate::Error;
use crate::openapi::{DOCUMENT_PATH, PAGE_PATH};

/// Routes open without a key: probes, the autoscaler's scrape, the docs.
pub const OPEN_PATHS: [&str; 5] = ["/healthz", "/readyz", "/metrics", DOCUMENT_PATH, PAGE_PATH];

/// The scope a request needs; `None` for an open route.
pub fn scope_of(method: &Method, path: &str) -> Option<Scope> {
    if OPEN_PATHS.contains(&path) || path.starts_with("/docs/") {
        return None;
    }
    match path {
        "/api/v1/events" | "/api/v1/events/batch" if method == Method::POST => Some(Scope::Write),
        _ => Some(Scope::Read),
    }
}

/// The middleware: 401 with `WWW-Authenticate: Bearer` without a known
/// key, 403 for a key without the scope; else the request goes on with
/// its [`Caller`](super::Caller) in the extensions.
pub async fn require(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let Some(needs) = scope_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match auth.check(authorization, needs) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            let challenge = match error {
                Error::Forbidden(_) => r#"Bearer error="insufficient_scope""#,
                _ => "Bearer",
            };
            let mut response = error.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_metrics_and_docs_are_open_events_need_write_the_rest_read() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/openapi.json",
            "/docs",
            "/docs/index.html",
        ] {
            assert_eq!(scope_of(&Method::GET, path), None, "{path}");
        }
        assert_eq!(
            scope_of(&Method::POST, "/api/v1/events"),
            Some(Scope::Write)
        );
        assert_eq!(
            scope_of(&Method::POST, "/api/v1/events/batch"),
            Some(Scope::Write)
        );
        for path in [
            "/api/v1/stats",
            "/api/v1/devices",
            "/api/v1/windows/w",
            "/api/v1/events",
            "/nope",
        ] {
            assert_eq!(scope_of(&Method::GET, path), Some(Scope::Read), "{path}");
        }
    }
}
