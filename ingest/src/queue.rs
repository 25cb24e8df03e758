//! The bounded queue between ingest handlers and the flusher.
//!
//! Capacity is counted in events with a semaphore: a handler takes one permit
//! per event before it enqueues a chunk, and the permits go back when the
//! chunk's flush has succeeded or failed. Permits in use are the queue depth.
//! A handler that finds no permits waits (gRPC: it stops reading, so HTTP/2
//! flow control pushes back on the client) or gives up at once (HTTP: 429).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::event::Event;
use crate::{Error, Result};

/// The outcome of one chunk, sent back to its handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Stored (including events dropped by filters, which are acknowledged).
    pub accepted: u64,
    /// Already stored earlier: not counted again.
    pub duplicates: u64,
}

pub type Reply = oneshot::Receiver<Result<ChunkOutcome>>;

/// Events of one handler, flushed together and answered together.
#[derive(Debug)]
pub struct Chunk {
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<Result<ChunkOutcome>>,
    /// When the chunk entered the queue.
    pub queued_at: std::time::Instant,
    _permit: OwnedSemaphorePermit,
}

/// The handlers' side of the queue.
#[derive(Debug, Clone)]
pub struct Queue {
    permits: Arc<Semaphore>,
    capacity: usize,
    tx: mpsc::UnboundedSender<Chunk>,
}

/// Reads the queue depth without holding a sender (the flusher stops once
/// every sender is gone).
#[derive(Debug, Clone)]
pub struct DepthGauge {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl DepthGauge {
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// How long a handler may wait for space.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Fail at once when the queue is full.
    No,
    /// Wait up to this long.
    Upto(Duration),
}

impl Queue {
    pub fn new(capacity: usize) -> (Queue, mpsc::UnboundedReceiver<Chunk>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Queue {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            tx,
        };
        (queue, rx)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events accepted and not yet stored.
    pub fn depth(&self) -> usize {
        self.gauge().depth()
    }

    /// A read-only view of the depth that does not keep the queue open.
    pub fn gauge(&self) -> DepthGauge {
        DepthGauge {
            permits: self.permits.clone(),
            capacity: self.capacity,
        }
    }

    /// Enqueues a chunk; the reply arrives once it is stored or has failed.
    pub async fn push(&self, events: Vec<Event>, wait: Wait) -> Result<Reply> {
        let n = events.len().clamp(1, self.capacity) as u32;
        let full = || Error::QueueFull {
            capacity: self.capacity,
            retry_after: Duration::from_secs(1),
        };
        let permit = match wait {
            Wait::No => self
                .permits
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| full())?,
            Wait::Upto(limit) => {
                tokio::time::timeout(limit, self.permits.clone().acquire_many_owned(n))
                    .await
                    .map_err(|_| full())?
                    .map_err(|_| Error::ShuttingDown)?
            }
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Chunk {
                events,
                reply,
                queued_at: std::time::Instant::now(),
                _permit: permit,
            })
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                device_id: format!("d{i}"),
                timestamp: 1,
                payload: Bytes::new(),
                event_type: "t".into(),
                event_id: None,
                user_id: None,
                value: 0.0,
                attributes: Default::default(),
            })
            .collect()
    }

    #[tokio::test]
    async fn depth_counts_events_until_the_chunk_is_dropped() {
        let (queue, mut rx) = Queue::new(10);
        let _reply = queue.push(events(3), Wait::No).await.unwrap();
        let _reply2 = queue.push(events(4), Wait::No).await.unwrap();
        assert_eq!(queue.depth(), 7);
        let chunk = rx.recv().await.unwrap();
        drop(chunk);
        assert_eq!(queue.depth(), 4);
    }

    #[tokio::test]
    async fn full_queue_refuses_at_once_without_wait() {
        let (queue, _rx) = Queue::new(5);
        let _r = queue.push(events(4), Wait::No).await.unwrap();
        let err = queue.push(events(2), Wait::No).await.unwrap_err();
        assert!(matches!(err, Error::QueueFull { capacity: 5, .. }));
        assert_eq!(queue.depth(), 4, "a refused push takes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_waits_then_gives_up() {
        let (queue, _rx) = Queue::new(5);
        let _r = queue.push(events(5), Wait::No).await.unwrap();
        let err = queue
            .push(events(1), Wait::Upto(Duration::from_secs(3)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::QueueFull { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_push_proceeds_when_space_frees() {
        let (queue, mut rx) = Queue::new(5);
        let _r = queue.push(events(5), Wait::No).await.unwrap();
        let q = queue.clone();
        let waiter =
            tokio::spawn(
                async move { q.push(events(2), Wait::Upto(Duration::from_secs(3))).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(rx.recv().await.unwrap());
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(queue.depth(), 2);
    }
}
