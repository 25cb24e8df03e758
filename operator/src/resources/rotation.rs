//! Password rotation: the pod templates carry the version of the Redis
//! password Secret, so a changed password rolls the pods that use it —
//! Redis first, then the ingest pods once Redis runs with the new password.
//!
//! The version is the Secret's `resourceVersion` (uid-qualified), never a
//! digest of the password: a pod annotation is readable by whoever may read
//! pods, which is often more people than may read Secrets.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use kube::ResourceExt;

/// Pod-template annotation: the version of the Redis password the pods were
/// started with.
pub const PASSWORD_VERSION_ANNOTATION: &str = "telemetrypipeline.io/redis-password-version";

/// The version of a Secret's content as the apiserver counts it.
pub fn secret_version(secret: &Secret) -> Option<String> {
    let uid = secret.uid()?;
    let rv = secret.resource_version()?;
    Some(format!("{uid}/{rv}"))
}

/// Sets the annotation on a pod template.
pub fn stamp(template: &mut PodTemplateSpec, version: &str) {
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(PASSWORD_VERSION_ANNOTATION.to_string(), version.to_string());
}

/// The annotation of a pod template, if any.
fn stamped(template: Option<&PodTemplateSpec>) -> Option<&str> {
    template?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(PASSWORD_VERSION_ANNOTATION)
        .map(String::as_str)
}

/// Whether the Redis StatefulSet runs `version` on every replica: its
/// template carries it, the controller has seen that template, every pod
/// is of the current revision and ready.
pub fn redis_runs(sts: &StatefulSet, version: &str) -> bool {
    let Some(spec) = sts.spec.as_ref() else {
        return false;
    };
    let Some(status) = sts.status.as_ref() else {
        return false;
    };
    let replicas = spec.replicas.unwrap_or(1);
    stamped(Some(&spec.template)) == Some(version)
        && status.observed_generation >= sts.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.ready_replicas.unwrap_or(0) == replicas
}

/// The password version the ingest pods get.
///
/// With a managed Redis (`redis` is its StatefulSet as applied) the ingest
/// pods move to `version` only once Redis runs it, and keep what the live
/// Deployment has until then; a new Deployment starts at `version`. With an
/// external Redis the pods follow the Secret at once.
pub fn ingest_version(
    version: Option<&str>,
    redis: Option<&StatefulSet>,
    live: Option<&Deployment>,
) -> Option<String> {
    let version = version?;
    let live = live.and_then(|d| stamped(d.spec.as_ref().map(|s| &s.template)));
    match (redis, live) {
        (Some(sts), Some(live)) if !redis_runs(sts, version) => Some(live.to_string()),
        _ => Some(version.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn template(version: Option<&str>) -> PodTemplateSpec {
        let mut t = PodTemplateSpec::default();
        if let Some(v) = version {
            stamp(&mut t, v);
        }
        t
    }

    fn sts(version: &str, generation: i64, status: StatefulSetStatus) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                template: template(Some(version)),
                ..StatefulSetSpec::default()
            }),
            status: Some(status),
        }
    }

    fn rolled(generation: i64) -> StatefulSetStatus {
        StatefulSetStatus {
            observed_generation: Some(generation),
            current_revision: Some("r2".into()),
            update_revision: Some("r2".into()),
            updated_replicas: Some(1),
            ready_replicas: Some(1),
            replicas: 1,
            ..StatefulSetStatus::default()
        }
    }

    fn deployment(version: Option<&str>) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                template: template(version),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn the_version_is_the_secrets_uid_and_resource_version_not_its_content() {
        let mut s = Secret::default();
        assert_eq!(secret_version(&s), None);
        s.metadata.uid = Some("u".into());
        s.metadata.resource_version = Some("42".into());
        assert_eq!(secret_version(&s).as_deref(), Some("u/42"));
    }

    #[test]
    fn redis_runs_a_version_only_once_rolled_out_and_ready() {
        assert!(redis_runs(&sts("v2", 3, rolled(3)), "v2"));
        // Another version in the template.
        assert!(!redis_runs(&sts("v1", 3, rolled(3)), "v2"));
        // The controller has not seen the new template yet.
        assert!(!redis_runs(&sts("v2", 4, rolled(3)), "v2"));
        // The pod of the new revision is not there or not ready yet.
        let rolling = StatefulSetStatus {
            current_revision: Some("r1".into()),
            ..rolled(3)
        };
        assert!(!redis_runs(&sts("v2", 3, rolling), "v2"));
        let unready = StatefulSetStatus {
            ready_replicas: Some(0),
            ..rolled(3)
        };
        assert!(!redis_runs(&sts("v2", 3, unready), "v2"));
    }

    #[test]
    fn ingest_follows_redis_after_it_rolled_and_an_external_secret_at_once() {
        let live = deployment(Some("v1"));
        let rolling = sts("v2", 4, rolled(3));
        // Managed Redis still rolling: the ingest pods keep v1.
        assert_eq!(
            ingest_version(Some("v2"), Some(&rolling), Some(&live)).as_deref(),
            Some("v1")
        );
        // Redis runs v2: now the ingest pods.
        let done = sts("v2", 4, rolled(4));
        assert_eq!(
            ingest_version(Some("v2"), Some(&done), Some(&live)).as_deref(),
            Some("v2")
        );
        // A new Deployment, or one from before the annotation existed.
        assert_eq!(
            ingest_version(Some("v2"), Some(&rolling), None).as_deref(),
            Some("v2")
        );
        assert_eq!(
            ingest_version(Some("v2"), Some(&rolling), Some(&deployment(None))).as_deref(),
            Some("v2")
        );
        // External Redis: at once.
        assert_eq!(
            ingest_version(Some("v2"), None, Some(&live)).as_deref(),
            Some("v2")
        );
        // No Secret (an external Redis without a password).
        assert_eq!(ingest_version(None, None, Some(&live)), None);
    }
}
