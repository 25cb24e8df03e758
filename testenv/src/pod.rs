//! One pod bound to the stand-in's node: its address, directory, volumes and
//! ServiceAccount credentials, one supervisor per container, the pod status
//! built from them, and the end of the pod (graceful stop on deletion, then
//! a force delete so the API object goes away as a kubelet's would).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::container::{self, PodSetup};
use crate::context::Context;
use crate::layout;
use crate::status::{self, State, Transitions};
use crate::volume;

/// How long a pod gets when the stand-in itself shuts down.
const SHUTDOWN_GRACE_CAP: Duration = Duration::from_secs(30);

/// Why the pod worker stops its containers.
enum End {
    /// The pod is being deleted: stop within its grace period, then force
    /// delete it.
    Deleted(Duration),
    /// The pod object is gone already (someone force-deleted it).
    Gone,
    /// The stand-in shuts down: stop, leave the API object alone.
    Shutdown,
}

/// Runs the pod until it is deleted, gone, or the stand-in shuts down.
/// `pod_rx` carries the latest object; its sender is dropped when the pod
/// disappears from the API.
#[tracing::instrument(skip_all, fields(pod = %pod_key(&pod_rx.borrow())))]
pub async fn run(
    ctx: Arc<Context>,
    mut pod_rx: watch::Receiver<Arc<Pod>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pod = pod_rx.borrow().clone();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_dir = layout::pod_dir(&ctx.state_dir, &ns, &name, &uid);
    let layout = volume::Layout {
        pod_dir: pod_dir.clone(),
        claims_dir: layout::claims_dir(&ctx.state_dir),
    };
    let ip = ctx.pod_ip(&pod);
    let Some(ip) = ip else {
        tracing::error!("no pod IP left in 127.0.0.0/16");
        return;
    };
    if let Err(e) = std::fs::create_dir_all(&pod_dir) {
        tracing::error!(error = %e, dir = %pod_dir.display(), "cannot create the pod directory");
        ctx.release_ip(ip);
        return;
    }
    let _ = std::fs::write(pod_dir.join("pod"), format!("{ns}/{name} {uid} {ip}\n"));
    tracing::info!(%ip, dir = %pod_dir.display(), "pod assigned");

    let spec = pod.spec.clone().unwrap_or_default();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(status::now, |t| t.0.to_string());
    let mut transitions = Transitions::default();
    let mut reporter = Reporter {
        api: api.clone(),
        name: name.clone(),
        ip,
        start_time,
        last: None,
    };
    let images = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
    let initial: Vec<status::Container> = spec
        .containers
        .iter()
        .map(|c| status::Container {
            name: c.name.clone(),
            image: images(c),
            state: State::waiting("ContainerCreating", ""),
            last_state: None,
            ready: false,
            restart_count: 0,
            pid: None,
            will_restart: true,
        })
        .collect();

    // A pod that already finished (the stand-in restarted) is not run again.
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );

    // Volumes and credentials first; the containers wait in
    // ContainerCreating meanwhile, as on a real node.
    let kubeconfig = if finished {
        None
    } else {
        let mut ready = None;
        loop {
            let current = pod_rx.borrow().clone();
            if current.metadata.deletion_timestamp.is_some() || *shutdown.borrow() {
                break;
            }
            match setup(&ctx, &current, &layout).await {
                Ok(kc) => {
                    ready = Some(kc);
                    break;
                }
                Err(message) => {
                    let waiting: Vec<_> = initial
                        .iter()
                        .cloned()
                        .map(|mut c| {
                            c.state = State::waiting("ContainerCreating", message.clone());
                            c
                        })
                        .collect();
                    reporter.report(&waiting, &mut transitions).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = pod_rx.changed() => if changed.is_err() { break; },
                _ = shutdown.changed() => {}
            }
        }
        ready
    };

    let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
    let (dirty_tx, mut dirty_rx) = mpsc::unbounded_channel();
    let mut statuses = Vec::new();
    let mut supervisors = JoinSet::new();
    if let Some(kubeconfig) = kubeconfig {
        let setup = PodSetup {
            ip,
            layout: layout.clone(),
            kubeconfig,
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
        };
        for (c, init) in spec.containers.iter().zip(&initial) {
            let (tx, rx) = watch::channel(init.clone());
            statuses.push(rx);
            supervisors.spawn(container::supervise(
                ctx.clone(),
                pod_rx.clone(),
                c.clone(),
                setup.clone(),
                tx,
                dirty_tx.clone(),
                stop_rx.clone(),
            ));
        }
    }
    drop(dirty_tx);
    let current = |statuses: &[watch::Receiver<status::Container>]| -> Vec<status::Container> {
        statuses.iter().map(|rx| rx.borrow().clone()).collect()
    };
    if !finished && !statuses.is_empty() {
        reporter.report(&current(&statuses), &mut transitions).await;
    }

    let has_synced_volumes = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.config_map.is_some() || v.secret.is_some() || v.projected.is_some());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        if let Some(end) = deletion(&pod_rx.borrow(), &spec) {
            break end;
        }
        if *shutdown.borrow() {
            break End::Shutdown;
        }
        tokio::select! {
            Some(()) = dirty_rx.recv() => {
                while dirty_rx.try_recv().is_ok() {}
                reporter.report(&current(&statuses), &mut transitions).await;
            }
            changed = pod_rx.changed() => {
                if changed.is_err() {
                    break End::Gone;
                }
            }
            _ = shutdown.changed() => break End::Shutdown,
            _ = tick.tick() => {
                if has_synced_volumes && !finished {
                    let current_pod = pod_rx.borrow().clone();
                    if let Err(e) = sync_volumes(&ctx, &current_pod, &layout) {
                        tracing::warn!(error = %e, "volume resync failed");
                    }
                }
                // Retry a status patch that failed.
                if reporter.last.is_none() && !statuses.is_empty() {
                    reporter.report(&current(&statuses), &mut transitions).await;
                }
            }
        }
    };

    let grace = match &end {
        End::Deleted(grace) => *grace,
        End::Gone => Duration::from_secs(2),
        End::Shutdown => spec
            .termination_grace_period_seconds
            .map_or(SHUTDOWN_GRACE_CAP, |g| Duration::from_secs(g.max(0) as u64))
            .min(SHUTDOWN_GRACE_CAP),
    };
    tracing::info!(
        grace_secs = grace.as_secs(),
        "stopping the pod's containers"
    );
    let _ = stop_tx.send(Some(Instant::now() + grace));
    loop {
        tokio::select! {
            joined = supervisors.join_next() => if joined.is_none() { break },
            Some(()) = dirty_rx.recv() => {
                if matches!(end, End::Deleted(_)) {
                    reporter.report(&current(&statuses), &mut transitions).await;
                }
            }
        }
    }

    if let End::Deleted(_) = end {
        // The containers are gone: finish the deletion the apiserver is
        // waiting for, for this very pod (not a successor with its name).
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!("pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "force delete failed"),
        }
    }
    if !matches!(end, End::Shutdown) {
        // Keep the logs for whoever looks afterwards; drop the rest.
        let _ = std::fs::remove_file(pod_dir.join("pod"));
        let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
        let _ = std::fs::remove_file(pod_dir.join("kubeconfig"));
    }
    ctx.release_ip(ip);
}

/// `Some(End::Deleted(grace))` once the pod has a deletion timestamp.
fn deletion(pod: &Pod, spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<End> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64;
    Some(End::Deleted(Duration::from_secs(grace)))
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Volumes and ServiceAccount credentials. Returns the kubeconfig path when
/// the pod has a ServiceAccount.
async fn setup(
    ctx: &Context,
    pod: &Pod,
    layout: &volume::Layout,
) -> Result<Option<std::path::PathBuf>, String> {
    sync_volumes(ctx, pod, layout)?;
    let spec = pod.spec.as_ref();
    let sa = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty());
    let automount = spec.and_then(|s| s.automount_service_account_token) != Some(false);
    match sa {
        Some(sa) if automount => {
            let dest = layout.pod_dir.join("kubeconfig");
            crate::token::write_kubeconfig(&ctx.client, &ctx.apiserver, pod, &sa, &dest)
                .await
                .map_err(|e| format!("credentials of service account {sa:?}: {e}"))?;
            Ok(Some(dest))
        }
        _ => Ok(None),
    }
}

fn sync_volumes(ctx: &Context, pod: &Pod, layout: &volume::Layout) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let cm = |name: &str| ctx.config_map(&ns, name);
    let secret = |name: &str| ctx.secret(&ns, name);
    volume::sync(
        layout,
        pod,
        &crate::env::Sources {
            config_map: &cm,
            secret: &secret,
        },
    )
}

/// Patches the pod's status when it changed.
struct Reporter {
    api: Api<Pod>,
    name: String,
    ip: Ipv4Addr,
    start_time: String,
    /// The container statuses last written successfully.
    last: Option<Vec<status::Container>>,
}

impl Reporter {
    async fn report(&mut self, containers: &[status::Container], transitions: &mut Transitions) {
        if self.last.as_deref() == Some(containers) {
            return;
        }
        let status = status::pod_status(
            containers,
            self.ip,
            &self.start_time,
            transitions,
            &status::now(),
        );
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last = Some(containers.to_vec()),
            Err(kube::Error::Api(e)) if e.code == 404 => self.last = Some(containers.to_vec()),
            Err(e) => {
                tracing::warn!(error = %e, "status patch failed; will retry");
                self.last = None;
            }
        }
    }
}
