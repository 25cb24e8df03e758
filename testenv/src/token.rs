//! ServiceAccount credentials for pod processes: a bound token from the
//! TokenRequest API and a kubeconfig that points at the apiserver with the
//! cluster CA, handed to the process as `KUBECONFIG`. So the operator's
//! chart RBAC is what authorizes the operator, as in a real cluster.

use std::path::Path;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::error::{Error, Result};

/// The apiserver as the stand-in itself reaches it.
#[derive(Debug, Clone)]
pub struct Apiserver {
    pub server: String,
    /// `certificate-authority` (a path) or `certificate-authority-data`.
    pub ca: CaRef,
}

#[derive(Debug, Clone)]
pub enum CaRef {
    File(String),
    Data(String),
}

impl Apiserver {
    /// Reads the current context's cluster from a kubeconfig.
    pub fn from_kubeconfig(path: &Path) -> Result<Apiserver> {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
        let ctx_name = kc.current_context.clone().unwrap_or_default();
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .unwrap_or_default();
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no cluster for the current context",
                    path.display()
                ))
            })?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| Error::Invalid(format!("{}: cluster has no server", path.display())))?;
        let ca = match (
            &cluster.certificate_authority,
            &cluster.certificate_authority_data,
        ) {
            (Some(file), _) => CaRef::File(file.clone()),
            (None, Some(data)) => CaRef::Data(data.clone()),
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "{}: cluster has no CA",
                    path.display()
                )));
            }
        };
        Ok(Apiserver { server, ca })
    }
}

/// Requests a token for the pod's ServiceAccount, bound to the pod (so it
/// dies with it), and writes a kubeconfig using it.
#[tracing::instrument(skip_all, fields(pod = pod.metadata.name.as_deref(), sa = sa))]
pub async fn write_kubeconfig(
    client: &kube::Client,
    apiserver: &Apiserver,
    pod: &Pod,
    sa: &str,
    dest: &Path,
) -> Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [],
            "expirationSeconds": 86400,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    }))
    .map_err(|source| Error::Encode {
        what: "token request",
        source,
    })?;
    let token = accounts
        .create_token_request(sa, &PostParams::default(), &request)
        .await?
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::Invalid(format!("TokenRequest for {ns}/{sa} returned no token")))?;
    let ca = match &apiserver.ca {
        CaRef::File(f) => json!({"certificate-authority": f}),
        CaRef::Data(d) => json!({"certificate-authority-data": d}),
    };
    let mut cluster = json!({"server": apiserver.server});
    cluster
        .as_object_mut()
        .expect("a JSON object")
        .extend(ca.as_object().cloned().unwrap_or_default());
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": sa, "namespace": ns}}],
        "current-context": "testenv",
    });
    let text = serde_json::to_string_pretty(&kubeconfig).map_err(|source| Error::Encode {
        what: "kubeconfig",
        source,
    })?;
    std::fs::write(dest, text).map_err(Error::io("writing pod kubeconfig", dest))?;
    Ok(())
}
