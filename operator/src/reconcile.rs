//! The reconcile loop: make a pipeline's children match its spec, then report.
//!
//! One pass: validate what the schema cannot, ensure the Redis password Secret
//! (generated once), server-side apply every desired child under
//! [`FIELD_MANAGER`], delete children the spec no longer asks for
//! ([`prune`]), observe the StatefulSet, the Deployment, their pods and the
//! Secrets the spec refers to, and write the status ([`status::compute`]) only when it changed. A paused
//! pipeline skips everything but the status.
//!
//! Failures: permanent ones (the apiserver rejected what we sent, an invalid
//! aggregation, a broken Secret) become `Degraded=True` plus a Warning event
//! and wait for a change, without a hot loop; transient ones go to
//! [`error_policy`], which counts them and requeues with exponential backoff.
//! A Secret the spec refers to that does not exist is not a failure of the
//! reconcile: the children are applied anyway (so the pipeline starts once the
//! Secret appears), the status says `Degraded`, and the pipeline is looked at
//! again soon.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, instrument, warn};

mod cluster;
mod prune;

pub use prune::{DesiredNames, desired_names};

use crate::config::Settings;
use crate::crd::redis::{ManagedRedis, PASSWORD_KEY};
use crate::crd::{TelemetryPipeline, TelemetryPipelineStatus};
use crate::metrics::Metrics;
use crate::resources::{
    self, AUTOSCALER_MANAGER, Component, FIELD_MANAGER, Names, ingest, redis, rotation,
};
use crate::status::{self, Observed, Problem, SecretRef, SecretState};
use crate::{Error, Result};

/// How soon a pipeline that is not Ready yet, or Degraded, is looked at again,
/// in case no watch event arrives: an external Redis that comes up, a Secret
/// created, a pod that starts crash-looping or outlives the readiness grace.
const NOT_READY_REQUEUE: Duration = Duration::from_secs(15);

/// What `reconcile` needs: the client, the settings, metrics and events.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings (default ingest image, resync period).
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events about pipelines.
    pub recorder: Recorder,
    /// Consecutive transient failures per pipeline, for the backoff.
    failures: Mutex<HashMap<ObjectRef<TelemetryPipeline>, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, settings: Settings, metrics: Metrics) -> Self {
        let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
        Self {
            client,
            settings,
            metrics,
            recorder,
            failures: Mutex::default(),
        }
    }

    async fn publish(
        &self,
        tp: &TelemetryPipeline,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        crate::event::publish(&self.recorder, tp, type_, reason, action, note).await;
    }
}

/// Reconciles one pipeline (the `Controller`'s reconciler).
#[instrument(skip_all, fields(pipeline = %ObjectRef::from_obj(&*tp), generation = tp.metadata.generation))]
pub async fn reconcile(tp: Arc<TelemetryPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.duration.start_timer();
    if tp.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their ownerReferences.
        return Ok(Action::await_change());
    }
    match reconcile_pipeline(&tp, &ctx).await {
        Ok(action) => {
            ctx.failures
                .lock()
                .expect("not poisoned")
                .remove(&ObjectRef::from_obj(&*tp));
            ctx.metrics.reconciliations.with_label_values(&["ok"]).inc();
            Ok(action)
        }
        Err(error) if error.is_permanent() => {
            // Retrying will not help: say so in the status (Degraded, with a
            // Warning event when it becomes so) and wait for a change.
            warn!(%error, reason = error.reason(), "reconcile failed permanently");
            ctx.metrics.record_failure(error.reason());
            let problem = Problem {
                reason: error.reason().to_string(),
                message: error.to_string(),
            };
            let observed = observe(&tp, &ctx, Some(problem)).await?;
            write_status(&tp, &ctx, &observed).await?;
            Ok(Action::requeue(ctx.settings.resync))
        }
        Err(error) => Err(error),
    }
}

/// Counts a transient failure and requeues with exponential backoff.
pub fn error_policy(tp: Arc<TelemetryPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_failure(error.reason());
    let mut failures = ctx.failures.lock().expect("not poisoned");
    let n = failures.entry(ObjectRef::from_obj(&*tp)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = crate::error::backoff(*n);
    warn!(pipeline = %ObjectRef::from_obj(&*tp), %error, reason = error.reason(), retry_in = ?delay, "reconcile failed; will retry");
    Action::requeue(delay)
}

async fn reconcile_pipeline(tp: &TelemetryPipeline, ctx: &Context) -> Result<Action> {
    if tp.spec.paused {
        debug!("paused: observing only");
        let observed = observe(tp, ctx, None).await?;
        write_status(tp, ctx, &observed).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    }
    tp.spec.aggregation.validate()?;

    let ns = tp.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let mut observed = Observed::default();

    // The version of the Redis password, stamped on the pod templates so
    // that a new password rolls Redis, then the ingest pods.
    let password_version;
    let mut cluster_password = None;
    if let Some(managed) = tp.spec.redis.managed() {
        let password = ensure_password(tp, ctx, &ns).await?;
        if managed.is_cluster() {
            cluster_password = Some(password.clone());
        }
        let secret = apply(tp, ctx, redis::secret(tp, &password)).await?;
        password_version = rotation::secret_version(&secret);
        apply(tp, ctx, redis::config_map(tp, &managed)).await?;
        apply(tp, ctx, redis::headless_service(tp)).await?;
        apply(tp, ctx, redis::client_service(tp)).await?;
        let mut sts = redis::stateful_set(tp, &managed);
        if let (Some(v), Some(spec)) = (&password_version, sts.spec.as_mut()) {
            rotation::stamp(&mut spec.template, v);
        }
        observed.redis = Some(apply(tp, ctx, sts).await?);
    } else {
        password_version = external_password_version(tp, ctx, &ns).await?;
    }
    apply(tp, ctx, ingest::config_map(tp)).await?;
    let version = password_version.as_deref();
    observed.deployment =
        Some(apply_deployment(tp, ctx, &ns, version, observed.redis.as_ref()).await?);
    apply(tp, ctx, ingest::service(tp)).await?;
    for budget in resources::disruption::budgets(tp) {
        apply(tp, ctx, budget).await?;
    }
    let operator_namespace = ctx.settings.operator_namespace.as_deref();
    for policy in resources::network::policies(tp, operator_namespace) {
        apply(tp, ctx, policy).await?;
    }
    prune::prune(tp, ctx, &ns).await?;
    observe_pods_and_secrets(tp, ctx, &ns, &mut observed).await?;
    if let (Some(managed), Some(password)) = (tp.spec.redis.managed(), &cluster_password) {
        let sts = Names::of(tp).redis;
        let found = cluster::round(&sts, &managed, &observed.redis_pods, password).await;
        observed.redis_cluster = Some(found);
    }

    let settled = write_status(tp, ctx, &observed).await?;
    let converging = observed
        .redis_cluster
        .as_ref()
        .is_some_and(cluster::converging);
    Ok(Action::requeue(if converging {
        cluster::CONVERGING_REQUEUE
    } else if settled {
        ctx.settings.resync
    } else {
        NOT_READY_REQUEUE
    }))
}

/// The managed Redis password, if its Secret exists.
async fn read_password(tp: &TelemetryPipeline, ctx: &Context, ns: &str) -> Result<Option<String>> {
    let name = Names::of(tp).redis;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get Secret {ns}/{name}"), e))?;
    let Some(secret) = existing else {
        return Ok(None);
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PASSWORD_KEY))
        .map(|b| b.0.clone());
    match value
        .and_then(|v| String::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
    {
        Some(password) => Ok(Some(password)),
        None => Err(Error::RedisSecretInvalid {
            name,
            key: PASSWORD_KEY.to_string(),
        }),
    }
}

/// The Redis password: read from the Secret, or generated once when the
/// Secret does not exist. An existing Secret is never given a new password.
async fn ensure_password(tp: &TelemetryPipeline, ctx: &Context, ns: &str) -> Result<String> {
    if let Some(password) = read_password(tp, ctx, ns).await? {
        return Ok(password);
    }
    let name = Names::of(tp).redis;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    // Created by an apply without force: if another writer created it
    // meanwhile, this conflicts instead of overwriting their password, and
    // the next pass reads theirs.
    let password = redis::generate_password();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&redis::secret(tp, &password)),
    )
    .await
    .map_err(|e| Error::kube(format!("create Secret {ns}/{name}"), e))?;
    ctx.metrics
        .child_writes
        .with_label_values(&["Secret", "create"])
        .inc();
    ctx.publish(
        tp,
        EventType::Normal,
        "PasswordGenerated",
        "Create",
        format!("Generated the Redis password into Secret {name}"),
    )
    .await;
    Ok(password)
}

/// Whether `obj` changed between two reads: by generation where the kind has
/// one (status updates do not count), else by resourceVersion.
fn changed<K: Resource>(before: &K, after: &K) -> bool {
    match (before.meta().generation, after.meta().generation) {
        (Some(a), Some(b)) => a != b,
        _ => before.meta().resource_version != after.meta().resource_version,
    }
}

/// Server-side applies `obj` under the operator's field manager, reporting a
/// creation or a change (an apply that changes nothing writes nothing).
async fn apply<K>(tp: &TelemetryPipeline, ctx: &Context, obj: K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = obj.name_any();
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let before = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get {kind} {ns}/{name}"), e))?;
    let after = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|e| Error::kube(format!("apply {kind} {ns}/{name}"), e))?;
    match &before {
        None => {
            info!(%kind, %name, "created");
            ctx.metrics
                .child_writes
                .with_label_values(&[&kind, "create"])
                .inc();
            ctx.publish(
                tp,
                EventType::Normal,
                "Created",
                "Apply",
                format!("Created {kind} {name}"),
            )
            .await;
        }
        Some(before) if changed(before, &after) => {
            info!(%kind, %name, "updated");
            ctx.metrics
                .child_writes
                .with_label_values(&[&kind, "update"])
                .inc();
            ctx.publish(
                tp,
                EventType::Normal,
                "Updated",
                "Apply",
                format!("Updated {kind} {name}"),
            )
            .await;
        }
        Some(_) => debug!(%kind, %name, "unchanged"),
    }
    Ok(after)
}

/// Whether `manager` owns `spec.replicas` of an object.
pub fn owns_replicas(managed_fields: Option<&[ManagedFieldsEntry]>, manager: &str) -> bool {
    managed_fields.into_iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(manager)
            && entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
    })
}

/// The replicas the operator itself applies: `spec.ingest.replicas` without
/// autoscaling, nothing with it (the autoscaler's field manager owns them).
pub fn applied_replicas(tp: &TelemetryPipeline) -> Option<i32> {
    (!tp.autoscaling_enabled()).then_some(tp.spec.ingest.replicas)
}

/// The version of an external Redis's password Secret, if the spec names one
/// and it exists.
async fn external_password_version(
    tp: &TelemetryPipeline,
    ctx: &Context,
    ns: &str,
) -> Result<Option<String>> {
    let Some(r) = tp
        .spec
        .redis
        .external
        .as_ref()
        .and_then(|e| e.password_secret_ref.as_ref())
    else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&r.name)
        .await
        .map_err(|e| Error::kube(format!("get Secret {ns}/{}", r.name), e))?;
    Ok(secret.as_ref().and_then(rotation::secret_version))
}

/// Applies the ingest Deployment, keeping the autoscaler in charge of
/// `spec.replicas` while autoscaling is enabled, and moving the pods to a
/// new Redis password once `redis` runs it.
async fn apply_deployment(
    tp: &TelemetryPipeline,
    ctx: &Context,
    ns: &str,
    password_version: Option<&str>,
    redis: Option<&StatefulSet>,
) -> Result<Deployment> {
    let name = Names::of(tp).ingest;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {ns}/{name}"), e))?;
    let mut desired = ingest::deployment(tp, &ctx.settings.ingest_image, applied_replicas(tp));
    let version = rotation::ingest_version(password_version, redis, existing.as_ref());
    if let (Some(v), Some(spec)) = (version, desired.spec.as_mut()) {
        rotation::stamp(&mut spec.template, &v);
    }
    let Some(autoscaling) = tp.spec.autoscaling.as_ref().filter(|a| a.enabled) else {
        // force=true also takes spec.replicas back from the autoscaler's manager.
        return apply(tp, ctx, desired).await;
    };
    if let Some(d) = &existing {
        // Autoscaling was just enabled: hand spec.replicas over at its current
        // value before our own apply stops mentioning it (else SSA would remove
        // the field and the Deployment would fall back to 1 replica).
        if !owns_replicas(d.metadata.managed_fields.as_deref(), AUTOSCALER_MANAGER) {
            let current = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            apply_replicas(&api, &name, current).await?;
        }
    }
    let mut applied = apply(tp, ctx, desired).await?;
    if existing.is_none() {
        applied = apply_replicas(&api, &name, autoscaling.initial_replicas()).await?;
        info!(
            replicas = autoscaling.initial_replicas(),
            "autoscaling: initial replicas set"
        );
    }
    Ok(applied)
}

/// Sets `spec.replicas` under the autoscaler's field manager.
async fn apply_replicas(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<Deployment> {
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": replicas },
    });
    api.patch(
        name,
        &PatchParams::apply(AUTOSCALER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("apply replicas of Deployment {name}"), e))
}

/// Reads the StatefulSet, the Deployment, their pods and the referenced
/// Secrets without changing anything. Pods and Secrets are read on a best-effort
/// basis here: this also reports a permanent failure, which a second failure
/// (say, no RBAC to list pods) must not turn into a retry loop.
async fn observe(
    tp: &TelemetryPipeline,
    ctx: &Context,
    problem: Option<Problem>,
) -> Result<Observed> {
    let ns = tp.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let names = Names::of(tp);
    let redis = if tp.spec.redis.managed().is_some() {
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&names.redis)
            .await
            .map_err(|e| Error::kube(format!("get StatefulSet {ns}/{}", names.redis), e))?
    } else {
        None
    };
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names.ingest)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {ns}/{}", names.ingest), e))?;
    let mut observed = Observed {
        redis,
        deployment,
        problem,
        ..Observed::default()
    };
    if let Err(error) = observe_pods_and_secrets(tp, ctx, &ns, &mut observed).await {
        warn!(%error, "could not read the pods or Secrets; the status goes without them");
    }
    if let Some(managed) = tp.spec.redis.managed().filter(ManagedRedis::is_cluster)
        && let Ok(Some(password)) = read_password(tp, ctx, &ns).await
    {
        let sts = Names::of(tp).redis;
        let found = cluster::look(&sts, &managed, &observed.redis_pods, &password).await;
        observed.redis_cluster = Some(found);
    }
    Ok(observed)
}

/// Lists the ingest pods and (for a managed Redis) the Redis pods by their
/// selector labels, and looks up each Secret the spec refers to.
async fn observe_pods_and_secrets(
    tp: &TelemetryPipeline,
    ctx: &Context,
    ns: &str,
    observed: &mut Observed,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = |component| {
        let selector = resources::selector_string(tp, component);
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .map(|l| l.items)
                .map_err(|e| Error::kube(format!("list Pods {selector} in {ns}"), e))
        }
    };
    observed.ingest_pods = list(Component::Ingest).await?;
    if tp.spec.redis.managed().is_some() {
        observed.redis_pods = list(Component::Redis).await?;
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    observed.secrets.clear();
    for r in SecretRef::all_of(tp) {
        let found = secrets
            .get_opt(&r.name)
            .await
            .map_err(|e| Error::kube(format!("get Secret {ns}/{}", r.name), e))?;
        let state = match found {
            None => SecretState::Missing,
            Some(s) if s.data.as_ref().is_some_and(|d| d.contains_key(&r.key)) => {
                SecretState::Present
            }
            Some(_) => SecretState::KeyMissing,
        };
        if state != SecretState::Present {
            debug!(secret = %r.name, key = %r.key, ?state, "a referenced Secret is not usable");
        }
        observed.secrets.push((r, state));
    }
    Ok(())
}

/// The part of a status this operator owns: its own conditions and fields,
/// without what the autoscaler writes under its own field manager.
pub fn owned_part(status: &TelemetryPipelineStatus) -> TelemetryPipelineStatus {
    const OURS: [&str; 6] = [
        status::READY,
        status::REDIS_READY,
        status::INGEST_READY,
        status::PROGRESSING,
        status::DEGRADED,
        status::PAUSED,
    ];
    TelemetryPipelineStatus {
        conditions: status
            .conditions
            .iter()
            .filter(|c| OURS.contains(&c.type_.as_str()))
            .cloned()
            .collect(),
        autoscaling: None,
        ..status.clone()
    }
}

/// Computes the status and writes it if it changed; publishes the events of
/// condition transitions. Returns whether the pipeline is settled: Ready and
/// not Degraded.
async fn write_status(tp: &TelemetryPipeline, ctx: &Context, observed: &Observed) -> Result<bool> {
    let new = owned_part(&status::compute(tp, observed, Time(Timestamp::now())));
    let is = |type_: &str| {
        new.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let settled = is(status::READY) && !is(status::DEGRADED);
    let old = tp.status.as_ref().map(owned_part);
    if old.as_ref() == Some(&new) {
        return Ok(settled);
    }
    let ns = tp.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let name = tp.name_any();
    let api: Api<TelemetryPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": TelemetryPipeline::api_version(&()),
        "kind": TelemetryPipeline::kind(&()),
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("update status of TelemetryPipeline {ns}/{name}"), e))?;
    ctx.metrics.status_writes.inc();
    for notice in status::transition_events(old.as_ref(), &new) {
        ctx.publish(tp, notice.type_, &notice.reason, "Reconcile", notice.note)
            .await;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(manager: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn owns_replicas_reads_managed_fields_of_the_named_manager() {
        let fields = vec![
            entry(
                FIELD_MANAGER,
                serde_json::json!({"f:spec": {"f:template": {}}}),
            ),
            entry(
                AUTOSCALER_MANAGER,
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
        ];
        assert!(owns_replicas(Some(&fields), AUTOSCALER_MANAGER));
        assert!(!owns_replicas(Some(&fields), FIELD_MANAGER));
        assert!(!owns_replicas(None, AUTOSCALER_MANAGER));
    }

    #[test]
    fn replicas_are_applied_only_without_autoscaling() {
        let tp = TelemetryPipeline::test().with_ingest(|i| i.replicas = 3);
        assert_eq!(applied_replicas(&tp), Some(3));
        let scaled = tp.clone().with_autoscaling(2, 10);
        assert_eq!(applied_replicas(&scaled), None);
        assert_eq!(
            scaled.spec.autoscaling.as_ref().unwrap().initial_replicas(),
            2
        );
        let mut disabled = tp.with_autoscaling(2, 10);
        disabled.spec.autoscaling.as_mut().unwrap().enabled = false;
        assert_eq!(applied_replicas(&disabled), Some(3));
    }

    #[test]
    fn initial_replicas_are_at_least_one_so_the_autoscaler_can_measure() {
        let tp = TelemetryPipeline::test().with_autoscaling(0, 10);
        assert_eq!(tp.spec.autoscaling.unwrap().initial_replicas(), 1);
    }

    #[test]
    fn changed_compares_generation_when_there_is_one() {
        let mut a = Deployment::default();
        a.metadata.generation = Some(1);
        a.metadata.resource_version = Some("10".into());
        let mut b = a.clone();
        b.metadata.resource_version = Some("11".into()); // a status update
        assert!(!changed(&a, &b));
        b.metadata.generation = Some(2);
        assert!(changed(&a, &b));
        let c1 = ConfigMap {
            metadata: kube::api::ObjectMeta {
                resource_version: Some("1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut c2 = c1.clone();
        assert!(!changed(&c1, &c2));
        c2.metadata.resource_version = Some("2".into());
        assert!(changed(&c1, &c2));
    }

    #[test]
    fn owned_part_drops_the_autoscalers_conditions_and_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let cond = |t: &str| Condition {
            type_: t.into(),
            status: "True".into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
        let s = TelemetryPipelineStatus {
            conditions: vec![cond(status::READY), cond("ScalingActive")],
            autoscaling: Some(crate::crd::AutoscalingStatus {
                desired_replicas: Some(4),
                ..Default::default()
            }),
            replicas: Some(2),
            ..Default::default()
        };
        let owned = owned_part(&s);
        assert_eq!(owned.conditions.len(), 1);
        assert_eq!(owned.autoscaling, None);
        assert_eq!(owned.replicas, Some(2));
    }
}
