//! Deleting the children the spec no longer asks for (a managed Redis
//! switched to an external one, a PodDisruptionBudget or NetworkPolicy turned
//! off). Only children this pipeline controls (by uid) are ever deleted.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::info;

use super::Context;
use crate::crd::TelemetryPipeline;
use crate::resources::{self, Names};
use crate::{Error, Result};

/// Names of the children the spec asks for, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredNames {
    /// Secrets.
    pub secrets: BTreeSet<String>,
    /// ConfigMaps.
    pub config_maps: BTreeSet<String>,
    /// Services.
    pub services: BTreeSet<String>,
    /// StatefulSets.
    pub stateful_sets: BTreeSet<String>,
    /// Deployments.
    pub deployments: BTreeSet<String>,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: BTreeSet<String>,
    /// NetworkPolicies.
    pub network_policies: BTreeSet<String>,
}

/// The children `tp` asks for.
pub fn desired_names(tp: &TelemetryPipeline) -> DesiredNames {
    let names = Names::of(tp);
    let mut desired = DesiredNames {
        config_maps: [names.ingest.clone()].into(),
        services: [names.ingest.clone()].into(),
        deployments: [names.ingest.clone()].into(),
        ..DesiredNames::default()
    };
    if tp.spec.redis.managed().is_some() {
        desired.secrets.insert(names.redis.clone());
        desired.config_maps.insert(names.redis.clone());
        desired.services.insert(names.redis.clone());
        desired.services.insert(names.redis_headless.clone());
        desired.stateful_sets.insert(names.redis.clone());
    }
    desired.pod_disruption_budgets = resources::disruption::budgets(tp)
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect();
    // The operator's namespace changes a rule, never a name.
    desired.network_policies = resources::network::policies(tp, None)
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    desired
}

/// Deletes the children of `tp` that the spec no longer asks for.
pub(super) async fn prune(tp: &TelemetryPipeline, ctx: &Context, ns: &str) -> Result<()> {
    let desired = desired_names(tp);
    prune_kind::<Secret>(tp, ctx, ns, &desired.secrets).await?;
    prune_kind::<ConfigMap>(tp, ctx, ns, &desired.config_maps).await?;
    prune_kind::<Service>(tp, ctx, ns, &desired.services).await?;
    prune_kind::<StatefulSet>(tp, ctx, ns, &desired.stateful_sets).await?;
    prune_kind::<Deployment>(tp, ctx, ns, &desired.deployments).await?;
    prune_kind::<PodDisruptionBudget>(tp, ctx, ns, &desired.pod_disruption_budgets).await?;
    prune_kind::<NetworkPolicy>(tp, ctx, ns, &desired.network_policies).await?;
    Ok(())
}

async fn prune_kind<K>(
    tp: &TelemetryPipeline,
    ctx: &Context,
    ns: &str,
    keep: &BTreeSet<String>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let listed = api
        .list_metadata(&ListParams::default().labels(&resources::children_selector(tp)))
        .await
        .map_err(|e| Error::kube(format!("list {kind} in {ns}"), e))?;
    for child in listed.items {
        let name = child.name_any();
        if keep.contains(&name) || !resources::is_controlled_by(&child, tp) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(Error::kube(format!("delete {kind} {ns}/{name}"), e)),
        }
        info!(%kind, %name, "deleted: no longer in the spec");
        ctx.metrics
            .child_writes
            .with_label_values(&[&kind, "delete"])
            .inc();
        ctx.publish(
            tp,
            EventType::Normal,
            "Deleted",
            "Delete",
            format!("Deleted {kind} {name}: the spec no longer asks for it"),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_redis_wants_every_child_and_external_only_the_ingest_side() {
        let managed = desired_names(&TelemetryPipeline::test());
        assert_eq!(managed.secrets, ["pipe-redis".to_string()].into());
        assert_eq!(
            managed.services,
            [
                "pipe-ingest".to_string(),
                "pipe-redis".to_string(),
                "pipe-redis-headless".to_string()
            ]
            .into()
        );
        assert_eq!(managed.stateful_sets, ["pipe-redis".to_string()].into());
        assert_eq!(
            managed.pod_disruption_budgets,
            ["pipe-ingest".to_string(), "pipe-redis".to_string()].into()
        );
        let external =
            desired_names(&TelemetryPipeline::test().with_external_redis("redis://r:6379", None));
        assert!(external.secrets.is_empty());
        assert!(external.stateful_sets.is_empty());
        assert_eq!(external.config_maps, ["pipe-ingest".to_string()].into());
        assert_eq!(external.services, ["pipe-ingest".to_string()].into());
        assert_eq!(external.deployments, ["pipe-ingest".to_string()].into());
        assert_eq!(
            external.pod_disruption_budgets,
            ["pipe-ingest".to_string()].into()
        );
        assert_eq!(
            managed.network_policies,
            ["pipe-ingest".to_string(), "pipe-redis".to_string()].into()
        );
        assert_eq!(
            external.network_policies,
            ["pipe-ingest".to_string()].into()
        );
    }
}
