//! What every ingest call does, whatever its transport: admit the call,
//! validate each event (the one way into [`crate::validate`]), enqueue valid
//! ones in chunks, and tally the answers.
//!
//! A [`Submission`] follows one call. Its [`Tally`] only ever counts events
//! whose fate is settled — stored, recognised as duplicates, or rejected — so
//! whatever a call answers, even when it ends early (queue full, Redis gone,
//! shutdown), never acknowledges an event that is not in Redis.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::{Event, RawEvent};
use crate::health::Health;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::queue::{Queue, Reply, Wait};
use crate::validate::{Rejection, validate, validate_json};
use crate::{Error, Result};

/// Events per chunk a handler enqueues at once.
pub const CHUNK_EVENTS: usize = 256;
/// Rejections reported one by one in an answer; the rest are only counted.
pub const MAX_LISTED_REJECTIONS: usize = 100;

/// Shared by all handlers.
#[derive(Debug)]
pub struct Intake {
    pub queue: Queue,
    pub limits: Limits,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub backpressure_timeout: Duration,
    /// Ingest calls in progress (the drain waits for them).
    pub active: AtomicUsize,
}

/// What one call's answer says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// (index in the call, rejection), the first [`MAX_LISTED_REJECTIONS`].
    pub rejections: Vec<(u64, Rejection)>,
    /// Events of the call, from its start, whose fate is settled; a client
    /// whose call failed resends from here.
    pub settled: u64,
}

impl Tally {
    /// How far a call that ended early got, told beside its error the same
    /// way on both transports (gRPC trailers, HTTP response headers):
    /// `telemetry-settled` (events from the start of the call whose fate is
    /// final; resend from there), then how many were accepted, duplicates
    /// and rejected.
    pub fn progress(&self) -> [(&'static str, u64); 4] {
        [
            ("telemetry-settled", self.settled),
            ("telemetry-accepted", self.accepted),
            ("telemetry-duplicates", self.duplicates),
            ("telemetry-rejected", self.rejected),
        ]
    }
}

/// A call that ended early: what was settled, and why it stopped.
#[derive(Debug)]
pub struct Partial {
    pub tally: Tally,
    pub error: Error,
}

/// One call in progress.
#[derive(Debug)]
pub struct Submission<'a> {
    intake: &'a Intake,
    transport: &'static str,
    /// `received_total{transport}`, looked up once per call, not per event,
    /// and added to once per chunk (`unreported` events at a time).
    received: prometheus::IntCounter,
    unreported: u64,
    wait: Wait,
    chunk: Vec<Event>,
    /// Index (in the call) just past the last event of the open chunk.
    chunk_end: u64,
    pending: VecDeque<(Reply, u64)>,
    tally: Tally,
    next_index: u64,
    /// Rejections after the last enqueued chunk settle with it.
    failed: Option<Error>,
    /// Why the client's side of the call ended early, when what it sent is
    /// still kept ([`Self::end_with`]).
    ended: Option<Error>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Intake {
    /// Starts a call: refused at once while draining or while Redis is down.
    pub fn begin(&self, transport: &'static str, wait: bool) -> Result<Submission<'_>> {
        self.health.admit()?;
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok(Submission {
            intake: self,
            transport,
            received: self.metrics.received.with_label_values(&[transport]),
            unreported: 0,
            wait: if wait {
                Wait::Upto(self.backpressure_timeout)
            } else {
                Wait::No
            },
            chunk: Vec::with_capacity(CHUNK_EVENTS),
            chunk_end: 0,
            pending: VecDeque::new(),
            tally: Tally::default(),
            next_index: 0,
            failed: None,
            ended: None,
        })
    }
}

impl Submission<'_> {
    /// Takes the next event of the call; a full chunk is enqueued, which may
    /// wait for queue space. An error ends the call (see [`Self::finish`]).
    pub async fn offer(&mut self, raw: RawEvent) -> Result<(), ()> {
        if self.failed.is_some() {
            return Err(());
        }
        let checked = validate(raw, &self.intake.limits, now_ms());
        self.take(checked).await
    }

    /// Like [`Self::offer`] for an event in its JSON form (HTTP): one that
    /// cannot be read as an event is rejected and counted like any other.
    pub async fn offer_json(&mut self, json: &[u8]) -> Result<(), ()> {
        if self.failed.is_some() {
            return Err(());
        }
        let checked = validate_json(json, &self.intake.limits, now_ms());
        self.take(checked).await
    }

    async fn take(&mut self, checked: Result<Event, Rejection>) -> Result<(), ()> {
        let index = self.next_index;
        self.next_index += 1;
        self.unreported += 1;
        match checked {
            Ok(event) => {
                self.chunk.push(event);
                self.chunk_end = self.next_index;
                if self.chunk.len() >= CHUNK_EVENTS {
                    self.enqueue().await?;
                }
            }
            Err(rejection) => {
                self.intake
                    .metrics
                    .rejected
                    .with_label_values(&[rejection.reason])
                    .inc();
                self.tally.rejected += 1;
                *self
                    .tally
                    .rejected_by_reason
                    .entry(rejection.reason)
                    .or_default() += 1;
                if self.tally.rejections.len() < MAX_LISTED_REJECTIONS {
                    self.tally.rejections.push((index, rejection));
                }
                if self.chunk.is_empty() && self.pending.is_empty() {
                    self.tally.settled = self.next_index;
                }
            }
        }
        Ok(())
    }

    fn report_received(&mut self) {
        if self.unreported > 0 {
            self.received.inc_by(self.unreported);
            self.unreported = 0;
        }
    }

    async fn enqueue(&mut self) -> Result<(), ()> {
        self.report_received();
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.collect_ready();
        if let Err(e) = self.intake.health.admit() {
            self.failed = Some(e);
            return Err(());
        }
        let events = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_EVENTS));
        match self.intake.queue.push(events, self.wait).await {
            Ok(reply) => {
                self.pending.push_back((reply, self.chunk_end));
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::QueueFull { .. }) {
                    self.intake
                        .metrics
                        .backpressure
                        .with_label_values(&[self.transport])
                        .inc();
                }
                self.failed = Some(e);
                Err(())
            }
        }
    }

    /// Settles the chunks at the front that are already answered, so a long
    /// stream holds little and a Redis failure stops it early.
    fn collect_ready(&mut self) {
        while let Some((reply, _)) = self.pending.front_mut() {
            match reply.try_recv() {
                Ok(result) => {
                    let (_, end) = self.pending.pop_front().expect("front exists");
                    self.settle(result, end);
                }
                Err(_) => break,
            }
        }
    }

    fn settle(&mut self, result: Result<crate::queue::ChunkOutcome>, end: u64) {
        match result {
            Ok(outcome) if self.failed.is_none() => {
                self.tally.accepted += outcome.accepted;
                self.tally.duplicates += outcome.duplicates;
                self.tally.settled = end;
            }
            Ok(outcome) => {
                // Stored, but an earlier chunk failed: the client resends from
                // `settled`, so these count as not acknowledged (dedup by
                // event id keeps the resend from counting twice).
                let _ = outcome;
            }
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(e);
                }
            }
        }
    }

    /// Ends the call: enqueues what is left, waits for every chunk, and
    /// returns the tally, or the partial tally with the reason it stopped.
    pub async fn finish(mut self) -> Result<Tally, Box<Partial>> {
        if self.failed.is_none() {
            let _ = self.enqueue().await;
        }
        while let Some((reply, end)) = self.pending.pop_front() {
            let result = reply.await.unwrap_or(Err(Error::ShuttingDown));
            self.settle(result, end);
        }
        let mut tally = std::mem::take(&mut self.tally);
        match (self.failed.take(), self.ended.take()) {
            (None, None) => {
                tally.settled = self.next_index;
                Ok(tally)
            }
            (None, Some(error)) => {
                tally.settled = self.next_index;
                Err(Box::new(Partial { tally, error }))
            }
            (Some(error), _) => Err(Box::new(Partial { tally, error })),
        }
    }

    /// Stops taking events but keeps the ones taken (an idle or oversized
    /// stream: what came before is good): `finish` stores and settles them
    /// as usual, then fails the call with `error`, its trailers saying how
    /// far the call got.
    pub fn end_with(&mut self, error: Error) {
        if self.ended.is_none() {
            self.ended = Some(error);
        }
    }

    /// Stops taking events (shutdown, client gone) and ends like `finish`,
    /// failing with `error` if anything was left unread.
    pub fn interrupt(&mut self, error: Error) {
        if self.failed.is_none() {
            self.failed = Some(error);
        }
    }

    /// Events offered so far.
    pub fn offered(&self) -> u64 {
        self.next_index
    }
}

impl Drop for Submission<'_> {
    fn drop(&mut self) {
        self.report_received();
        self.intake.active.fetch_sub(1, Ordering::SeqCst);
    }
}
