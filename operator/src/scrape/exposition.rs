//! An ingest pod's Prometheus text exposition turned into a [`Reading`].
//!
//! Parsing is `prometheus-parse`'s. Two of its habits shape this file:
//! - A histogram's `_bucket` lines become one `Value::Histogram` (buckets
//!   only), while its `_sum` and `_count` lines stay separate samples named
//!   `<histogram>_sum` / `_count` with an untyped value. So a histogram's sum
//!   is read like any other series, by its `_sum` name.
//! - It skips every line it cannot read instead of failing. A body that is
//!   not UTF-8, or that has content but not one readable sample (an HTML
//!   error page served with 200, say), is reported as
//!   [`ScrapeError::Parse`]; a readable exposition that lacks a series leaves
//!   that field `None`.

use prometheus_parse::{Scrape, Value};

use super::ScrapeError;

/// Gauge: events accepted by a pod and not yet stored.
pub const QUEUE_DEPTH: &str = "telemetry_ingest_queue_depth";
/// Gauge: the pod's queue capacity in events.
pub const QUEUE_CAPACITY: &str = "telemetry_ingest_queue_capacity";
/// Counter: events stored and acknowledged.
pub const ACCEPTED_TOTAL: &str = "telemetry_ingest_accepted_total";
/// Histogram sum: seconds Redis spent running this pod's flush scripts.
pub const FLUSH_SCRIPT_SECONDS_SUM: &str = "telemetry_ingest_flush_script_seconds_sum";
/// Histogram sum: events flushed.
pub const FLUSH_BATCH_SIZE_SUM: &str = "telemetry_ingest_flush_batch_size_sum";
/// Histogram sum: seconds spent flushing, retries included.
pub const FLUSH_DURATION_SECONDS_SUM: &str = "telemetry_ingest_flush_duration_seconds_sum";

/// The series the autoscaler reads from one scrape; `None` where the
/// exposition lacks the series. Values are as exposed: validity (finite,
/// ≥ 0) is judged by the [`SampleCache`](super::SampleCache).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// `telemetry_ingest_queue_depth`.
    pub queue_depth: Option<f64>,
    /// `telemetry_ingest_queue_capacity`.
    pub queue_capacity: Option<f64>,
    /// `telemetry_ingest_accepted_total`.
    pub accepted_total: Option<f64>,
    /// `telemetry_ingest_flush_script_seconds_sum`: time Redis spent running
    /// this pod's flush scripts.
    pub flush_script_seconds_sum: Option<f64>,
    /// `telemetry_ingest_flush_batch_size_sum`: events flushed.
    pub flushed_events_sum: Option<f64>,
    /// `telemetry_ingest_flush_duration_seconds_sum`: time spent flushing.
    pub flush_seconds_sum: Option<f64>,
}

/// Parses a `/metrics` body.
///
/// A series exposed under several label sets is summed (the ingest server
/// exposes these without labels; summing keeps the figures right should it
/// add one).
pub fn parse(body: &[u8]) -> Result<Reading, ScrapeError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ScrapeError::Parse(format!("the body is not UTF-8: {e}")))?;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| ScrapeError::Parse(e.to_string()))?;
    if scrape.samples.is_empty() {
        let content = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        if content > 0 {
            return Err(ScrapeError::Parse(format!(
                "no Prometheus sample in {content} non-comment lines"
            )));
        }
    }
    let series = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                Value::Histogram(_) | Value::Summary(_) => None,
            })
            .reduce(|a, b| a + b)
    };
    Ok(Reading {
        queue_depth: series(QUEUE_DEPTH),
        queue_capacity: series(QUEUE_CAPACITY),
        accepted_total: series(ACCEPTED_TOTAL),
        flush_script_seconds_sum: series(FLUSH_SCRIPT_SECONDS_SUM),
        flushed_events_sum: series(FLUSH_BATCH_SIZE_SUM),
        flush_seconds_sum: series(FLUSH_DURATION_SECONDS_SUM),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What `telemetry-ingest` serves, trimmed to the series read here plus a
    /// few neighbours (labelled counters, a second histogram, the buckets).
    pub(crate) const EXPOSITION: &str = "\
# HELP telemetry_ingest_accepted_total Events stored in Redis and acknowledged.
# TYPE telemetry_ingest_accepted_total counter
telemetry_ingest_accepted_total 123456
# HELP telemetry_ingest_flush_batch_size Events per flush.
# TYPE telemetry_ingest_flush_batch_size histogram
telemetry_ingest_flush_batch_size_bucket{le=\"1\"} 0
telemetry_ingest_flush_batch_size_bucket{le=\"8192\"} 40
telemetry_ingest_flush_batch_size_bucket{le=\"+Inf\"} 41
telemetry_ingest_flush_batch_size_sum 123456
telemetry_ingest_flush_batch_size_count 41
# HELP telemetry_ingest_flush_duration_seconds Time to apply one flush to Redis, retries included.
# TYPE telemetry_ingest_flush_duration_seconds histogram
telemetry_ingest_flush_duration_seconds_bucket{le=\"0.0002\"} 0
telemetry_ingest_flush_duration_seconds_bucket{le=\"+Inf\"} 41
telemetry_ingest_flush_duration_seconds_sum 0.75
telemetry_ingest_flush_duration_seconds_count 41
# HELP telemetry_ingest_flush_script_seconds Run time of each flush script inside Redis.
# TYPE telemetry_ingest_flush_script_seconds histogram
telemetry_ingest_flush_script_seconds_bucket{le=\"0.0001\"} 0
telemetry_ingest_flush_script_seconds_bucket{le=\"+Inf\"} 41
telemetry_ingest_flush_script_seconds_sum 0.5
telemetry_ingest_flush_script_seconds_count 41
# HELP telemetry_ingest_queue_capacity Capacity of the queue in events.
# TYPE telemetry_ingest_queue_capacity gauge
telemetry_ingest_queue_capacity 100000
# HELP telemetry_ingest_queue_depth Events accepted by a handler and not yet stored.
# TYPE telemetry_ingest_queue_depth gauge
telemetry_ingest_queue_depth 1500
# HELP telemetry_ingest_received_total Events received, valid or not, by transport.
# TYPE telemetry_ingest_received_total counter
telemetry_ingest_received_total{transport=\"grpc\"} 100000
telemetry_ingest_received_total{transport=\"http\"} 23456
";

    #[test]
    fn the_ingest_exposition_yields_every_series_including_histogram_sums() {
        assert_eq!(
            parse(EXPOSITION.as_bytes()).unwrap(),
            Reading {
                queue_depth: Some(1500.0),
                queue_capacity: Some(100000.0),
                accepted_total: Some(123456.0),
                flush_script_seconds_sum: Some(0.5),
                flushed_events_sum: Some(123456.0),
                flush_seconds_sum: Some(0.75),
            }
        );
    }

    #[test]
    fn an_absent_series_is_none_and_the_others_are_still_read() {
        let r =
            parse(b"# TYPE telemetry_ingest_queue_depth gauge\ntelemetry_ingest_queue_depth 7\n")
                .unwrap();
        assert_eq!(
            r,
            Reading {
                queue_depth: Some(7.0),
                ..Reading::default()
            }
        );
        assert_eq!(
            parse(b"").unwrap(),
            Reading::default(),
            "an empty exposition"
        );
        assert_eq!(parse(b"# just a comment\n").unwrap(), Reading::default());
    }

    #[test]
    fn a_series_under_several_label_sets_is_summed() {
        let r = parse(
            b"telemetry_ingest_queue_depth{shard=\"a\"} 2\ntelemetry_ingest_queue_depth{shard=\"b\"} 3\n",
        )
        .unwrap();
        assert_eq!(r.queue_depth, Some(5.0));
    }

    #[test]
    fn nan_and_negative_values_are_passed_through_for_the_cache_to_reject() {
        let r = parse(b"telemetry_ingest_queue_depth NaN\ntelemetry_ingest_accepted_total -1\n")
            .unwrap();
        assert!(r.queue_depth.unwrap().is_nan());
        assert_eq!(r.accepted_total, Some(-1.0));
    }

    #[test]
    fn a_body_with_content_but_no_sample_is_a_parse_error() {
        let err = parse(b"<html><body>Service Unavailable</body></html>\n").unwrap_err();
        assert_eq!(err.reason(), "parse");
        let err = parse(&[0xff, 0xfe, b'\n']).unwrap_err();
        assert_eq!(err.reason(), "parse");
    }

    #[test]
    fn unreadable_lines_are_skipped_and_readable_ones_kept() {
        let r = parse(b"garbage line here\ntelemetry_ingest_queue_depth 4\nfoo{ 1\n").unwrap();
        assert_eq!(r.queue_depth, Some(4.0));
    }
}
