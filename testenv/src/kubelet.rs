//! The kubelet stand-in: registers a Ready node, binds Pending pods to it
//! (there is no scheduler), and runs one [`pod`](crate::pod) worker per pod
//! bound to it. Informer caches of Pods, Services, ConfigMaps and Secrets
//! feed env resolution, volumes and Service substitution; they are held in
//! the [`Context`] the workers share.
//!
//! ```text
//! watch pods ──► reconcile ──bind──► pods/binding
//!                    │ spawn / update / drop
//!                    ▼
//!               pod worker ── container supervisors ── processes on 127.0.0.N
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::PostParams;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::context::Context;
pub use crate::context::is_ready;
use crate::error::{Error, Result};
use crate::ipam::PodIps;
use crate::token::Apiserver;

/// The node name the stand-in registers.
pub const DEFAULT_NODE_NAME: &str = "telemetry-kubelet";

/// How the stand-in is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub state_dir: PathBuf,
    /// Where `telemetry-ingest` and `telemetry-operator` are.
    pub bin_dir: PathBuf,
    pub node_name: String,
    /// PATH for pod processes (where `redis-server` and `redis-cli` are).
    pub path_env: String,
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            })?;
    Ok(kube::Client::try_from(config)?)
}

/// Feeds a store from a watch, forever (the watcher retries with back-off);
/// pokes `notify` on every change.
async fn feed<K>(api: Api<K>, writer: reflector::store::Writer<K>, notify: Arc<Notify>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(_)) => notify.notify_one(),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch failed; retrying")
            }
        }
    }
}

/// Runs the stand-in until `shutdown` resolves, then stops every pod's
/// processes (gracefully) and returns.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let client = client_from_kubeconfig(&config.kubeconfig).await?;
    let apiserver = Apiserver::from_kubeconfig(&config.kubeconfig)?;
    std::fs::create_dir_all(config.state_dir.join("pods"))
        .map_err(Error::io("creating the state directory", &config.state_dir))?;
    crate::node::register(&client, &config.node_name).await?;
    tracing::info!(node = %config.node_name, "node registered");

    let notify = Arc::new(Notify::new());
    let (pods, pods_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (config_maps, config_maps_w) = reflector::store();
    let (secrets, secrets_w) = reflector::store();
    let mut feeds = JoinSet::new();
    feeds.spawn(feed(
        Api::<Pod>::all(client.clone()),
        pods_w,
        notify.clone(),
    ));
    feeds.spawn(feed(
        Api::<Service>::all(client.clone()),
        services_w,
        notify.clone(),
    ));
    feeds.spawn(feed(
        Api::<ConfigMap>::all(client.clone()),
        config_maps_w,
        notify.clone(),
    ));
    feeds.spawn(feed(
        Api::<Secret>::all(client.clone()),
        secrets_w,
        notify.clone(),
    ));
    for ready in [
        pods.wait_until_ready().await,
        services.wait_until_ready().await,
        config_maps.wait_until_ready().await,
        secrets.wait_until_ready().await,
    ] {
        ready.map_err(|_| Error::Invalid("a watch ended before its first list".into()))?;
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        node: config.node_name.clone(),
        state_dir: config.state_dir.clone(),
        bin_dir: config.bin_dir.clone(),
        apiserver,
        path_env: config.path_env.clone(),
        pods: pods.clone(),
        services,
        config_maps,
        secrets,
        ips: Mutex::new(PodIps::default()),
    });
    // Addresses of pods that run here already (after a restart) stay theirs.
    for pod in pods.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(ctx.node.as_str()) {
            let _ = ctx.pod_ip(&pod);
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut dispatcher = Dispatcher {
        ctx: ctx.clone(),
        workers: HashMap::new(),
        tasks: JoinSet::new(),
        done: HashSet::new(),
        bind_attempts: HashMap::new(),
        shutdown: shutdown_rx,
    };
    let claims_root = crate::layout::claims_dir(&config.state_dir);
    let mut claims_tick = tokio::time::interval(Duration::from_secs(2));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(30));
    let mut resync = tokio::time::interval(Duration::from_secs(1));
    futures::pin_mut!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = notify.notified() => dispatcher.reconcile().await,
            _ = resync.tick() => dispatcher.reconcile().await,
            _ = claims_tick.tick() => {
                if let Err(e) = crate::claim::sync(&client, &claims_root).await {
                    tracing::warn!(error = %e, "claim sync failed");
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = crate::node::heartbeat(&client, &ctx.node).await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
            }
            Some(joined) = dispatcher.tasks.join_next() => {
                if let Err(e) = joined {
                    // A pod worker panicked: loud, but the other pods go on.
                    tracing::error!(error = %e, "pod worker failed");
                }
            }
        }
    }
    tracing::info!(
        pods = dispatcher.workers.len(),
        "shutting down: stopping every pod's processes"
    );
    let _ = shutdown_tx.send(true);
    while dispatcher.tasks.join_next().await.is_some() {}
    feeds.abort_all();
    Ok(())
}

/// Keeps one worker per pod bound here.
struct Dispatcher {
    ctx: Arc<Context>,
    /// Per pod UID, the channel that carries the pod's latest version.
    workers: HashMap<String, watch::Sender<Arc<Pod>>>,
    tasks: JoinSet<()>,
    /// UIDs whose worker ran to its end (do not start them again).
    done: HashSet<String>,
    bind_attempts: HashMap<String, Instant>,
    shutdown: watch::Receiver<bool>,
}

impl Dispatcher {
    async fn reconcile(&mut self) {
        let pods = self.ctx.pods.state();
        let mut seen = HashSet::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            match node {
                None => {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.bind(&pod, &uid).await;
                    }
                }
                Some(n) if n == self.ctx.node => {
                    seen.insert(uid.clone());
                    if let Some(tx) = self.workers.get(&uid) {
                        let version = pod.metadata.resource_version.clone();
                        tx.send_if_modified(|current| {
                            if current.metadata.resource_version != version {
                                *current = pod.clone();
                                true
                            } else {
                                false
                            }
                        });
                    } else if !self.done.contains(&uid) {
                        let (tx, rx) = watch::channel(pod.clone());
                        self.workers.insert(uid.clone(), tx);
                        self.tasks.spawn(crate::pod::run(
                            self.ctx.clone(),
                            rx,
                            self.shutdown.clone(),
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        // Dropping the sender tells a worker its pod is gone from the API.
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.workers.remove(&uid);
            self.done.insert(uid);
        }
        self.bind_attempts
            .retain(|_, at| at.elapsed() < Duration::from_secs(60));
    }

    /// Plays the scheduler: every Pending pod goes to our node.
    async fn bind(&mut self, pod: &Pod, uid: &str) {
        if self
            .bind_attempts
            .get(uid)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.bind_attempts.insert(uid.to_owned(), Instant::now());
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.ctx.node},
        });
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node = %self.ctx.node, "bound"),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
        }
    }
}
