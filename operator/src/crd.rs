//! The `TelemetryPipeline` custom resource (`telemetrypipeline.io/v1alpha1`).
//!
//! The Rust types are the source of truth: `crdgen` renders [`crd()`] into
//! `crds/telemetrypipelines.yaml`, and a unit test fails when the committed file
//! drifts. Every field carries a doc comment (it becomes the `kubectl explain`
//! text), a default where one makes sense, and schema bounds; rules that span
//! fields are CEL expressions (`x-kubernetes-validations`) with messages meant
//! for the person who wrote the YAML.
//!
//! - [`ingest`]: `spec.ingest`, the ingest Deployment and its Service.
//! - [`autoscaling`]: `spec.autoscaling`, the schema of docs/autoscaling.md.
//! - [`redis`]: `spec.redis`, managed (StatefulSet) or external Redis.
//! - [`disruption`]: the PodDisruptionBudget settings of ingest and Redis.
//! - [`network`]: `spec.networkPolicy`, who may reach Redis and ingest.
//! - [`limits`]: `spec.ingest.limits`, the connection, stream and size
//!   limits of the ingest pods.
//! - [`tls`]: `spec.ingest.tls`, the Secret the ingest pods serve TLS with.
//! - [`auth`]: `spec.ingest.auth`, the Secret of the ingest pods' API keys.
//! - this file: the root spec, the status, and the generated definition.

pub mod auth;
pub mod autoscaling;
pub mod disruption;
pub mod ingest;
pub mod limits;
pub mod network;
pub mod redis;
pub mod tls;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use telemetry_config::AggregationConfig;

pub use auth::IngestAuth;
pub use autoscaling::{AutoscalingSpec, AutoscalingStatus};
pub use disruption::DisruptionBudget;
pub use ingest::IngestSpec;
pub use limits::IngestLimits;
pub use network::NetworkPolicySpec;
pub use redis::RedisSpec;
pub use tls::{IngestTls, TlsSecretRef};

/// API group of the custom resource.
pub const GROUP: &str = "telemetrypipeline.io";
/// Its one served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// Longest `metadata.name`: the longest child name (`NAME-redis-headless`) and
/// the StatefulSet's `controller-revision-hash` label must stay within 63.
pub const NAME_MAX_LEN: usize = 45;
/// The command that regenerates the committed CRD files: `crds/` and the
/// Helm chart's copy.
pub const REGENERATE: &str = "make crds";
/// Where the CRD is committed, relative to the repository root.
pub const COMMITTED: [&str; 2] = [
    "crds/telemetrypipelines.yaml",
    "charts/telemetry-pipeline/crds/telemetrypipelines.yaml",
];

/// A telemetry pipeline: ingest pods that validate, aggregate and store events
/// in Redis, and the Redis they write to. The operator creates and maintains a
/// Redis StatefulSet (or uses an external Redis) and a Deployment of ingest
/// pods from this resource, and reports their state in `status`.
// Two printer columns are integers; clippy mistakes the repeated
// `type_ = "integer"` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetrypipeline.io",
    version = "v1alpha1",
    kind = "TelemetryPipeline",
    plural = "telemetrypipelines",
    shortname = "tpl",
    category = "telemetry",
    namespaced,
    status = "TelemetryPipelineStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A telemetry pipeline: a Redis (managed StatefulSet or external) and a Deployment of ingest pods, configured from one resource.",
    scale(
        spec_replicas_path = ".spec.ingest.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Redis and every ingest replica are ready"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Ingest pods that exist"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.autoscaling.desiredReplicas",
        description = "Ingest replicas the autoscaler decided on at its last tick"
    ),
    printcolumn(
        name = "Min",
        type_ = "integer",
        json_path = ".spec.autoscaling.minReplicas",
        description = "Fewest ingest replicas the autoscaler keeps"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.autoscaling.maxReplicas",
        description = "Most ingest replicas the autoscaler runs"
    ),
    printcolumn(
        name = "Queue",
        type_ = "integer",
        json_path = ".status.autoscaling.currentQueueDepth",
        description = "Events accepted but not yet stored, summed over ingest pods at the autoscaler's last tick"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryPipelineSpec {
    /// The ingest pods: image, replicas, ports, resources and pod overrides.
    #[serde(default)]
    pub ingest: IngestSpec,

    /// Queue-depth based autoscaling of the ingest Deployment. When present and
    /// enabled, the operator owns the Deployment's replica count (within
    /// minReplicas..maxReplicas) and `ingest.replicas` is ignored; when absent
    /// or disabled, `ingest.replicas` is applied as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Where events are stored: a Redis managed by the operator (the default)
    /// or an external one.
    #[serde(default)]
    pub redis: RedisSpec,

    /// What the ingest pods aggregate (counters, dedup, recent events, windows,
    /// leaderboards). Changes reach running pods without a restart: the
    /// operator rewrites the mounted config file and the pods reload it.
    #[serde(default)]
    pub aggregation: AggregationConfig,

    /// When true the operator changes nothing for this pipeline (no child is
    /// created, updated, scaled or deleted) and reports `Paused=True`.
    #[serde(default)]
    pub paused: bool,

    /// NetworkPolicies for the pipeline's pods: on by default, Redis reachable
    /// only from the ingest pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

/// The observed state of a pipeline, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryPipelineStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state, as conditions: `Ready` (serving; if not, its reason says
    /// why), `RedisReady`, `IngestReady`, `Progressing` (children being
    /// created, rolled out or scaled), `Degraded` (something is wrong that
    /// waiting will not fix; its reason says what) and `Paused`; with
    /// autoscaling also `ScalingActive`, `ScalingLimited` and `FallbackActive`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Ingest pods that exist (the Deployment's status.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Ingest pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the ingest pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The Redis the ingest pods write to, without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_endpoint: Option<String>,

    /// The managed Redis Cluster of a sharded pipeline: shards, slot
    /// coverage and what the operator is doing to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<redis::RedisClusterStatus>,

    /// What the autoscaler saw and decided, with the history it keeps across
    /// operator restarts (present while autoscaling is enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

impl TelemetryPipeline {
    /// Whether the operator owns the ingest replica count (autoscaling present
    /// and enabled).
    pub fn autoscaling_enabled(&self) -> bool {
        self.spec.autoscaling.as_ref().is_some_and(|a| a.enabled)
    }

    /// The condition of this type, if the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// The CustomResourceDefinition, with the rules the derive cannot place: the
/// root-level rule on `metadata.name`, which every child name is built from.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = TelemetryPipeline::crd();
    let name_rules = serde_json::json!([
        {
            "rule": format!("size(self.metadata.name) <= {NAME_MAX_LEN}"),
            "message": format!("metadata.name must be at most {NAME_MAX_LEN} characters: child objects such as NAME-redis-headless must fit in 63"),
        },
        {
            "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must be a DNS label starting with a letter (lowercase letters, digits and '-'), because Services are named after it",
        }
    ]);
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let rules = serde_json::from_value(name_rules.clone()).expect("static rules deserialize");
        schema.x_kubernetes_validations = Some(rules);
    }
    crd
}

/// The YAML text `crdgen` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("the CRD serialises to YAML");
    format!("# Generated from operator/src/crd.rs by `{REGENERATE}`. Do not edit.\n---\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_rust_types() {
        for file in COMMITTED {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == crd_yaml(),
                "{file} is out of date with operator/src/crd.rs; regenerate it with:\n    {REGENERATE}"
            );
        }
    }

    #[test]
    fn crd_has_names_subresources_and_printer_columns() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("telemetrypipelines.telemetrypipeline.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["tpl".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.ingest.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let columns: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Ready", "Replicas", "Desired", "Min", "Max", "Queue", "Age"]
        );
    }

    #[test]
    fn every_spec_property_has_a_description() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
                if let Some(items) = schema.get("items") {
                    walk(&format!("{path}[]"), items, missing);
                }
                return;
            };
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop.get("description").is_none() {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        let crd = serde_json::to_value(crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        walk("spec", spec, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }

    /// The CEL rules, evaluated offline by kube's CEL interpreter on the
    /// generated schema (defaults applied first, as the apiserver does).
    mod cel {
        use super::*;
        use serde_json::{Value, json};

        fn schema() -> Value {
            let crd = serde_json::to_value(crd()).unwrap();
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
        }

        fn check(obj: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
            kube::core::cel::Validator::new()
                .validate(&schema(), obj, old)
                .map_err(|e| e.into_vec().into_iter().map(|e| e.message).collect())
        }

        fn pipeline(spec: Value) -> Value {
            json!({
                "apiVersion": "telemetrypipeline.io/v1alpha1",
                "kind": "TelemetryPipeline",
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": spec,
            })
        }

        fn rejected_with(obj: &Value, old: Option<&Value>, needle: &str) {
            let errors = check(obj, old).expect_err("the rules must reject this object");
            assert!(
                errors.iter().any(|m| m.contains(needle)),
                "expected a message containing {needle:?}, got {errors:?}"
            );
        }

        fn example(file: &str) -> Value {
            let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            serde_yaml::from_str(&text).unwrap()
        }

        #[test]
        fn examples_pass_the_rules_and_parse_into_the_types() {
            for file in [
                "pipeline-minimal.yaml",
                "pipeline-full.yaml",
                "pipeline-kind.yaml",
                "pipeline-sharded.yaml",
            ] {
                let obj = example(file);
                check(&obj, None).unwrap_or_else(|e| panic!("{file}: {e:?}"));
                let tp: TelemetryPipeline = serde_json::from_value(obj).unwrap();
                tp.spec.aggregation.validate().unwrap();
            }
            let full: TelemetryPipeline =
                serde_json::from_value(example("pipeline-full.yaml")).unwrap();
            assert!(full.autoscaling_enabled());
            assert_eq!(full.spec.aggregation.windows.len(), 2);
        }

        #[test]
        fn min_replicas_above_max_is_rejected_with_a_clear_message() {
            let obj = pipeline(
                json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetQueueDepthPerPod": 100}}),
            );
            rejected_with(
                &obj,
                None,
                "maxReplicas must be greater than or equal to autoscaling.minReplicas",
            );
            let ok = pipeline(
                json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 2, "targetQueueDepthPerPod": 100}}),
            );
            check(&ok, None).unwrap();
        }

        #[test]
        fn max_unavailable_is_a_count_or_a_percentage() {
            let message = "podDisruptionBudget.maxUnavailable must be a count >= 0 or a percentage";
            for bad in [
                json!("abc"),
                json!("150%"),
                json!(-1),
                json!("1.5"),
                json!("3"),
            ] {
                rejected_with(
                    &pipeline(json!({"ingest": {"podDisruptionBudget": {"maxUnavailable": bad}}})),
                    None,
                    message,
                );
            }
            rejected_with(
                &pipeline(
                    json!({"redis": {"managed": {"podDisruptionBudget": {"maxUnavailable": "x%"}}}}),
                ),
                None,
                message,
            );
            for good in [json!(0), json!(2), json!("25%"), json!("100%"), json!("0%")] {
                check(
                    &pipeline(json!({"ingest": {"podDisruptionBudget": {"maxUnavailable": good}}})),
                    None,
                )
                .unwrap();
            }
        }

        #[test]
        fn policies_are_required_unless_the_direction_is_disabled() {
            let obj = pipeline(
                json!({"autoscaling": {"maxReplicas": 2, "targetQueueDepthPerPod": 1,
                "behavior": {"scaleDown": {"policies": []}}}}),
            );
            rejected_with(&obj, None, "scaleDown.policies needs at least one policy");
            let obj = pipeline(
                json!({"autoscaling": {"maxReplicas": 2, "targetQueueDepthPerPod": 1,
                "behavior": {"scaleDown": {"policies": [], "selectPolicy": "Disabled"}}}}),
            );
            check(&obj, None).unwrap();
        }

        #[test]
        fn tolerance_of_one_or_more_is_rejected() {
            let obj = pipeline(
                json!({"autoscaling": {"maxReplicas": 2, "targetQueueDepthPerPod": 1,
                "tolerance": {"scaleUp": 1.0}}}),
            );
            rejected_with(&obj, None, "scaleUp must be in [0, 1)");
        }

        #[test]
        fn node_ports_need_a_node_port_or_load_balancer_service_and_must_differ() {
            let svc = |service: Value| pipeline(json!({"ingest": {"service": service}}));
            rejected_with(
                &svc(json!({"nodePorts": {"http": 30080}})),
                None,
                "ingest.service.nodePorts needs ingest.service.type NodePort or LoadBalancer",
            );
            rejected_with(
                &svc(json!({"type": "NodePort", "nodePorts": {"grpc": 30080, "http": 30080}})),
                None,
                "nodePorts.grpc and ingest.service.nodePorts.http must differ",
            );
            check(
                &svc(json!({"type": "NodePort", "nodePorts": {"grpc": 30051, "http": 30080}})),
                None,
            )
            .unwrap();
            check(
                &svc(json!({"type": "LoadBalancer", "nodePorts": {"http": 30080}})),
                None,
            )
            .unwrap();
        }

        #[test]
        fn managed_and_external_redis_together_are_rejected() {
            let obj =
                pipeline(json!({"redis": {"managed": {}, "external": {"url": "redis://r:6379"}}}));
            rejected_with(&obj, None, "either managed or external");
        }

        #[test]
        fn credentials_in_the_external_url_are_rejected() {
            let obj = pipeline(json!({"redis": {"external": {"url": "redis://:secret@r:6379"}}}));
            rejected_with(&obj, None, "must not carry credentials");
        }

        #[test]
        fn external_redis_tls_needs_a_rediss_url() {
            let with = |url: &str| {
                pipeline(json!({"redis": {"external": {
                    "url": url,
                    "username": "ingest",
                    "tls": {"caSecretRef": {"name": "redis-ca"}}
                }}}))
            };
            check(&with("rediss://r:6380"), None).unwrap();
            rejected_with(&with("redis://r:6379"), None, "needs a rediss:// url");
        }

        #[test]
        fn redis_directives_the_operator_sets_or_spanning_lines_are_rejected() {
            let with = |name: &str, value: &str| {
                pipeline(
                    json!({"redis": {"managed": {"config": [{"name": name, "value": value}]}}}),
                )
            };
            check(&with("auto-aof-rewrite-min-size", "1gb"), None).unwrap();
            for name in crate::crd::redis::OPERATOR_DIRECTIVES {
                rejected_with(&with(name, "x"), None, "is set by the operator");
            }
            rejected_with(
                &with("maxmemory", "1gb\nrequirepass x"),
                None,
                "a value must be a single line",
            );
        }

        #[test]
        fn storage_class_and_size_are_immutable() {
            let old = pipeline(
                json!({"redis": {"managed": {"storage": {"size": "1Gi", "storageClassName": "slow"}}}}),
            );
            check(&old, Some(&old)).unwrap();
            let new = pipeline(
                json!({"redis": {"managed": {"storage": {"size": "1Gi", "storageClassName": "fast"}}}}),
            );
            rejected_with(&new, Some(&old), "storageClassName is immutable");
            let new = pipeline(json!({"redis": {"managed": {"storage": {"size": "1Gi"}}}}));
            rejected_with(&new, Some(&old), "storageClassName is immutable");
            let new = pipeline(
                json!({"redis": {"managed": {"storage": {"size": "5Gi", "storageClassName": "slow"}}}}),
            );
            rejected_with(&new, Some(&old), "size is immutable");
            // Other managed fields may change.
            let new = pipeline(
                json!({"redis": {"managed": {"appendfsync": "always", "storage": {"size": "1Gi", "storageClassName": "slow"}}}}),
            );
            check(&new, Some(&old)).unwrap();
        }

        #[test]
        fn shards_start_above_one_only_at_creation_grow_only_and_fit_the_partitions() {
            let shards = |n: i64| pipeline(json!({"redis": {"managed": {"shards": n}}}));
            check(&shards(3), None).unwrap();
            check(&shards(1), None).unwrap();
            rejected_with(
                &shards(13),
                None,
                "redis.managed.shards must not exceed redis.partitions",
            );
            check(
                &pipeline(json!({"redis": {"partitions": 16, "managed": {"shards": 16}}})),
                None,
            )
            .unwrap();
            // Growing a cluster is fine; shrinking it, or turning a single
            // Redis (explicit or by default) into one, is not.
            check(&shards(4), Some(&shards(3))).unwrap();
            rejected_with(&shards(2), Some(&shards(3)), "shards cannot shrink");
            rejected_with(&shards(1), Some(&shards(3)), "shards cannot shrink");
            rejected_with(
                &pipeline(json!({})),
                Some(&shards(3)),
                "shards cannot shrink",
            );
            for single in [shards(1), pipeline(json!({}))] {
                rejected_with(
                    &shards(3),
                    Some(&single),
                    "a single Redis (shards: 1) cannot become a Redis Cluster",
                );
            }
            // Bounds are the schema's (the apiserver checks them before CEL).
            let redis = &schema()["properties"]["spec"]["properties"]["redis"]["properties"];
            let managed = &redis["managed"]["properties"];
            for (field, min, max) in [
                (&managed["shards"], 1, 64),
                (&managed["replicasPerShard"], 0, 5),
                (&redis["partitions"], 1, 1024),
            ] {
                assert_eq!(
                    (field["minimum"].as_f64(), field["maximum"].as_f64()),
                    (Some(f64::from(min)), Some(f64::from(max))),
                    "{field}"
                );
            }
            let p =
                |n: i64| pipeline(json!({"redis": {"partitions": n, "managed": {"shards": 2}}}));
            rejected_with(&p(24), Some(&p(12)), "redis.partitions is immutable");
        }

        #[test]
        fn replicas_per_shard_need_a_cluster_and_are_fixed_at_creation() {
            let with = |shards: i64, replicas: i64| {
                pipeline(
                    json!({"redis": {"managed": {"shards": shards, "replicasPerShard": replicas}}}),
                )
            };
            check(&with(3, 1), None).unwrap();
            rejected_with(
                &with(1, 1),
                None,
                "replicasPerShard needs shards of 2 or more",
            );
            rejected_with(
                &with(3, 2),
                Some(&with(3, 1)),
                "replicasPerShard is fixed at creation",
            );
            check(&with(4, 1), Some(&with(3, 1))).unwrap();
        }

        #[test]
        fn an_external_cluster_needs_a_plain_redis_url_without_a_database() {
            let ext =
                |url: &str| pipeline(json!({"redis": {"external": {"url": url, "cluster": true}}}));
            check(&ext("redis://cache:6379"), None).unwrap();
            for bad in ["redis://cache:6379/2", "rediss://cache:6380"] {
                rejected_with(
                    &ext(bad),
                    None,
                    "redis.external.cluster needs a redis://HOST:PORT url",
                );
            }
        }

        #[test]
        fn duplicate_window_and_leaderboard_names_are_rejected() {
            let obj = pipeline(json!({"aggregation": {"windows": [{"name": "a"}, {"name": "a"}]}}));
            rejected_with(&obj, None, "aggregation.windows: names must be unique");
            let obj =
                pipeline(json!({"aggregation": {"leaderboards": [{"name": "a"}, {"name": "a"}]}}));
            rejected_with(&obj, None, "aggregation.leaderboards: names must be unique");
        }

        #[test]
        fn member_attribute_goes_with_member_attribute_only() {
            let obj = pipeline(
                json!({"aggregation": {"leaderboards": [{"name": "a", "member": "attribute"}]}}),
            );
            rejected_with(
                &obj,
                None,
                "memberAttribute is required when member is attribute",
            );
            let obj = pipeline(
                json!({"aggregation": {"leaderboards": [{"name": "a", "memberAttribute": "region"}]}}),
            );
            rejected_with(
                &obj,
                None,
                "memberAttribute is required when member is attribute",
            );
            let obj = pipeline(
                json!({"aggregation": {"leaderboards": [{"name": "a", "member": "attribute", "memberAttribute": "region"}]}}),
            );
            check(&obj, None).unwrap();
        }

        #[test]
        fn repeated_window_aggregates_are_rejected() {
            let obj = pipeline(
                json!({"aggregation": {"windows": [{"name": "a", "aggregates": ["sum", "sum"]}]}}),
            );
            rejected_with(&obj, None, "aggregates must not repeat an entry");
        }

        #[test]
        fn grpc_and_http_ports_must_differ() {
            let obj = pipeline(json!({"ingest": {"ports": {"grpc": 8000, "http": 8000}}}));
            rejected_with(&obj, None, "must differ");
        }

        #[test]
        fn pipeline_names_must_fit_child_names() {
            let mut obj = pipeline(json!({}));
            obj["metadata"]["name"] = json!("a".repeat(NAME_MAX_LEN + 1));
            rejected_with(&obj, None, "at most 45 characters");
            obj["metadata"]["name"] = json!("1abc");
            rejected_with(&obj, None, "DNS label starting with a letter");
        }
    }
}
