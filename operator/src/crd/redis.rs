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

/// Where the pipeline stores events. Set `managed` or `external`, not both;
/// with neither, the operator runs a managed Redis with the defaults below.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.managed) && has(self.external))",
        "message": "redis: set either managed or external, not both"
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
}

/// A Redis run by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedRedis {
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
            image: DEFAULT_REDIS_IMAGE.to_string(),
            appendfsync: AppendFsync::default(),
            storage: Storage::default(),
            resources: None,
            config: Vec::new(),
            pod_disruption_budget: DisruptionBudget::default(),
        }
    }
}

/// redis.conf directives that the operator writes itself and
/// `redis.managed.config` may not set (the CEL rule on [`RedisDirective`]
/// lists the same names).
pub const OPERATOR_DIRECTIVES: [&str; 15] = [
    "port",
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
        "rule": "!(self.name in ['port', 'bind', 'dir', 'appendonly', 'appendfsync', 'appendfilename', 'appenddirname', 'requirepass', 'masterauth', 'masteruser', 'aclfile', 'user', 'include', 'rename-command', 'protected-mode'])",
        "message": "redis.managed.config: this directive is set by the operator (port, bind, dir, appendonly, appendfsync, appendfilename, appenddirname, requirepass, masterauth, masteruser, aclfile, user, include, rename-command, protected-mode); use the spec's own fields"
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
