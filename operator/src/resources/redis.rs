//! Children of a managed Redis: Secret, redis.conf ConfigMap, headless and
//! client Services, and the StatefulSet with its volume claim template.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{
    Component, Names, REDIS_UID, child_meta, container_security_context, mount,
    pod_security_context, selector_labels,
};
use crate::crd::TelemetryPipeline;
use crate::crd::redis::{ManagedRedis, OPERATOR_DIRECTIVES, PASSWORD_KEY};

/// Port Redis listens on.
pub const REDIS_PORT: i32 = 6379;
/// Port of a cluster node's bus (gossip, failover): Redis's port + 10000.
pub const CLUSTER_BUS_PORT: i32 = REDIS_PORT + 10000;
/// Env var a cluster node's pod IP reaches it through, announced to the other
/// nodes and to clients (`cluster-announce-ip`).
pub const POD_IP_ENV: &str = "POD_IP";
/// How long a cluster node may be unreachable before it is failed over, ms.
pub const CLUSTER_NODE_TIMEOUT_MS: u32 = 5000;
/// Key of redis.conf in the ConfigMap.
pub const CONFIG_KEY: &str = "redis.conf";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/redis";
/// Where the PersistentVolumeClaim is mounted (Redis' `dir`, holding the AOF).
pub const DATA_DIR: &str = "/data";
/// Name of the volume claim template (the PVC is `data-NAME-redis-0`).
pub const DATA_VOLUME: &str = "data";
/// Env var the password reaches the Redis container through.
pub const PASSWORD_ENV: &str = "REDIS_PASSWORD";
/// Pod-template annotation with a hash of redis.conf: Redis does not reload
/// its config file, so a change must restart the pod (AOF keeps the data).
pub const CONFIG_HASH_ANNOTATION: &str = "telemetrypipeline.io/redis-config-hash";
/// Length of a generated password, in characters.
pub const PASSWORD_LEN: usize = 32;

/// The URL ingest pods use for a managed Redis: its client Service.
pub fn url(tp: &TelemetryPipeline) -> String {
    format!(
        "redis://{}.{}.svc:{REDIS_PORT}",
        Names::of(tp).redis,
        tp.namespace().unwrap_or_default()
    )
}

/// A new random password: alphanumeric, so it needs no quoting anywhere.
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN)
}

/// The Secret holding the Redis password. The operator creates it once with a
/// generated password and afterwards only re-applies the value it read back,
/// so the password is never rotated by accident.
pub fn secret(tp: &TelemetryPipeline, password: &str) -> Secret {
    Secret {
        metadata: child_meta(tp, Component::Redis, Names::of(tp).redis),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_string(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The redis.conf text: AOF on with the chosen fsync policy, then the
/// spec's own directives. `dir` and the password are passed as arguments
/// instead (the password must never sit in a ConfigMap; `dir` is a mount
/// path).
pub fn config_text(tp: &TelemetryPipeline, managed: &ManagedRedis) -> String {
    let mut text = format!(
        "# Managed by telemetry-operator for TelemetryPipeline {ns}/{name}; edits are overwritten.\n\
         port {REDIS_PORT}\n\
         appendonly yes\n\
         appendfsync {fsync}\n\
         appendfilename \"appendonly.aof\"\n\
         aof-use-rdb-preamble yes\n\
         save \"\"\n\
         protected-mode no\n",
        ns = tp.namespace().unwrap_or_default(),
        name = tp.name_any(),
        fsync = managed.appendfsync.as_str(),
    );
    if managed.is_cluster() {
        // nodes.conf sits beside the AOF, so a restarted pod keeps its node
        // identity. A shard that is down fails only its own slots' requests.
        text.push_str(&format!(
            "cluster-enabled yes\n\
             cluster-config-file nodes.conf\n\
             cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}\n\
             cluster-require-full-coverage no\n"
        ));
    }
    // The CRD refuses the operator's own directives and multi-line values;
    // an object stored before those rules existed is held to them here too.
    let extra: Vec<_> = managed
        .config
        .iter()
        .filter(|d| {
            !OPERATOR_DIRECTIVES.contains(&d.name.as_str())
                && !d.value.contains(['\n', '\r'])
                && !d.name.contains(char::is_whitespace)
        })
        .collect();
    if !extra.is_empty() {
        text.push_str("# spec.redis.managed.config\n");
        for d in extra {
            text.push_str(&format!("{} {}\n", d.name, d.value));
        }
    }
    text
}

/// The ConfigMap with redis.conf.
pub fn config_map(tp: &TelemetryPipeline, managed: &ManagedRedis) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(tp, Component::Redis, Names::of(tp).redis),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            config_text(tp, managed),
        )])),
        ..ConfigMap::default()
    }
}

fn redis_port() -> ServicePort {
    ServicePort {
        name: Some("redis".to_string()),
        port: REDIS_PORT,
        target_port: Some(IntOrString::String("redis".to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The headless Service that gives the StatefulSet's pod a stable DNS name.
pub fn headless_service(tp: &TelemetryPipeline) -> Service {
    Service {
        metadata: child_meta(tp, Component::Redis, Names::of(tp).redis_headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(tp, Component::Redis)),
            ports: Some(vec![redis_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service the ingest pods connect to.
pub fn client_service(tp: &TelemetryPipeline) -> Service {
    Service {
        metadata: child_meta(tp, Component::Redis, Names::of(tp).redis),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(tp, Component::Redis)),
            ports: Some(vec![redis_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Short hex digest of a text (pod-template annotations).
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Redis pods of a managed Redis: 1, or every primary and replica of a
/// cluster (ordinal order is the operator's, not a role: a replica promoted
/// by a failover keeps its pod).
pub fn pods(managed: &ManagedRedis) -> i32 {
    if managed.is_cluster() {
        managed.shards * (1 + managed.replicas_per_shard)
    } else {
        1
    }
}

/// The Redis StatefulSet: redis.conf from the ConfigMap, the password from
/// the Secret, the AOF on the claim `data`, TCP probes; one pod, or the
/// cluster-enabled nodes of a sharded pipeline.
pub fn stateful_set(tp: &TelemetryPipeline, managed: &ManagedRedis) -> StatefulSet {
    let names = Names::of(tp);
    let pod_labels = super::labels(tp, Component::Redis);
    let tcp_probe = |initial: i32, period: i32, failures: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("redis".to_string()),
            host: None,
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let cluster = managed.is_cluster();
    let mut args = vec![
        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        "--dir".to_string(),
        DATA_DIR.to_string(),
        "--requirepass".to_string(),
        format!("$({PASSWORD_ENV})"),
    ];
    let mut env = vec![EnvVar {
        name: PASSWORD_ENV.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: names.redis.clone(),
                key: PASSWORD_KEY.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }];
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.to_string()),
        container_port: number,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    };
    let mut ports = vec![port("redis", REDIS_PORT)];
    if cluster {
        // Replicas authenticate to their primary with the same password; a
        // node announces its pod IP, which is what the others and clients
        // reach it at.
        args.extend([
            "--masterauth".to_string(),
            format!("$({PASSWORD_ENV})"),
            "--cluster-announce-ip".to_string(),
            format!("$({POD_IP_ENV})"),
        ]);
        env.push(EnvVar {
            name: POD_IP_ENV.to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".to_string(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        });
        ports.push(port("cluster-bus", CLUSTER_BUS_PORT));
    }
    let container = Container {
        name: "redis".to_string(),
        image: Some(managed.image.clone()),
        command: Some(vec!["redis-server".to_string()]),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(tcp_probe(2, 5, 3)),
        liveness_probe: Some(tcp_probe(15, 10, 6)),
        resources: managed.resources.clone(),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(selector_labels(tp, Component::Redis)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: managed.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    managed.storage.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: child_meta(tp, Component::Redis, names.redis.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(pods(managed)),
            // A cluster's nodes start together: none waits for another to
            // be ready, as the cluster forms only once they all run.
            pod_management_policy: cluster.then(|| "Parallel".to_string()),
            service_name: Some(names.redis_headless.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(tp, Component::Redis)),
                match_expressions: None,
            },
            // The claim outlives the pipeline: deleting a pipeline must not
            // silently delete its data. Delete the PVC by hand to discard it.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        hash(&config_text(tp, managed)),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security_context(REDIS_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(vec![Volume {
                        name: "config".to_string(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: names.redis.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::redis::AppendFsync;

    fn managed(tp: &TelemetryPipeline) -> ManagedRedis {
        tp.spec.redis.managed().expect("managed mode")
    }

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn secret_holds_the_given_password_under_the_password_key() {
        let tp = TelemetryPipeline::test();
        let s = secret(&tp, "hunter2");
        assert_eq!(s.metadata.name.as_deref(), Some("pipe-redis"));
        assert_eq!(s.data.unwrap()["password"].0, b"hunter2");
    }

    #[test]
    fn redis_conf_turns_on_aof_with_the_default_everysec() {
        let tp = TelemetryPipeline::test();
        let text = config_text(&tp, &managed(&tp));
        assert!(text.contains("appendonly yes\n"), "{text}");
        assert!(text.contains("appendfsync everysec\n"), "{text}");
        assert!(
            !text.contains("requirepass"),
            "the password must not be in the ConfigMap"
        );
    }

    #[test]
    fn spec_directives_follow_the_operators_own_and_change_the_pod_hash() {
        use crate::crd::redis::RedisDirective;
        let tp = TelemetryPipeline::test();
        let mut m = managed(&tp);
        let before = stateful_set(&tp, &m);
        let directive = |name: &str, value: &str| RedisDirective {
            name: name.into(),
            value: value.into(),
        };
        m.config = vec![
            directive("auto-aof-rewrite-min-size", "1gb"),
            directive("save", "3600 1"),
            // Refused by the CRD; never written even if stored.
            directive("port", "1"),
            directive("maxmemory", "1gb\nrequirepass x"),
        ];
        let text = config_text(&tp, &m);
        let own = text.find("appendonly yes\n").unwrap();
        let extra = text.find("auto-aof-rewrite-min-size 1gb\n").expect(&text);
        assert!(
            own < extra,
            "the spec's lines come after the operator's: {text}"
        );
        assert!(text.contains("\nsave 3600 1\n"), "{text}");
        assert!(!text.contains("port 1\n"), "{text}");
        assert!(!text.contains("requirepass"), "{text}");
        assert!(!text.contains("maxmemory"), "{text}");
        let after = stateful_set(&tp, &m);
        assert_ne!(
            config_hash(&before),
            config_hash(&after),
            "Redis restarts to read them"
        );
    }

    #[test]
    fn redis_conf_follows_appendfsync_always_and_the_pod_hash_changes() {
        let tp = TelemetryPipeline::test();
        let mut m = managed(&tp);
        let before = stateful_set(&tp, &m);
        m.appendfsync = AppendFsync::Always;
        assert!(config_text(&tp, &m).contains("appendfsync always\n"));
        let after = stateful_set(&tp, &m);
        assert_ne!(config_hash(&before), config_hash(&after));
    }

    /// The redis.conf hash on a StatefulSet's pod template.
    fn config_hash(s: &StatefulSet) -> String {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn services_select_the_redis_pods_and_the_headless_one_has_no_cluster_ip() {
        let tp = TelemetryPipeline::test();
        let headless = headless_service(&tp);
        let client = client_service(&tp);
        assert_eq!(
            headless.metadata.name.as_deref(),
            Some("pipe-redis-headless")
        );
        assert_eq!(client.metadata.name.as_deref(), Some("pipe-redis"));
        let hs = headless.spec.unwrap();
        assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
        let cs = client.spec.unwrap();
        assert_eq!(cs.cluster_ip, None, "the apiserver allocates it");
        assert_eq!(hs.selector, cs.selector);
        assert_eq!(cs.selector.unwrap()["app.kubernetes.io/name"], "redis");
        assert_eq!(cs.ports.unwrap()[0].port, 6379);
    }

    #[test]
    fn stateful_set_runs_redis_with_the_config_password_pvc_and_probe() {
        let tp = TelemetryPipeline::test();
        let sts = stateful_set(&tp, &managed(&tp));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("pipe-redis-headless"));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("redis:7.2"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["redis-server".to_string()][..])
        );
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "/etc/redis/redis.conf");
        assert!(args.windows(2).any(|w| w == ["--dir", "/data"]));
        assert!(
            args.windows(2)
                .any(|w| w == ["--requirepass", "$(REDIS_PASSWORD)"])
        );
        let env = &c.env.as_ref().unwrap()[0];
        let from = env
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("pipe-redis", "password")
        );
        assert!(c.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
        let claims = spec.volume_claim_templates.unwrap();
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "1Gi"
        );
        assert_eq!(claim.storage_class_name, None);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(REDIS_UID));
    }

    #[test]
    fn stateful_set_takes_image_storage_and_resources_overrides() {
        let tp = TelemetryPipeline::test().with_managed_redis(|m| {
            m.image = "redis:7.4".into();
            m.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
            m.storage.storage_class_name = Some("fast".into());
            m.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
                )])),
                ..Default::default()
            });
        });
        let sts = stateful_set(&tp, &managed(&tp));
        let spec = sts.spec.unwrap();
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("redis:7.4"));
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
            "1Gi"
        );
        let claim = spec.volume_claim_templates.unwrap()[0]
            .spec
            .clone()
            .unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.resources.unwrap().requests.unwrap()["storage"].0,
            "20Gi"
        );
    }

    #[test]
    fn a_sharded_redis_runs_every_node_cluster_enabled_announcing_its_pod_ip() {
        let tp = TelemetryPipeline::test().with_shards(3, 1);
        let m = managed(&tp);
        let text = config_text(&tp, &m);
        for line in [
            "cluster-enabled yes\n",
            "cluster-config-file nodes.conf\n",
            "cluster-require-full-coverage no\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let spec = stateful_set(&tp, &m).spec.unwrap();
        assert_eq!(spec.replicas, Some(6), "3 primaries, a replica each");
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let c = &spec.template.spec.unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--cluster-announce-ip", "$(POD_IP)"])
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["--masterauth", "$(REDIS_PASSWORD)"])
        );
        let env = c.env.as_ref().unwrap();
        let pod_ip = env.iter().find(|e| e.name == "POD_IP").unwrap();
        let field = pod_ip
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.field_path, "status.podIP");
        let ports: Vec<i32> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [6379, 16379]);

        // A single Redis is as it was: one pod, no cluster lines or args.
        let tp = TelemetryPipeline::test();
        let m = managed(&tp);
        assert!(!config_text(&tp, &m).contains("cluster"));
        let spec = stateful_set(&tp, &m).spec.unwrap();
        assert_eq!((spec.replicas, spec.pod_management_policy), (Some(1), None));
        assert_eq!(
            spec.template.spec.unwrap().containers[0]
                .args
                .as_ref()
                .unwrap()
                .len(),
            5
        );
    }
}
