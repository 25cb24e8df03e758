//! The PodDisruptionBudgets of the ingest pods and of the managed Redis.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Component, Names, child_meta, selector_labels};
use crate::crd::{DisruptionBudget, TelemetryPipeline};

/// The budget of `component`'s pods, if `spec` asks for one. It shares the
/// name of the Deployment or StatefulSet it covers.
pub fn budget(
    tp: &TelemetryPipeline,
    component: Component,
    spec: &DisruptionBudget,
) -> Option<PodDisruptionBudget> {
    if !spec.enabled {
        return None;
    }
    let names = Names::of(tp);
    let name = match component {
        Component::Ingest => names.ingest,
        Component::Redis => names.redis,
    };
    Some(PodDisruptionBudget {
        metadata: child_meta(tp, component, name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(spec.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(tp, component)),
                ..LabelSelector::default()
            }),
            // A pod that is not ready serves nothing: evicting it costs no
            // availability, so it never waits for the budget (a crash-looping
            // pod must not block a node drain).
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// The budgets `tp` asks for: ingest's, and the managed Redis's.
pub fn budgets(tp: &TelemetryPipeline) -> Vec<PodDisruptionBudget> {
    let ingest = budget(tp, Component::Ingest, &tp.spec.ingest.pod_disruption_budget);
    let redis = tp
        .spec
        .redis
        .managed()
        .and_then(|m| budget(tp, Component::Redis, &m.pod_disruption_budget));
    ingest.into_iter().chain(redis).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    fn spec(pdb: &PodDisruptionBudget) -> &PodDisruptionBudgetSpec {
        pdb.spec.as_ref().expect("spec")
    }

    fn names(budgets: &[PodDisruptionBudget]) -> Vec<String> {
        budgets
            .iter()
            .map(|b| b.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn ingest_and_managed_redis_get_a_budget_of_one_pod_by_default() {
        let tp = TelemetryPipeline::test();
        let got = budgets(&tp);
        assert_eq!(names(&got), ["pipe-ingest", "pipe-redis"]);
        for (b, component) in got.iter().zip([Component::Ingest, Component::Redis]) {
            assert_eq!(spec(b).max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(spec(b).min_available, None);
            assert_eq!(
                spec(b)
                    .selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone()),
                Some(selector_labels(&tp, component))
            );
            assert_eq!(
                spec(b).unhealthy_pod_eviction_policy.as_deref(),
                Some("AlwaysAllow")
            );
            assert_eq!(b.metadata.namespace.as_deref(), Some("ns"));
            assert!(crate::resources::is_controlled_by(b, &tp));
        }
    }

    #[test]
    fn the_spec_sets_the_budget_or_turns_it_off() {
        let tp = TelemetryPipeline::test()
            .with_ingest(|i| {
                i.pod_disruption_budget.max_unavailable = IntOrString::String("25%".into())
            })
            .with_managed_redis(|r| r.pod_disruption_budget.enabled = false);
        let got = budgets(&tp);
        assert_eq!(names(&got), ["pipe-ingest"]);
        assert_eq!(
            spec(&got[0]).max_unavailable,
            Some(IntOrString::String("25%".into()))
        );

        let tp = TelemetryPipeline::test().with_ingest(|i| i.pod_disruption_budget.enabled = false);
        assert_eq!(names(&budgets(&tp)), ["pipe-redis"]);
    }

    #[test]
    fn an_external_redis_has_no_budget_of_ours() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://r:6379", None);
        assert_eq!(names(&budgets(&tp)), ["pipe-ingest"]);
    }
}
