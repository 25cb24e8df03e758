//! Wiring: `run(args, listeners, shutdown)` is the whole server, called by
//! `main` and by the tests alike.
//!
//! Shutdown protocol, on `shutdown` (SIGTERM in `main`):
//! 1. readiness goes false at once (`/readyz` 503, grpc.health NOT_SERVING);
//!    new ingest calls are refused with UNAVAILABLE / 503 (retryable);
//! 2. running calls stop reading, wait for their enqueued events to be stored
//!    and answer with what they settled; the servers stop;
//! 3. with the last handler gone the queue closes, the flusher stores what is
//!    left and answers it, and `run` returns.
//!
//! All of it is bounded by `--shutdown-timeout-seconds`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use telemetry_proto::v1::telemetry_ingest_server::TelemetryIngestServer;
use telemetry_proto::v1::telemetry_query_server::TelemetryQueryServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use crate::config::IngestArgs;
use crate::flush::{self, FlushOptions};
use crate::grpc::{IngestService, QueryService};
use crate::health::{self, Health};
use crate::http::{self, AppState};
use crate::intake::Intake;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::query::{Query, RateTracker};
use crate::queue::Queue;
use crate::store::Store;
use crate::{Error, Result, reload};

/// Largest gRPC message (a full batch of large payloads).
const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The bound sockets; binding first lets tests use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    pub async fn bind(args: &IngestArgs) -> Result<Listeners> {
        let bind = |addr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Io {
                context: format!("cannot listen on {addr}"),
                source,
            })
        };
        Ok(Listeners {
            grpc: bind(args.grpc_listen).await?,
            http: bind(args.http_listen).await?,
        })
    }
}

/// Runs the server until `shutdown` and the drain that follows complete.
pub async fn run(
    args: IngestArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = Metrics::new();
    let (settings, config_text) = reload::load(args.config.as_ref())?;
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let store = Store::open(&args.redis, Keys::new(&args.pipeline))?;
    let health = Health::new(metrics.clone());
    let (queue, chunks) = Queue::new(args.queue.queue_capacity.max(1));
    metrics.queue_capacity.set(queue.capacity() as i64);
    let gauge = queue.gauge();

    // Background tasks live until the drain is over.
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(health::probe(
        health.clone(),
        store.clone(),
        background.clone(),
    ));
    if let Some(path) = args.config.clone() {
        tasks.spawn(reload::watch_file(
            path,
            config_text,
            settings_tx.clone(),
            std::time::Duration::from_millis(args.config_poll_ms.max(10)),
            metrics.clone(),
            background.clone(),
        ));
    }
    let rate = Arc::new(RateTracker::default());
    tasks.spawn(sample_rate(
        rate.clone(),
        metrics.clone(),
        background.clone(),
    ));

    let flusher = tokio::spawn(flush::run(
        chunks,
        store.clone(),
        settings_rx.clone(),
        health.clone(),
        metrics.clone(),
        FlushOptions {
            batch_size: args.queue.batch_size.max(1),
            linger: args.queue.flush_interval(),
            budget_micros: args.queue.flush_budget_us as f64,
            concurrency: args.queue.flush_concurrency,
            timeout: args.queue.flush_timeout(),
        },
    ));

    let intake = Arc::new(Intake {
        queue,
        limits: args.limits(),
        health: health.clone(),
        metrics: metrics.clone(),
        backpressure_timeout: args.queue.backpressure_timeout(),
        active: Default::default(),
    });
    let query = Query {
        store,
        settings: settings_rx,
        health: health.clone(),
        metrics: metrics.clone(),
        queue: gauge,
        rate,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(telemetry_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(telemetry_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // The listeners stay open while draining, so new calls get an explicit
    // retryable refusal (and probes an honest 503) rather than a refused
    // connection; they close once running calls are answered and the queue
    // is empty.
    let stop_servers = CancellationToken::new();
    let ingest = IngestService::new(intake.clone(), args.limits.max_grpc_batch, shutdown.clone());
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            TelemetryIngestServer::new(ingest)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .add_service(TelemetryQueryServer::new(QueryService::new(query.clone())))
        .serve_with_incoming_shutdown(
            // Acks are small writes the client waits on: Nagle would hold them.
            TcpListenerStream::new(listeners.grpc).map(|conn| {
                conn.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            }),
            stop_servers.clone().cancelled_owned(),
        );

    let app = http::router(AppState {
        intake: intake.clone(),
        query,
        max_batch: args.limits.max_http_batch,
    });
    let http = axum::serve(listeners.http, app)
        .with_graceful_shutdown(stop_servers.clone().cancelled_owned());

    // Readiness goes false the moment shutdown starts; the servers stop once
    // the drain is done (or its time is up).
    let drain_signal = tokio::spawn(drain(
        shutdown.clone(),
        stop_servers.clone(),
        intake,
        health_reporter,
        args.shutdown_timeout(),
    ));

    tracing::info!(grpc = %args.grpc_listen, http = %args.http_listen, pipeline = %args.pipeline, "telemetry-ingest serving");
    let fail = || {
        shutdown.cancel();
        stop_servers.cancel();
    };
    let servers = async {
        let (g, h) = tokio::join!(
            async {
                let r = grpc.await.map_err(Error::from);
                if r.is_err() {
                    fail();
                }
                r
            },
            async {
                let r = http.await.map_err(|source| Error::Io {
                    context: "http server".into(),
                    source,
                });
                if r.is_err() {
                    fail();
                }
                r
            }
        );
        g.and(h)
    };
    let served = servers.await;
    let started = Instant::now();
    // The servers are done; with them the last queue sender is gone, so the
    // flusher finishes once everything queued is stored and answered.
    let drained = tokio::time::timeout(args.shutdown_timeout(), flusher).await;
    match drained {
        Ok(Ok(())) => tracing::info!(elapsed = ?started.elapsed(), "queue drained"),
        Ok(Err(e)) => tracing::error!(error = %e, "flusher failed"),
        Err(_) => {
            tracing::error!(timeout = ?args.shutdown_timeout(), "queue not drained in time; unacknowledged events were not stored")
        }
    }
    drain_signal.abort();
    background.cancel();
    tasks.close();
    tasks.wait().await;
    served
}

/// Step 1 and 2 of the shutdown protocol: unready at once, then wait for the
/// running calls and the queue before the servers close.
async fn drain(
    shutdown: CancellationToken,
    stop_servers: CancellationToken,
    intake: Arc<Intake>,
    reporter: tonic_health::server::HealthReporter,
    timeout: std::time::Duration,
) {
    shutdown.cancelled().await;
    tracing::info!("shutdown: draining");
    intake.health.start_draining();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let deadline = tokio::time::Instant::now() + timeout;
    while (intake.active.load(Ordering::SeqCst) > 0 || intake.queue.depth() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(intake);
    stop_servers.cancel();
}

/// Samples the accepted counter each second for the stats rate.
async fn sample_rate(rate: Arc<RateTracker>, metrics: Metrics, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            at = tick.tick() => rate.record(at.into_std(), metrics.accepted.get()),
        }
    }
}
