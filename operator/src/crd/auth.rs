//! `spec.ingest.auth`: API keys the ingest pods ask every client for.
//! Absent: no key is asked for (the quick start). See docs/security.md.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Secret key that holds the key file by default.
pub const API_KEYS_KEY: &str = "keys.yaml";

/// API keys of the ingest pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestAuth {
    /// The Secret (in the pipeline's namespace) holding the key file: a
    /// YAML list of `{name, sha256, scopes}` (make entries with
    /// `telemetryctl key new`). It is mounted read-only and re-read when it
    /// changes: keys are added and revoked without restarting a pod.
    pub secret_ref: ApiKeysSecretRef,
}

/// A Secret key holding the API key file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_key() -> String {
    API_KEYS_KEY.to_string()
}

impl IngestAuth {
    /// API keys from Secret `name`, key `keys.yaml`.
    pub fn from_secret(name: &str) -> IngestAuth {
        IngestAuth {
            secret_ref: ApiKeysSecretRef {
                name: name.to_string(),
                key: default_key(),
            },
        }
    }
}
