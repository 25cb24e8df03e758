//! `telemetryctl send`: a load generator that checks what it gets back.
//!
//! Workers each open their own connection and send calls of generated
//! events (gRPC client streams or unary batches, or HTTP JSON batches). At
//! the end the summary compares what the server acknowledged with what was
//! sent; the exit code says whether they match.
//!
//! One worker's loop: [`generator`] makes a call's events, [`schedule`]
//! says when it is due, [`transport`] sends it (resuming after retryable
//! failures), and the outcome goes into the run's totals ([`report`]).

pub mod generator;
pub mod report;
pub mod schedule;
pub mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use rand::Rng;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::SendArgs;
use crate::{Error, Result};
use generator::Generator;
use report::{Expected, Outcome, Summary, Totals};
use schedule::{MAX_IN_FLIGHT, Schedule};
use transport::Transport;

/// Sends, prints the summary (a table, or JSON with `--json`), and returns
/// the exit code: 1 when the acknowledgements do not match what was sent.
pub async fn run(args: SendArgs) -> Result<i32> {
    let summary = send(args.clone()).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("a summary serialises")
        );
    } else {
        print!("{}", report::summary_table(&summary));
    }
    Ok(if summary.consistent() { 0 } else { 1 })
}

/// Sends everything and returns the summary.
pub async fn send(args: SendArgs) -> Result<Summary> {
    let run_id = format!("{:08x}", rand::rng().random::<u32>());
    let types = event_types(&args.event_types)?;
    if args.batch < 1 {
        return Err(Error::InvalidFlag("--batch: must be at least 1".into()));
    }
    let args = Arc::new(args);
    let progress = Arc::new(Progress {
        totals: Mutex::new(Totals::default()),
        bar: report::progress_bar(args.n, args.no_progress || args.json),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let workers = args.concurrency.max(1);
    // The schedule starts when the first worker is connected.
    let start = Arc::new(OnceLock::new());
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let transport = Transport::connect(&args).await?;
        let seed = args
            .seed
            .map_or_else(|| rand::rng().random(), |s| s.wrapping_add(index as u64));
        let id_prefix = format!("{run_id}-{index}-");
        let worker = Worker {
            index,
            share: share(args.n, workers, index),
            generator: Generator::new(&args, &types, transport.form(), id_prefix, seed),
            transport,
        };
        handles.push(tokio::spawn(worker.run(
            args.clone(),
            progress.clone(),
            start.clone(),
        )));
    }
    for h in handles {
        h.await.map_err(Error::Worker)?;
    }
    progress.bar.finish_and_clear();
    let elapsed = started.elapsed();
    let summary = progress.totals.lock().await.summary(elapsed);
    Ok(summary)
}

/// The event types of `--event-types`.
fn event_types(list: &str) -> Result<Vec<String>> {
    let types: Vec<String> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if types.is_empty() {
        return Err(Error::InvalidFlag(
            "--event-types: name at least one event type".into(),
        ));
    }
    Ok(types)
}

/// The events worker `index` of `workers` sends, of `n` in all.
fn share(n: u64, workers: usize, index: usize) -> u64 {
    n / workers as u64 + u64::from((index as u64) < n % workers as u64)
}

/// Unix milliseconds: the timestamp of the events of a call.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How far the run is, shared by the workers.
struct Progress {
    totals: Mutex<Totals>,
    bar: ProgressBar,
    /// Set once a call has failed for good, which ends the run.
    stop: AtomicBool,
}

impl Progress {
    /// Adds one finished call; its latency counts from `due`.
    async fn record(&self, expected: Expected, outcome: &Outcome, due: Instant) {
        if outcome.unacknowledged > 0 {
            // A call that failed after every retry ends the run: the server
            // is gone or refuses, and the summary says so.
            self.stop.store(true, Ordering::Relaxed);
        }
        let latency = due.elapsed();
        self.totals.lock().await.record(expected, outcome, latency);
        self.bar.inc(expected.sent);
    }
}

/// One connection and the events it sends.
struct Worker {
    index: usize,
    /// Events this worker sends.
    share: u64,
    generator: Generator,
    transport: Transport,
}

impl Worker {
    async fn run(
        mut self,
        args: Arc<SendArgs>,
        progress: Arc<Progress>,
        start: Arc<OnceLock<Instant>>,
    ) {
        let mut schedule = Schedule::new(
            *start.get_or_init(Instant::now),
            self.index,
            args.concurrency.max(1),
            args.batch as u64,
            args.rate,
        );
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut calls = JoinSet::new();
        let mut left = self.share;
        while left > 0 && !progress.stop.load(Ordering::Relaxed) {
            let n = left.min(args.batch as u64);
            left -= n;
            let (events, expected) = self.generator.batch(n, now_ms());
            let due = schedule.due(n).await;
            if schedule.is_open() {
                // Open loop: the call goes out when due, whatever the calls
                // before it are doing.
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let (mut transport, progress) = (self.transport.clone(), progress.clone());
                let retries = args.retries;
                calls.spawn(async move {
                    let outcome = transport.deliver(&events, retries).await;
                    drop(permit);
                    progress.record(expected, &outcome, due).await;
                });
            } else {
                let outcome = self.transport.deliver(&events, args.retries).await;
                progress.record(expected, &outcome, due).await;
            }
        }
        while calls.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_events_evenly() {
        let shares: Vec<u64> = (0..4).map(|w| share(10, 4, w)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(share(3, 1, 0), 3);
    }

    #[test]
    fn event_types_must_name_at_least_one() {
        assert_eq!(event_types("a,,b").unwrap(), ["a", "b"]);
        assert!(matches!(event_types(","), Err(Error::InvalidFlag(_))));
    }
}
