//! The pipeline's status as a pure function of what the operator observed.
//!
//! [`compute`] turns what the reconcile saw — the StatefulSet and the
//! Deployment, their pods, the Secrets the spec refers to, and a problem met
//! while applying, if any — into `metav1.Condition`s that answer three
//! separate questions:
//! - `Ready`: is the pipeline serving? If not, its reason and message name
//!   the most specific cause known (a failing pod, a missing Secret, a pod
//!   still starting).
//! - `Progressing`: are the children still on their way to what the spec
//!   asks for (created, rolled out, scaled, pods starting)? That is normal and
//!   no warning.
//! - `Degraded`: is something wrong that waiting will not fix (a problem met
//!   while applying, a missing Secret, a pod that crashes, cannot start, or
//!   stays unready past [`READINESS_GRACE`])?
//!
//! Each pod is classified once (ready, starting, failing) from its own status;
//! time is passed in. `lastTransitionTime` of conditions whose status did not
//! change is kept, so that computing twice from the same observations yields
//! an equal status and nothing is written. Messages hold no counters or ages
//! that change by themselves. [`transition_events`] names the changes worth a
//! Kubernetes Event.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::crd::{TelemetryPipeline, TelemetryPipelineStatus};
use crate::resources::{Names, RedisConnection, ingest, redis};

/// Condition: Redis and every wanted ingest pod are ready.
pub const READY: &str = "Ready";
/// Condition: the Redis the pipeline writes to is ready.
pub const REDIS_READY: &str = "RedisReady";
/// Condition: the ingest Deployment is rolled out and all its pods are ready.
pub const INGEST_READY: &str = "IngestReady";
/// Condition: the children are still being created, rolled out or scaled.
pub const PROGRESSING: &str = "Progressing";
/// Condition: something is wrong that waiting will not fix; the reason says what.
pub const DEGRADED: &str = "Degraded";
/// Condition: `spec.paused` is set and the operator is changing nothing.
pub const PAUSED: &str = "Paused";

/// How long a pod may stay not ready, without a container error to show for
/// it, before that counts as a problem rather than a pod still starting.
pub const READINESS_GRACE: Duration = Duration::from_secs(120);

/// Container waiting reasons that are ordinary progress; any other waiting
/// reason (CrashLoopBackOff, CreateContainerConfigError, ImagePullBackOff,
/// ErrImagePull, InvalidImageName, ...) is an error the kubelet reports.
const STARTING_REASONS: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// The spec field that names an external Redis' password Secret.
pub const EXTERNAL_PASSWORD_FIELD: &str = "spec.redis.external.passwordSecretRef";

/// A problem the reconcile ran into that the user must fix (it is not retried
/// in a hot loop), reported as `Degraded=True` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason, e.g. `InvalidAggregation`.
    pub reason: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// A Secret the spec refers to that the operator does not manage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The spec field that names it, e.g. `spec.redis.external.passwordSecretRef`.
    pub field: &'static str,
    /// The Secret's name (in the pipeline's namespace).
    pub name: String,
    /// The key the pods read from it.
    pub key: String,
}

impl SecretRef {
    /// The Secrets `tp` refers to: an external Redis' password Secret.
    pub fn all_of(tp: &TelemetryPipeline) -> Vec<SecretRef> {
        let external = tp.spec.redis.external.as_ref();
        external
            .and_then(|ext| ext.password_secret_ref.as_ref())
            .map(|r| SecretRef {
                field: EXTERNAL_PASSWORD_FIELD,
                name: r.name.clone(),
                key: r.key.clone(),
            })
            .into_iter()
            .collect()
    }
}

/// What the reconcile found of a referenced Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// The Secret exists and has the key.
    Present,
    /// The Secret exists without the key.
    KeyMissing,
    /// There is no such Secret.
    Missing,
}

/// What the operator saw of the children in this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The managed Redis StatefulSet (None when missing or when Redis is external).
    pub redis: Option<StatefulSet>,
    /// The ingest Deployment, if it exists.
    pub deployment: Option<Deployment>,
    /// The managed Redis' pods (by its selector labels).
    pub redis_pods: Vec<Pod>,
    /// The ingest pods (by the Deployment's selector labels), old and new.
    pub ingest_pods: Vec<Pod>,
    /// Each Secret the spec refers to ([`SecretRef::all_of`]) and what was found.
    pub secrets: Vec<(SecretRef, SecretState)>,
    /// A permanent problem met while applying, if any.
    pub problem: Option<Problem>,
}

/// The problem a missing Secret or key is, if any: the pods that read it
/// cannot start until it exists.
pub fn secret_problem(secrets: &[(SecretRef, SecretState)]) -> Option<Problem> {
    secrets.iter().find_map(|(r, state)| match state {
        SecretState::Present => None,
        SecretState::Missing => Some(Problem {
            reason: "RedisSecretMissing".into(),
            message: format!(
                "Secret {:?} named in {} does not exist: create it with the Redis password under key {:?}; the ingest pods start once it exists",
                r.name, r.field, r.key
            ),
        }),
        SecretState::KeyMissing => Some(Problem {
            reason: "RedisSecretKeyMissing".into(),
            message: format!(
                "Secret {:?} named in {} has no key {:?}: add the Redis password under that key; the ingest pods start once it exists",
                r.name, r.field, r.key
            ),
        }),
    })
}

/// One condition before timestamps: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cond {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
}

impl Cond {
    fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// What one pod's status says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PodHealth {
    /// Its Ready condition is True.
    Ready,
    /// Not ready yet, for a reason that passes; says what it is doing.
    Starting(String),
    /// Not ready, and waiting will not fix it: reason (`PodFailing` or
    /// `PodNotReady`) and what is wrong.
    Failing(&'static str, String),
}

/// `pod`'s health at `now`. `hint` says what a running container's readiness
/// waits for.
fn pod_health(pod: &Pod, now: &Time, hint: &str) -> PodHealth {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    if ready.is_some_and(|c| c.status == "True") {
        return PodHealth::Ready;
    }
    let containers: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.chain(s.container_statuses.iter().flatten())
        })
        .collect();
    if let Some(error) = containers.iter().find_map(|c| container_error(c)) {
        return PodHealth::Failing("PodFailing", error);
    }
    let doing = if let Some(unscheduled) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        with_detail(
            "not scheduled",
            unscheduled.reason.as_deref(),
            unscheduled.message.as_deref(),
        )
    } else if let Some(c) = containers.iter().find(|c| !c.ready) {
        container_progress(c, hint)
    } else {
        "waiting for its containers to start".to_string()
    };
    let since = ready
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| status.and_then(|s| s.start_time.clone()))
        .or_else(|| pod.metadata.creation_timestamp.clone());
    match since {
        Some(since) if now.0.as_second() - since.0.as_second() >= grace_seconds() => {
            PodHealth::Failing(
                "PodNotReady",
                format!("not ready since {}: {doing}", since.0),
            )
        }
        _ => PodHealth::Starting(doing),
    }
}

fn grace_seconds() -> i64 {
    i64::try_from(READINESS_GRACE.as_secs()).unwrap_or(i64::MAX)
}

/// `what: reason: message`, leaving out the parts that are empty.
fn with_detail(what: &str, reason: Option<&str>, message: Option<&str>) -> String {
    [Some(what), reason, message]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// How a container last exited, if with an error: "exited with code 1 (Error)".
fn failed_exit(state: Option<&ContainerState>) -> Option<String> {
    let t = state?.terminated.as_ref()?;
    (t.exit_code != 0).then(|| match t.reason.as_deref() {
        Some(reason) if !reason.is_empty() => {
            format!("exited with code {} ({reason})", t.exit_code)
        }
        _ => format!("exited with code {}", t.exit_code),
    })
}

/// What is wrong with a container, if it is failing: waiting with an error
/// reason, terminated with a non-zero exit, or running again (not ready yet)
/// after one. No restart counts or back-off delays: they change by themselves.
fn container_error(c: &ContainerStatus) -> Option<String> {
    let name = &c.name;
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref())
        && let Some(reason) = waiting.reason.as_deref()
        && !reason.is_empty()
        && !STARTING_REASONS.contains(&reason)
    {
        return Some(match failed_exit(c.last_state.as_ref()) {
            Some(exit) if reason == "CrashLoopBackOff" => {
                format!("container {name}: CrashLoopBackOff: last {exit}")
            }
            _ => with_detail(
                &format!("container {name}"),
                Some(reason),
                waiting.message.as_deref(),
            ),
        });
    }
    if let Some(exit) = failed_exit(state) {
        return Some(format!("container {name} {exit}"));
    }
    let running = state.is_some_and(|s| s.running.is_some());
    if running
        && !c.ready
        && let Some(exit) = failed_exit(c.last_state.as_ref())
    {
        return Some(format!("container {name}: restarted after it {exit}"));
    }
    None
}

/// What a container that is not failing and not ready is doing.
fn container_progress(c: &ContainerStatus, hint: &str) -> String {
    let name = &c.name;
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        return with_detail(
            &format!("container {name}"),
            waiting.reason.as_deref(),
            waiting.message.as_deref(),
        );
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return format!("container {name} is running but not ready{hint}");
    }
    if state.is_some_and(|s| s.terminated.is_some()) {
        return format!("container {name} has exited");
    }
    format!("container {name} has not started")
}

/// The live pods (not terminating, not finished), by name, with their health.
fn classify(pods: &[Pod], now: &Time, hint: &str) -> Vec<(String, PodHealth)> {
    let mut out: Vec<(String, PodHealth)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|p| (p.name_any(), pod_health(p, now, hint)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The first failing pod, as (reason, "pod NAME: what is wrong"), noting how
/// many more fail.
fn first_failure(pods: &[(String, PodHealth)]) -> Option<(&'static str, String)> {
    let failing: Vec<_> = pods
        .iter()
        .filter_map(|(name, health)| match health {
            PodHealth::Failing(reason, message) => Some((name, *reason, message)),
            _ => None,
        })
        .collect();
    let (name, reason, message) = failing.first()?;
    let more = match failing.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more pod)".to_string(),
        n => format!(" (and {n} more pods)"),
    };
    Some((*reason, format!("pod {name}: {message}{more}")))
}

/// "; pod NAME: what it is doing" for the first starting pod, if any.
fn first_starting(pods: &[(String, PodHealth)]) -> Option<String> {
    pods.iter().find_map(|(name, health)| match health {
        PodHealth::Starting(doing) => Some(format!("; pod {name}: {doing}")),
        _ => None,
    })
}

/// Where one part of the pipeline (Redis or ingest) stands.
struct Part {
    /// RedisReady or IngestReady.
    ready: Cond,
    /// Why it is still changing, if it is: (reason, message).
    progress: Option<(&'static str, String)>,
    /// Its first failing pod, if any: (reason, message).
    failure: Option<(&'static str, String)>,
}

impl Part {
    fn creating(
        type_: &'static str,
        message: String,
        failure: Option<(&'static str, String)>,
    ) -> Self {
        Part {
            ready: Cond::new(type_, false, "Creating", message.clone()),
            progress: Some(("Creating", message)),
            failure,
        }
    }

    /// The component's readiness condition when it is not ready: a failing
    /// pod if there is one, else what it is doing, else `fallback`.
    fn not_ready(&self, type_: &'static str, fallback: (&str, String)) -> Cond {
        let (reason, message) = self
            .failure
            .clone()
            .or_else(|| self.progress.clone())
            .unwrap_or(fallback);
        Cond::new(type_, false, reason, message)
    }
}

fn redis_part(
    tp: &TelemetryPipeline,
    sts: Option<&StatefulSet>,
    pods: &[(String, PodHealth)],
) -> Part {
    if tp.spec.redis.external.is_some() {
        let message = format!(
            "using the external Redis {}; whether it is reachable shows in IngestReady",
            RedisConnection::of(tp).url
        );
        return Part {
            ready: Cond::new(REDIS_READY, true, "External", message),
            progress: None,
            failure: None,
        };
    }
    let name = Names::of(tp).redis;
    let failure = first_failure(pods);
    let Some(sts) = sts else {
        return Part::creating(
            REDIS_READY,
            format!("StatefulSet {name} does not exist yet"),
            failure,
        );
    };
    let status = sts.status.clone().unwrap_or_default();
    let picked_up = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let revised =
        status.update_revision.is_none() || status.current_revision == status.update_revision;
    let has_ready_pod = status.ready_replicas.unwrap_or(0) >= 1;
    let starting = first_starting(pods);
    // Pods that only fail, none coming up: nothing moves until Degraded's
    // cause is fixed.
    let stalled = failure.is_some() && starting.is_none();
    let doing = starting.unwrap_or_default();
    let progress = if status.observed_generation.is_none() {
        Some((
            "Creating",
            format!("StatefulSet {name} is new; its controller has not acted on it yet"),
        ))
    } else if !picked_up {
        Some((
            "RollingOut",
            format!("StatefulSet {name} has a change not yet picked up"),
        ))
    } else if stalled {
        None
    } else if !revised {
        Some((
            "RollingOut",
            format!("StatefulSet {name} is rolling out a new Redis pod{doing}"),
        ))
    } else if !has_ready_pod {
        Some((
            "PodsStarting",
            format!("StatefulSet {name}: the Redis pod is not ready yet{doing}"),
        ))
    } else {
        None
    };
    let mut part = Part {
        ready: Cond::new(
            REDIS_READY,
            true,
            "Ready",
            format!("Redis pod of StatefulSet {name} is ready"),
        ),
        progress,
        failure,
    };
    if !(picked_up && revised && has_ready_pod) {
        part.ready = part.not_ready(
            REDIS_READY,
            (
                "NotReady",
                format!("StatefulSet {name} has no ready Redis pod"),
            ),
        );
    }
    part
}

fn ingest_part(
    tp: &TelemetryPipeline,
    deployment: Option<&Deployment>,
    pods: &[(String, PodHealth)],
) -> Part {
    let name = Names::of(tp).ingest;
    let failure = first_failure(pods);
    let Some(d) = deployment else {
        return Part::creating(
            INGEST_READY,
            format!("Deployment {name} does not exist yet"),
            failure,
        );
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let picked_up = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let existing = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let starting = first_starting(pods);
    // Pods that only fail, none coming up and none still to be created:
    // nothing moves until Degraded's cause is fixed.
    let stalled = failure.is_some() && starting.is_none() && existing >= wanted;
    let doing = starting.unwrap_or_default();
    let progress = if status.observed_generation.is_none() {
        Some((
            "Creating",
            format!("Deployment {name} is new; its controller has not acted on it yet"),
        ))
    } else if !picked_up {
        Some((
            "RollingOut",
            format!("Deployment {name} has a change not yet picked up"),
        ))
    } else if stalled || wanted == 0 {
        None
    } else if updated < wanted || existing > updated {
        Some((
            "RollingOut",
            format!("Deployment {name}: {updated} of {wanted} pods updated{doing}"),
        ))
    } else if ready < wanted {
        let reason = if ready > 0 {
            "ScalingUp"
        } else {
            "PodsStarting"
        };
        Some((
            reason,
            format!("Deployment {name}: {ready} of {wanted} pods ready{doing}"),
        ))
    } else {
        None
    };
    let mut part = Part {
        ready: Cond::new(
            INGEST_READY,
            true,
            "Ready",
            format!("Deployment {name}: {ready} of {wanted} pods ready"),
        ),
        progress,
        failure,
    };
    if picked_up && wanted == 0 {
        part.ready = Cond::new(
            INGEST_READY,
            false,
            "ScaledToZero",
            format!("Deployment {name} has 0 replicas"),
        );
    } else if !(picked_up && updated >= wanted && ready >= wanted) {
        part.ready = part.not_ready(
            INGEST_READY,
            (
                "PodsNotReady",
                format!("Deployment {name}: {ready} of {wanted} pods ready"),
            ),
        );
    }
    part
}

/// `Ready=False` taken from a part's condition, its reason prefixed with the part.
fn not_ready_from(prefix: &str, part: &Part) -> Cond {
    Cond::new(
        READY,
        false,
        &format!("{prefix}{}", part.ready.reason),
        part.ready.message.clone(),
    )
}

/// The status the pipeline should have, given what was observed at `now`.
/// Fields reserved for the autoscaler are left unset: it writes them under its
/// own field manager.
pub fn compute(tp: &TelemetryPipeline, observed: &Observed, now: Time) -> TelemetryPipelineStatus {
    let old = tp.status.clone().unwrap_or_default();
    let generation = tp.metadata.generation;

    let ingest_hint = format!(
        " (an ingest pod is ready once it reaches Redis at {})",
        RedisConnection::of(tp).url
    );
    let redis_pods = classify(&observed.redis_pods, &now, "");
    let ingest_pods = classify(&observed.ingest_pods, &now, &ingest_hint);
    let redis = redis_part(tp, observed.redis.as_ref(), &redis_pods);
    let ingest = ingest_part(tp, observed.deployment.as_ref(), &ingest_pods);
    let secret = secret_problem(&observed.secrets);

    let ready = if let Some(p) = &observed.problem {
        // Not applied as the spec says: not Ready, whatever still runs.
        Cond::new(READY, false, &p.reason, p.message.clone())
    } else if redis.ready.status && ingest.ready.status {
        Cond::new(READY, true, "Ready", "Redis and all ingest pods are ready")
    } else if let Some(p) = &secret {
        // A missing Secret explains unready pods better than they can.
        Cond::new(READY, false, &p.reason, p.message.clone())
    } else if !redis.ready.status
        && (ingest.ready.status || redis.failure.is_some() || ingest.failure.is_none())
    {
        not_ready_from("Redis", &redis)
    } else {
        // Ingest is not ready, and either Redis is or ingest has the failure.
        not_ready_from("Ingest", &ingest)
    };
    let failure = observed
        .problem
        .clone()
        .or(secret)
        .map(|p| (p.reason, p.message))
        .or_else(|| redis.failure.map(|(r, m)| (format!("Redis{r}"), m)))
        .or_else(|| ingest.failure.map(|(r, m)| (format!("Ingest{r}"), m)));
    let degraded = match &failure {
        Some((reason, message)) => Cond::new(DEGRADED, true, reason, message.clone()),
        None => Cond::new(DEGRADED, false, "AsExpected", "nothing is wrong"),
    };
    let progressing = match redis.progress.or(ingest.progress) {
        Some((reason, message)) => Cond::new(PROGRESSING, true, reason, message),
        None if failure.is_some() => Cond::new(
            PROGRESSING,
            false,
            "Stalled",
            "nothing moves until what Degraded reports is fixed",
        ),
        None => Cond::new(
            PROGRESSING,
            false,
            "Complete",
            "Redis and the ingest Deployment are as the spec asks and their pods are ready",
        ),
    };
    let paused = if tp.spec.paused {
        Cond::new(
            PAUSED,
            true,
            "Paused",
            "spec.paused is true: the operator creates, changes and deletes nothing for this pipeline",
        )
    } else {
        Cond::new(
            PAUSED,
            false,
            "Reconciling",
            "the operator keeps the children in line with the spec",
        )
    };

    let conditions = [
        ready,
        redis.ready,
        ingest.ready,
        progressing,
        degraded,
        paused,
    ]
    .into_iter()
    .map(|c| {
        let status = if c.status { "True" } else { "False" }.to_string();
        let last_transition_time = old
            .conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == status)
            .map(|o| o.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: c.type_.to_string(),
            status,
            reason: c.reason,
            message: c.message,
            observed_generation: generation,
            last_transition_time,
        }
    })
    .collect();

    let deployment_status = observed.deployment.as_ref().and_then(|d| d.status.clone());
    TelemetryPipelineStatus {
        observed_generation: generation,
        conditions,
        replicas: Some(
            deployment_status
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0),
        ),
        ready_replicas: Some(
            deployment_status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        ),
        selector: Some(ingest::selector_string(tp)),
        redis_endpoint: Some(match &tp.spec.redis.external {
            Some(ext) => ext.url.clone(),
            None => redis::url(tp),
        }),
        autoscaling: None,
    }
}

/// A Kubernetes Event worth publishing about a status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub type_: EventType,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable note.
    pub note: String,
}

/// Events for condition changes between two statuses: becoming ready (Normal),
/// becoming degraded or degraded for another reason (a Warning with the
/// reason), pausing and resuming. Not being ready yet — children created,
/// rolled out, scaled, pods starting — is no news, and neither is a degraded
/// message that changes while its reason stays.
pub fn transition_events(
    old: Option<&TelemetryPipelineStatus>,
    new: &TelemetryPipelineStatus,
) -> Vec<Notice> {
    fn find<'a>(s: Option<&'a TelemetryPipelineStatus>, t: &str) -> Option<&'a Condition> {
        s?.conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    }
    let mut events = Vec::new();
    if let Some(ready) = find(Some(new), READY)
        && find(old, READY).is_none()
    {
        events.push(Notice {
            type_: EventType::Normal,
            reason: "Ready".into(),
            note: ready.message.clone(),
        });
    }
    if let Some(degraded) = find(Some(new), DEGRADED)
        && find(old, DEGRADED).is_none_or(|before| before.reason != degraded.reason)
    {
        events.push(Notice {
            type_: EventType::Warning,
            reason: degraded.reason.clone(),
            note: degraded.message.clone(),
        });
    }
    match (find(old, PAUSED).is_some(), find(Some(new), PAUSED)) {
        (false, Some(paused)) => events.push(Notice {
            type_: EventType::Normal,
            reason: "Paused".into(),
            note: paused.message.clone(),
        }),
        (true, None) if new.conditions.iter().any(|c| c.type_ == PAUSED) => {
            events.push(Notice {
                type_: EventType::Normal,
                reason: "Resumed".into(),
                note: "spec.paused is false again: reconciling".into(),
            });
        }
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, PodCondition,
        PodStatus,
    };
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn deployment(wanted: i32, ready: i32, updated: i32) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(wanted),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(wanted),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(1);
        d
    }

    fn redis_sts(ready: i32) -> StatefulSet {
        let mut s = StatefulSet {
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                ready_replicas: Some(ready),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata.generation = Some(1);
        s
    }

    /// A container named `ingest` in `state`, with `last` as its previous state.
    fn container(
        ready: bool,
        state: ContainerState,
        last: Option<ContainerState>,
    ) -> ContainerStatus {
        ContainerStatus {
            name: "ingest".into(),
            ready,
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some("Error".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A pod whose Ready condition has had `ready` since `since`.
    fn pod(name: &str, ready: bool, since: i64, c: ContainerStatus) -> Pod {
        let mut p = Pod {
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                start_time: Some(at(since)),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(at(since)),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![c]),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata.name = Some(name.into());
        p
    }

    fn ready_pod(name: &str) -> Pod {
        pod(name, true, 10, container(true, running(), None))
    }

    fn cond<'a>(s: &'a TelemetryPipelineStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t}"))
    }

    /// (status, reason) of condition `t`.
    fn state<'a>(s: &'a TelemetryPipelineStatus, t: &str) -> (&'a str, &'a str) {
        let c = cond(s, t);
        (c.status.as_str(), c.reason.as_str())
    }

    fn healthy() -> Observed {
        Observed {
            redis: Some(redis_sts(1)),
            deployment: Some(deployment(2, 2, 2)),
            redis_pods: vec![ready_pod("pipe-redis-0")],
            ingest_pods: vec![ready_pod("pipe-ingest-a"), ready_pod("pipe-ingest-b")],
            ..Observed::default()
        }
    }

    fn warnings(events: &[Notice]) -> Vec<&str> {
        events
            .iter()
            .filter(|e| e.type_ == EventType::Warning)
            .map(|e| e.reason.as_str())
            .collect()
    }

    #[test]
    fn all_children_ready_makes_the_pipeline_ready_complete_and_not_degraded() {
        let tp = TelemetryPipeline::test().at_generation(3);
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(s.observed_generation, Some(3));
        for t in [READY, REDIS_READY, INGEST_READY] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
            assert_eq!(cond(&s, t).observed_generation, Some(3));
        }
        assert_eq!(state(&s, PROGRESSING), ("False", "Complete"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(cond(&s, PAUSED).status, "False");
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
        assert_eq!(
            s.redis_endpoint.as_deref(),
            Some("redis://pipe-redis.ns.svc:6379")
        );
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=pipe,app.kubernetes.io/name=telemetry-ingest")
        );
    }

    #[test]
    fn missing_children_are_being_created_which_is_progress_not_a_problem() {
        let tp = TelemetryPipeline::test();
        let s = compute(&tp, &Observed::default(), at(100));
        assert_eq!(state(&s, READY), ("False", "RedisCreating"));
        assert_eq!(state(&s, REDIS_READY), ("False", "Creating"));
        assert_eq!(state(&s, INGEST_READY), ("False", "Creating"));
        assert_eq!(state(&s, PROGRESSING), ("True", "Creating"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!((s.replicas, s.ready_replicas), (Some(0), Some(0)));
        assert!(
            transition_events(None, &s).is_empty(),
            "a new pipeline is no news"
        );

        // Just created: their controllers have not looked at them yet.
        let mut d = deployment(1, 0, 0);
        d.status = None;
        let mut sts = redis_sts(0);
        sts.status = None;
        let observed = Observed {
            redis: Some(sts),
            deployment: Some(d),
            ..Observed::default()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, REDIS_READY), ("False", "Creating"));
        assert_eq!(state(&s, INGEST_READY), ("False", "Creating"));
        assert_eq!(state(&s, PROGRESSING), ("True", "Creating"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn a_rollout_is_progressing_not_degraded_and_raises_no_warning() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());

        // The Deployment has not picked up the new template yet.
        let mut d = deployment(2, 2, 2);
        d.metadata.generation = Some(2);
        let observed = Observed {
            deployment: Some(d),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, INGEST_READY), ("False", "RollingOut"));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));

        // A new pod is starting next to the old ones.
        let mut observed = Observed {
            deployment: Some(deployment(2, 2, 1)),
            ..healthy()
        };
        observed.ingest_pods.push(pod(
            "pipe-ingest-new",
            false,
            105,
            container(false, waiting("ContainerCreating", ""), None),
        ));
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, READY), ("False", "IngestRollingOut"));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        let message = &cond(&s, PROGRESSING).message;
        assert!(message.contains("1 of 2 pods updated"), "{message}");
        assert!(
            message.contains("pod pipe-ingest-new: container ingest: ContainerCreating"),
            "{message}"
        );
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert!(
            transition_events(Some(&ready), &s).is_empty(),
            "a rollout is no news"
        );
    }

    #[test]
    fn a_scale_up_with_pods_starting_is_progressing() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());
        let mut observed = Observed {
            deployment: Some(deployment(3, 2, 3)),
            ..healthy()
        };
        observed.ingest_pods.push(pod(
            "pipe-ingest-c",
            false,
            100,
            container(false, running(), None),
        ));
        let s = compute(&tp, &observed, at(130));
        assert_eq!(state(&s, PROGRESSING), ("True", "ScalingUp"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(state(&s, READY), ("False", "IngestScalingUp"));
        let message = &cond(&s, READY).message;
        assert!(message.contains("2 of 3 pods ready"), "{message}");
        assert!(
            message.contains("pod pipe-ingest-c: container ingest is running but not ready (an ingest pod is ready once it reaches Redis at redis://pipe-redis.ns.svc:6379)"),
            "{message}"
        );
        assert!(transition_events(Some(&ready), &s).is_empty());

        // The first pods of a new pipeline: none ready yet.
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                100,
                container(false, running(), None),
            )],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(130));
        assert_eq!(state(&s, PROGRESSING), ("True", "PodsStarting"));
        assert_eq!(state(&s, INGEST_READY), ("False", "PodsStarting"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
    }

    #[test]
    fn a_crash_looping_pod_is_degraded_naming_the_pod_and_reason_with_one_warning() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready.clone());
        let crashing = |c: ContainerStatus| Observed {
            deployment: Some(deployment(2, 1, 2)),
            ingest_pods: vec![
                ready_pod("pipe-ingest-a"),
                pod("pipe-ingest-b", false, 110, c),
            ],
            ..healthy()
        };
        let back_off = container(
            false,
            waiting(
                "CrashLoopBackOff",
                "back-off 10s restarting failed container",
            ),
            Some(exited(1)),
        );
        let s = compute(&tp, &crashing(back_off), at(120));
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        let message = &cond(&s, DEGRADED).message;
        assert_eq!(
            message,
            "pod pipe-ingest-b: container ingest: CrashLoopBackOff: last exited with code 1 (Error)"
        );
        assert_eq!(state(&s, READY), ("False", "IngestPodFailing"));
        assert_eq!(&cond(&s, READY).message, message);
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
        assert_eq!(
            warnings(&transition_events(Some(&ready), &s)),
            ["IngestPodFailing"]
        );

        // Running again after the crash, not ready yet: still the same
        // problem, so no second Warning.
        let tp = tp.with_status(s.clone());
        let again = compute(
            &tp,
            &crashing(container(false, running(), Some(exited(1)))),
            at(130),
        );
        assert_eq!(state(&again, DEGRADED), ("True", "IngestPodFailing"));
        assert!(
            cond(&again, DEGRADED)
                .message
                .contains("restarted after it exited with code 1"),
            "{}",
            cond(&again, DEGRADED).message
        );
        assert!(transition_events(Some(&s), &again).is_empty());
        assert_eq!(
            cond(&again, DEGRADED).last_transition_time,
            at(120),
            "still degraded since the first crash"
        );
    }

    #[test]
    fn a_container_config_error_naming_a_secret_is_in_readys_message() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-abc",
                false,
                100,
                container(
                    false,
                    waiting("CreateContainerConfigError", "secret \"creds\" not found"),
                    None,
                ),
            )],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(105));
        let ready = cond(&s, READY);
        assert_eq!(ready.reason, "IngestPodFailing");
        assert_eq!(
            ready.message,
            "pod pipe-ingest-abc: container ingest: CreateContainerConfigError: secret \"creds\" not found"
        );
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
    }

    #[test]
    fn a_missing_external_redis_secret_is_named_in_degraded_and_ready() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", Some("creds"));
        let secret = SecretRef::all_of(&tp);
        assert_eq!(
            secret,
            [SecretRef {
                field: "spec.redis.external.passwordSecretRef",
                name: "creds".into(),
                key: "password".into(),
            }]
        );
        let stuck = pod(
            "pipe-ingest-abc",
            false,
            100,
            container(
                false,
                waiting(
                    "CreateContainerConfigError",
                    "key \"password\" of secret \"creds\" not found",
                ),
                None,
            ),
        );
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![stuck],
            secrets: vec![(secret[0].clone(), SecretState::Missing)],
            problem: None,
        };
        let s = compute(&tp, &observed, at(105));
        for t in [READY, DEGRADED] {
            let c = cond(&s, t);
            assert_eq!(c.reason, "RedisSecretMissing", "{t}");
            for part in [
                "\"creds\"",
                "\"password\"",
                "spec.redis.external.passwordSecretRef",
            ] {
                assert!(c.message.contains(part), "{t}: {}", c.message);
            }
        }
        assert_eq!(cond(&s, DEGRADED).status, "True");

        let key_missing = Observed {
            secrets: vec![(secret[0].clone(), SecretState::KeyMissing)],
            ..observed.clone()
        };
        let s = compute(&tp, &key_missing, at(105));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisSecretKeyMissing"));

        // Deleted after the pods started: they still serve, but the next one
        // to start will not.
        let serving = Observed {
            deployment: Some(deployment(1, 1, 1)),
            ingest_pods: vec![ready_pod("pipe-ingest-abc")],
            ..observed
        };
        let s = compute(&tp, &serving, at(105));
        assert_eq!(state(&s, READY), ("True", "Ready"));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisSecretMissing"));
    }

    #[test]
    fn a_problem_wins_over_healthy_children() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            problem: Some(Problem {
                reason: "InvalidAggregation".into(),
                message: "counters.dropDevices[0]: is not a valid glob".into(),
            }),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, READY), ("False", "InvalidAggregation"));
        assert_eq!(state(&s, DEGRADED), ("True", "InvalidAggregation"));
        assert!(cond(&s, DEGRADED).message.contains("dropDevices"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Stalled"));
        assert_eq!(
            warnings(&transition_events(None, &s)),
            ["InvalidAggregation"]
        );
    }

    #[test]
    fn readiness_failing_beyond_the_grace_period_is_degraded() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                1000,
                container(false, running(), None),
            )],
            ..Observed::default()
        };
        let grace = i64::try_from(READINESS_GRACE.as_secs()).unwrap();
        let within = compute(&tp, &observed, at(1000 + grace - 1));
        assert_eq!(state(&within, PROGRESSING), ("True", "PodsStarting"));
        assert_eq!(state(&within, DEGRADED), ("False", "AsExpected"));

        let beyond = compute(&tp, &observed, at(1000 + grace));
        assert_eq!(state(&beyond, DEGRADED), ("True", "IngestPodNotReady"));
        assert_eq!(
            cond(&beyond, DEGRADED).message,
            "pod pipe-ingest-a: not ready since 1970-01-01T00:16:40Z: container ingest is running but not ready (an ingest pod is ready once it reaches Redis at redis://cache:6379)"
        );
        assert_eq!(state(&beyond, READY), ("False", "IngestPodNotReady"));
        assert_eq!(state(&beyond, PROGRESSING), ("False", "Stalled"));

        // Much later: the same status, so nothing to write.
        let tp = tp.with_status(beyond.clone());
        assert_eq!(compute(&tp, &observed, at(1000 + 10 * grace)), beyond);
    }

    #[test]
    fn a_failing_redis_pod_is_degraded_and_explains_why_redis_is_not_ready() {
        let tp = TelemetryPipeline::test();
        let mut redis_pod = pod(
            "pipe-redis-0",
            false,
            100,
            container(
                false,
                waiting("ImagePullBackOff", "Back-off pulling image \"redis:7.9\""),
                None,
            ),
        );
        redis_pod
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .name = "redis".into();
        let observed = Observed {
            redis: Some(redis_sts(0)),
            redis_pods: vec![redis_pod],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![pod(
                "pipe-ingest-a",
                false,
                100,
                container(
                    false,
                    waiting("ContainerCreating", "waiting for Redis"),
                    None,
                ),
            )],
            ..Observed::default()
        };
        let s = compute(&tp, &observed, at(110));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisPodFailing"));
        assert_eq!(state(&s, READY), ("False", "RedisPodFailing"));
        assert_eq!(
            cond(&s, READY).message,
            "pod pipe-redis-0: container redis: ImagePullBackOff: Back-off pulling image \"redis:7.9\""
        );
        assert_eq!(state(&s, REDIS_READY), ("False", "PodFailing"));
        // The ingest pod waits for Redis, which is progress on its side.
        assert_eq!(state(&s, PROGRESSING), ("True", "PodsStarting"));
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let tp = TelemetryPipeline::test();
        let mut old = pod(
            "pipe-ingest-old",
            false,
            0,
            container(false, waiting("CrashLoopBackOff", ""), Some(exited(2))),
        );
        old.metadata.deletion_timestamp = Some(at(90));
        let mut evicted = pod(
            "pipe-ingest-evicted",
            false,
            0,
            container(false, exited(137), None),
        );
        evicted.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut observed = healthy();
        observed.ingest_pods.extend([old, evicted]);
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, READY), ("True", "Ready"));
        assert_eq!(state(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(state(&s, PROGRESSING), ("False", "Complete"));
    }

    #[test]
    fn a_fix_rolling_out_next_to_a_failing_pod_is_progressing_and_still_degraded() {
        let tp = TelemetryPipeline::test();
        let observed = Observed {
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![
                pod(
                    "pipe-ingest-broken",
                    false,
                    0,
                    container(false, waiting("ErrImagePull", "not found"), None),
                ),
                pod(
                    "pipe-ingest-fixed",
                    false,
                    95,
                    container(false, running(), None),
                ),
            ],
            ..healthy()
        };
        let mut observed = observed;
        observed
            .deployment
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .replicas = Some(2);
        let s = compute(&tp, &observed, at(100));
        assert_eq!(state(&s, PROGRESSING), ("True", "RollingOut"));
        assert_eq!(state(&s, DEGRADED), ("True", "IngestPodFailing"));
        assert!(
            cond(&s, DEGRADED)
                .message
                .starts_with("pod pipe-ingest-broken: container ingest: ErrImagePull")
        );
    }

    #[test]
    fn external_redis_is_reported_as_such_with_its_endpoint() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            ..healthy()
        };
        let s = compute(&tp, &observed, at(100));
        assert_eq!(cond(&s, REDIS_READY).reason, "External");
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(s.redis_endpoint.as_deref(), Some("redis://cache:6379"));
        assert!(SecretRef::all_of(&tp).is_empty());
    }

    #[test]
    fn paused_is_reported_as_a_condition() {
        let tp = TelemetryPipeline::test().paused();
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(state(&s, PAUSED), ("True", "Paused"));
    }

    #[test]
    fn recomputing_from_the_same_observations_gives_an_equal_status() {
        let crash_looping = Observed {
            deployment: Some(deployment(2, 1, 2)),
            ingest_pods: vec![
                ready_pod("pipe-ingest-a"),
                pod(
                    "pipe-ingest-b",
                    false,
                    50,
                    container(
                        false,
                        waiting("CrashLoopBackOff", "back-off"),
                        Some(exited(1)),
                    ),
                ),
            ],
            ..healthy()
        };
        for observed in [healthy(), Observed::default(), crash_looping] {
            let tp = TelemetryPipeline::test();
            let first = compute(&tp, &observed, at(100));
            let tp = tp.with_status(first.clone());
            let second = compute(&tp, &observed, at(200));
            assert_eq!(first, second, "no write when nothing changed");
            assert!(transition_events(Some(&first), &second).is_empty());
        }
    }

    #[test]
    fn last_transition_time_moves_only_when_the_status_flips() {
        let tp = TelemetryPipeline::test();
        let ready = compute(&tp, &healthy(), at(100));
        let tp = tp.with_status(ready);
        let observed = Observed {
            deployment: Some(deployment(2, 1, 2)),
            ..healthy()
        };
        let s = compute(&tp, &observed, at(200));
        assert_eq!(cond(&s, INGEST_READY).last_transition_time, at(200));
        assert_eq!(cond(&s, PROGRESSING).last_transition_time, at(200));
        assert_eq!(cond(&s, REDIS_READY).last_transition_time, at(100));
        assert_eq!(cond(&s, DEGRADED).last_transition_time, at(100));
    }

    #[test]
    fn autoscaler_fields_are_left_to_the_autoscaler() {
        let old = TelemetryPipelineStatus {
            autoscaling: Some(crate::crd::AutoscalingStatus {
                desired_replicas: Some(7),
                current_queue_depth: Some(1234),
                last_scale_time: Some(at(50)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tp = TelemetryPipeline::test().with_status(old);
        let s = compute(&tp, &healthy(), at(100));
        assert_eq!(s.autoscaling, None);
    }

    #[test]
    fn events_for_ready_degraded_paused_and_resumed() {
        let tp = TelemetryPipeline::test();
        let not_created = compute(&tp, &Observed::default(), at(1));
        assert!(
            transition_events(None, &not_created).is_empty(),
            "a new pipeline is not news"
        );

        let ready = compute(&tp, &healthy(), at(2));
        let ev = transition_events(Some(&not_created), &ready);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].type_, ev[0].reason.as_str()),
            (EventType::Normal, "Ready")
        );
        assert!(transition_events(Some(&ready), &ready).is_empty());

        // Redis restarting is not ready, not degraded: no event.
        let restarting = compute(
            &tp,
            &Observed {
                redis: Some(redis_sts(0)),
                redis_pods: vec![pod(
                    "pipe-redis-0",
                    false,
                    3,
                    container(false, running(), None),
                )],
                ..healthy()
            },
            at(3),
        );
        assert_eq!(state(&restarting, READY), ("False", "RedisPodsStarting"));
        assert!(transition_events(Some(&ready), &restarting).is_empty());

        // A problem is a Warning, once per reason.
        let broken = |reason: &str| {
            compute(
                &tp,
                &Observed {
                    problem: Some(Problem {
                        reason: reason.into(),
                        message: format!("{reason} happened"),
                    }),
                    ..healthy()
                },
                at(4),
            )
        };
        let forbidden = broken("Forbidden");
        let ev = transition_events(Some(&ready), &forbidden);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].type_, ev[0].reason.as_str(), ev[0].note.as_str()),
            (EventType::Warning, "Forbidden", "Forbidden happened")
        );
        assert!(transition_events(Some(&forbidden), &forbidden).is_empty());
        assert_eq!(
            warnings(&transition_events(
                Some(&forbidden),
                &broken("ApplyRejected")
            )),
            ["ApplyRejected"]
        );
        let ev = transition_events(Some(&forbidden), &ready);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Ready"],
            "recovering is a Normal Ready event"
        );

        let paused = compute(&tp.clone().paused(), &healthy(), at(4));
        let ev = transition_events(Some(&ready), &paused);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Paused"]
        );
        let ev = transition_events(Some(&paused), &ready);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Resumed"]
        );
    }
}
