//! Wiring: the kube-runtime `Controller` (watching pipelines and the children
//! they own), the autoscaler (reading the controller's cache), the HTTP
//! server, and the shutdown that stops all three.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::crd::TelemetryPipeline;
use crate::http;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::scaler::{self, Scaler};
use crate::{Error, Result};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until `shutdown` is cancelled: serves HTTP on `listener`
/// and reconciles every TelemetryPipeline (in `settings.namespace`, or all).
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
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(
        axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .into_future(),
    );

    let ns = settings.namespace.clone();
    let pipelines: Api<TelemetryPipeline> = api(&client, ns.as_deref());
    // Fail early and clearly when the CRD is not installed.
    if let Err(e) = pipelines.list(&ListParams::default().limit(1)).await {
        shutdown.cancel();
        let _ = server.await;
        return Err(Error::kube(
            "list TelemetryPipelines (is the CRD installed? kubectl apply -f crds/)",
            e,
        ));
    }

    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        metrics.clone(),
    ));
    let stop = shutdown.clone();
    let builder = Controller::new(pipelines, watcher::Config::default().any_semantic())
        .owns(api::<Deployment>(&client, ns.as_deref()), children.clone())
        .owns(api::<StatefulSet>(&client, ns.as_deref()), children.clone())
        .owns(api::<Service>(&client, ns.as_deref()), children.clone())
        .owns(api::<ConfigMap>(&client, ns.as_deref()), children.clone())
        .owns(api::<Secret>(&client, ns.as_deref()), children);
    // The autoscaler reads the pipelines from the controller's cache.
    let scaler = Arc::new(Scaler::new(
        client.clone(),
        metrics,
        settings.scrape_parallelism,
    )?);
    let autoscaler = tokio::spawn(scaler::run(scaler, builder.store(), shutdown.clone()));
    let controller = builder
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(async move { stop.cancelled_owned().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((pipeline, _)) => tracing::debug!(%pipeline, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(error) => warn!(%error, "controller"),
            }
        });

    state.ready.store(true, Ordering::Relaxed);
    info!(namespace = ns.as_deref().unwrap_or("<all>"), image = %settings.ingest_image, "operator running");
    controller.await;
    info!("controller stopped; shutting down");
    shutdown.cancel();
    if let Err(e) = autoscaler.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    state.ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    match server.await {
        Ok(result) => result.map_err(Error::Http),
        Err(join) => Err(Error::Http(std::io::Error::other(join))),
    }
}
