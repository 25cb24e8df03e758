//! The autoscaler at work: every `syncPeriodSeconds`, for each pipeline with
//! autoscaling enabled and not paused, read the ingest Deployment's `/scale`,
//! list and scrape its pods ([`scrape`]), let [`autoscale::decide`] choose,
//! act (deletion costs first, then `/scale`), publish an Event, and write
//! `status.autoscaling` and the `Scaling*` conditions under
//! [`AUTOSCALER_MANAGER`].
//!
//! One task ([`run`]) polls the controller's cache of pipelines and starts a
//! tick for each pipeline that is due; a pipeline never has two ticks at
//! once. The history lives in memory between ticks and in the status across
//! restarts: on first sight of a pipeline it is read back from the status,
//! so a restart neither forgets a pending scale-down window nor scales early.
//!
//! Submodules: `inputs` (pure) builds what the decision sees from the pods,
//! the scrape cache and the Deployment; `record` (pure) what is written in
//! the status; `status_write` writes it (and clears it when autoscaling is
//! disabled).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::autoscale::{self, Action, Decision, History, Millis, drain, victim};
use crate::crd::TelemetryPipeline;
use crate::crd::autoscaling::{AutoscalingSpec, DrainStatus};
use crate::metrics::Metrics;

mod inputs;
mod record;
mod status_write;

use crate::resources::{AUTOSCALER_MANAGER, Names, ingest};
use crate::scrape::{self, PodClass, SampleCache, Scraper, Target};
use crate::{Error, Result};
use inputs::inputs;
pub use record::{HISTORY_REFRESH_MS, conditions_of, history_from_status, needs_write, status_of};
pub use status_write::AUTOSCALER_CONDITIONS;
use status_write::{has_autoscaler_status, held_status};

/// How often the task looks for pipelines that are due.
const POLL: Duration = Duration::from_millis(200);
/// Pause between the deletion-cost writes and the `/scale` patch, so that
/// the ReplicaSet controller's cache has them when it picks its victims.
const DELETION_COST_SETTLE: Duration = Duration::from_millis(500);

/// What the autoscaler keeps per pipeline between ticks.
#[derive(Default)]
struct Tracked {
    cache: SampleCache,
    history: Option<History>,
    next_due: Option<Instant>,
    ticking: bool,
    /// A longer shutdown timeout measured under load, waiting for a calm
    /// tick to be applied ([`drain::calm`]).
    pending_drain: Option<DrainStatus>,
}

/// The autoscaler: a client, metrics, a scraper and per-pipeline state.
pub struct Scaler {
    client: Client,
    metrics: Metrics,
    recorder: Recorder,
    scraper: Scraper,
    pipelines: Mutex<HashMap<String, Tracked>>,
}

fn now_ms() -> Millis {
    Timestamp::now().as_millisecond()
}

impl Scaler {
    /// An autoscaler that scrapes with `parallelism` requests at once.
    pub fn new(client: Client, metrics: Metrics, parallelism: usize) -> Result<Self> {
        Ok(Self {
            recorder: Recorder::new(client.clone(), AUTOSCALER_MANAGER.into()),
            client,
            metrics,
            scraper: Scraper::new(parallelism)?,
            pipelines: Mutex::default(),
        })
    }

    fn key(tp: &TelemetryPipeline) -> String {
        tp.uid()
            .unwrap_or_else(|| format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any()))
    }

    /// Picks the pipelines that are due and marks them as ticking.
    fn due(
        &self,
        pipelines: &[Arc<TelemetryPipeline>],
        now: Instant,
    ) -> Vec<Arc<TelemetryPipeline>> {
        let mut map = self.pipelines.lock().expect("not poisoned");
        let live: HashSet<String> = pipelines.iter().map(|tp| Self::key(tp)).collect();
        map.retain(|key, _| live.contains(key));
        pipelines
            .iter()
            .filter(|tp| tp.metadata.deletion_timestamp.is_none())
            .filter(|tp| tp.autoscaling_enabled() || has_autoscaler_status(tp))
            .filter(|tp| !tp.spec.paused)
            .filter(|tp| {
                let t = map.entry(Self::key(tp)).or_default();
                let due = !t.ticking && t.next_due.is_none_or(|d| now >= d);
                if due {
                    t.ticking = true;
                }
                due
            })
            .cloned()
            .collect()
    }

    /// One tick of one pipeline, with its errors counted and logged.
    async fn tick(self: Arc<Self>, tp: Arc<TelemetryPipeline>) {
        let started = Instant::now();
        let key = Self::key(&tp);
        let period = tp
            .spec
            .autoscaling
            .as_ref()
            .map_or(15, |a| a.sync_period_seconds.max(1));
        let result = match tp.spec.autoscaling.as_ref().filter(|a| a.enabled) {
            Some(spec) => self.autoscale(&tp, spec).await,
            None => self.clear_status(&tp).await,
        };
        if let Err(error) = &result {
            warn!(%error, reason = error.reason(), "autoscaler tick failed");
            self.metrics
                .autoscaler
                .decisions
                .with_label_values(&["error"])
                .inc();
        }
        let mut map = self.pipelines.lock().expect("not poisoned");
        let t = map.entry(key).or_default();
        t.ticking = false;
        t.next_due = Some(started + Duration::from_secs(u64::try_from(period).unwrap_or(15)));
    }

    async fn autoscale(&self, tp: &TelemetryPipeline, spec: &AutoscalingSpec) -> Result<()> {
        let ns = tp.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
        let name = tp.name_any();
        let deployment_name = Names::of(tp).ingest;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let Some(deployment) = deployments
            .get_opt(&deployment_name)
            .await
            .map_err(|e| Error::kube(format!("get Deployment {ns}/{deployment_name}"), e))?
        else {
            debug!("no ingest Deployment yet");
            return Ok(());
        };
        let scale = deployments.get_scale(&deployment_name).await.map_err(|e| {
            Error::kube(format!("get scale of Deployment {ns}/{deployment_name}"), e)
        })?;
        let current = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default().labels(&ingest::selector_string(tp)))
            .await
            .map_err(|e| Error::kube(format!("list ingest pods in {ns}"), e))?
            .items;

        let port = u16::try_from(tp.spec.ingest.ports.http).unwrap_or(8000);
        let tls = tp.spec.ingest.tls.is_some();
        let targets: Vec<Target> = pods
            .iter()
            .filter_map(|p| match scrape::classify(p) {
                PodClass::Running { ip } => Some(Target::pod(p.name_any(), ip, port, tls)),
                _ => None,
            })
            .collect();
        let timeout =
            Duration::from_secs(u64::try_from(spec.scrape.timeout_seconds.max(1)).unwrap_or(5));
        let scrape_started = Instant::now();
        let readings = self.scraper.scrape_all(targets, timeout).await;
        self.metrics
            .autoscaler
            .scrape_duration
            .observe(scrape_started.elapsed().as_secs_f64());
        let now = now_ms();

        let (inputs, history, slowest) = {
            let mut map = self.pipelines.lock().expect("not poisoned");
            let t = map.entry(Self::key(tp)).or_default();
            t.cache.retain(
                pods.iter()
                    .map(|p| p.metadata.name.as_deref().unwrap_or_default()),
            );
            for (target, reading) in &readings {
                match reading {
                    Ok(reading) => t.cache.record(&target.name, now, reading),
                    Err(e) => self
                        .metrics
                        .autoscaler
                        .scrape_errors
                        .with_label_values(&[e.reason()])
                        .inc(),
                }
            }
            let shards = tp
                .spec
                .redis
                .managed()
                .filter(|_| tp.spec.redis.is_cluster())
                .map_or(1, |m| u32::try_from(m.shards).unwrap_or(1));
            let inputs = inputs(current, &pods, &t.cache, &deployment, shards);
            let history = t.history.clone().unwrap_or_else(|| {
                history_from_status(tp.status.as_ref().and_then(|s| s.autoscaling.as_ref()), now)
            });
            let slowest = drain::slowest_rate(pods.iter().map(|p| {
                let name = p.name_any();
                let queue = t.cache.queue(&name).map_or(0, |q| q.value / 1000);
                (queue, t.cache.drain_rate(&name))
            }));
            (inputs, history, slowest)
        };
        let held = held_status(tp).and_then(|a| a.drain.as_ref());
        let ingest = &tp.spec.ingest;
        let decision = autoscale::decide(spec, &history, &inputs, now);
        let mut history = decision.history.clone();
        let labels = [ns.as_str(), name.as_str()];
        let m = &self.metrics.autoscaler;
        m.min_replicas
            .with_label_values(&labels)
            .set(i64::from(spec.min_replicas));
        m.max_replicas
            .with_label_values(&labels)
            .set(i64::from(spec.max_replicas));
        m.current_replicas
            .with_label_values(&labels)
            .set(i64::from(current));
        m.desired_replicas
            .with_label_values(&labels)
            .set(i64::from(decision.desired));
        if let Some(q) = &decision.queue {
            m.queue_depth
                .with_label_values(&labels)
                .set(i64::try_from(q.total / 1000).unwrap_or(i64::MAX));
        }
        if let Some(busy) = inputs.redis_busy_permille {
            m.redis_busy_permille
                .with_label_values(&labels)
                .set(i64::from(busy));
        }
        m.redis_saturated
            .with_label_values(&labels)
            .set(i64::from(decision.redis_saturated()));
        if let Some(rate) = slowest {
            m.drain_rate
                .with_label_values(&labels)
                .set(i64::try_from(rate).unwrap_or(i64::MAX));
        }

        let scaled = self.act(tp, &ns, &deployment_name, &decision).await;
        let result = match scaled {
            Ok(true) => {
                history.record_scale(current, decision.desired, now);
                if decision.desired > current {
                    "scale_up"
                } else {
                    "scale_down"
                }
            }
            Ok(false)
                if !decision.scaling_active.status
                    && decision.scaling_active.reason == "ScalingDisabled" =>
            {
                "disabled"
            }
            Ok(false) if decision.scaling_limited.reason == autoscale::SCALE_DOWN_DEFERRED => {
                "deferred"
            }
            Ok(false) if !decision.scaling_active.status && !decision.fallback_active.status => {
                "no_metrics"
            }
            Ok(false) => "hold",
            Err(_) => "error",
        };
        m.decisions.with_label_values(&[result]).inc();
        info!(current, desired = decision.desired, result, why = %decision.why, "autoscaler tick");
        {
            let mut map = self.pipelines.lock().expect("not poisoned");
            map.entry(Self::key(tp)).or_default().history = Some(history.clone());
        }
        let drain = self.drain_after(tp, &decision, slowest, held);
        let scaled_now = matches!(scaled, Ok(true));
        let mut status = status_of(
            &decision,
            &inputs,
            &history,
            scaled_now.then_some(now),
            held_status(tp),
        );
        status.drain = drain.clone();
        self.write_status(tp, &decision, status).await?;
        if let Some(raised) =
            drain.filter(|d| held.is_none_or(|h| d.timeout_seconds > h.timeout_seconds))
        {
            let note = format!(
                "Ingest pods store {} events/s while backlogged: a full queue of {} needs more than {} s; shutdown timeout raised to {} s (rolls the ingest pods)",
                raised.events_per_second,
                raised.queue_capacity,
                held.map_or(ingest.shutdown_timeout_seconds, |h| h.timeout_seconds),
                raised.timeout_seconds
            );
            crate::event::publish(
                &self.recorder,
                tp,
                EventType::Normal,
                "DrainTimeoutRaised",
                "Autoscale",
                note,
            )
            .await;
        }
        scaled.map(|_| ())
    }

    /// The derived shutdown timeout to write this tick: a raise measured now
    /// or earlier is applied only on a calm tick, and kept pending until one.
    fn drain_after(
        &self,
        tp: &TelemetryPipeline,
        decision: &Decision,
        slowest: Option<u64>,
        held: Option<&DrainStatus>,
    ) -> Option<DrainStatus> {
        let ingest = &tp.spec.ingest;
        let (timeout, capacity) = (ingest.shutdown_timeout_seconds, ingest.queue_capacity);
        let mut map = self.pipelines.lock().expect("not poisoned");
        let t = map.entry(Self::key(tp)).or_default();
        let known = drain::higher(capacity, held, t.pending_drain.as_ref());
        let wanted = drain::derive(timeout, capacity, slowest, known.as_ref());
        let bounds = tp
            .spec
            .autoscaling
            .as_ref()
            .map_or((1, i32::MAX), |a| (autoscale::floor(a), a.max_replicas));
        let calm = drain::calm(
            matches!(decision.action, Action::Hold),
            (decision.current, decision.desired),
            decision.history.recommendations.last().map(|r| r.replicas),
            bounds,
            decision.queue.as_ref().map_or(0, |q| q.max / 1000),
        );
        let kept = drain::derive(timeout, capacity, None, held);
        if calm {
            t.pending_drain = None;
            wanted
        } else {
            t.pending_drain = wanted.filter(|w| {
                kept.as_ref()
                    .is_none_or(|k| w.timeout_seconds > k.timeout_seconds)
            });
            kept
        }
    }

    /// Carries out a decision; returns whether the replica count changed.
    async fn act(
        &self,
        tp: &TelemetryPipeline,
        ns: &str,
        deployment: &str,
        decision: &Decision,
    ) -> Result<bool> {
        let (from, to) = (decision.current, decision.desired);
        match &decision.action {
            Action::Hold => return Ok(false),
            Action::ScaleUp => {}
            Action::ScaleDown { cost_writes, .. } => {
                self.write_deletion_costs(ns, cost_writes).await?;
            }
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": { "name": deployment, "namespace": ns },
            "spec": { "replicas": to },
        });
        deployments
            .patch_scale(
                deployment,
                &PatchParams::apply(AUTOSCALER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("scale Deployment {ns}/{deployment} to {to}"), e))?;
        let (reason, verb) = if to > from {
            ("ScaledUp", "Scaled up")
        } else {
            ("ScaledDown", "Scaled down")
        };
        let mut note = format!("{verb} from {from} to {to}: {}", decision.why);
        if let Action::ScaleDown { victims, .. } = &decision.action {
            note.push_str(&format!("; removing {}", victims.join(", ")));
        }
        crate::event::publish(&self.recorder, tp, EventType::Normal, reason, "Scale", note).await;
        Ok(true)
    }

    /// Writes the deletion costs, then reads them back until every write is
    /// visible, then gives the ReplicaSet controller's cache a moment.
    async fn write_deletion_costs(&self, ns: &str, writes: &[victim::CostWrite]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let params = PatchParams {
            field_manager: Some(AUTOSCALER_MANAGER.into()),
            ..PatchParams::default()
        };
        for w in writes {
            let value = w.cost.map(|c| c.to_string());
            let patch = serde_json::json!({ "metadata": { "annotations": { victim::DELETION_COST: value } } });
            match pods.patch(&w.pod, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {}
                // Gone meanwhile: nothing to rank.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(Error::kube(format!("annotate pod {ns}/{}", w.pod), e)),
            }
        }
        for w in writes {
            let Some(pod) = pods
                .get_opt(&w.pod)
                .await
                .map_err(|e| Error::kube(format!("get pod {ns}/{}", w.pod), e))?
            else {
                continue;
            };
            let seen = pod
                .annotations()
                .get(victim::DELETION_COST)
                .and_then(|v| v.parse::<i32>().ok());
            if seen != w.cost {
                return Err(Error::DeletionCostNotVisible { pod: w.pod.clone() });
            }
        }
        tokio::time::sleep(DELETION_COST_SETTLE).await;
        Ok(())
    }
}

/// Runs the autoscaler until `shutdown`: polls the controllers' `stores`
/// (one per watched namespace, or one for all) for pipelines that are due
/// and ticks them, each in its own task.
pub async fn run(
    scaler: Arc<Scaler>,
    stores: Vec<Store<TelemetryPipeline>>,
    shutdown: CancellationToken,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = ticks.join_next(), if !ticks.is_empty() => {
                if let Err(e) = done {
                    // A panicking tick is a bug: bring the process down loudly.
                    std::panic::resume_unwind(e.into_panic());
                }
                continue;
            }
            _ = poll.tick() => {}
        }
        let pipelines: Vec<_> = stores.iter().flat_map(|store| store.state()).collect();
        // The per-pipeline series follow the same cache: a deleted
        // pipeline's series go with it.
        scaler.metrics.sync_pipelines(&pipelines);
        for tp in scaler.due(&pipelines, Instant::now()) {
            let span = info_span!("autoscale", pipeline = %format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any()));
            ticks.spawn(scaler.clone().tick(tp).instrument(span));
        }
    }
    // Let running ticks finish their writes.
    while let Some(done) = ticks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
