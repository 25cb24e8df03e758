//! A container's environment, resolved the way the kubelet does it:
//! `envFrom` first, then `env` in order, each value `$(VAR)`-expanded against
//! what is defined before it; values from ConfigMaps, Secrets and the pod's
//! own fields.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use crate::expand::expand;

/// Where referenced ConfigMaps and Secrets (of the pod's namespace) come from.
pub struct Sources<'a> {
    pub config_map: &'a dyn Fn(&str) -> Option<std::sync::Arc<ConfigMap>>,
    pub secret: &'a dyn Fn(&str) -> Option<std::sync::Arc<Secret>>,
}

/// A reference that cannot be resolved yet; the kubelet reports it as
/// `CreateContainerConfigError` and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Missing(pub String);

/// The environment of `container`, in definition order, names unique.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
    sources: &Sources<'_>,
) -> Result<Vec<(String, String)>, Missing> {
    let mut env = Env::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match (sources.config_map)(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.set(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(Missing(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match (sources.secret)(&r.name) {
                Some(secret) => {
                    for (k, v) in secret_data(&secret) {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(Missing(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or_default(), |n| env.get(n)),
            Some(from) => {
                if let Some(sel) = &from.config_map_key_ref {
                    let cm = (sources.config_map)(&sel.name);
                    match cm.as_ref().and_then(|cm| cm.data.as_ref()?.get(&sel.key)) {
                        Some(v) => v.clone(),
                        None if sel.optional == Some(true) => continue,
                        None => {
                            return Err(Missing(format!(
                                "key {:?} of configmap {:?} not found",
                                sel.key, sel.name
                            )));
                        }
                    }
                } else if let Some(sel) = &from.secret_key_ref {
                    let secret = (sources.secret)(&sel.name);
                    let value = secret.as_ref().and_then(|s| {
                        secret_data(s)
                            .into_iter()
                            .find(|(k, _)| *k == sel.key)
                            .map(|(_, v)| v)
                    });
                    match value {
                        Some(v) => v,
                        None if sel.optional == Some(true) => continue,
                        None => {
                            return Err(Missing(format!(
                                "key {:?} of secret {:?} not found",
                                sel.key, sel.name
                            )));
                        }
                    }
                } else if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, pod_ip).ok_or_else(|| {
                        Missing(format!("unsupported fieldRef {:?}", field.field_path))
                    })?
                } else if let Some(res) = &from.resource_field_ref {
                    // No cgroups here: report the container's own limit (or
                    // request), which is what the process would be told.
                    let resources = container.resources.as_ref();
                    let key = res
                        .resource
                        .trim_start_matches("limits.")
                        .trim_start_matches("requests.");
                    resources
                        .and_then(|r| {
                            r.limits
                                .as_ref()?
                                .get(key)
                                .or(r.requests.as_ref()?.get(key))
                        })
                        .map_or_else(|| "0".to_owned(), |q| q.0.clone())
                } else {
                    String::new()
                }
            }
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// The value of a `fieldRef` path.
pub fn field_value(pod: &Pod, path: &str, pod_ip: Ipv4Addr) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "status.podIP" => pod_ip.to_string(),
        "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone().unwrap_or_default(),
        _ => {
            if let Some(key) = map_key("metadata.labels['") {
                meta.labels.as_ref()?.get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = map_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()?
                    .get(&key)
                    .cloned()
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// A Secret's `data` and `stringData` as text.
pub fn secret_data(secret: &Secret) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    // `stringData` is write-only on a real server, but harmless to honour.
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out.into_iter().collect()
}

#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    fn pod(container_env: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "ingest-0", "namespace": "team", "uid": "u1", "labels": {"app": "ingest"}},
            "spec": {"nodeName": "node", "serviceAccountName": "sa", "containers": [{
                "name": "c", "image": "telemetry-ingest",
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": container_env,
            }]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    fn cm(name: &str) -> Option<Arc<ConfigMap>> {
        (name == "cm").then(|| {
            Arc::new(ConfigMap {
                data: Some([("A".to_string(), "1".to_string())].into()),
                ..Default::default()
            })
        })
    }

    fn secret(name: &str) -> Option<Arc<Secret>> {
        (name == "pw").then(|| {
            Arc::new(Secret {
                data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
                ..Default::default()
            })
        })
    }

    const SOURCES: Sources<'static> = Sources {
        config_map: &cm,
        secret: &secret,
    };

    #[test]
    fn values_refs_and_fields_resolve_in_order_with_expansion() {
        let (pod, c) = pod(json!([
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "redis://:$(PW)@$(IP):6379/$(CM_A)/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "A"}}},
        ]));
        let env = resolve(&pod, &c, Ipv4Addr::new(127, 0, 0, 4), &SOURCES).unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_A"), Some("1"));
        assert_eq!(get("PW"), Some("s3cret"));
        assert_eq!(get("NAME"), Some("ingest-0"));
        assert_eq!(get("APP"), Some("ingest"));
        // LATER is defined after URL, so it stays unexpanded, as in Kubernetes.
        assert_eq!(
            get("URL"),
            Some("redis://:s3cret@127.0.0.4:6379/1/$(LATER)")
        );
        assert_eq!(get("A"), Some("1"));
        assert_eq!(env[0].0, "CM_A");
    }

    #[test]
    fn a_missing_reference_fails_unless_optional() {
        let (p, c) = pod(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]),
        );
        let err = resolve(&p, &c, Ipv4Addr::LOCALHOST, &SOURCES).unwrap_err();
        assert!(err.0.contains("nope"), "{err}");
        let (p, c) = pod(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}}]),
        );
        let env = resolve(&p, &c, Ipv4Addr::LOCALHOST, &SOURCES).unwrap();
        assert!(env.iter().all(|(k, _)| k != "X"));
    }
}
