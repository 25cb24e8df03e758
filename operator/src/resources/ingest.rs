//! Children of the ingest side: the aggregation ConfigMap, the Deployment and
//! its Service.
//!
//! Config changes reach running pods by hot reload, not by a rollout: the
//! ConfigMap is mounted as a directory (never with `subPath`, which the kubelet
//! does not refresh), the kubelet rewrites the file, and the ingest service
//! reloads it without dropping or double-counting events. So the pod template
//! deliberately carries no config hash.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec,
    Probe, SecretVolumeSource, Service, ServicePort, ServiceSpec, SleepAction, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    Component, INGEST_UID, Names, RedisConnection, child_meta, container_security_context, labels,
    mount, pod_security_context, selector_labels,
};
use crate::crd::TelemetryPipeline;

/// Key of the aggregation config in the ConfigMap.
pub const CONFIG_KEY: &str = "aggregation.yaml";
/// Where the ConfigMap is mounted (a directory, so updates propagate).
pub const CONFIG_DIR: &str = "/etc/telemetry";
/// Seconds the preStop hook waits before SIGTERM, so that endpoints stop
/// sending new work to a terminating pod before it stops accepting.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Margin on top of preStop + drain before the kubelet sends SIGKILL.
pub const GRACE_MARGIN_SECONDS: i64 = 10;
/// Name of the ingest container.
pub const CONTAINER: &str = "ingest";
/// Where an external Redis' CA Secret key is mounted (a directory).
pub const REDIS_CA_DIR: &str = "/etc/telemetry-redis-ca";
/// The CA file's name in [`REDIS_CA_DIR`].
pub const REDIS_CA_FILE: &str = "ca.crt";
/// Label on the ingest pods that serve TLS (value `true`), so a scraper
/// such as the chart's PodMonitor picks https for them.
pub const TLS_LABEL: &str = "telemetrypipeline.io/tls";
/// Where the ingest TLS Secret (`spec.ingest.tls`) is mounted: a directory,
/// so the kubelet refreshes it and the pods reload it without a restart.
pub const TLS_DIR: &str = "/etc/telemetry-tls";
/// Where the API key file is mounted: a directory of its own, read-only,
/// beside (not inside) the config volume's [`CONFIG_DIR`].
pub const AUTH_DIR: &str = "/etc/telemetry-auth";
/// The API key file's name in [`AUTH_DIR`].
pub const AUTH_FILE: &str = "keys.yaml";

/// The value of `--pipeline` (the Redis key prefix): `<namespace>/<name>`, so
/// two pipelines sharing an external Redis never share keys.
pub fn pipeline_id(tp: &TelemetryPipeline) -> String {
    format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any())
}

/// The ConfigMap with the rendered aggregation config.
pub fn config_map(tp: &TelemetryPipeline) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(tp, Component::Ingest, Names::of(tp).ingest),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config_text(tp))])),
        ..ConfigMap::default()
    }
}

/// The aggregation config file the ingest pods read (`--config`).
pub fn config_text(tp: &TelemetryPipeline) -> String {
    format!(
        "# Rendered by telemetry-operator from TelemetryPipeline {}.spec.aggregation; edits are overwritten.\n{}",
        pipeline_id(tp),
        tp.spec.aggregation.to_yaml()
    )
}

/// Seconds an ingest pod gets after SIGTERM to store its queue:
/// `spec.ingest.shutdownTimeoutSeconds`, or the longer timeout the
/// autoscaler derived from the measured drain rate for this queue capacity
/// ([`crate::autoscale::drain`]).
pub fn shutdown_timeout_seconds(tp: &TelemetryPipeline) -> i32 {
    let spec = &tp.spec.ingest;
    let derived = tp
        .status
        .as_ref()
        .and_then(|s| s.autoscaling.as_ref())
        .and_then(|a| a.drain.as_ref())
        .filter(|d| tp.autoscaling_enabled() && d.queue_capacity == spec.queue_capacity)
        .map_or(0, |d| d.timeout_seconds);
    spec.shutdown_timeout_seconds.max(derived)
}

/// terminationGracePeriodSeconds of an ingest pod: preStop, then the drain
/// timeout the process is given, then a margin.
pub fn termination_grace_period_seconds(tp: &TelemetryPipeline) -> i64 {
    PRE_STOP_SLEEP_SECONDS + i64::from(shutdown_timeout_seconds(tp)) + GRACE_MARGIN_SECONDS
}

/// The label selector of the ingest pods as a string (status.selector, for the
/// scale subresource).
pub fn selector_string(tp: &TelemetryPipeline) -> String {
    super::selector_string(tp, Component::Ingest)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The ingest Deployment. `replicas` is `None` while autoscaling is enabled:
/// the field is then left out of the apply so the operator never fights
/// whoever scales the Deployment.
pub fn deployment(
    tp: &TelemetryPipeline,
    default_image: &str,
    replicas: Option<i32>,
) -> Deployment {
    let spec = &tp.spec.ingest;
    let names = Names::of(tp);
    let redis = RedisConnection::of(tp);

    let mut env_vars = vec![
        env(
            "TELEMETRY_GRPC_LISTEN",
            format!("0.0.0.0:{}", spec.ports.grpc),
        ),
        env(
            "TELEMETRY_HTTP_LISTEN",
            format!("0.0.0.0:{}", spec.ports.http),
        ),
        env("TELEMETRY_PIPELINE", pipeline_id(tp)),
        env("TELEMETRY_CONFIG", format!("{CONFIG_DIR}/{CONFIG_KEY}")),
        env("TELEMETRY_QUEUE_CAPACITY", spec.queue_capacity.to_string()),
        env(
            "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS",
            shutdown_timeout_seconds(tp).to_string(),
        ),
        env("TELEMETRY_LOG_FORMAT", spec.log_format.as_str()),
    ];
    // On a cluster the URL must be absent: it conflicts with the nodes.
    match &redis.cluster {
        None => env_vars.push(env("TELEMETRY_REDIS_URL", redis.url)),
        Some(cluster) => {
            env_vars.push(env("TELEMETRY_REDIS_CLUSTER_NODES", &cluster.seed));
            env_vars.push(env(
                "TELEMETRY_REDIS_PARTITIONS",
                cluster.partitions.to_string(),
            ));
            env_vars.push(env(
                "TELEMETRY_REDIS_WAIT_REPLICAS",
                cluster.wait_replicas.to_string(),
            ));
        }
    }
    env_vars.extend(
        spec.limits
            .env()
            .into_iter()
            .map(|(name, value)| env(name, value)),
    );
    if let Some(selector) = redis.password {
        env_vars.push(EnvVar {
            name: "TELEMETRY_REDIS_PASSWORD".to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(selector),
                ..EnvVarSource::default()
            }),
        });
    }

    if let Some(username) = &redis.username {
        env_vars.push(env("TELEMETRY_REDIS_USERNAME", username));
    }
    if redis.ca.is_some() {
        env_vars.push(env(
            "TELEMETRY_REDIS_CA_FILE",
            format!("{REDIS_CA_DIR}/{REDIS_CA_FILE}"),
        ));
    }

    let tls = spec.tls.as_ref();
    if tls.is_some() {
        env_vars.push(env("TELEMETRY_TLS_CERT_FILE", format!("{TLS_DIR}/tls.crt")));
        env_vars.push(env("TELEMETRY_TLS_KEY_FILE", format!("{TLS_DIR}/tls.key")));
    }

    // With TLS the HTTP port takes only https; the kubelet's https probes do
    // not verify the certificate.
    let scheme = tls.map(|_| "HTTPS".to_string());
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            scheme: scheme.clone(),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let mut volume_mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.ingest.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    // The CA key alone, under a fixed file name, read-only.
    if let Some(ca) = &redis.ca {
        volume_mounts.push(mount("redis-ca", REDIS_CA_DIR, true));
        volumes.push(secret_volume(
            "redis-ca",
            &ca.name,
            &[(ca.key.as_str(), REDIS_CA_FILE)],
        ));
    }

    // The two keys under fixed names, read-only. No version of the Secret
    // goes into the pod template: a renewed certificate is reloaded by the
    // running pods, not rolled out.
    if let Some(tls) = tls {
        volume_mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(secret_volume(
            "tls",
            &tls.secret_ref.name,
            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ));
    }
    // The key file alone, under a fixed name, read-only; a directory mount
    // (no subPath), so a change of the Secret reaches the running pods and
    // is reloaded there: the pod template does not change with the keys.
    if let Some(auth) = &spec.auth {
        env_vars.push(env(
            "TELEMETRY_API_KEYS_FILE",
            format!("{AUTH_DIR}/{AUTH_FILE}"),
        ));
        volume_mounts.push(mount("api-keys", AUTH_DIR, true));
        volumes.push(secret_volume(
            "api-keys",
            &auth.secret_ref.name,
            &[(auth.secret_ref.key.as_str(), AUTH_FILE)],
        ));
    }

    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_string()),
                container_port: spec.ports.grpc,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".to_string()),
                container_port: spec.ports.http,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(5),
            ..http_probe("/healthz", 10, 3)
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: spec.resources.clone(),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    // User labels first, so the operator's own labels win on conflict (the
    // selector must keep matching).
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(labels(tp, Component::Ingest));
    if tls.is_some() {
        pod_labels.insert(TLS_LABEL.to_string(), "true".to_string());
    }
    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.insert(
        "kubectl.kubernetes.io/default-container".to_string(),
        CONTAINER.to_string(),
    );

    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let pod = PodSpec {
        containers: vec![container],
        security_context: Some(pod_security_context(INGEST_UID)),
        termination_grace_period_seconds: Some(termination_grace_period_seconds(tp)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: non_empty(&spec.node_selector),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
            .then(|| spec.topology_spread_constraints.clone()),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    Deployment {
        metadata: child_meta(tp, Component::Ingest, names.ingest.clone()),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(tp, Component::Ingest)),
                match_expressions: None,
            },
            // Surge first, never drop below the current capacity: a pod that
            // leaves drains its queue, a new one is ready before that starts.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_string())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The ingest Service: gRPC and HTTP.
pub fn service(tp: &TelemetryPipeline) -> Service {
    let ports = &tp.spec.ingest.ports;
    let service = &tp.spec.ingest.service;
    let node_ports = service.node_ports.clone().unwrap_or_default();
    let mut metadata = child_meta(tp, Component::Ingest, Names::of(tp).ingest);
    if !service.annotations.is_empty() {
        metadata.annotations = Some(service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service.type_.as_str().to_string()),
            selector: Some(selector_labels(tp, Component::Ingest)),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".to_string()),
                    port: ports.grpc,
                    target_port: Some(IntOrString::String("grpc".to_string())),
                    protocol: Some("TCP".to_string()),
                    // HTTP/2 in clear text; with TLS, left to the client.
                    app_protocol: tp
                        .spec
                        .ingest
                        .tls
                        .is_none()
                        .then(|| "kubernetes.io/h2c".to_string()),
                    node_port: node_ports.grpc,
                },
                ServicePort {
                    name: Some("http".to_string()),
                    port: ports.http,
                    target_port: Some(IntOrString::String("http".to_string())),
                    protocol: Some("TCP".to_string()),
                    node_port: node_ports.http,
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A volume `name` of the Secret `secret`, holding only the given keys,
/// each under its file name: `(key, path)`.
fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: key.to_string(),
                        path: path.to_string(),
                        mode: None,
                    })
                    .collect(),
            ),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IngestLimits;
    use crate::crd::ingest::{LogFormat, NodePorts, PullPolicy, ServiceType};
    use crate::crd::redis::{CaSecretKeyRef, ExternalRedisTls};
    use k8s_openapi::api::core::v1::Toleration;
    use telemetry_config::{AggregationConfig, WindowConfig};

    const IMAGE: &str = "ghcr.io/telemetry-pipeline/telemetry-ingest:0.1.0";

    fn pod(d: &Deployment) -> PodSpec {
        d.spec.as_ref().unwrap().template.spec.clone().unwrap()
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        pod(d).containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    fn value(env: &BTreeMap<String, EnvVar>, name: &str) -> String {
        env[name]
            .value
            .clone()
            .unwrap_or_else(|| panic!("{name} has no value"))
    }

    #[test]
    fn config_map_renders_the_aggregation_config_that_the_ingest_service_parses() {
        let mut agg = AggregationConfig::default();
        agg.windows
            .push(serde_yaml::from_str::<WindowConfig>("name: revenue").unwrap());
        let tp = TelemetryPipeline::test().with_aggregation(agg.clone());
        let cm = config_map(&tp);
        assert_eq!(cm.metadata.name.as_deref(), Some("pipe-ingest"));
        let text = &cm.data.unwrap()[CONFIG_KEY];
        assert_eq!(AggregationConfig::from_yaml(text).unwrap(), agg);
    }

    #[test]
    fn deployment_defaults_run_the_operator_image_with_the_contracted_env() {
        let tp = TelemetryPipeline::test();
        let d = deployment(&tp, IMAGE, Some(1));
        assert_eq!(d.metadata.name.as_deref(), Some("pipe-ingest"));
        let c = &pod(&d).containers[0];
        assert_eq!(c.image.as_deref(), Some(IMAGE));
        assert_eq!(c.image_pull_policy, None);
        let env = env_of(&d);
        assert_eq!(value(&env, "TELEMETRY_GRPC_LISTEN"), "0.0.0.0:50051");
        assert_eq!(value(&env, "TELEMETRY_HTTP_LISTEN"), "0.0.0.0:8000");
        assert_eq!(
            value(&env, "TELEMETRY_REDIS_URL"),
            "redis://pipe-redis.ns.svc:6379"
        );
        assert_eq!(value(&env, "TELEMETRY_PIPELINE"), "ns/pipe");
        assert_eq!(
            value(&env, "TELEMETRY_CONFIG"),
            "/etc/telemetry/aggregation.yaml"
        );
        assert_eq!(value(&env, "TELEMETRY_QUEUE_CAPACITY"), "100000");
        assert_eq!(value(&env, "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS"), "25");
        assert_eq!(value(&env, "TELEMETRY_LOG_FORMAT"), "json");
        let pw = env["TELEMETRY_REDIS_PASSWORD"]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("pipe-redis", "password")
        );
        let ports: Vec<_> = c
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("grpc".to_string(), 50051), ("http".to_string(), 8000)]
        );
    }

    #[test]
    fn deployment_probes_readyz_and_healthz_and_sizes_the_grace_period_for_draining() {
        let tp = TelemetryPipeline::test();
        let d = deployment(&tp, IMAGE, Some(1));
        let p = pod(&d);
        let c = &p.containers[0];
        let path = |probe: &Option<Probe>| probe.clone().unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(&c.readiness_probe), "/readyz");
        assert_eq!(path(&c.liveness_probe), "/healthz");
        let sleep = c
            .lifecycle
            .clone()
            .unwrap()
            .pre_stop
            .unwrap()
            .sleep
            .unwrap();
        assert_eq!(sleep.seconds, PRE_STOP_SLEEP_SECONDS);
        assert_eq!(p.termination_grace_period_seconds, Some(5 + 25 + 10));

        let tp = TelemetryPipeline::test().with_ingest(|i| i.shutdown_timeout_seconds = 120);
        assert_eq!(
            pod(&deployment(&tp, IMAGE, Some(1))).termination_grace_period_seconds,
            Some(135)
        );
        let env = env_of(&deployment(&tp, IMAGE, Some(1)));
        assert_eq!(value(&env, "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS"), "120");
    }

    #[test]
    fn deployment_is_locked_down() {
        let d = deployment(&TelemetryPipeline::test(), IMAGE, Some(1));
        let p = pod(&d);
        let psc = p.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = p.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn a_derived_drain_timeout_lengthens_the_shutdown_timeout_and_grace_period() {
        let with_drain = |capacity: i32, timeout: i32| {
            let mut tp = TelemetryPipeline::test();
            tp.spec.autoscaling = Some(crate::crd::AutoscalingSpec::test(1, 4));
            tp.status = Some(crate::TelemetryPipelineStatus {
                autoscaling: Some(crate::crd::autoscaling::AutoscalingStatus {
                    drain: Some(crate::crd::autoscaling::DrainStatus {
                        timeout_seconds: timeout,
                        queue_capacity: capacity,
                        events_per_second: 1_000,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            tp
        };
        let tp = with_drain(100_000, 300);
        let d = deployment(&tp, IMAGE, Some(1));
        assert_eq!(
            value(&env_of(&d), "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS"),
            "300"
        );
        assert_eq!(pod(&d).termination_grace_period_seconds, Some(5 + 300 + 10));

        // Derived for another capacity, or shorter than the spec: the spec.
        for tp in [with_drain(50_000, 300), with_drain(100_000, 10)] {
            let d = deployment(&tp, IMAGE, Some(1));
            assert_eq!(
                value(&env_of(&d), "TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS"),
                "25"
            );
        }
        // Autoscaling turned off: the spec.
        let mut tp = with_drain(100_000, 300);
        tp.spec.autoscaling = None;
        assert_eq!(shutdown_timeout_seconds(&tp), 25);
    }

    #[test]
    fn config_reaches_pods_by_a_directory_mount_not_a_rollout() {
        let d = deployment(&TelemetryPipeline::test(), IMAGE, Some(1));
        let p = pod(&d);
        let mount = p.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "config")
            .unwrap();
        assert_eq!(mount.mount_path, CONFIG_DIR);
        assert_eq!(mount.sub_path, None, "subPath mounts are never refreshed");
        let annotations = d
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert!(
            annotations.keys().all(|k| !k.contains("hash")),
            "a config hash would force a rollout: {annotations:?}"
        );
        // And the template does not change when only the aggregation does.
        let mut agg = AggregationConfig::default();
        agg.dedup.enabled = false;
        let changed = TelemetryPipeline::test().with_aggregation(agg);
        assert_eq!(
            deployment(&changed, IMAGE, Some(1)),
            deployment(&TelemetryPipeline::test(), IMAGE, Some(1))
        );
    }

    #[test]
    fn replicas_are_left_out_when_the_caller_says_so() {
        let tp = TelemetryPipeline::test().with_ingest(|i| i.replicas = 3);
        assert_eq!(
            deployment(&tp, IMAGE, Some(3)).spec.unwrap().replicas,
            Some(3)
        );
        let d = deployment(&tp, IMAGE, None);
        assert_eq!(d.spec.as_ref().unwrap().replicas, None);
        let json = serde_json::to_value(&d).unwrap();
        assert!(
            json["spec"].get("replicas").is_none(),
            "must not be serialised at all"
        );
    }

    #[test]
    fn deployment_takes_every_pod_override() {
        let tp = TelemetryPipeline::test().with_ingest(|i| {
            i.image = Some("example.com/ingest:dev".into());
            i.image_pull_policy = Some(PullPolicy::Always);
            i.log_format = LogFormat::Plain;
            i.queue_capacity = 5000;
            i.ports.grpc = 9000;
            i.ports.http = 9001;
            i.node_selector.insert("pool".into(), "ingest".into());
            i.tolerations.push(Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            });
            i.affinity = Some(Default::default());
            i.topology_spread_constraints.push(Default::default());
            i.pod_labels.insert("team".into(), "data".into());
            i.pod_labels
                .insert("app.kubernetes.io/name".into(), "hijack".into());
            i.pod_annotations.insert("example.com/a".into(), "b".into());
        });
        let d = deployment(&tp, IMAGE, Some(1));
        let meta = d.spec.as_ref().unwrap().template.metadata.clone().unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels["app.kubernetes.io/name"], "telemetry-ingest",
            "selector labels win"
        );
        assert_eq!(meta.annotations.unwrap()["example.com/a"], "b");
        let p = pod(&d);
        assert_eq!(p.node_selector.unwrap()["pool"], "ingest");
        assert_eq!(p.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
        assert!(p.affinity.is_some());
        assert_eq!(p.topology_spread_constraints.unwrap().len(), 1);
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some("example.com/ingest:dev"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let env = env_of(&d);
        assert_eq!(value(&env, "TELEMETRY_GRPC_LISTEN"), "0.0.0.0:9000");
        assert_eq!(value(&env, "TELEMETRY_HTTP_LISTEN"), "0.0.0.0:9001");
        assert_eq!(value(&env, "TELEMETRY_LOG_FORMAT"), "plain");
        assert_eq!(value(&env, "TELEMETRY_QUEUE_CAPACITY"), "5000");

        let tp = tp.with_ingest(|i| i.service.type_ = ServiceType::LoadBalancer);
        let svc = service(&tp).spec.unwrap();
        assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
        let ports: Vec<_> = svc.ports.unwrap().into_iter().map(|p| p.port).collect();
        assert_eq!(ports, [9000, 9001]);
    }

    #[test]
    fn ingest_limits_reach_the_pods_as_env_and_unset_ones_keep_the_server_defaults() {
        let expected = [
            ("TELEMETRY_HTTP_MAX_BODY_BYTES", "1048576"),
            ("TELEMETRY_HTTP_HEADER_READ_TIMEOUT_SECONDS", "5"),
            ("TELEMETRY_IDLE_TIMEOUT_SECONDS", "120"),
            ("TELEMETRY_MAX_CONNECTIONS", "2000"),
            ("TELEMETRY_GRPC_MAX_CONCURRENT_STREAMS", "64"),
            ("TELEMETRY_GRPC_MAX_MESSAGE_BYTES", "8388608"),
            ("TELEMETRY_GRPC_STREAM_IDLE_TIMEOUT_SECONDS", "30"),
        ];
        let env = env_of(&deployment(&TelemetryPipeline::test(), IMAGE, Some(1)));
        for (name, _) in expected {
            assert!(!env.contains_key(name), "{name} set by default");
        }
        let tp = TelemetryPipeline::test().with_ingest(|i| {
            i.limits = IngestLimits {
                http_max_body_bytes: Some(1 << 20),
                http_header_read_timeout_seconds: Some(5),
                idle_timeout_seconds: Some(120),
                max_connections: Some(2000),
                grpc_max_concurrent_streams: Some(64),
                grpc_max_message_bytes: Some(8 << 20),
                grpc_stream_idle_timeout_seconds: Some(30),
            };
        });
        let env = env_of(&deployment(&tp, IMAGE, Some(1)));
        for (name, value_) in expected {
            assert_eq!(value(&env, name), value_, "{name}");
        }
    }

    #[test]
    fn a_node_port_service_carries_the_fixed_node_ports_and_annotations() {
        let tp = TelemetryPipeline::test().with_ingest(|i| {
            i.service.type_ = ServiceType::NodePort;
            i.service.node_ports = Some(NodePorts {
                grpc: Some(30051),
                http: None,
            });
            i.service.annotations = [("example.com/lb".to_string(), "internal".to_string())].into();
        });
        let svc = service(&tp);
        assert_eq!(
            svc.metadata.annotations.unwrap()["example.com/lb"],
            "internal"
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let node_ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.node_port))
            .collect();
        assert_eq!(
            node_ports,
            [
                ("grpc".to_string(), Some(30051)),
                ("http".to_string(), None)
            ],
            "an unset node port is left to Kubernetes"
        );
    }

    #[test]
    fn external_redis_without_a_password_sets_no_password_env() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://r:6379", None);
        let env = env_of(&deployment(&tp, IMAGE, Some(1)));
        assert_eq!(value(&env, "TELEMETRY_REDIS_URL"), "redis://r:6379");
        assert!(!env.contains_key("TELEMETRY_REDIS_PASSWORD"));
    }

    #[test]
    fn external_redis_tls_mounts_the_ca_key_read_only_and_names_it_and_the_user_in_env() {
        let mut tp =
            TelemetryPipeline::test().with_external_redis("rediss://r:6380", Some("creds"));
        let ext = tp.spec.redis.external.as_mut().unwrap();
        ext.username = Some("ingest".into());
        ext.tls = Some(ExternalRedisTls {
            ca_secret_ref: CaSecretKeyRef {
                name: "redis-ca".into(),
                key: "root.pem".into(),
            },
        });
        let d = deployment(&tp, IMAGE, Some(1));
        let env = env_of(&d);
        assert_eq!(value(&env, "TELEMETRY_REDIS_URL"), "rediss://r:6380");
        assert_eq!(value(&env, "TELEMETRY_REDIS_USERNAME"), "ingest");
        assert_eq!(
            value(&env, "TELEMETRY_REDIS_CA_FILE"),
            "/etc/telemetry-redis-ca/ca.crt"
        );
        let pod = pod(&d);
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "redis-ca")
            .expect("the CA is mounted");
        assert_eq!(
            (
                mount.mount_path.as_str(),
                mount.read_only,
                mount.sub_path.as_deref()
            ),
            ("/etc/telemetry-redis-ca", Some(true), None)
        );
        let secret = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "redis-ca")
            .and_then(|v| v.secret.clone())
            .expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("redis-ca"));
        let items = secret.items.unwrap();
        assert_eq!(
            items
                .iter()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect::<Vec<_>>(),
            [("root.pem", "ca.crt")],
            "only the CA key, under a fixed name"
        );
    }

    #[test]
    fn api_keys_mount_the_secret_key_read_only_and_name_the_file_in_env() {
        let tp = TelemetryPipeline::test().with_api_keys("ingest-keys");
        let d = deployment(&tp, IMAGE, Some(1));
        let env = env_of(&d);
        assert_eq!(
            value(&env, "TELEMETRY_API_KEYS_FILE"),
            "/etc/telemetry-auth/keys.yaml"
        );
        let pod = pod(&d);
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "api-keys")
            .expect("the key file is mounted");
        assert_eq!(
            (
                mount.mount_path.as_str(),
                mount.read_only,
                mount.sub_path.as_deref()
            ),
            ("/etc/telemetry-auth", Some(true), None),
            "a read-only directory mount, which the kubelet updates in place"
        );
        let secret = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "api-keys")
            .and_then(|v| v.secret.clone())
            .expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("ingest-keys"));
        assert_eq!(
            secret
                .items
                .unwrap()
                .iter()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect::<Vec<_>>(),
            [("keys.yaml", "keys.yaml")]
        );
    }

    #[test]
    fn without_api_keys_nothing_is_mounted_and_the_template_does_not_depend_on_the_keys() {
        let plain = deployment(&TelemetryPipeline::test(), IMAGE, Some(1));
        assert!(!env_of(&plain).contains_key("TELEMETRY_API_KEYS_FILE"));
        assert!(
            pod(&plain)
                .volumes
                .unwrap()
                .iter()
                .all(|v| v.name != "api-keys")
        );
        // The template names the Secret, never its content or version: a
        // key change is reloaded by the pods, not rolled out.
        let a = deployment(
            &TelemetryPipeline::test().with_api_keys("k"),
            IMAGE,
            Some(1),
        );
        let annotations = a.spec.unwrap().template.metadata.unwrap().annotations;
        assert!(
            annotations
                .unwrap_or_default()
                .keys()
                .all(|k| !k.contains("api-key")),
            "no annotation follows the key Secret"
        );
    }

    #[test]
    fn external_redis_without_tls_or_user_mounts_no_ca_and_sets_no_such_env() {
        let tp = TelemetryPipeline::test().with_external_redis("rediss://r:6380", None);
        let d = deployment(&tp, IMAGE, Some(1));
        let env = env_of(&d);
        assert!(!env.contains_key("TELEMETRY_REDIS_USERNAME"));
        assert!(!env.contains_key("TELEMETRY_REDIS_CA_FILE"));
        assert!(
            pod(&d)
                .volumes
                .unwrap()
                .iter()
                .all(|v| v.name != "redis-ca")
        );
    }

    #[test]
    fn service_exposes_grpc_50051_and_http_8000_to_the_ingest_pods() {
        let tp = TelemetryPipeline::test();
        let svc = service(&tp);
        assert_eq!(svc.metadata.name.as_deref(), Some("pipe-ingest"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.selector, Some(selector_labels(&tp, Component::Ingest)));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("grpc".to_string(), 50051), ("http".to_string(), 8000)]
        );
    }

    #[test]
    fn selector_string_matches_the_deployment_selector() {
        let tp = TelemetryPipeline::test();
        assert_eq!(
            selector_string(&tp),
            "app.kubernetes.io/instance=pipe,app.kubernetes.io/name=telemetry-ingest"
        );
    }

    #[test]
    fn with_tls_the_secret_is_mounted_the_flags_point_at_it_and_probes_use_https() {
        let plain = deployment(&TelemetryPipeline::test(), IMAGE, Some(1));
        let plain_env = env_of(&plain);
        assert!(!plain_env.contains_key("TELEMETRY_TLS_CERT_FILE"));
        let c = &pod(&plain).containers[0];
        let scheme = |p: &Option<Probe>| p.clone().unwrap().http_get.unwrap().scheme;
        assert_eq!(scheme(&c.readiness_probe), None, "plain: HTTP probes");

        let mut tp = TelemetryPipeline::test();
        tp.spec.ingest.tls = Some(crate::crd::IngestTls {
            secret_ref: crate::crd::TlsSecretRef {
                name: "ingest-tls".into(),
            },
        });
        let d = deployment(&tp, IMAGE, Some(1));
        let env = env_of(&d);
        assert_eq!(
            value(&env, "TELEMETRY_TLS_CERT_FILE"),
            "/etc/telemetry-tls/tls.crt"
        );
        assert_eq!(
            value(&env, "TELEMETRY_TLS_KEY_FILE"),
            "/etc/telemetry-tls/tls.key"
        );
        let p = pod(&d);
        let c = &p.containers[0];
        let m = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "tls")
            .expect("the tls mount");
        assert_eq!(
            (m.mount_path.as_str(), m.read_only, m.sub_path),
            ("/etc/telemetry-tls", Some(true), None),
            "a read-only directory (no subPath), so the kubelet refreshes it"
        );
        let v = p
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .expect("the tls volume");
        let secret = v.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("ingest-tls"));
        let items: Vec<_> = secret
            .items
            .unwrap()
            .into_iter()
            .map(|i| (i.key, i.path))
            .collect();
        assert_eq!(
            items,
            [
                ("tls.crt".to_string(), "tls.crt".to_string()),
                ("tls.key".to_string(), "tls.key".to_string())
            ]
        );
        assert_eq!(scheme(&c.readiness_probe).as_deref(), Some("HTTPS"));
        assert_eq!(scheme(&c.liveness_probe).as_deref(), Some("HTTPS"));
        let meta = |d: &Deployment| d.spec.as_ref().unwrap().template.metadata.clone().unwrap();
        assert_eq!(
            meta(&d).annotations,
            meta(&plain).annotations,
            "no Secret version in the pod template: rotation is a reload, not a rollout"
        );
        assert_eq!(meta(&d).labels.unwrap()[TLS_LABEL], "true");
        assert!(!meta(&plain).labels.unwrap().contains_key(TLS_LABEL));
    }

    #[test]
    fn a_sharded_pipeline_passes_the_cluster_seed_partitions_and_wait_instead_of_a_url() {
        let tp = TelemetryPipeline::test().with_shards(3, 1);
        let env = env_of(&deployment(&tp, IMAGE, Some(1)));
        assert!(
            !env.contains_key("TELEMETRY_REDIS_URL"),
            "conflicts with the nodes"
        );
        assert_eq!(
            value(&env, "TELEMETRY_REDIS_CLUSTER_NODES"),
            "pipe-redis.ns.svc:6379"
        );
        assert_eq!(value(&env, "TELEMETRY_REDIS_PARTITIONS"), "12");
        assert_eq!(value(&env, "TELEMETRY_REDIS_WAIT_REPLICAS"), "1");
        assert!(env.contains_key("TELEMETRY_REDIS_PASSWORD"));
        let single = env_of(&deployment(&TelemetryPipeline::test(), IMAGE, Some(1)));
        assert!(!single.contains_key("TELEMETRY_REDIS_CLUSTER_NODES"));
        assert!(!single.contains_key("TELEMETRY_REDIS_PARTITIONS"));
    }
}
