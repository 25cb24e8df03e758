//! Aggregation settings: what an ingest pod computes from each event.
//!
//! One type, [`AggregationConfig`], is read by `telemetry-ingest` from its
//! `--config` YAML file and embedded by the operator as
//! `TelemetryPipeline.spec.aggregation`, which renders it back into that file.
//! Keeping it in its own crate (serde + schemars, nothing else) lets both sides
//! share it without the ingest service depending on kube or the operator on
//! tonic and redis.
//!
//! - [`aggregation`]: the types, their defaults and `kubectl explain` text.
//! - [`validate`]: the rules serde and the schema cannot express (unique names,
//!   bounds, patterns that compile), with errors that name field and rule.
//! - [`error`]: the crate's one error type.

pub mod aggregation;
pub mod error;
pub mod validate;

pub use aggregation::{
    AggregationConfig, CounterConfig, DedupConfig, LeaderboardBucket, LeaderboardConfig,
    LeaderboardMember, LeaderboardScore, RecentEventsConfig, WindowAggregate, WindowConfig,
};
pub use error::{Error, Result};
