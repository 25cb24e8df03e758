//! PersistentVolumeClaims without a storage provisioner: for each Pending
//! claim the stand-in creates a PersistentVolume pre-bound to it (a
//! `hostPath` on the claim's directory), and the controller-manager's PV
//! binder completes the binding, so a StatefulSet's `volumeClaimTemplates`
//! end up Bound as on a real cluster. Released volumes are deleted along with
//! their directory.

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::error::Result;
use crate::volume::claim_dir;

/// Label on the volumes the stand-in creates.
pub const MANAGED_LABEL: &str = "testenv.telemetry.io/managed-by";

/// One pass: provide volumes for pending claims, remove released ones.
pub async fn sync(client: &kube::Client, claims_root: &Path) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let existing = volumes.list(&ListParams::default()).await?;
    for claim in claims.list(&ListParams::default()).await? {
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
        let spec = claim.spec.clone().unwrap_or_default();
        if !pending || spec.volume_name.is_some() || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(ns), Some(name), Some(uid)) = (
            claim.metadata.namespace.as_deref(),
            claim.metadata.name.as_deref(),
            claim.metadata.uid.as_deref(),
        ) else {
            continue;
        };
        let taken = existing.items.iter().any(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.as_deref() == Some(uid))
        });
        if taken {
            continue;
        }
        let dir = claim_dir(claims_root, ns, name);
        std::fs::create_dir_all(&dir)
            .map_err(crate::Error::io("creating claim directory", &dir))?;
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()?.get("storage").cloned())
            .map_or_else(|| "1Gi".to_owned(), |q| q.0);
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("testenv-{}", &uid[..uid.len().min(36)]),
                         "labels": {MANAGED_LABEL: "telemetry-kubelet"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": ns, "name": name, "uid": uid},
            },
        }))
        .map_err(|source| crate::Error::Encode { what: "persistent volume", source })?;
        match volumes.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(
                namespace = ns,
                claim = name,
                "created a volume for the claim"
            ),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for pv in existing.items {
        let ours = pv
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(MANAGED_LABEL));
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if !(ours && released) {
            continue;
        }
        if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
            && let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref())
        {
            let _ = std::fs::remove_dir_all(claim_dir(claims_root, ns, name));
        }
        if let Some(name) = pv.metadata.name.as_deref() {
            match volumes.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(volume = name, "deleted a released volume"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
