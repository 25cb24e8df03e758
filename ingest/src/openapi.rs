//! The OpenAPI 3.0 document served at `/api/v1/openapi.json`.
//!
//! Written by hand, next to the routes it describes; a test walks every
//! documented operation through the real router and checks that every route
//! is documented, so the two cannot drift apart.

use serde_json::{Value, json};

/// Every route of the HTTP API as (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
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

fn error_responses(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert(
            code.to_string(),
            json!({"description": describe(code), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(out)
}

/// Error answers of an ingest route: one that ended early (429, 503) also
/// says how far it got, in the headers gRPC sends as trailers.
fn ingest_error_responses(codes: &[&str]) -> Value {
    let mut out = error_responses(codes);
    let count =
        |description: &str| json!({"description": description, "schema": {"type": "integer"}});
    let headers = json!({
        "telemetry-settled": count("Events from the start of the call whose fate is final; resend from there"),
        "telemetry-accepted": count("Of those, events stored"),
        "telemetry-duplicates": count("Of those, events recognised as duplicates"),
        "telemetry-rejected": count("Events rejected by validation"),
    });
    for code in ["429", "503"] {
        if let Some(response) = out.get_mut(code) {
            response["headers"] = headers.clone();
        }
    }
    out
}

fn describe(code: &str) -> &'static str {
    match code {
        "400" => "Malformed request or bad parameter; the message names it.",
        "404" => "Unknown window or leaderboard; the body lists the configured names.",
        "422" => "The event (or every event of the batch) broke a validation rule.",
        "429" => "Queue full; retry after the Retry-After seconds.",
        "503" => "Redis unreachable or server draining; retry after Retry-After.",
        _ => "Error.",
    }
}

fn ok(schema: Value) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The document.
pub fn document() -> Value {
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "telemetry-ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ingest telemetry events (acknowledged only once stored in Redis) and query the live aggregates."
        },
        "paths": {
            "/api/v1/events": {"post": {
                "summary": "Ingest one event",
                "requestBody": {"required": true, "content": {"application/json": {"schema": r("Event")}}},
                "responses": with(json!({"200": ok(r("Ack"))}), ingest_error_responses(&["400", "422", "429", "503"]))
            }},
            "/api/v1/events/batch": {"post": {
                "summary": "Ingest 1..=1000 events; invalid ones are rejected one by one, the rest stored",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                    {"type": "array", "items": r("Event"), "minItems": 1, "maxItems": 1000},
                    {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": r("Event"), "minItems": 1, "maxItems": 1000}}}
                ]}}}},
                "responses": with(json!({"200": ok(r("Ack")), "422": {"description": "Every event was rejected", "content": {"application/json": {"schema": r("Ack")}}}}), ingest_error_responses(&["400", "429", "503"]))
            }},
            "/api/v1/devices": {"get": {
                "summary": "Accepted events per device",
                "parameters": [
                    query_param("limit", "How many devices (1..=10000, default 100)", json!({"type": "integer", "minimum": 1, "maximum": 10000})),
                    query_param("sort", "count (most events first) or device (by id)", json!({"type": "string", "enum": ["count", "device"]})),
                    query_param("deviceId", "Only this device", json!({"type": "string"}))
                ],
                "responses": with(json!({"200": ok(json!({"type": "array", "items": r("DeviceCount")}))}), error_responses(&["400", "503"]))
            }},
            "/api/v1/devices/{deviceId}/recent": {"get": {
                "summary": "The device's latest events, newest first",
                "parameters": [path_param("deviceId", "Device id"), query_param("limit", "1..=1000, default: all that are kept", json!({"type": "integer", "minimum": 1, "maximum": 1000}))],
                "responses": with(json!({"200": ok(json!({"type": "array", "items": r("Event")}))}), error_responses(&["400", "503"]))
            }},
            "/api/v1/counters": {"get": {
                "summary": "Accepted events per event type",
                "parameters": [query_param("types", "Comma-separated event types; all when absent", json!({"type": "string"}))],
                "responses": with(json!({"200": ok(r("Counters"))}), error_responses(&["400", "503"]))
            }},
            "/api/v1/counters/{eventType}": {"get": {
                "summary": "Accepted events of one event type",
                "parameters": [path_param("eventType", "Event type")],
                "responses": with(json!({"200": ok(r("CounterValue"))}), error_responses(&["503"]))
            }},
            "/api/v1/leaderboards/{name}": {"get": {
                "summary": "Top N of a leaderboard bucket",
                "parameters": [
                    path_param("name", "Leaderboard name from the aggregation config"),
                    query_param("topN", "1..=1000, default 10", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                    query_param("bucket", "Bucket start in unix seconds; default the current bucket", json!({"type": "integer"}))
                ],
                "responses": with(json!({"200": ok(r("Leaderboard"))}), error_responses(&["400", "404", "503"]))
            }},
            "/api/v1/windows/{name}": {"get": {
                "summary": "Per-minute series and total of a window over the last N minutes",
                "parameters": [
                    path_param("name", "Window name from the aggregation config"),
                    query_param("minutes", "1..=1440, default 15", json!({"type": "integer", "minimum": 1, "maximum": 1440}))
                ],
                "responses": with(json!({"200": ok(r("Window"))}), error_responses(&["400", "404", "503"]))
            }},
            "/api/v1/stats": {"get": {
                "summary": "Pipeline totals, this pod's counters and rates, queue and Redis health",
                "responses": with(json!({"200": ok(r("Stats"))}), error_responses(&["503"]))
            }},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok(json!({"type": "object"}))}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/readyz": {"get": {"summary": "Readiness: Redis reachable and not draining", "responses": {
                "200": {"description": "Ready", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "503": {"description": "Not ready (reason in the body)", "content": {"text/plain": {"schema": {"type": "string"}}}}
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
        },
        "components": {"schemas": {
            "Event": {
                "type": "object", "required": ["deviceId", "timestamp"], "additionalProperties": false,
                "properties": {
                    "deviceId": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"},
                    "timestamp": {"type": "integer", "format": "int64", "description": "Unix milliseconds"},
                    "payload": {"description": "Any JSON value; a string is base64 of a binary payload"},
                    "eventType": {"type": "string", "maxLength": 128},
                    "eventId": {"type": "string", "maxLength": 128, "description": "For deduplication"},
                    "userId": {"type": "string", "maxLength": 128},
                    "value": {"type": "number"},
                    "attributes": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 256}}
                }
            },
            "Ack": {"type": "object", "properties": {
                "accepted": {"type": "integer"}, "rejected": {"type": "integer"}, "duplicates": {"type": "integer"},
                "rejectedByReason": {"type": "object", "additionalProperties": {"type": "integer"}},
                "rejections": {"type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"}
                }}}
            }},
            "Error": {"type": "object", "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}, "reason": {"type": "string"},
                "known": {"type": "array", "items": {"type": "string"}}
            }}}},
            "DeviceCount": {"type": "object", "properties": {"deviceId": {"type": "string"}, "count": {"type": "integer"}}},
            "CounterValue": {"type": "object", "properties": {"eventType": {"type": "string"}, "count": {"type": "integer"}}},
            "Counters": {"type": "object", "properties": {"counters": {"type": "array", "items": r("CounterValue")}, "total": {"type": "integer"}}},
            "Leaderboard": {"type": "object", "properties": {
                "name": {"type": "string"}, "bucket": {"type": "integer"},
                "entries": {"type": "array", "items": {"type": "object", "properties": {"rank": {"type": "integer"}, "member": {"type": "string"}, "score": {"type": "number"}}}}
            }},
            "WindowPoint": {"type": "object", "properties": {"minute": {"type": "integer"}, "count": {"type": "integer"}, "sum": {"type": "number"}, "min": {"type": "number"}, "max": {"type": "number"}}},
            "Window": {"type": "object", "properties": {"name": {"type": "string"}, "points": {"type": "array", "items": r("WindowPoint")}, "total": r("WindowPoint")}},
            "Stats": {"type": "object", "properties": {
                "eventsTotal": {"type": "integer"}, "devices": {"type": "integer"}, "receivedTotal": {"type": "integer"},
                "acceptedTotal": {"type": "integer"}, "rejectedTotal": {"type": "integer"}, "duplicatesTotal": {"type": "integer"},
                "queueDepth": {"type": "integer"}, "queueCapacity": {"type": "integer"}, "redisOk": {"type": "boolean"},
                "acceptedPerSecond": {"type": "number"}
            }}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, ops) in paths {
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
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
