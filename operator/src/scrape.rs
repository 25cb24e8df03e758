//! Reading the ingest pods' Prometheus `/metrics` for the autoscaler.
//!
//! The autoscaler (docs/autoscaling.md, steps 2 and 3) decides from each
//! pod's queue depth and accepted-events rate. This module gets those figures
//! and nothing else; judging them (sample age, missing pods, the HPA maths)
//! is the autoscaler's. One tick, in order:
//! - `classify`: each listed pod is sorted ([`classify()`], [`is_ready`],
//!   [`is_terminating`]); only `Running` pods with an IP are scraped. Pure.
//! - `fetch`: [`Scraper::scrape_all`] GETs every [`Target`] concurrently with
//!   bounded parallelism, a per-pod timeout and a body size cap, and returns a
//!   [`Reading`] or a [`ScrapeError`] per pod. The only I/O here.
//! - `exposition`: the text exposition parsed (by `prometheus-parse`) into a
//!   [`Reading`]: queue depth and capacity, accepted events, and the flush
//!   histograms' sums. Pure.
//! - `cache`: [`SampleCache`] keeps each pod's last valid samples across
//!   ticks, with time passed in, and derives the rates: events/s from the
//!   accepted counter, Redis busy time and drain rate from the flush sums.
//!   Pure.
//!
//! A failed scrape is data, not a failure of the operator: [`ScrapeError`]
//! lives here rather than in the crate's [`Error`](crate::Error), and its
//! [`reason`](ScrapeError::reason) is a bounded label for metrics.

mod cache;
mod classify;
mod exposition;
mod fetch;

pub use cache::{Sample, SampleCache, milli, valid};
pub use classify::{PodClass, classify, is_ready, is_terminating};
pub use exposition::{
    ACCEPTED_TOTAL, FLUSH_BATCH_SIZE_SUM, FLUSH_DURATION_SECONDS_SUM, FLUSH_SCRIPT_SECONDS_SUM,
    QUEUE_CAPACITY, QUEUE_DEPTH, Reading, parse,
};
pub use fetch::{DEFAULT_MAX_BODY_BYTES, DEFAULT_PARALLELISM, Scraper, Target};

/// Why one pod's scrape gave no [`Reading`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// No complete answer within the timeout (connect, headers and body).
    #[error("no answer within the timeout")]
    Timeout,
    /// The TCP connection could not be made (refused, unreachable).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The request failed after connecting (reset, protocol error).
    #[error("request failed: {0}")]
    Request(String),
    /// The pod answered with a non-2xx status.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The body is larger than the cap.
    #[error("the body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The body is not a Prometheus text exposition.
    #[error("not a Prometheus exposition: {0}")]
    Parse(String),
}

impl ScrapeError {
    /// A short snake_case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Request(_) => "request",
            ScrapeError::HttpStatus(_) => "http_status",
            ScrapeError::BodyTooLarge { .. } => "body_too_large",
            ScrapeError::Parse(_) => "parse",
        }
    }
}
