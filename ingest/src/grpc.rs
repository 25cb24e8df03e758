//! gRPC: `telemetry.v1.TelemetryIngest`, `telemetry.v1.TelemetryQuery`,
//! grpc.health.v1 and server reflection.
//!
//! A call that ends early (queue full past the backpressure timeout, Redis
//! gone, shutdown) fails with RESOURCE_EXHAUSTED or UNAVAILABLE and carries
//! what it did settle in trailing metadata: `telemetry-settled` (packets from
//! the start of the call whose fate is final; resend from there),
//! `telemetry-accepted`, `telemetry-duplicates`, `telemetry-rejected`.

use std::pin::Pin;
use std::sync::Arc;

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
use crate::intake::{Intake, Partial, Submission, Tally};
use crate::query::Query;

const TRANSPORT: &str = "grpc";

/// The TelemetryIngest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    intake: Arc<Intake>,
    max_batch: usize,
    shutdown: CancellationToken,
}

impl IngestService {
    pub fn new(intake: Arc<Intake>, max_batch: usize, shutdown: CancellationToken) -> Self {
        IngestService {
            intake,
            max_batch,
            shutdown,
        }
    }

    fn check_batch(&self, batch: &PacketBatch) -> Result<(), Status> {
        if batch.packets.is_empty() || batch.packets.len() > self.max_batch {
            return Err(Error::InvalidArgument(format!(
                "packets: a batch holds 1 to {} packets (got {})",
                self.max_batch,
                batch.packets.len()
            ))
            .into());
        }
        Ok(())
    }
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

async fn finish(sub: Submission<'_>) -> Result<Ack, Status> {
    sub.finish().await.map(ack).map_err(|p| partial_status(*p))
}

#[tonic::async_trait]
impl TelemetryIngest for IngestService {
    #[tracing::instrument(skip_all, name = "grpc.stream_packets")]
    async fn stream_packets(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Ack>, Status> {
        let mut stream = request.into_inner();
        let mut sub = self.intake.begin(TRANSPORT, true)?;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    sub.interrupt(Error::ShuttingDown);
                    break;
                }
                next = stream.message() => next,
            };
            match next {
                Ok(Some(packet)) => {
                    if sub.offer(packet.into()).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    // The client is gone or sent garbage: settle what was
                    // enqueued (it will be stored) and report the error.
                    tracing::debug!(%status, "stream ended by the client side");
                    sub.interrupt(Error::InvalidArgument(format!(
                        "stream failed: {}",
                        status.message()
                    )));
                    break;
                }
            }
        }
        finish(sub).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, name = "grpc.send_batch")]
    async fn send_batch(&self, request: Request<PacketBatch>) -> Result<Response<Ack>, Status> {
        let batch = request.into_inner();
        self.check_batch(&batch)?;
        let mut sub = self.intake.begin(TRANSPORT, true)?;
        for packet in batch.packets {
            if sub.offer(packet.into()).await.is_err() {
                break;
            }
        }
        finish(sub).await.map(Response::new)
    }

    type StreamBatchesStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

    #[tracing::instrument(skip_all, name = "grpc.stream_batches")]
    async fn stream_batches(
        &self,
        request: Request<Streaming<PacketBatch>>,
    ) -> Result<Response<Self::StreamBatchesStream>, Status> {
        self.intake.health.admit()?;
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
                let next = tokio::select! {
                    biased;
                    _ = service.shutdown.cancelled() => break,
                    next = stream.message() => next,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    _ => break,
                };
                let sequence = batch.sequence;
                let svc = service.clone();
                let handle = tokio::spawn(async move {
                    svc.check_batch(&batch)?;
                    let mut sub = svc.intake.begin(TRANSPORT, true)?;
                    for packet in batch.packets {
                        if sub.offer(packet.into()).await.is_err() {
                            break;
                        }
                    }
                    finish(sub).await
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
