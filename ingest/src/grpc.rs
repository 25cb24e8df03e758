//! gRPC: `telemetry.v1.TelemetryIngest`, `telemetry.v1.TelemetryQuery`,
//! grpc.health.v1 and server reflection.
//!
//! A call that ends early (queue full past the backpressure timeout, Redis
//! gone, shutdown) fails with RESOURCE_EXHAUSTED or UNAVAILABLE and carries
//! what it did settle in trailing metadata: `telemetry-settled` (packets from
//! the start of the call whose fate is final; resend from there),
//! `telemetry-accepted`, `telemetry-duplicates`, `telemetry-rejected`.
//!
//! A client stream that sends no message for `--grpc-stream-idle-timeout-seconds`
//! is ended the same way, with DEADLINE_EXCEEDED: what it sent before is
//! stored and acknowledged (StreamBatches: each batch taken is answered
//! before the status), nothing is dropped unanswered. A message over
//! `--grpc-max-message-bytes` fails the call with OUT_OF_RANGE.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use telemetry_proto::v1::telemetry_ingest_server::TelemetryIngest;
use telemetry_proto::v1::telemetry_query_server::TelemetryQuery;
use telemetry_proto::v1::{
    Ack, BatchAck, CounterRequest, CounterResponse, DeviceCountsRequest, DeviceCountsResponse,
    LeaderboardRequest, LeaderboardResponse, Packet, PacketBatch, RecentEventsRequest,
    RecentEventsResponse, Rejection as ProtoRejection, StatsRequest, StatsResponse, WindowRequest,
    WindowResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::auth::{self, Caller};
use crate::intake::{Intake, Partial, Submission, Tally};
use crate::query::Query;

const TRANSPORT: &str = "grpc";

/// What one call may send: packets per batch, bytes per message, and how
/// long a stream may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_batch: usize,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
}

/// The TelemetryIngest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    intake: Arc<Intake>,
    limits: StreamLimits,
    shutdown: CancellationToken,
}

/// What a client stream's next read gave.
enum Next<T> {
    Message(T),
    End,
    Idle,
    Shutdown,
    Failed(Error),
}

impl IngestService {
    pub fn new(intake: Arc<Intake>, limits: StreamLimits, shutdown: CancellationToken) -> Self {
        IngestService {
            intake,
            limits,
            shutdown,
        }
    }

    fn check_batch(&self, batch: &PacketBatch) -> Result<(), Status> {
        Ok(check_batch(batch, self.limits.max_batch)?)
    }

    /// The next message of a client stream, unless shutdown comes first or
    /// the client sends nothing for the idle timeout.
    async fn next<T>(&self, stream: &mut Streaming<T>) -> Next<T> {
        let read = tokio::time::timeout(self.limits.idle_timeout, stream.message());
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Next::Shutdown,
            next = read => match next {
                Err(_) => Next::Idle,
                Ok(Ok(Some(message))) => Next::Message(message),
                Ok(Ok(None)) => Next::End,
                Ok(Err(status)) => Next::Failed(self.stream_error(&status)),
            },
        }
    }

    /// A failed read as the error the call ends with: an oversized message
    /// names its limit; anything else (the client gone, garbage) says so.
    fn stream_error(&self, status: &Status) -> Error {
        tracing::debug!(%status, "stream ended by the client side");
        if status.code() == tonic::Code::OutOfRange {
            Error::TooLarge {
                field: "message",
                limit: self.limits.max_message_bytes,
                flag: "--grpc-max-message-bytes",
            }
        } else {
            Error::InvalidArgument(format!("stream failed: {}", status.message()))
        }
    }

    fn idle(&self) -> Error {
        Error::StreamIdle {
            timeout: self.limits.idle_timeout,
        }
    }
}

/// A batch holds 1 to `max` packets (`--max-batch`); its packets are then
/// checked one by one like a stream's.
pub fn check_batch(batch: &PacketBatch, max: usize) -> crate::Result<()> {
    if batch.packets.is_empty() || batch.packets.len() > max {
        return Err(Error::InvalidArgument(format!(
            "packets: a batch holds 1 to {} packets (got {})",
            max,
            batch.packets.len()
        )));
    }
    Ok(())
}

fn ack(t: Tally) -> Ack {
    Ack {
        accepted: t.accepted,
        rejected: t.rejected,
        duplicates: t.duplicates,
        rejected_by_reason: t
            .rejected_by_reason
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        rejections: t
            .rejections
            .into_iter()
            .map(|(index, r)| ProtoRejection {
                index,
                reason: r.reason.to_string(),
                message: r.to_string(),
            })
            .collect(),
    }
}

/// The status of a call that ended early, with what it settled.
fn partial_status(p: Partial) -> Status {
    let mut status: Status = p.error.into();
    let t = &p.tally;
    let md = status.metadata_mut();
    for (key, value) in t.progress() {
        md.insert(key, MetadataValue::from(value));
    }
    status
}

/// The call's answer; what it stored is counted under its key.
async fn finish(sub: Submission<'_>, caller: Option<&Caller>) -> Result<Ack, Status> {
    let finished = sub.finish().await;
    auth::count_stored(caller, &finished);
    finished.map(ack).map_err(|p| partial_status(*p))
}

#[tonic::async_trait]
impl TelemetryIngest for IngestService {
    #[tracing::instrument(skip_all, name = "grpc.stream_packets")]
    async fn stream_packets(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Ack>, Status> {
        let caller = auth::grpc::caller(&request);
        let mut stream = request.into_inner();
        let mut sub = self.intake.begin(TRANSPORT, true)?;
        // Whatever ends the stream early, what was enqueued is settled (it
        // will be stored) and the error says how far the call got. A silent
        // or oversized stream keeps all it sent before; a broken one keeps
        // what was enqueued.
        loop {
            match self.next(&mut stream).await {
                Next::Message(packet) => {
                    if sub.offer(packet.into()).await.is_err() {
                        break;
                    }
                }
                Next::End => break,
                Next::Shutdown => {
                    sub.interrupt(Error::ShuttingDown);
                    break;
                }
                Next::Idle => {
                    sub.end_with(self.idle());
                    break;
                }
                Next::Failed(error @ Error::TooLarge { .. }) => {
                    sub.end_with(error);
                    break;
                }
                Next::Failed(error) => {
                    sub.interrupt(error);
                    break;
                }
            }
        }
        finish(sub, caller.as_ref()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, name = "grpc.send_batch")]
    async fn send_batch(&self, request: Request<PacketBatch>) -> Result<Response<Ack>, Status> {
        let caller = auth::grpc::caller(&request);
        let batch = request.into_inner();
        self.check_batch(&batch)?;
        let mut sub = self.intake.begin(TRANSPORT, true)?;
        for packet in batch.packets {
            if sub.offer(packet.into()).await.is_err() {
                break;
            }
        }
        finish(sub, caller.as_ref()).await.map(Response::new)
    }

    type StreamBatchesStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

    #[tracing::instrument(skip_all, name = "grpc.stream_batches")]
    async fn stream_batches(
        &self,
        request: Request<Streaming<PacketBatch>>,
    ) -> Result<Response<Self::StreamBatchesStream>, Status> {
        self.intake.health.admit()?;
        let caller = auth::grpc::caller(&request);
        let mut stream = request.into_inner();
        let service = self.clone();
        // Acks go out in batch order, each as soon as its batch is stored;
        // the next batch is read while earlier ones are being flushed.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BatchAck, Status>>(16);
        let (order_tx, mut order_rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some((sequence, handle)) = order_rx.recv().await {
                let handle: tokio::task::JoinHandle<Result<Ack, Status>> = handle;
                let item = match handle.await {
                    Ok(Ok(ack)) => Ok(BatchAck {
                        sequence,
                        ack: Some(ack),
                    }),
                    Ok(Err(status)) => Err(status),
                    Err(_) => Err(Status::internal("batch task failed")),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let batch = match service.next(&mut stream).await {
                    Next::Message(batch) => batch,
                    Next::End | Next::Shutdown => break,
                    ended @ (Next::Idle | Next::Failed(_)) => {
                        let error = match ended {
                            Next::Failed(error) => error,
                            _ => service.idle(),
                        };
                        // The call's status, sent after the ack of every
                        // batch taken before it.
                        let status = Status::from(error);
                        let _ = order_tx
                            .send((0, tokio::spawn(async { Err(status) })))
                            .await;
                        break;
                    }
                };
                let sequence = batch.sequence;
                let svc = service.clone();
                let caller = caller.clone();
                let handle = tokio::spawn(async move {
                    svc.check_batch(&batch)?;
                    let mut sub = svc.intake.begin(TRANSPORT, true)?;
                    for packet in batch.packets {
                        if sub.offer(packet.into()).await.is_err() {
                            break;
                        }
                    }
                    finish(sub, caller.as_ref()).await
                });
                if order_tx.send((sequence, handle)).await.is_err() {
                    break;
                }
            }
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(out)))
    }
}

/// The TelemetryQuery service.
#[derive(Debug, Clone)]
pub struct QueryService {
    query: Query,
}

impl QueryService {
    pub fn new(query: Query) -> Self {
        QueryService { query }
    }
}

#[tonic::async_trait]
impl TelemetryQuery for QueryService {
    async fn counters(
        &self,
        r: Request<CounterRequest>,
    ) -> Result<Response<CounterResponse>, Status> {
        Ok(Response::new(
            self.query
                .counters(&r.into_inner().event_types)
                .await?
                .into(),
        ))
    }

    async fn device_counts(
        &self,
        r: Request<DeviceCountsRequest>,
    ) -> Result<Response<DeviceCountsResponse>, Status> {
        let r = r.into_inner();
        let params = crate::query::DeviceParams::from_proto(&r)?;
        Ok(Response::new(crate::query::device_counts_response(
            self.query.devices(&params).await?,
        )))
    }

    async fn leaderboard(
        &self,
        r: Request<LeaderboardRequest>,
    ) -> Result<Response<LeaderboardResponse>, Status> {
        let r = r.into_inner();
        let top = if r.top_n == 0 {
            None
        } else {
            Some(r.top_n as usize)
        };
        let bucket = if r.bucket == 0 { None } else { Some(r.bucket) };
        Ok(Response::new(
            self.query.leaderboard(&r.name, top, bucket).await?.into(),
        ))
    }

    async fn window(&self, r: Request<WindowRequest>) -> Result<Response<WindowResponse>, Status> {
        let r = r.into_inner();
        let minutes = if r.minutes == 0 {
            None
        } else {
            Some(r.minutes)
        };
        Ok(Response::new(
            self.query.window(&r.name, minutes).await?.into(),
        ))
    }

    async fn recent_events(
        &self,
        r: Request<RecentEventsRequest>,
    ) -> Result<Response<RecentEventsResponse>, Status> {
        let r = r.into_inner();
        let limit = if r.limit == 0 {
            None
        } else {
            Some(r.limit as usize)
        };
        let events = self.query.recent(&r.device_id, limit).await?;
        Ok(Response::new(RecentEventsResponse {
            events: events.iter().map(Packet::from).collect(),
        }))
    }

    async fn stats(&self, _r: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(self.query.stats().await?.into()))
    }
}
