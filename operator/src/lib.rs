//! The TelemetryPipeline operator.
//!
//! A user applies a `TelemetryPipeline`; the operator turns it into a Redis
//! (StatefulSet, Services, Secret, redis.conf) and a Deployment of ingest pods
//! (with their aggregation ConfigMap and Service), and reports what it sees.
//!
//! Data flow, one module per step:
//! - [`crd`]: the resource's types, defaults, CEL rules, and the generated CRD
//!   (`crdgen` writes it to `crds/`; a test checks for drift).
//! - [`resources`]: pure builders of every desired child from the spec
//!   ([`resources::redis`], [`resources::ingest`]); unit-tested without I/O.
//! - [`reconcile`]: applies them with server-side apply under one field
//!   manager, deletes what the spec no longer asks for, honours `paused`,
//!   classifies errors (transient: backoff; permanent: `Degraded`), and reads
//!   what the status needs (children, their pods, referenced Secrets).
//! - [`status`]: conditions (`Ready`, `Progressing`, `Degraded`, ...) and
//!   replica counts as a pure function of what was observed and the time;
//!   written only when changed.
//! - [`controller`]: the kube-runtime `Controller`, the HTTP server
//!   ([`http`]: /healthz, /readyz, /metrics from [`metrics`]) and shutdown.
//! - [`config`]: flags and env vars. [`error`]: the crate's `Error`.
//!
//! The binaries are thin: `telemetry-operator` parses [`config::Args`] and
//! calls [`run`]; `crdgen` prints [`crd::crd_yaml`].

pub mod autoscale;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod metrics;
pub mod reconcile;
pub mod resources;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use controller::run;
pub use crd::{TelemetryPipeline, TelemetryPipelineSpec, TelemetryPipelineStatus};
pub use error::{Error, Result};
