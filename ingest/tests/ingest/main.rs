//! End-to-end tests of telemetry-ingest against a real redis-server.

mod acks;
mod aggregates;
mod auth;
mod docs;
mod failures;
mod faults;
mod limits;
mod model;
mod proxy;
mod redis_cluster;
mod redis_tls;
mod sharding;
mod soak;
mod startup;
mod support;
mod tls;
