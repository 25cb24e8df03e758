//! Wiring: the HTTP server, then the leader's work ([`lead`]: the kube-runtime
//! `Controller`, watching pipelines and the children they own, and the
//! autoscaler reading the controller's cache) — right away, or only while
//! holding the Lease ([`crate::lease`]) — and the shutdown that stops all.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::crd::TelemetryPipeline;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::scaler::{self, Scaler};
use crate::{Error, Result};
use crate::{http, lease};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Where pipelines are watched: each listed namespace, or all (`None`).
fn scopes(settings: &Settings) -> Vec<Option<&str>> {
    match settings.namespaces.is_empty() {
        true => vec![None],
        false => settings
            .namespaces
            .iter()
            .map(|ns| Some(ns.as_str()))
            .collect(),
    }
}

/// The controller of the pipelines in `ns` (or all), watching the children
/// they own there.
fn controller_for(client: &Client, ns: Option<&str>) -> Controller<TelemetryPipeline> {
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    Controller::new(
        api::<TelemetryPipeline>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<Deployment>(client, ns), children.clone())
    .owns(api::<StatefulSet>(client, ns), children.clone())
    .owns(api::<Service>(client, ns), children.clone())
    .owns(api::<ConfigMap>(client, ns), children.clone())
    .owns(api::<Secret>(client, ns), children.clone())
    .owns(api::<PodDisruptionBudget>(client, ns), children.clone())
    .owns(api::<NetworkPolicy>(client, ns), children)
}

/// Runs the operator until `shutdown` is cancelled: serves HTTP on `listener`
/// and reconciles every TelemetryPipeline (in `settings.namespaces`, or all).
/// With `settings.leader_election`, it reconciles only while it holds the
/// Lease, and returns [`Error::LeadershipLost`] if it loses it.
/// Both `main` and the end-to-end tests call this.
pub async fn run(
    client: Client,
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = Metrics::new()?;
    let state = http::State {
        metrics: metrics.clone(),
        ready: Arc::default(),
    };
    // Followers serve too: /healthz, /readyz and /metrics answer on every
    // replica.
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(
        axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .into_future(),
    );

    // Fail early and clearly when the CRD is not installed or a watched
    // namespace is not readable.
    for ns in scopes(&settings) {
        let pipelines: Api<TelemetryPipeline> = api(&client, ns);
        if let Err(e) = pipelines.list(&ListParams::default().limit(1)).await {
            shutdown.cancel();
            let _ = server.await;
            let what = match ns {
                Some(ns) => format!(
                    "list TelemetryPipelines in namespace {ns} (is the CRD installed? kubectl apply -f crds/; may the operator read that namespace?)"
                ),
                None => "list TelemetryPipelines in all namespaces (is the CRD installed? kubectl apply -f crds/)".to_string(),
            };
            return Err(Error::kube(what, e));
        }
    }

    // Ready: the leader reconciles, a follower is ready to take over.
    state.ready.store(true, Ordering::Relaxed);
    let watching = match settings.namespaces.is_empty() {
        true => "<all>".to_string(),
        false => settings.namespaces.join(","),
    };
    info!(namespaces = %watching, image = %settings.ingest_image, "operator running");
    let work = lead(
        client.clone(),
        settings.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let result = match &settings.leader_election {
        Some(election) => {
            lease::lead_while_holding(client, election, &metrics, &shutdown, work).await
        }
        None => {
            metrics.leader.set(1);
            let result = work.await;
            metrics.leader.set(0);
            result
        }
    };
    info!("shutting down");
    state.ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    let served = match server.await {
        Ok(served) => served.map_err(Error::Http),
        Err(join) => Err(Error::Http(std::io::Error::other(join))),
    };
    result.and(served)
}

/// The leader's work, until `shutdown`: the controller that reconciles every
/// TelemetryPipeline and the autoscaler that scales their ingest pods. With
/// leader election it runs only while this replica holds the Lease and is
/// dropped the moment it does not (both run inside this future, nothing is
/// spawned that could outlive it).
async fn lead(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        metrics.clone(),
    ));
    let scaler = Arc::new(Scaler::new(
        client.clone(),
        metrics.clone(),
        settings.scrape_parallelism,
    )?);
    // One controller per watched namespace (or one for all): a watch spans
    // one namespace or all of them, and namespaced RBAC allows only the
    // former. The autoscaler reads every controller's cache.
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for ns in scopes(&settings) {
        let builder = controller_for(&client, ns);
        stores.push(builder.store());
        let shutdown = shutdown.clone();
        controllers.push(
            builder
                .with_config(controller::Config::default().concurrency(settings.concurrency))
                .graceful_shutdown_on(async move { shutdown.cancelled_owned().await })
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| async move {
                    match result {
                        Ok((pipeline, _)) => tracing::debug!(%pipeline, "reconciled"),
                        Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                        Err(error) => warn!(%error, "controller"),
                    }
                }),
        );
    }
    let autoscaler = scaler::run(scaler, stores, shutdown.clone());
    let controllers = futures::future::join_all(controllers);
    info!("reconciling and autoscaling");
    tokio::join!(controllers, autoscaler);
    // Only the leader reports per-pipeline series.
    metrics.forget_pipelines();
    info!("controller and autoscaler stopped");
    Ok(())
}
