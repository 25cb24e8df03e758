//! telemetry-ingest: receives events over gRPC and HTTP, aggregates them into
//! Redis, and acknowledges each event only once the write that holds it has
//! succeeded. Also the query API over those aggregates. Its wire types, the
//! protobuf messages and the HTTP API's JSON bodies, live in
//! `telemetry-proto`; its client, `telemetryctl`, is a crate of its own.
//!
//! Data flow of one event:
//!
//! ```text
//! grpc / http ──► intake (validate ► chunk) ──► queue (bounded, in events)
//!                    ▲                              │
//!                    │ ack / 4xx-5xx                ▼
//!                    └──────────── flush (plan ► one Lua call per batch) ──► Redis
//! ```
//!
//! - [`config`]: flags (each also a `TELEMETRY_*` env var) and defaults.
//! - [`limits`]: how large an event may be, and the `--max-*` defaults;
//!   [`config`] sets them, [`validate`] checks them (neither reads the other).
//! - [`event`], [`validate`]: the event, its wire forms, and its rules (pure).
//! - [`intake`]: per-call admission, validation (the only way into
//!   [`validate`], for both transports), chunking and the tally of an answer.
//! - [`queue`]: the bounded queue; its depth is what the operator scales on.
//! - [`aggregate`]: events + settings → the Redis operations of one flush (pure):
//!   the settings and filters (`aggregate::settings`), what one event adds per
//!   aggregation kind (`aggregate::event_ops`), the writes grouped for the
//!   flush script (`aggregate::writes`).
//! - [`keys`]: the Redis key layout of a pipeline; [`partition`]: its
//!   partitions on Redis Cluster, and which one an event belongs to (pure).
//! - [`recent`]: the stored form of a recent event.
//! - [`store`]: Redis connections and the atomic, idempotent flush script
//!   (the I/O); [`store::script`]: the script's arguments and reply (pure);
//!   [`store::refresh`]: when a recent-events list's TTL is set again (pure).
//! - [`flush`]: the flusher task: batching, retries, answering handlers.
//! - [`calibrate`]: the flush cost estimate, corrected by measured script time.
//! - [`query`]: reads of counters, windows, leaderboards, recent events, stats.
//! - [`connection`]: accepted connections on both listeners: how many at
//!   once, the idle timeout, and the HTTP accept loop (header read timeout).
//! - [`tls`]: TLS on both listeners, the certificate hot-reloaded.
//! - [`grpc`], [`http`]: the transports; [`openapi`]: the HTTP API's OpenAPI
//!   document, derived from the handlers of [`http`], and its page at `/docs`.
//! - [`auth`]: API keys (`--api-keys-file`): who may send and who may
//!   query; checked once per call by both transports, reloaded in place.
//! - [`health`], [`metrics`], [`reload`]: readiness, Prometheus, config hot reload.
//! - [`server`]: `run(args, listeners, shutdown)`, what `main` and tests call:
//!   shared state, background tasks, queue and flusher, the two servers, the
//!   drain.
//! - [`error`]: the crate's one error type, and its gRPC and HTTP statuses.

pub mod aggregate;
pub mod auth;
pub mod calibrate;
pub mod config;
pub mod connection;
pub mod error;
pub mod event;
pub mod flush;
pub mod grpc;
pub mod health;
pub mod http;
pub mod intake;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod partition;
pub mod query;
pub mod queue;
pub mod recent;
pub mod reload;
pub mod server;
pub mod store;
pub mod tls;
pub mod validate;

pub use error::{Error, Result};
