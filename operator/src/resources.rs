//! The desired children of a pipeline, as pure functions of its spec.
//!
//! Nothing here talks to the apiserver: [`reconcile`](crate::reconcile) feeds
//! these objects to server-side apply under [`FIELD_MANAGER`]. Every child
//! carries the standard `app.kubernetes.io/*` labels and a controller
//! ownerReference to the pipeline, so the garbage collector removes it with
//! the pipeline and the controller's watches map it back.
//!
//! - [`redis`]: Secret, redis.conf ConfigMap, headless and client Services,
//!   StatefulSet (managed mode only).
//! - [`ingest`]: the aggregation ConfigMap, the Deployment and its Service.
//! - [`disruption`]: the PodDisruptionBudgets of ingest and the managed Redis.
//! - [`network`]: the NetworkPolicies of ingest and the managed Redis.
//! - [`rotation`]: the Redis password version on the pod templates, so that a
//!   new password rolls Redis and then the ingest pods.

pub mod disruption;
pub mod ingest;
pub mod network;
pub mod redis;
pub mod rotation;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecretKeySelector, SecurityContext,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::TelemetryPipeline;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "telemetry-operator";
/// The field manager that owns the ingest Deployment's `spec.replicas` while
/// autoscaling is enabled (the autoscaler writes `/scale` under it).
pub const AUTOSCALER_MANAGER: &str = "telemetry-operator-autoscaler";
/// `app.kubernetes.io/managed-by` value of every child.
pub const MANAGED_BY: &str = "telemetry-operator";
/// `app.kubernetes.io/part-of` value of every child.
pub const PART_OF: &str = "telemetry-pipeline";

/// Label: the application a child belongs to (`telemetry-ingest`, `redis`).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: the pipeline's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label: the child's role (`ingest`, `redis`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label: the higher-level application.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Label: who manages the child.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// UID and GID the ingest container runs as (the distroless "nonroot" user).
pub const INGEST_UID: i64 = 65532;
/// UID and GID of the `redis` user in the official Redis image.
pub const REDIS_UID: i64 = 999;

/// Which part of the pipeline a child belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The ingest Deployment, its ConfigMap and Service.
    Ingest,
    /// The managed Redis and its Secret, ConfigMap and Services.
    Redis,
}

impl Component {
    /// `app.kubernetes.io/component`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Ingest => "ingest",
            Component::Redis => "redis",
        }
    }

    /// `app.kubernetes.io/name`.
    pub fn app_name(self) -> &'static str {
        match self {
            Component::Ingest => "telemetry-ingest",
            Component::Redis => "redis",
        }
    }
}

/// The labels that select a component's pods (stable: a Deployment's or
/// StatefulSet's selector can never change).
pub fn selector_labels(tp: &TelemetryPipeline, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), component.app_name().to_string()),
        (LABEL_INSTANCE.to_string(), tp.name_any()),
    ])
}

/// [`selector_labels`] as a label selector string, e.g. for listing the pods.
pub fn selector_string(tp: &TelemetryPipeline, component: Component) -> String {
    selector_labels(tp, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// All standard labels of a component's objects.
pub fn labels(tp: &TelemetryPipeline, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(tp, component);
    labels.insert(LABEL_COMPONENT.to_string(), component.as_str().to_string());
    labels.insert(LABEL_PART_OF.to_string(), PART_OF.to_string());
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels
}

/// The label selector (as a string) that lists every child of `tp`.
pub fn children_selector(tp: &TelemetryPipeline) -> String {
    format!(
        "{LABEL_INSTANCE}={},{LABEL_MANAGED_BY}={MANAGED_BY}",
        tp.name_any()
    )
}

/// The controller ownerReference every child carries.
pub fn owner_reference(tp: &TelemetryPipeline) -> OwnerReference {
    OwnerReference {
        // Foreground deletion of the pipeline waits for its children.
        block_owner_deletion: Some(true),
        ..tp.controller_owner_ref(&())
            .expect("a pipeline read from the apiserver has a name and uid")
    }
}

/// Metadata of a child: name, namespace, labels and the ownerReference.
pub fn child_meta(tp: &TelemetryPipeline, component: Component, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: tp.namespace(),
        labels: Some(labels(tp, component)),
        owner_references: Some(vec![owner_reference(tp)]),
        ..ObjectMeta::default()
    }
}

/// Whether `obj` is controlled by `tp` (by uid, so a re-created pipeline of the
/// same name does not adopt its predecessor's leftovers by accident).
pub fn is_controlled_by<K: Resource>(obj: &K, tp: &TelemetryPipeline) -> bool {
    let uid = tp.meta().uid.as_deref();
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Names of the children, all derived from the pipeline's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Redis Secret, ConfigMap, client Service and StatefulSet.
    pub redis: String,
    /// Headless Service that governs the StatefulSet.
    pub redis_headless: String,
    /// Ingest ConfigMap, Deployment and Service.
    pub ingest: String,
}

impl Names {
    /// The children names of `tp`.
    pub fn of(tp: &TelemetryPipeline) -> Self {
        let name = tp.name_any();
        Self {
            redis: format!("{name}-redis"),
            redis_headless: format!("{name}-redis-headless"),
            ingest: format!("{name}-ingest"),
        }
    }
}

/// Where the ingest pods find Redis and its password.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisConnection {
    /// `redis://HOST:PORT`, without credentials.
    pub url: String,
    /// The Secret key holding the password, if Redis needs one.
    pub password: Option<SecretKeySelector>,
    /// The ACL user, if not `default`.
    pub username: Option<String>,
    /// The Secret key holding the PEM CA certificates of a `rediss://` URL.
    pub ca: Option<SecretKeySelector>,
    /// Set when the pipeline is on a Redis Cluster.
    pub cluster: Option<ClusterConnection>,
}

/// How the ingest pods use a Redis Cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConnection {
    /// `HOST:PORT` of a node the pods learn the others from: the managed
    /// cluster's client Service (any of its pods), or the external url's.
    pub seed: String,
    /// The pipeline's partitions (`spec.redis.partitions`).
    pub partitions: i32,
    /// Replicas that must hold a flush before it is acknowledged.
    pub wait_replicas: i32,
}

impl ClusterConnection {
    fn of(tp: &TelemetryPipeline, url: &str) -> Option<Self> {
        if !tp.spec.redis.is_cluster() {
            return None;
        }
        let seed = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let wait_replicas = tp
            .spec
            .redis
            .managed()
            .map_or(0, |m| m.replicas_per_shard.min(1));
        Some(Self {
            seed,
            partitions: tp.spec.redis.partitions,
            wait_replicas,
        })
    }
}

impl RedisConnection {
    /// The connection the spec asks for: the managed Redis' client Service and
    /// generated Secret, or the external URL and its Secret reference.
    pub fn of(tp: &TelemetryPipeline) -> Self {
        let mut conn = match &tp.spec.redis.external {
            Some(ext) => Self {
                url: ext.url.clone(),
                password: ext.password_secret_ref.as_ref().map(|r| SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: None,
                }),
                username: ext.username.clone(),
                ca: ext.tls.as_ref().map(|tls| SecretKeySelector {
                    name: tls.ca_secret_ref.name.clone(),
                    key: tls.ca_secret_ref.key.clone(),
                    optional: None,
                }),
                cluster: None,
            },
            None => Self {
                url: redis::url(tp),
                password: Some(SecretKeySelector {
                    name: Names::of(tp).redis,
                    key: crate::crd::redis::PASSWORD_KEY.to_string(),
                    optional: None,
                }),
                username: None,
                ca: None,
                cluster: None,
            },
        };
        conn.cluster = ClusterConnection::of(tp, &conn.url);
        conn
    }
}

/// A mount of volume `name` at `path`; read-only for what the pod only reads
/// (config, Secrets).
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// Pod security context: not root, a fixed uid/gid owning the volumes, and the
/// runtime's default seccomp profile.
pub fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container security context: read-only root filesystem, no privilege
/// escalation, every capability dropped.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_after_the_pipeline() {
        let tp = TelemetryPipeline::test();
        let names = Names::of(&tp);
        assert_eq!(names.redis, "pipe-redis");
        assert_eq!(names.redis_headless, "pipe-redis-headless");
        assert_eq!(names.ingest, "pipe-ingest");
    }

    #[test]
    fn child_meta_has_standard_labels_and_a_controller_owner_reference() {
        let tp = TelemetryPipeline::test();
        let meta = child_meta(&tp, Component::Ingest, "x".into());
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        let labels = meta.labels.unwrap();
        assert_eq!(labels[LABEL_NAME], "telemetry-ingest");
        assert_eq!(labels[LABEL_INSTANCE], "pipe");
        assert_eq!(labels[LABEL_COMPONENT], "ingest");
        assert_eq!(labels[LABEL_PART_OF], "telemetry-pipeline");
        assert_eq!(labels[LABEL_MANAGED_BY], "telemetry-operator");
        let owners = meta.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "TelemetryPipeline");
        assert_eq!(owners[0].api_version, "telemetrypipeline.io/v1alpha1");
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
    }

    #[test]
    fn is_controlled_by_matches_the_owner_uid_only() {
        let tp = TelemetryPipeline::test();
        let mut cm = k8s_openapi::api::core::v1::ConfigMap {
            metadata: child_meta(&tp, Component::Ingest, "x".into()),
            ..Default::default()
        };
        assert!(is_controlled_by(&cm, &tp));
        cm.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert!(!is_controlled_by(&cm, &tp));
    }

    #[test]
    fn managed_redis_connection_uses_the_client_service_and_generated_secret() {
        let tp = TelemetryPipeline::test();
        let conn = RedisConnection::of(&tp);
        assert_eq!(conn.url, "redis://pipe-redis.ns.svc:6379");
        let pw = conn.password.unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("pipe-redis", "password")
        );
    }

    #[test]
    fn external_redis_connection_uses_the_users_url_and_secret() {
        let tp = TelemetryPipeline::test()
            .with_external_redis("redis://cache.example:6380", Some("creds"));
        let conn = RedisConnection::of(&tp);
        assert_eq!(conn.url, "redis://cache.example:6380");
        let pw = conn.password.unwrap();
        assert_eq!((pw.name.as_str(), pw.key.as_str()), ("creds", "password"));
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", None);
        assert_eq!(RedisConnection::of(&tp).password, None);
        assert_eq!(RedisConnection::of(&tp).cluster, None);
    }

    #[test]
    fn a_cluster_is_reached_through_a_seed_with_the_partitions_and_replicas_to_wait_for() {
        assert_eq!(
            RedisConnection::of(&TelemetryPipeline::test()).cluster,
            None
        );
        let conn = RedisConnection::of(&TelemetryPipeline::test().with_shards(3, 2));
        assert_eq!(
            conn.cluster,
            Some(ClusterConnection {
                seed: "pipe-redis.ns.svc:6379".into(),
                partitions: 12,
                wait_replicas: 1,
            })
        );
        let conn = RedisConnection::of(&TelemetryPipeline::test().with_shards(3, 0));
        assert_eq!(conn.cluster.unwrap().wait_replicas, 0);
        let mut tp = TelemetryPipeline::test().with_external_redis("redis://cfg.cache:6379", None);
        tp.spec.redis.external.as_mut().unwrap().cluster = true;
        tp.spec.redis.partitions = 48;
        let cluster = RedisConnection::of(&tp).cluster.unwrap();
        assert_eq!(
            (
                cluster.seed.as_str(),
                cluster.partitions,
                cluster.wait_replicas
            ),
            ("cfg.cache:6379", 48, 0)
        );
    }
}
