//! The flusher: takes chunks off the queue, plans one atomic Redis flush per
//! group of chunks, applies it (retrying with the same flush id), and answers
//! every chunk's handler.
//!
//! Batching is natural rather than timed: at most `flush_concurrency` flushes
//! are in flight, and while they are, chunks pile up and the next flush takes
//! them (up to `batch_size` events, or until the flush's estimated Redis time
//! reaches its budget, `--flush-budget-us`: a flush ends at the chunk
//! boundary nearest to the budget; on Redis Cluster both bounds apply to
//! each partition's part, one script call on its shard). Under light load an event is flushed as
//! soon as it arrives; under heavy load every flush is full.
//!
//! Chunks are planned as they are taken (the plan estimates what the flush
//! will cost Redis, corrected by [`Calibration`] from what earlier flushes
//! measured), so a flush of counters over a thousand devices holds
//! thousands of events while one that also writes a dedup claim, a
//! recent-event value and leaderboard entries per event is cut at a few
//! hundred: either way one script call stays within a few milliseconds of
//! Redis time, which bounds how long a query can wait behind it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::aggregate::{FlushPlan, Plan, PlanSize, Settings, Slot};
use crate::calibrate::{Calibration, take_next_chunk};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::queue::{Chunk, ChunkOutcome};
use crate::store::{Applied, Store};
use crate::{Error, Result};

/// What the flusher needs.
#[derive(Debug, Clone)]
pub struct FlushOptions {
    pub batch_size: usize,
    pub linger: Duration,
    /// Redis time (the plan's estimate, calibrated) at which a flush stops
    /// taking chunks; see BENCHMARKS.md for the trade.
    pub budget_micros: f64,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// Runs until the queue's senders are all gone and every chunk is answered.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    store: Store,
    settings: watch::Receiver<Arc<Settings>>,
    health: Arc<Health>,
    metrics: Metrics,
    options: FlushOptions,
) {
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let context = FlushContext {
        store: store.clone(),
        health,
        metrics,
        calibration: Arc::new(Calibration::default()),
        timeout: options.timeout,
    };
    let partitions = store.partitions().count();
    // A chunk taken off the queue but left for the next flush.
    let mut carried: Option<Chunk> = None;
    let mut last_size = PlanSize::default();
    loop {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let first = match carried.take() {
            Some(chunk) => chunk,
            None => match rx.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
        };
        // Each flush is planned under exactly one version of the settings.
        let settings = settings.borrow().clone();
        let mut plan = FlushPlan::new(partitions, last_size);
        let add = |plan: &mut FlushPlan, chunk: &Chunk| {
            for event in &chunk.events {
                plan.add(event, &settings, store.partitions(), store.all_keys());
            }
        };
        add(&mut plan, &first);
        let mut chunks = vec![first];
        let linger_until = tokio::time::Instant::now() + options.linger;
        // The budget in the plan's (uncalibrated) units.
        let budget = options.budget_micros / context.calibration.factor();
        // Both bounds hold per part: on a cluster each part is one script
        // call on its shard, as large as a single Redis's whole flush.
        while plan.largest_part_events() < options.batch_size && plan.largest_part_cost() < budget {
            let next = match rx.try_recv() {
                Ok(chunk) => Some(chunk),
                Err(_) if options.linger.is_zero() => None,
                Err(_) => tokio::time::timeout_at(linger_until, rx.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(chunk) = next else { break };
            // Events spread over the parts alike, so the largest part grows
            // with the events at its cost per event of the whole flush.
            if !take_next_chunk(
                plan.largest_part_cost(),
                plan.events(),
                chunk.events.len(),
                budget,
            ) {
                carried = Some(chunk);
                break;
            }
            add(&mut plan, &chunk);
            chunks.push(chunk);
        }
        let context = context.clone();
        last_size = plan.size();
        let span = tracing::debug_span!("flush", events = plan.events(), chunks = chunks.len());
        tracker.spawn(
            async move {
                context.flush(chunks, plan).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
}

/// What every flush shares: where it goes, what it reports to, and how
/// long it may be retried. Cloned into each flush's task.
#[derive(Clone)]
struct FlushContext {
    store: Store,
    health: Arc<Health>,
    metrics: Metrics,
    calibration: Arc<Calibration>,
    timeout: Duration,
}

impl FlushContext {
    /// Applies one flush, each partition's part on its own, and answers
    /// each of its chunks: stored once every part holding one of its events
    /// is stored, failed (never acknowledged) otherwise.
    async fn flush(self, chunks: Vec<Chunk>, plan: FlushPlan) {
        let started = Instant::now();
        let size = plan.events();
        let batch_id = format!("{:032x}", rand::rng().random::<u128>());
        let results: Vec<Result<Applied>> = if plan.is_empty() {
            plan.parts()
                .iter()
                .map(|_| {
                    Ok(Applied {
                        duplicates: HashSet::new(),
                        script_micros: None,
                    })
                })
                .collect()
        } else {
            futures::future::join_all(
                plan.parts()
                    .iter()
                    .map(|(p, part)| self.apply_with_retries(&batch_id, *p, part)),
            )
            .await
        };
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.flush_batch_size.observe(size as f64);
        for ((_, part), result) in plan.parts().iter().zip(&results) {
            if let Ok(Applied {
                script_micros: Some(micros),
                ..
            }) = result
            {
                self.metrics.flush_script.observe(*micros as f64 / 1e6);
                let factor = self.calibration.observe(part.cost_micros(), *micros as f64);
                self.metrics.flush_cost_factor.set(factor);
            }
        }
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            self.metrics.flush_failures.inc();
            let err = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .expect("one failed");
            tracing::warn!(error = %err, events = size, parts = results.len(), failed,
                "flush failed; the events of its failed parts are not acknowledged");
        }
        let mut slots = plan.slots();
        let mut dropped = 0;
        for chunk in chunks {
            let mut outcome = ChunkOutcome::default();
            let mut error = None;
            for (part, slot, members) in slots.by_ref().take(chunk.events.len()) {
                let failed = members
                    .iter()
                    .find_map(|&m| results[m as usize].as_ref().err());
                let duplicates = match (&results[part], failed) {
                    (Ok(applied), None) => &applied.duplicates,
                    (Err(e), _) | (_, Some(e)) => {
                        error.get_or_insert_with(|| e.for_waiter());
                        continue;
                    }
                };
                match slot {
                    Slot::Claimed(entry) if duplicates.contains(&entry) => outcome.duplicates += 1,
                    Slot::Dropped => {
                        dropped += 1;
                        outcome.accepted += 1;
                    }
                    _ => outcome.accepted += 1,
                }
            }
            if let Some(err) = error {
                let _ = chunk.reply.send(Err(err));
                continue;
            }
            self.metrics
                .stored_latency
                .observe(chunk.queued_at.elapsed().as_secs_f64());
            self.metrics.accepted.inc_by(outcome.accepted);
            self.metrics.duplicates.inc_by(outcome.duplicates);
            // The handler may have gone (client cancelled): the events
            // are stored all the same, nothing to undo.
            let _ = chunk.reply.send(Ok(outcome));
        }
        self.metrics.dropped.inc_by(dropped);
    }

    /// Applies the part of partition `p`, retrying connection failures with
    /// the same flush id (so a part that did run before its reply was lost
    /// is not run twice) until `timeout` has passed.
    async fn apply_with_retries(&self, batch_id: &str, p: usize, plan: &Plan) -> Result<Applied> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt =
                tokio::time::timeout(self.timeout, self.store.apply(batch_id, p, plan)).await;
            let err = match attempt {
                Ok(Ok(applied)) => {
                    if !self.store.is_cluster() {
                        self.health.set_redis_up(true);
                    }
                    return Ok(applied);
                }
                Ok(Err(e)) if !e.is_transient() => {
                    self.metrics
                        .redis_errors
                        .with_label_values(&["command"])
                        .inc();
                    return Err(e);
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    self.store.timed_out();
                    Error::Unavailable(format!("flush took longer than {:?}", self.timeout))
                }
            };
            self.metrics
                .redis_errors
                .with_label_values(&["connection"])
                .inc();
            // One Redis down stops the pod taking calls; one shard of a
            // cluster down fails only the parts it holds, and the probe
            // (cluster_state) says whether the cluster serves.
            if !self.store.is_cluster() {
                self.health.set_redis_up(false);
            }
            if started.elapsed() + backoff >= self.timeout {
                return Err(err);
            }
            self.metrics.flush_retries.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}
