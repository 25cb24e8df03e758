//! `spec.ingest.tls`: TLS on the ingest pods' gRPC and HTTP ports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TLS of the ingest pods. When set, both the gRPC and the HTTP port serve
/// TLS only, with the certificate of the Secret; a renewed certificate in
/// the Secret is served without restarting the pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestTls {
    /// A `kubernetes.io/tls` Secret in the pipeline's namespace, with keys
    /// `tls.crt` (the PEM certificate chain, server certificate first) and
    /// `tls.key` (its PEM private key), as cert-manager or
    /// `kubectl create secret tls` make it.
    pub secret_ref: TlsSecretRef,
}

/// The name of a Secret in the pipeline's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TlsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
