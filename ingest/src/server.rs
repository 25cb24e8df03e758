//! Wiring: `run(args, listeners, shutdown)` is the whole server, called by
//! `main` and by the tests alike.
//!
//! The caller binds the listeners ([`Listeners::bind`], so tests can ask for
//! port 0); `run` then builds the state the servers and tasks share
//! (`Shared`), spawns the background tasks (`Background`), the queue with the
//! intake in front of it and the flusher behind it (`start_pipeline`), and
//! the two servers (`grpc_server`, `http_server`) with the drain watcher;
//! it logs the addresses the listeners are bound to, serves (`serve`), and
//! once the servers stop waits for the flusher (`wait_for_flusher`) and the
//! background tasks.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use telemetry_proto::v1::telemetry_ingest_server::TelemetryIngestServer;
use telemetry_proto::v1::telemetry_query_server::TelemetryQueryServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::aggregate::Settings;
use crate::auth::{Auth, KeyStore, Scope, grpc::Guard};
use crate::config::IngestArgs;
use crate::connection::{self, Gate};
use crate::flush::{self, FlushOptions};
use crate::grpc::{IngestService, QueryService, StreamLimits};
use crate::health::{self, Health};
use crate::http::{self, AppState};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::query::{Query, RateTracker};
use crate::queue::Queue;
use crate::store::Store;
use crate::tls::{self, ServerTls, Tls};
use crate::{Error, Result, reload};

/// The bound sockets; binding first lets tests use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

/// The addresses the listeners are bound to (with port 0 resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
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

    /// Where the listeners are bound: what the startup log names.
    pub fn local_addrs(&self) -> Result<BoundAddrs> {
        let addr = |l: &TcpListener| {
            l.local_addr().map_err(|source| Error::Io {
                context: "cannot read a listener's address".into(),
                source,
            })
        };
        Ok(BoundAddrs {
            grpc: addr(&self.grpc)?,
            http: addr(&self.http)?,
        })
    }
}

/// Runs the server until `shutdown` and the drain that follows complete.
pub async fn run(
    args: IngestArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<()> {
    let addrs = listeners.local_addrs()?;
    let shared = Shared::build(&args)?;
    let tls = ServerTls::load(&args.tls, &shared.metrics).await?;
    let background = Background::spawn(&args, &shared, tls.clone());
    let (intake, query, flusher) = start_pipeline(&args, &shared);

    // The listeners stay open while draining, so new calls get an explicit
    // retryable refusal (and probes an honest 503) rather than a refused
    // connection; they close once running calls are answered and the queue
    // is empty.
    let stop_servers = CancellationToken::new();
    let auth = shared.keys.as_ref().map(|k| k.auth.clone());
    let (grpc, health_reporter) = grpc_server(
        &args,
        listeners.grpc,
        intake.clone(),
        query.clone(),
        Access {
            tls: tls.as_ref().map(|t| t.grpc.clone()),
            auth: auth.clone(),
        },
        &shutdown,
        &stop_servers,
    )
    .await?;
    let http_tls = tls.map(|t| t.http);
    let http = http_server(
        &args,
        listeners.http,
        intake.clone(),
        query,
        Access {
            tls: http_tls,
            auth,
        },
        &stop_servers,
    );

    // Readiness goes false the moment shutdown starts; the servers stop once
    // the drain is done (or its time is up).
    let drain_signal = tokio::spawn(drain(
        shutdown.clone(),
        stop_servers.clone(),
        intake,
        health_reporter,
        args.shutdown_timeout(),
    ));

    tracing::info!(grpc = %addrs.grpc, http = %addrs.http, pipeline = %args.pipeline, tls = args.tls.tls_cert_file.is_some(), "telemetry-ingest serving");
    let served = serve(grpc, http, &shutdown, &stop_servers).await;
    // The servers are done; with them the last queue sender is gone, so the
    // flusher finishes once everything queued is stored and answered.
    wait_for_flusher(flusher, args.shutdown_timeout()).await;
    drain_signal.abort();
    background.stop().await;
    served
}

/// What the servers and the tasks share, made from the flags.
struct Shared {
    metrics: Metrics,
    store: Store,
    health: Arc<Health>,
    settings_tx: watch::Sender<Arc<Settings>>,
    settings: watch::Receiver<Arc<Settings>>,
    /// The config file as loaded, which a reload compares against.
    config_text: Option<String>,
    rate: Arc<RateTracker>,
    /// The API keys, when `--api-keys-file` is given.
    keys: Option<KeyStore>,
}

impl Shared {
    fn build(args: &IngestArgs) -> Result<Shared> {
        let metrics = Metrics::new();
        let (settings, config_text) = reload::load(args.config.as_ref())?;
        let (settings_tx, settings) = watch::channel(Arc::new(settings));
        let store = Store::open(&args.redis, &args.pipeline)?;
        let health = Health::new(metrics.clone());
        let keys = match &args.api_keys_file {
            Some(path) => Some(KeyStore::load(path, metrics.auth.clone())?),
            None => None,
        };
        Ok(Shared {
            keys,
            metrics,
            store,
            health,
            settings_tx,
            settings,
            config_text,
            rate: Arc::new(RateTracker::default()),
        })
    }
}

/// The tasks that live until the drain is over: the Redis probe, the config
/// file watcher, the TLS files watcher and the rate sampler.
struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Background {
    fn spawn(args: &IngestArgs, shared: &Shared, tls: Option<ServerTls>) -> Background {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(health::probe(
            shared.health.clone(),
            shared.store.clone(),
            stop.clone(),
        ));
        if let Some(path) = args.config.clone() {
            tasks.spawn(reload::watch_file(
                path,
                shared.config_text.clone(),
                shared.settings_tx.clone(),
                Duration::from_millis(args.config_poll_ms.max(10)),
                shared.metrics.clone(),
                stop.clone(),
            ));
        }
        let interval = Duration::from_millis(args.config_poll_ms.max(10));
        if let Some(tls) = tls {
            tasks.spawn(tls.watch_files(interval, stop.clone()));
        }
        if let Some(keys) = &shared.keys {
            tasks.spawn(keys.watch(interval, stop.clone()));
        }
        tasks.spawn(sample_rate(
            shared.rate.clone(),
            shared.metrics.clone(),
            stop.clone(),
        ));
        Background { stop, tasks }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The queue and its two ends: the intake that handlers put events through,
/// and the flusher (spawned here) that stores them and answers. The query
/// side reads the queue's depth.
fn start_pipeline(args: &IngestArgs, shared: &Shared) -> (Arc<Intake>, Query, JoinHandle<()>) {
    let (queue, chunks) = Queue::new(args.queue.queue_capacity.max(1));
    shared.metrics.queue_capacity.set(queue.capacity() as i64);
    let gauge = queue.gauge();
    let flusher = tokio::spawn(flush::run(
        chunks,
        shared.store.clone(),
        shared.settings.clone(),
        shared.health.clone(),
        shared.metrics.clone(),
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
        health: shared.health.clone(),
        metrics: shared.metrics.clone(),
        backpressure_timeout: args.queue.backpressure_timeout(),
        active: Default::default(),
    });
    let query = Query {
        store: shared.store.clone(),
        settings: shared.settings.clone(),
        health: shared.health.clone(),
        metrics: shared.metrics.clone(),
        queue: gauge,
        rate: shared.rate.clone(),
    };
    (intake, query, flusher)
}

/// What a listener asks of its clients: a TLS handshake and an API key,
/// each when configured.
struct Access {
    tls: Option<Tls>,
    auth: Option<Auth>,
}

/// The gRPC server (ingest, query, health, reflection) on `listener`, until
/// `stop`; and the health reporter, serving until the drain says otherwise.
async fn grpc_server(
    args: &IngestArgs,
    listener: TcpListener,
    intake: Arc<Intake>,
    query: Query,
    Access { tls, auth }: Access,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) -> Result<(
    impl Future<Output = std::result::Result<(), tonic::transport::Error>> + use<>,
    HealthReporter,
)> {
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
    let limits = &args.connections;
    let ingest = IngestService::new(
        intake,
        StreamLimits {
            max_batch: args.limits.max_grpc_batch,
            max_message_bytes: limits.grpc_max_message_bytes,
            idle_timeout: limits.grpc_stream_idle_timeout(),
        },
        shutdown.clone(),
    );
    let gate = Gate::new(listener, limits.max_connections, limits.idle_timeout());
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(InterceptedService::new(
            TelemetryIngestServer::new(ingest)
                .max_decoding_message_size(limits.grpc_max_message_bytes)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            Guard::new(auth.clone(), Scope::Write),
        ))
        .add_service(InterceptedService::new(
            TelemetryQueryServer::new(QueryService::new(query)),
            Guard::new(auth, Scope::Read),
        ))
        .serve_with_incoming_shutdown(tls::incoming(gate, tls), stop.clone().cancelled_owned());
    Ok((server, health_reporter))
}

/// The HTTP server (the API, probes, metrics) on `listener`, until `stop`.
fn http_server(
    args: &IngestArgs,
    listener: TcpListener,
    intake: Arc<Intake>,
    query: Query,
    Access { tls, auth }: Access,
    stop: &CancellationToken,
) -> impl Future<Output = std::io::Result<()>> + Send + use<> {
    let limits = &args.connections;
    let app = http::router(AppState {
        intake,
        query,
        auth,
        max_batch: args.limits.max_http_batch,
        max_body_bytes: limits.http_max_body_bytes,
    });
    let gate = Gate::new(listener, limits.max_connections, limits.idle_timeout());
    let served = connection::serve_http(
        gate,
        app,
        limits.http_header_read_timeout(),
        tls,
        stop.clone(),
    );
    async move {
        served.await;
        Ok(())
    }
}

/// Runs both servers to their end. One that fails starts the shutdown and
/// stops the other.
async fn serve(
    grpc: impl Future<Output = std::result::Result<(), tonic::transport::Error>>,
    http: impl Future<Output = std::io::Result<()>>,
    shutdown: &CancellationToken,
    stop_servers: &CancellationToken,
) -> Result<()> {
    let fail = || {
        shutdown.cancel();
        stop_servers.cancel();
    };
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
}

/// Step 3 of the shutdown protocol: the flusher stores and answers what is
/// left in the queue, within `timeout`.
async fn wait_for_flusher(flusher: JoinHandle<()>, timeout: Duration) {
    let started = Instant::now();
    match tokio::time::timeout(timeout, flusher).await {
        Ok(Ok(())) => tracing::info!(elapsed = ?started.elapsed(), "queue drained"),
        Ok(Err(e)) => tracing::error!(error = %e, "flusher failed"),
        Err(_) => {
            tracing::error!(
                ?timeout,
                "queue not drained in time; unacknowledged events were not stored"
            )
        }
    }
}

/// Step 1 and 2 of the shutdown protocol: unready at once, then wait for the
/// running calls and the queue before the servers close.
async fn drain(
    shutdown: CancellationToken,
    stop_servers: CancellationToken,
    intake: Arc<Intake>,
    reporter: HealthReporter,
    timeout: Duration,
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(intake);
    stop_servers.cancel();
}

/// Samples the accepted counter each second for the stats rate.
async fn sample_rate(rate: Arc<RateTracker>, metrics: Metrics, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            at = tick.tick() => rate.record(at.into_std(), metrics.accepted.get()),
        }
    }
}
