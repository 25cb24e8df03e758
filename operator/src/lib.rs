//! The TelemetryPipeline operator.
//!
//! A user applies a `TelemetryPipeline`; the operator turns it into a Redis
//! (StatefulSet, Services, Secret, redis.conf) and a Deployment of ingest pods
//! (with their aggregation ConfigMap and Service), scales that Deployment from
//! the queue depth each pod reports, and reports what it sees.
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
//!   written only when changed. By concern: `status::observed` (the input),
//!   `status::pod` (each pod's health), `status::part` (where Redis and
//!   ingest stand), `status::conditions` (the types, `lastTransitionTime`
//!   kept), `status::events` (the Events a change is worth).
//! - [`scrape`]: the ingest pods' `/metrics` for the autoscaler: which pods
//!   to scrape (pure), a concurrent bounded scraper, and a cache of their
//!   last valid samples with the rates derived from them (pure, time passed
//!   in).
//! - [`autoscale`]: the autoscaler's decision, a pure function of (spec,
//!   history, observed pods, now): HPA maths in exact integers, behavior
//!   policies, fallback, Redis saturation, scale-down victims.
//! - [`scaler`]: the autoscaler's I/O, every sync period per pipeline:
//!   `/scale` and pods → [`scrape`] → [`autoscale::decide`] → deletion costs
//!   and `/scale` → Events and `status.autoscaling` (its history included);
//!   what it writes there is computed by the pure `scaler::record` and
//!   written by `scaler::status_write`; the decision's inputs are built by the
//!   pure `scaler::inputs`.
//! - [`controller`]: the kube-runtime `Controller`, the HTTP server
//!   ([`http`]: /healthz, /readyz, /metrics from [`metrics`]) and shutdown.
//! - [`lease`]: leader election. With `--leader-elect` the controller (the
//!   leader's work, with the autoscaler) runs only while this replica holds a Lease; a replica
//!   that loses it stops reconciling at once and exits.
//! - [`redis_cluster`]: the managed Redis Cluster, independent of Kubernetes:
//!   observe every pod's `CLUSTER NODES`, plan the next steps (pure: meet,
//!   assign slots, replicate, close open slots, move slots to equal shares),
//!   execute one bounded round of them ([`redis_cluster::converge_once`]).
//! - [`event`]: Kubernetes Events on a pipeline, for both of the above.
//! - [`config`]: flags and env vars. [`error`]: the crate's `Error`.
//!
//! The binaries are thin: `telemetry-operator` parses [`config::Args`] and
//! calls [`run`]; `crdgen` prints [`crd::crd_yaml`].

pub mod autoscale;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod event;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod reconcile;
pub mod redis_cluster;
pub mod resources;
pub mod scaler;
pub mod scrape;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use controller::run;
pub use crd::{TelemetryPipeline, TelemetryPipelineSpec, TelemetryPipelineStatus};
pub use error::{Error, Result};
