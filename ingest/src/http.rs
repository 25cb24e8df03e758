//! HTTP/JSON on :8000: ingest, queries, health and metrics.
//!
//! `router(state)` is the whole API; `main` serves it and the tests drive it
//! with `oneshot`. Each handler carries its `#[utoipa::path]`, and [`api`]
//! registers it with `routes!`, which adds it to the router and to the OpenAPI
//! document ([`crate::openapi`]) at once; the page at `/docs` shows that
//! document. Errors become JSON answers in one place,
//! [`IntoResponse for Error`](Error): `{"error": {"code", "message", ...}}`
//! with 400/422/429/503/404 and `Retry-After` where retrying helps. An ingest
//! call that ends early also says how far it got in `telemetry-*` headers,
//! the values gRPC sends as trailers ([`Tally::progress`]). Events reach the
//! rules only through [`crate::intake`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query as QueryParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use telemetry_proto::json::{
    AckJson, CounterValue, Counters, DeviceCount, EventJson, Leaderboard, RejectionJson, Stats,
    Window,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller};
use crate::intake::{Intake, Partial, Tally};
use crate::openapi::{
    ApiDoc, BadRequest, Interrupted, Invalid, NotFound, TooLarge, UnavailableQuery,
};
use crate::query::{DeviceParams, Query};
use crate::{Error, Result};

const TRANSPORT: &str = "http";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub intake: Arc<Intake>,
    pub query: Query,
    pub max_batch: usize,
    /// Largest request body (`--http-max-body-bytes`).
    pub max_body_bytes: usize,
    /// API keys; `None` lets every request in.
    pub auth: Option<crate::auth::Auth>,
}

/// Every route of the API with its OpenAPI operation: one list for both, so
/// that no route goes undocumented and no documented operation unserved.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(post_event))
        .routes(routes!(post_batch))
        .routes(routes!(get_devices))
        .routes(routes!(get_recent))
        .routes(routes!(get_counters))
        .routes(routes!(get_counter))
        .routes(routes!(get_leaderboard))
        .routes(routes!(get_window))
        .routes(routes!(get_stats))
        .routes(routes!(get_openapi))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The whole HTTP API, plus the interactive page at `/docs`.
pub fn router(state: AppState) -> Router {
    let (api, _) = api().split_for_parts();
    let auth = state.auth.clone();
    let router = api
        .merge(crate::openapi::docs_page())
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state);
    match auth {
        Some(keys) => router.layer(axum::middleware::from_fn_with_state(
            keys,
            auth::http::require,
        )),
        None => router,
    }
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

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorJson {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `invalid_event`, `too_large`, `queue_full`,
    /// `unavailable`, `shutting_down`, `not_found` or `internal`.
    pub code: &'static str,
    pub message: String,
    /// The event field that broke a rule (invalid events), or `body` (a
    /// body over the limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// The rule it broke, e.g. `device_id.invalid_chars` (invalid events),
    /// or `body.too_large`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The configured names (unknown window or leaderboard only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<Vec<String>>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
        }
        let (field, reason) = match &self {
            Error::InvalidEvent(r) => (Some(r.field), Some(r.reason)),
            Error::TooLarge { .. } => (Some("body"), Some("body.too_large")),
            _ => (None, None),
        };
        let known = match &self {
            Error::NotFound { known, .. } => Some(known.clone()),
            _ => None,
        };
        let body = ErrorJson {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field,
                reason,
                known,
            },
        };
        let retry_after = self.retry_after();
        let mut response = (status, Json(body)).into_response();
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
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = crate::openapi::INGEST,
    summary = "Ingest one event",
    request_body = EventJson,
    responses((status = 200, description = "Stored", body = AckJson), BadRequest, TooLarge, Invalid, Interrupted)
)]
#[tracing::instrument(skip_all, name = "http.post_event")]
async fn post_event(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    Body(body): Body,
) -> Response {
    let mut sub = match s.intake.begin(TRANSPORT, false) {
        Ok(sub) => sub,
        Err(e) => return e.into_response(),
    };
    let _ = sub.offer_json(&body).await;
    let finished = sub.finish().await;
    auth::count_stored(caller.as_deref(), &finished);
    match finished {
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

/// An ingest request's body, read up to `--http-max-body-bytes`: a larger
/// one is refused with 413 before it is read (so nothing of it is stored),
/// one that cannot be read with 400.
struct Body(Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = Error;

    async fn from_request(req: Request, s: &AppState) -> Result<Body> {
        Bytes::from_request(req, s)
            .await
            .map(Body)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::TooLarge {
                        field: "body",
                        limit: s.max_body_bytes,
                        flag: "--http-max-body-bytes",
                    }
                } else {
                    Error::InvalidArgument(format!("body: {}", rejection.body_text()))
                }
            })
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

/// A batch body split into its 1 to `max_batch` events, each still raw JSON
/// for [`crate::intake`] to read and check one by one; a body that is not a
/// batch, or one of the wrong size, is a bad request.
pub fn batch_events(body: &[u8], max_batch: usize) -> Result<Vec<&RawValue>> {
    let events = split_batch(body).ok_or_else(|| {
        Error::InvalidArgument(
            "body: must be a JSON array of events or an object {\"events\": [...]}".into(),
        )
    })?;
    if events.is_empty() || events.len() > max_batch {
        return Err(Error::InvalidArgument(format!(
            "events: a batch holds 1 to {} events (got {})",
            max_batch,
            events.len()
        )));
    }
    Ok(events)
}

#[utoipa::path(
    post,
    path = "/api/v1/events/batch",
    tag = crate::openapi::INGEST,
    summary = "Ingest 1..=1000 events; invalid ones are rejected one by one, the rest stored",
    request_body = crate::openapi::Batch,
    responses(
        (status = 200, description = "Stored, but for the rejections listed", body = AckJson),
        BadRequest,
        TooLarge,
        (status = 422, description = "Every event was rejected", body = AckJson),
        Interrupted
    )
)]
#[tracing::instrument(skip_all, name = "http.post_batch")]
async fn post_batch(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    Body(body): Body,
) -> Response {
    let events = match batch_events(&body, s.max_batch) {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    let mut sub = match s.intake.begin(TRANSPORT, false) {
        Ok(sub) => sub,
        Err(e) => return e.into_response(),
    };
    for event in events {
        if sub.offer_json(event.get().as_bytes()).await.is_err() {
            break;
        }
    }
    let finished = sub.finish().await;
    auth::count_stored(caller.as_deref(), &finished);
    match finished {
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

#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = crate::openapi::QUERY,
    summary = "Accepted events per device",
    params(DeviceParams),
    responses((status = 200, description = "OK", body = Vec<DeviceCount>), BadRequest, UnavailableQuery)
)]
async fn get_devices(
    State(s): State<AppState>,
    q: std::result::Result<QueryParams<DeviceParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.devices(&p).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitParams {
    /// 1..=1000, default: all that are kept.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/devices/{deviceId}/recent",
    tag = crate::openapi::QUERY,
    summary = "The device's latest events, newest first",
    params(("deviceId" = String, Path, description = "Device id"), LimitParams),
    responses((status = 200, description = "OK", body = Vec<EventJson>), BadRequest, UnavailableQuery)
)]
async fn get_recent(
    State(s): State<AppState>,
    Path(device_id): Path<String>,
    q: std::result::Result<QueryParams<LimitParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    let events = s.query.recent(&device_id, p.limit).await?;
    Ok(Json(events.iter().map(EventJson::from).collect::<Vec<_>>()).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CounterParams {
    /// Comma-separated event types; all when absent.
    pub types: Option<String>,
}

impl CounterParams {
    /// The event types asked for; empty means all.
    pub fn types(self) -> Vec<String> {
        self.types
            .map(|t| {
                t.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/counters",
    tag = crate::openapi::QUERY,
    summary = "Accepted events per event type",
    params(CounterParams),
    responses((status = 200, description = "OK", body = Counters), BadRequest, UnavailableQuery)
)]
async fn get_counters(
    State(s): State<AppState>,
    q: std::result::Result<QueryParams<CounterParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    let types = p.types();
    Ok(Json(s.query.counters(&types).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/counters/{eventType}",
    tag = crate::openapi::QUERY,
    summary = "Accepted events of one event type",
    params(("eventType" = String, Path, description = "Event type")),
    responses((status = 200, description = "OK", body = CounterValue), UnavailableQuery)
)]
async fn get_counter(
    State(s): State<AppState>,
    Path(event_type): Path<String>,
) -> Result<Response> {
    let c = s.query.counters(std::slice::from_ref(&event_type)).await?;
    Ok(Json(c.counters.into_iter().next()).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderboardParams {
    /// 1..=1000, default 10.
    #[serde(rename = "topN")]
    #[param(minimum = 1, maximum = 1000)]
    pub top_n: Option<usize>,
    /// Bucket start in unix seconds; default the current bucket.
    pub bucket: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/leaderboards/{name}",
    tag = crate::openapi::QUERY,
    summary = "Top N of a leaderboard bucket",
    params(("name" = String, Path, description = "Leaderboard name from the aggregation config"), LeaderboardParams),
    responses((status = 200, description = "OK", body = Leaderboard), BadRequest, NotFound, UnavailableQuery)
)]
async fn get_leaderboard(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: std::result::Result<QueryParams<LeaderboardParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.leaderboard(&name, p.top_n, p.bucket).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowParams {
    /// 1..=1440, default 15.
    #[param(minimum = 1, maximum = 1440)]
    pub minutes: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/windows/{name}",
    tag = crate::openapi::QUERY,
    summary = "Per-minute series and total of a window over the last N minutes",
    params(("name" = String, Path, description = "Window name from the aggregation config"), WindowParams),
    responses((status = 200, description = "OK", body = Window), BadRequest, NotFound, UnavailableQuery)
)]
async fn get_window(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: std::result::Result<QueryParams<WindowParams>, QueryRejection>,
) -> Result<Response> {
    let p = params(q)?;
    Ok(Json(s.query.window(&name, p.minutes).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = crate::openapi::QUERY,
    summary = "Pipeline totals, this pod's counters and rates, queue and Redis health",
    responses((status = 200, description = "OK", body = Stats), UnavailableQuery)
)]
async fn get_stats(State(s): State<AppState>) -> Result<Response> {
    Ok(Json(s.query.stats().await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = crate::openapi::OPERATIONS,
    summary = "This document",
    responses((status = 200, description = "OK", body = Object))
)]
async fn get_openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = crate::openapi::OPERATIONS,
    summary = "Liveness",
    responses((status = 200, description = "Alive", body = String))
)]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = crate::openapi::OPERATIONS,
    summary = "Readiness: Redis reachable and not draining",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "Not ready (reason in the body)", body = String)
    )
)]
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = crate::openapi::OPERATIONS,
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String))
)]
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
