//! `spec.networkPolicy`: which pods may reach the pipeline's Redis and ingest
//! pods.

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The NetworkPolicies the operator creates for a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPolicySpec {
    /// Create the policies: the managed Redis accepts connections only from
    /// this pipeline's ingest pods; the ingest pods accept their gRPC and
    /// HTTP ports from `ingestFrom`. Enforced only where the cluster's
    /// network plugin implements NetworkPolicy.
    pub enabled: bool,

    /// Who may reach the ingest ports (standard NetworkPolicy peers:
    /// podSelector, namespaceSelector, ipBlock). Empty: anyone. When set,
    /// the operator's own pods may still read `/metrics` on the HTTP port
    /// (the autoscaler needs it); add your Prometheus here if it scrapes the
    /// pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ingest_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingest_from: Vec::new(),
        }
    }
}
