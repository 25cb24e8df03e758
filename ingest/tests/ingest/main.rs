//! End-to-end tests of telemetry-ingest against a real redis-server.

mod acks;
mod aggregates;
mod docs;
mod failures;
mod faults;
mod limits;
mod model;
mod proxy;
mod redis_tls;
mod startup;
mod support;
