//! The operator's HTTP server: /healthz, /readyz and /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Set once the CRD is installed and listable: the controller runs, or,
    /// with leader election, this replica is ready to take over.
    pub ready: Arc<AtomicBool>,
}

/// The routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(AxumState(state): AxumState<State>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(AxumState(state): AxumState<State>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_is_503_until_the_controller_runs_and_healthz_always_200() {
        let state = State {
            metrics: Metrics::new().unwrap(),
            ready: Arc::default(),
        };
        let router = router(state.clone());
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_serves_the_prometheus_text() {
        let state = State {
            metrics: Metrics::new().unwrap(),
            ready: Arc::default(),
        };
        state
            .metrics
            .reconciliations
            .with_label_values(&["ok"])
            .inc();
        let (status, body) = get(router(state), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("telemetry_operator_reconciliations_total{result=\"ok\"} 1"),
            "{body}"
        );
    }
}
