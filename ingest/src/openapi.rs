//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, and the
//! interactive page over it at `/docs` (Swagger UI).
//!
//! Derived, not written: each handler of [`crate::http`] carries its
//! `#[utoipa::path]` (summary, parameters, responses), the JSON bodies derive
//! `ToSchema` (those of `telemetry_proto::json` with its `utoipa` feature),
//! and [`crate::http::api`] registers every handler with `routes!`, which
//! adds it to the router and to the document together. Here: the document's
//! header, the error answers the handlers share, and the schemas that are
//! documentation only (the two shapes of a batch body).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use serde::Deserialize;
use telemetry_proto::json::EventJson;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::http::ErrorJson;

/// Where the document is served, and the page that shows it.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
pub const PAGE_PATH: &str = "/docs";

/// The groups of operations, in the order the page shows them.
pub const INGEST: &str = "ingest";
pub const QUERY: &str = "query";
pub const OPERATIONS: &str = "operations";

/// The document's header; the operations come from [`crate::http::api`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "telemetry-ingest",
        description = "Ingest telemetry events (acknowledged only once stored in Redis) and query the live aggregates."
    ),
    tags(
        (name = INGEST, description = "Send events; each is acknowledged once stored"),
        (name = QUERY, description = "Read the aggregates"),
        (name = OPERATIONS, description = "Health, metrics and this document")
    ),
    // The error body is named by the shared responses below, which do not
    // register the schemas they name.
    components(schemas(ErrorJson))
)]
pub struct ApiDoc;

/// The whole document: the header plus every route's operation.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> =
        LazyLock::new(|| crate::http::api().into_openapi());
    &DOCUMENT
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serialises")
    });
    &JSON
}

/// Swagger UI at `/docs/` (`/docs` redirects there), reading the document
/// from [`DOCUMENT_PATH`]. Its assets are compiled in (the `vendored`
/// feature), so the page needs nothing from outside but the browser.
pub fn docs_page<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new(PAGE_PATH)
        .config(Config::new([DOCUMENT_PATH]))
        .into()
}

/// A batch body: the events as an array, or wrapped as `{"events": [...]}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Batch {
    Events(Events),
    Wrapped { events: Events },
}

/// The events of a batch: 1 to 1000 (`--max-http-batch`).
#[derive(Deserialize, ToSchema)]
#[schema(min_items = 1, max_items = 1000)]
pub struct Events(pub Vec<EventJson>);

/// Malformed request or bad parameter; the message names it.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadRequest(pub ErrorJson);

/// The body is larger than `--http-max-body-bytes` (64 MiB by default);
/// none of it was read, so nothing of it was stored.
#[derive(IntoResponses)]
#[response(status = 413)]
pub struct TooLarge(pub ErrorJson);

/// The event broke a validation rule.
#[derive(IntoResponses)]
#[response(status = 422)]
pub struct Invalid(pub ErrorJson);

/// Unknown window or leaderboard; the body lists the configured names.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NotFound(pub ErrorJson);

/// Redis unreachable or server draining; retry after `Retry-After`.
#[derive(IntoResponses)]
#[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
pub struct UnavailableQuery(pub ErrorJson);

/// How an ingest call that ended early fails: 429 (queue full) or 503
/// (Redis unreachable, server draining), both retryable after `Retry-After`
/// seconds and both saying how far the call got, in the `telemetry-*`
/// headers gRPC sends as trailers. Built by hand, as derived responses would
/// each list the same five headers.
pub struct Interrupted;

impl IntoResponses for Interrupted {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let count = |description: &str| {
            HeaderBuilder::new()
                .schema(Some(u64::schema()))
                .description(Some(description))
                .build()
        };
        let headers = [
            ("Retry-After", "Seconds to wait"),
            (
                "telemetry-settled",
                "Events from the start of the call whose fate is final; resend from there",
            ),
            ("telemetry-accepted", "Of those, events stored"),
            (
                "telemetry-duplicates",
                "Of those, events recognised as duplicates",
            ),
            ("telemetry-rejected", "Events rejected by validation"),
        ];
        [
            ("429", "Queue full; retry after the Retry-After seconds."),
            (
                "503",
                "Redis unreachable or server draining; retry after Retry-After.",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = Content::new(Some(Ref::from_schema_name(<ErrorJson as ToSchema>::name())));
            let response = headers.iter().fold(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body),
                |r, (name, description)| r.header(*name, count(description)),
            );
            (status.to_string(), response.build().into())
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Every operation of the API as (method, OpenAPI path). The router and
    /// the document come from one list ([`crate::http::api`]); this one says
    /// what that list must hold, so a route dropped or added shows here.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/api/v1/events"),
        ("post", "/api/v1/events/batch"),
        ("get", "/api/v1/devices"),
        ("get", "/api/v1/devices/{deviceId}/recent"),
        ("get", "/api/v1/counters"),
        ("get", "/api/v1/counters/{eventType}"),
        ("get", "/api/v1/leaderboards/{name}"),
        ("get", "/api/v1/windows/{name}"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];

    fn doc() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = doc();
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let text = doc.to_string();
        let pieces: Vec<&str> = text
            .split("\"$ref\":\"#/components/schemas/")
            .skip(1)
            .collect();
        assert!(!pieces.is_empty(), "the bodies are referenced schemas");
        for piece in pieces {
            let name = piece.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }

    #[test]
    fn every_operation_says_what_it_does_and_how_it_fails() {
        let doc = doc();
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method];
            assert!(op["summary"].is_string(), "{method} {path}: summary");
            assert!(op["responses"]["200"].is_object(), "{method} {path}: 200");
        }
        let error = "#/components/schemas/Error";
        let event = &doc["paths"]["/api/v1/events"]["post"];
        for code in ["400", "422", "429", "503"] {
            let body = &event["responses"][code]["content"]["application/json"]["schema"];
            assert_eq!(body["$ref"], error, "POST /api/v1/events {code}");
        }
        assert!(event["responses"]["429"]["headers"]["telemetry-settled"].is_object());
        let window = &doc["paths"]["/api/v1/windows/{name}"]["get"];
        assert_eq!(
            window["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
            error
        );
        let names: Vec<&str> = window["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name", "minutes"]);
    }

    /// The bounds the document states are those the code enforces (the
    /// attributes take literals, so this ties them to the constants).
    #[test]
    fn documented_bounds_are_the_enforced_ones() {
        use crate::config::DEFAULT_MAX_HTTP_BATCH;
        use crate::limits::{ATTRIBUTE_VALUE_MAX_LEN, DEVICE_ID_MAX_LEN, IDENT_MAX_LEN};
        use crate::query::{MAX_DEVICE_LIMIT, MAX_TOP_N, MAX_WINDOW_MINUTES};
        let doc = doc();
        let maximum = |path: &str, name: &str| {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let param = params.iter().find(|p| p["name"] == name).unwrap();
            param["schema"]["maximum"].as_u64().unwrap() as usize
        };
        assert_eq!(maximum("/api/v1/devices", "limit"), MAX_DEVICE_LIMIT);
        assert_eq!(maximum("/api/v1/leaderboards/{name}", "topN"), MAX_TOP_N);
        let minutes = maximum("/api/v1/windows/{name}", "minutes");
        assert_eq!(minutes, MAX_WINDOW_MINUTES as usize);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Events"]["maxItems"], DEFAULT_MAX_HTTP_BATCH);
        let event = &schemas["Event"]["properties"];
        assert_eq!(event["deviceId"]["maxLength"], DEVICE_ID_MAX_LEN);
        for field in ["eventType", "eventId", "userId"] {
            assert_eq!(event[field]["maxLength"], IDENT_MAX_LEN, "{field}");
        }
        assert_eq!(
            event["attributes"]["additionalProperties"]["maxLength"],
            ATTRIBUTE_VALUE_MAX_LEN
        );
    }

    #[test]
    fn an_event_requires_its_device_and_time_and_refuses_other_fields() {
        let doc = doc();
        let event = &doc["components"]["schemas"]["Event"];
        assert_eq!(
            event["required"],
            serde_json::json!(["deviceId", "timestamp"])
        );
        assert_eq!(event["additionalProperties"], false);
    }
}
