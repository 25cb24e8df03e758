//! HTTP/JSON on :8000: ingest, queries, health and metrics.
//!
//! `router(state)` is the whole API; `main` serves it and the tests drive it
//! with `oneshot`. Errors become JSON answers in one place,
//! [`IntoResponse for Error`](Error): `{"error": {"code", "message", ...}}`
//! with 400/422/429/503/404 and `Retry-After` where retrying helps. An ingest
//! call that ends early also says how far it got in `telemetry-*` headers,
//! the values gRPC sends as trailers ([`Tally::progress`]). Events reach the
//! rules only through [`crate::intake`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as QueryParams, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use telemetry_proto::json::{AckJson, EventJson, RejectionJson};

use crate::intake::{Intake, Partial, Tally};
use crate::query::{DeviceParams, Query};
use crate::{Error, Result};

const TRANSPORT: &str = "http";
/// Largest request body: a full batch of events with large payloads.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub intake: Arc<Intake>,
    pub query: Query,
    pub max_batch: usize,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/events", post(post_event))
        .route("/api/v1/events/batch", post(post_batch))
        .route("/api/v1/devices", get(get_devices))
        .route("/api/v1/devices/{device_id}/recent", get(get_recent))
        .route("/api/v1/counters", get(get_counters))
        .route("/api/v1/counters/{event_type}", get(get_counter))
        .route("/api/v1/leaderboards/{name}", get(get_leaderboard))
        .route("/api/v1/windows/{name}", get(get_window))
        .route("/api/v1/stats", get(get_stats))
        .route("/api/v1/openapi.json", get(get_openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
}

impl From<Tally> for AckJson {
    fn from(t: Tally) -> Self {
        AckJson {
            accepted: t.accepted,
            rejected: t.rejected,
            duplicates: t.duplicates,
            rejected_by_reason: t
                .rejected_by_reason
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            rejections: t
                .rejections
                .into_iter()
                .map(|(index, r)| RejectionJson {
                    index,
                    field: r.field.to_string(),
                    reason: r.reason.to_string(),
                    message: r.to_string(),
                })
                .collect(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
        }
        let mut body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        match &self {
            Error::InvalidEvent(r) => {
                body["field"] = r.field.into();
                body["reason"] = r.reason.into();
            }
            Error::NotFound { known, .. } => body["known"] = known.clone().into(),
            _ => {}
        }
        let retry_after = self.retry_after();
        let mut response = (status, Json(serde_json::json!({ "error": body }))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An ingest call that stopped early: its error, plus what it settled (the
/// same `telemetry-*` values gRPC sends as trailers).
fn partial_response(p: Partial) -> Response {
    let mut response = p.error.into_response();
    for (name, value) in p.tally.progress() {
        response
            .headers_mut()
            .insert(name, HeaderValue::from(value));
    }
    response
}

/// One event: 200 with the ack, or the event's rejection as an error (422,
/// or 400 when the body is not an event at all).
#[tracing::instrument(skip_all, name = "http.post_event")]
async fn post_event(State(s): State<AppState>, body: Bytes) -> Response {
    let mut sub = match s.intake.begin(TRANSPORT, false) {
        Ok(sub) => sub,
        Err(e) => return e.into_response(),
    };
    let _ = sub.offer_json(&body).await;
    match sub.finish().await {
        Ok(t) if t.rejected > 0 => {
            let (_, rejection) = t
                .rejections
                .into_iter()
                .next()
                .expect("one rejection listed");
            Error::InvalidEvent(rejection).into_response()
        }
        Ok(t) => (StatusCode::OK, Json(AckJson::from(t))).into_response(),
        Err(p) => partial_response(*p),
    }
}

/// `{"events": [event, ...]}`, the wrapped form of a batch body.
#[derive(Deserialize)]
struct WrappedBatch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// `[event, ...]` or `{"events": [event, ...]}`, split into raw elements: each
/// is parsed on its own so that one malformed event does not sink its
/// neighbours.
fn split_batch(body: &[u8]) -> Option<Vec<&RawValue>> {
    match body.iter().find(|b| !b.is_ascii_whitespace())? {
        b'[' => serde_json::from_slice(body).ok(),
        b'{' => serde_json::from_slice::<WrappedBatch>(body)
            .ok()
            .map(|w| w.events),
        _ => None,
    }
}

#[tracing::instrument(skip_all, name = "http.post_batch")]
async fn post_batch(State(s): State<AppState>, body: Bytes) -> Response {
    let events = match split_batch(&body) {
        Some(events) => events,
        None => {
            return Error::InvalidArgument(
                "body: must be a JSON array of events or an object {\"events\": [...]}".into(),
            )
            .into_response();
        }
    };
    if events.is_empty() || events.len() > s.max_batch {
        return Error::InvalidArgument(format!(
            "events: a batch holds 1 to {} events (got {})",
            s.max_batch,
            events.len()
        ))
        .into_response();
    }
    let mut sub = match s.intake.begin(TRANSPORT, false) {
        Ok(sub) => sub,
        Err(e) => return e.into_response(),
    };
    for event in events {
        if sub.offer_json(event.get().as_bytes()).await.is_err() {
            break;
        }
    }
    match sub.finish().await {
        Ok(t) => {
            let status = if t.accepted + t.duplicates == 0 {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, Json(AckJson::from(t))).into_response()
        }
        Err(p) => partial_response(*p),
    }
}

fn params<T>(q: std::result::Result<QueryParams<T>, QueryRejection>) -> Result<T> {
    q.map(|QueryParams(t)| t)
        .map_err(|e| Error::InvalidArgument(format!("query parameters: {}", e.body_text())))
}

async fn get_devices(
    State(s): State<AppState>,
    q: std::result::Result<QueryParams<DeviceParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.devices(&p).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitParams {
    limit: Option<usize>,
}

async fn get_recent(
    State(s): State<AppState>,
    Path(device_id): Path<String>,
    q: std::result::Result<QueryParams<LimitParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    let events = s.query.recent(&device_id, p.limit).await?;
    Ok(Json(events.iter().map(EventJson::from).collect::<Vec<_>>()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CounterParams {
    /// Comma-separated event types; absent means all.
    types: Option<String>,
}

async fn get_counters(
    State(s): State<AppState>,
    q: std::result::Result<QueryParams<CounterParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    let types: Vec<String> = p
        .types
        .map(|t| {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(s.query.counters(&types).await?).into_response())
}

async fn get_counter(
    State(s): State<AppState>,
    Path(event_type): Path<String>,
) -> Result<Response> {
    let c = s.query.counters(std::slice::from_ref(&event_type)).await?;
    Ok(Json(c.counters.into_iter().next()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaderboardParams {
    #[serde(rename = "topN")]
    top_n: Option<usize>,
    bucket: Option<i64>,
}

async fn get_leaderboard(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: std::result::Result<QueryParams<LeaderboardParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.leaderboard(&name, p.top_n, p.bucket).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WindowParams {
    minutes: Option<u32>,
}

async fn get_window(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: std::result::Result<QueryParams<WindowParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.window(&name, p.minutes).await?).into_response())
}

async fn get_stats(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.query.stats().await?).into_response())
}

async fn get_openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document().to_string(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let h = &s.intake.health;
    if h.ready() {
        (StatusCode::OK, "ready").into_response()
    } else if h.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable").into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.intake.metrics;
    m.queue_depth.set(s.intake.queue.depth() as i64);
    m.queue_capacity.set(s.intake.queue.capacity() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
