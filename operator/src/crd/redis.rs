//! `spec.redis`: a Redis managed by the operator, or an external one.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DisruptionBudget;

/// Default image of a managed Redis.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.2";
/// Default size of a managed Redis' volume.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";
/// Key of the password in the generated Secret.
pub const PASSWORD_KEY: &str = "password";

/// Default number of partitions of a sharded pipeline.
pub const DEFAULT_PARTITIONS: i32 = 12;
/// Most shards of a managed Redis Cluster.
pub const MAX_SHARDS: i32 = 64;

/// Where the pipeline stores events. Set `managed` or `external`, not both;
/// with neither, the operator runs a managed Redis with the defaults below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.managed) && has(self.external))",
        "message": "redis: set either managed or external, not both"
    },
    {
        "rule": "!has(self.managed) || self.managed.shards <= self.partitions",
        "message": "redis.managed.shards must not exceed redis.partitions (12 by default): every shard needs at least one partition"
    },
    {
        "rule": "!(has(self.managed) && self.managed.shards >= 2) || has(oldSelf.external) || (has(oldSelf.managed) && oldSelf.managed.shards >= 2)",
        "message": "redis.managed.shards: a single Redis (shards: 1) cannot become a Redis Cluster, its keys are not partitioned; create a new pipeline with shards of 2 or more"
    },
    {
        "rule": "!(has(oldSelf.managed) && oldSelf.managed.shards >= 2) || has(self.external) || (has(self.managed) && self.managed.shards >= oldSelf.managed.shards)",
        "message": "redis.managed.shards cannot shrink: the operator adds shards and moves slots to them, but does not empty and remove a primary"
    },
    {
        "rule": "self.partitions == oldSelf.partitions",
        "message": "redis.partitions is immutable: it is part of the stored key layout"
    }
]))]
pub struct RedisSpec {
    /// A single-node Redis run by the operator as a StatefulSet, with AOF
    /// persistence on a PersistentVolumeClaim and a generated password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,

    /// A Redis the operator does not run; the ingest pods connect to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,

    /// Partitions of a sharded pipeline (a managed Redis with `shards` of 2
    /// or more, or an external cluster): every key carries the hash tag of
    /// one, so the number of shards can grow up to it. Part of the stored
    /// key layout, so fixed at creation; best a multiple of the shards.
    /// Unused by a single Redis.
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: i32,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            managed: None,
            external: None,
            partitions: DEFAULT_PARTITIONS,
        }
    }
}

impl RedisSpec {
    /// The managed Redis settings, or `None` for an external Redis.
    pub fn managed(&self) -> Option<ManagedRedis> {
        match (&self.managed, &self.external) {
            (_, Some(_)) => None,
            (Some(m), None) => Some(m.clone()),
            (None, None) => Some(ManagedRedis::default()),
        }
    }

    /// Whether the pipeline stores its events on a Redis Cluster: a managed
    /// one of 2 or more shards, or an external one.
    pub fn is_cluster(&self) -> bool {
        match &self.external {
            Some(ext) => ext.cluster,
            None => self.managed().is_some_and(|m| m.is_cluster()),
        }
    }
}

/// A Redis run by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.replicasPerShard == 0 || self.shards >= 2",
        "message": "redis.managed.replicasPerShard needs shards of 2 or more: a single Redis (shards: 1) runs without replicas"
    },
    {
        "rule": "self.replicasPerShard == oldSelf.replicasPerShard",
        "message": "redis.managed.replicasPerShard is fixed at creation"
    }
]))]
pub struct ManagedRedis {
    /// Primaries. 1 (the default): a single Redis. 2 or more: a Redis
    /// Cluster of that many primaries, each owning an equal share of the
    /// hash slots, over which the pipeline's keys are partitioned
    /// (`redis.partitions`), so that Redis throughput grows with the shards.
    /// A cluster can grow (the operator moves slots to the new primaries
    /// while ingest keeps serving), never shrink; a single Redis cannot
    /// become a cluster.
    #[schemars(range(min = 1, max = 64))]
    pub shards: i32,

    /// Replicas of each primary of a cluster (0 to 5). With 1 or more, a
    /// flush is acknowledged only once a replica holds it (`WAIT`), so a
    /// primary that dies is replaced by its replica without losing
    /// acknowledged events; ingest then stalls (retryably) while a shard has
    /// no replica up. Fixed at creation.
    #[schemars(range(min = 0, max = 5))]
    pub replicas_per_shard: i32,

    /// Container image of Redis (7.x).
    #[schemars(length(min = 1))]
    pub image: String,

    /// AOF fsync policy: everysec (at most about one second of acknowledged
    /// events lost if Redis crashes) or always (none lost, slower writes).
    pub appendfsync: AppendFsync,

    /// The PersistentVolumeClaim that holds the AOF. Fixed at creation.
    pub storage: Storage,

    /// CPU and memory requests and limits of the Redis container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// More redis.conf directives, written after the operator's own, e.g.
    /// `{name: auto-aof-rewrite-min-size, value: 1gb}` so that AOF rewrites,
    /// which fork and take CPU from Redis's share, happen less often. The
    /// directives the operator sets itself (port, bind, dir, the AOF
    /// switches and file names, passwords, includes) are refused. A change
    /// restarts Redis.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub config: Vec<RedisDirective>,

    /// The Redis pod's PodDisruptionBudget. With one Redis pod the default
    /// (`maxUnavailable: 1`) lets a node drain evict it: ingest refuses new
    /// events with a retryable status until Redis is back, and loses none it
    /// acknowledged. `maxUnavailable: 0` keeps Redis up but blocks the drain
    /// until someone moves it.
    pub pod_disruption_budget: DisruptionBudget,
}

impl Default for ManagedRedis {
    fn default() -> Self {
        Self {
            shards: 1,
            replicas_per_shard: 0,
            image: DEFAULT_REDIS_IMAGE.to_string(),
            appendfsync: AppendFsync::default(),
            storage: Storage::default(),
            resources: None,
            config: Vec::new(),
            pod_disruption_budget: DisruptionBudget::default(),
        }
    }
}

impl ManagedRedis {
    /// Whether it is a Redis Cluster (2 or more shards) rather than a
    /// single Redis.
    pub fn is_cluster(&self) -> bool {
        self.shards >= 2
    }
}

/// redis.conf directives that the operator writes itself and
/// `redis.managed.config` may not set (the CEL rule on [`RedisDirective`]
/// lists the same names).
pub const OPERATOR_DIRECTIVES: [&str; 21] = [
    "port",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-port",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-bus-port",
    "bind",
    "dir",
    "appendonly",
    "appendfsync",
    "appendfilename",
    "appenddirname",
    "requirepass",
    "masterauth",
    "masteruser",
    "aclfile",
    "user",
    "include",
    "rename-command",
    "protected-mode",
];

/// One redis.conf line of `redis.managed.config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(self.name in ['port', 'bind', 'dir', 'appendonly', 'appendfsync', 'appendfilename', 'appenddirname', 'requirepass', 'masterauth', 'masteruser', 'aclfile', 'user', 'include', 'rename-command', 'protected-mode', 'cluster-enabled', 'cluster-config-file', 'cluster-port', 'cluster-announce-ip', 'cluster-announce-port', 'cluster-announce-bus-port'])",
        "message": "redis.managed.config: this directive is set by the operator (port, bind, dir, appendonly, appendfsync, appendfilename, appenddirname, requirepass, masterauth, masteruser, aclfile, user, include, rename-command, protected-mode, cluster-enabled, cluster-config-file, cluster-port, cluster-announce-ip, cluster-announce-port, cluster-announce-bus-port); use the spec's own fields"
    },
    {
        "rule": "!self.value.contains('\\n') && !self.value.contains('\\r')",
        "message": "redis.managed.config: a value must be a single line"
    }
]))]
pub struct RedisDirective {
    /// The directive, as spelled in redis.conf: lowercase letters, digits
    /// and dashes.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*$"), length(min = 1, max = 64))]
    pub name: String,

    /// Its arguments, written after the name as given (one line).
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// The volume of a managed Redis. A StatefulSet's volume claim template
/// cannot change, so neither can these fields once set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "redis.managed.storage.storageClassName is immutable: the Redis volume cannot move to another storage class"
    },
    {
        "rule": "self.size == oldSelf.size",
        "message": "redis.managed.storage.size is immutable: expand the PersistentVolumeClaim data-NAME-redis-0 directly instead"
    }
]))]
pub struct Storage {
    /// Requested size of the volume, e.g. 10Gi.
    pub size: Quantity,

    /// StorageClass of the volume; the cluster's default class when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: Quantity(DEFAULT_STORAGE_SIZE.to_string()),
            storage_class_name: None,
        }
    }
}

/// The AOF fsync policy of a managed Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppendFsync {
    /// fsync once a second.
    #[default]
    Everysec,
    /// fsync before every acknowledgement.
    Always,
}

impl AppendFsync {
    /// The redis.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Everysec => "everysec",
            AppendFsync::Always => "always",
        }
    }
}

/// A Redis the operator does not run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!self.url.contains('@')",
        "message": "redis.external.url must not carry credentials; put the password in a Secret and name it in passwordSecretRef"
    },
    {
        "rule": "!has(self.tls) || self.url.startsWith('rediss://')",
        "message": "redis.external.tls needs a rediss:// url"
    },
    {
        "rule": "!(has(self.cluster) && self.cluster) || self.url.matches('^redis://[^/]+$')",
        "message": "redis.external.cluster needs a redis://HOST:PORT url: a Redis Cluster has no databases to select, and TLS to a cluster is not supported yet"
    }
]))]
pub struct ExternalRedis {
    /// Address of the Redis, `redis://HOST:PORT` (or `rediss://` for TLS).
    #[schemars(regex(pattern = r"^rediss?://[^/\s]+(/[0-9]+)?$"), length(max = 512))]
    pub url: String,

    /// The Secret key that holds the Redis password; absent when the Redis
    /// needs no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Redis ACL user the ingest pods log in as (`AUTH <username>
    /// <password>`); absent for the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^\s]+$"), length(min = 1, max = 256))]
    pub username: Option<String>,

    /// TLS settings of a `rediss://` URL: the CA certificates the ingest
    /// pods trust, on top of their image's system store (which the release
    /// image, built from scratch, does not have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalRedisTls>,

    /// The url is a node (or the configuration endpoint) of a Redis Cluster:
    /// the ingest pods learn the other nodes from it and partition the
    /// pipeline's keys over the cluster's shards (`redis.partitions`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
}

/// How the ingest pods verify an external Redis' TLS certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedisTls {
    /// The Secret key holding the PEM CA certificate(s) that signed the
    /// Redis server certificate, trusted on top of the system store.
    pub ca_secret_ref: CaSecretKeyRef,
}

/// A key of a Secret in the pipeline's namespace holding PEM certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Default key of the CA certificate, as cert-manager names it.
pub const CA_KEY: &str = "ca.crt";

fn default_ca_key() -> String {
    CA_KEY.to_string()
}

/// A key of a Secret in the pipeline's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    PASSWORD_KEY.to_string()
}

/// `status.redisCluster`: a managed Redis Cluster as the operator last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterStatus {
    /// Primaries serving slots (reachable ones, by their own account).
    pub shards: i32,
    /// Hash slots served by those primaries, of 16384.
    pub slots_served: i32,
    /// Slots being migrated between primaries (resharding).
    pub slots_migrating: i32,
    /// What the operator is doing to the cluster: `Converged`, `Forming`,
    /// `Resharding`, `Waiting` or `Blocked`.
    pub phase: String,
    /// E.g. "3 of 3 shards serving 16384 slots, 1 replica each", and what is
    /// missing or in progress.
    pub message: String,
}
