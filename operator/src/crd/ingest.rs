//! `spec.ingest`: the ingest Deployment and its Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DisruptionBudget, IngestAuth, IngestLimits, IngestTls};

/// Default gRPC port of the ingest pods and their Service.
pub const DEFAULT_GRPC_PORT: i32 = 50051;
/// Default HTTP port (API, `/healthz`, `/readyz`, `/metrics`).
pub const DEFAULT_HTTP_PORT: i32 = 8000;
/// Default bound of each pod's in-memory queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: i32 = 100_000;
/// Default time an ingest pod gets to drain its queue after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: i32 = 25;

/// The ingest pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct IngestSpec {
    /// Container image of the ingest service. Defaults to the image the
    /// operator was started with (its `--ingest-image`), which matches the
    /// operator's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never.
    /// Kubernetes' default when absent (Always for `:latest`, else IfNotPresent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// CPU and memory requests and limits of the ingest container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Number of ingest pods when autoscaling is absent or disabled. Also the
    /// target of `kubectl scale tpl/NAME`. Ignored while autoscaling is enabled.
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Ports of the ingest containers and of their Service.
    pub ports: IngestPorts,

    /// Bound of each pod's in-memory queue, in events (`--queue-capacity`).
    /// A full queue pushes back on clients.
    #[schemars(range(min = 1, max = 10000000))]
    pub queue_capacity: i32,

    /// Seconds a pod gets after SIGTERM to drain its queue to Redis
    /// (`--shutdown-timeout-seconds`). The pod's terminationGracePeriodSeconds
    /// is sized from it.
    #[schemars(range(min = 1, max = 3600))]
    pub shutdown_timeout_seconds: i32,

    /// Log format of the ingest pods: plain or json.
    pub log_format: LogFormat,

    /// The ingest Service: its type, node ports and annotations.
    pub service: IngestService,

    /// Node labels the ingest pods must be scheduled on.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the ingest pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity and anti-affinity of the ingest pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How ingest pods spread across zones or nodes. Use the pods' labels
    /// `app.kubernetes.io/name: telemetry-ingest` and
    /// `app.kubernetes.io/instance: <pipeline name>` in the selector.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Extra labels on the ingest pods. The operator's own
    /// `app.kubernetes.io/*` labels win on conflict.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on the ingest pods.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// The ingest pods' PodDisruptionBudget: by default a node drain takes
    /// at most one pod at a time, so the others keep serving while it drains.
    pub pod_disruption_budget: DisruptionBudget,

    /// Limits on each pod's connections, gRPC streams, HTTP request bodies
    /// and gRPC messages; unset fields keep the server's defaults.
    pub limits: IngestLimits,

    /// TLS on both ports, from a `kubernetes.io/tls` Secret; absent: plain
    /// text. See docs/tls.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngestTls>,
    /// API keys the ingest pods ask every client for; absent, none is
    /// asked for. `/healthz`, `/readyz` and `/metrics` stay open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<IngestAuth>,
}

impl Default for IngestSpec {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: None,
            resources: None,
            replicas: 1,
            ports: IngestPorts::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout_seconds: DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
            log_format: LogFormat::default(),
            service: IngestService::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            pod_disruption_budget: DisruptionBudget::default(),
            limits: IngestLimits::default(),
            tls: None,
            auth: None,
        }
    }
}

/// Ports of the ingest pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.grpc != self.http", "message": "ingest.ports.grpc and ingest.ports.http must differ"}
]))]
pub struct IngestPorts {
    /// gRPC port (event streams and queries; port name `grpc`).
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    /// HTTP port (JSON API, /healthz, /readyz, /metrics; port name `http`).
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
}

impl Default for IngestPorts {
    fn default() -> Self {
        Self {
            grpc: DEFAULT_GRPC_PORT,
            http: DEFAULT_HTTP_PORT,
        }
    }
}

/// How the ingest Service is exposed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'ClusterIP' || !has(self.nodePorts)",
     "message": "ingest.service.nodePorts needs ingest.service.type NodePort or LoadBalancer"}
]))]
pub struct IngestService {
    /// ClusterIP (inside the cluster only), NodePort (also on a port of every
    /// node, e.g. for kind's port mappings) or LoadBalancer.
    #[serde(rename = "type")]
    pub type_: ServiceType,

    /// Fixed node ports for NodePort and LoadBalancer Services; a port left
    /// out is allocated by Kubernetes. Must lie in the cluster's node-port
    /// range (30000-32767 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ports: Option<NodePorts>,

    /// Annotations of the Service (load-balancer settings, for example).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Node ports of the ingest Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.grpc) || !has(self.http) || self.grpc != self.http",
     "message": "ingest.service.nodePorts.grpc and ingest.service.nodePorts.http must differ"}
]))]
pub struct NodePorts {
    /// Node port of the gRPC port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: Option<i32>,
    /// Node port of the HTTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: Option<i32>,
}

/// When the kubelet pulls an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the image is not on the node.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Log format of the ingest pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line (for log collectors).
    #[default]
    Json,
}

impl LogFormat {
    /// The `--log-format` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }
}

/// How the ingest Service is exposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}
