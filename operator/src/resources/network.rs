//! The NetworkPolicies of a pipeline: the managed Redis reachable only from
//! its ingest pods (and, for a cluster, its own nodes and the operator); the ingest ports from `spec.networkPolicy.ingestFrom`
//! (anyone when empty), and the operator's scrape of `/metrics`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::redis::{CLUSTER_BUS_PORT, REDIS_PORT};
use super::{Component, Names, child_meta, selector_labels};
use crate::crd::TelemetryPipeline;

/// `app.kubernetes.io/name` of the operator's pods (the Helm chart's).
pub const OPERATOR_NAME_LABEL: &str = "telemetry-operator";
/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policies `tp` asks for. `operator_namespace` is where the operator's
/// pods run, if known: they keep access to the ingest pods' HTTP port when
/// `ingestFrom` restricts it.
pub fn policies(tp: &TelemetryPipeline, operator_namespace: Option<&str>) -> Vec<NetworkPolicy> {
    if !tp.spec.network_policy.enabled {
        return Vec::new();
    }
    let mut out = vec![ingest(tp, operator_namespace)];
    if tp.spec.redis.managed().is_some() {
        out.push(redis(tp, operator_namespace));
    }
    out
}

/// Ingress to the ingest pods' gRPC and HTTP ports.
fn ingest(tp: &TelemetryPipeline, operator_namespace: Option<&str>) -> NetworkPolicy {
    let ports = &tp.spec.ingest.ports;
    let from = &tp.spec.network_policy.ingest_from;
    let mut rules = vec![NetworkPolicyIngressRule {
        // No `from`: any source.
        from: (!from.is_empty()).then(|| from.clone()),
        ports: Some(vec![tcp(ports.grpc), tcp(ports.http)]),
    }];
    if let Some(ns) = operator_namespace.filter(|_| !from.is_empty()) {
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels([(NAMESPACE_NAME_LABEL, ns)])),
                pod_selector: Some(match_labels([(super::LABEL_NAME, OPERATOR_NAME_LABEL)])),
                ip_block: None,
            }]),
            ports: Some(vec![tcp(ports.http)]),
        });
    }
    policy(tp, Component::Ingest, Names::of(tp).ingest, rules)
}

/// Ingress to Redis: the pipeline's ingest pods only; for a cluster also its
/// own nodes (replication, key migration and the cluster bus) and the
/// operator, which forms and reshards it.
fn redis(tp: &TelemetryPipeline, operator_namespace: Option<&str>) -> NetworkPolicy {
    let mut rules = vec![NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(tp, Component::Ingest)),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![tcp(REDIS_PORT)]),
    }];
    if tp.spec.redis.is_cluster() {
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(tp, Component::Redis)),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(REDIS_PORT), tcp(CLUSTER_BUS_PORT)]),
        });
        // An unknown operator namespace: its pods in any namespace.
        let namespaces = match operator_namespace {
            Some(ns) => match_labels([(NAMESPACE_NAME_LABEL, ns)]),
            None => LabelSelector::default(),
        };
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespaces),
                pod_selector: Some(match_labels([(super::LABEL_NAME, OPERATOR_NAME_LABEL)])),
                ip_block: None,
            }]),
            ports: Some(vec![tcp(REDIS_PORT)]),
        });
    }
    policy(tp, Component::Redis, Names::of(tp).redis, rules)
}

fn policy(
    tp: &TelemetryPipeline,
    component: Component,
    name: String,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: child_meta(tp, component, name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(tp, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

fn match_labels<const N: usize>(labels: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..LabelSelector::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(p: &NetworkPolicy) -> &NetworkPolicySpec {
        p.spec.as_ref().expect("spec")
    }

    fn named<'a>(ps: &'a [NetworkPolicy], name: &str) -> &'a NetworkPolicy {
        ps.iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no policy {name}"))
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => panic!("numeric ports only: {p:?}"),
            })
            .collect()
    }

    #[test]
    fn redis_accepts_only_the_pipelines_ingest_pods_on_its_port() {
        let tp = TelemetryPipeline::test();
        let ps = policies(&tp, Some("operators"));
        let redis = spec(named(&ps, "pipe-redis"));
        assert_eq!(
            redis.pod_selector.as_ref().unwrap().match_labels,
            Some(selector_labels(&tp, Component::Redis))
        );
        assert_eq!(redis.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = redis.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].pod_selector.as_ref().unwrap().match_labels,
            Some(selector_labels(&tp, Component::Ingest))
        );
        // Same namespace only: no namespace selector.
        assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
        assert_eq!(ports(&rules[0]), [6379]);
        assert!(crate::resources::is_controlled_by(
            named(&ps, "pipe-redis"),
            &tp
        ));
    }

    #[test]
    fn cluster_nodes_reach_each_other_and_the_operator_reaches_them() {
        let tp = TelemetryPipeline::test().with_shards(3, 0);
        let ps = policies(&tp, Some("operators"));
        let rules = spec(named(&ps, "pipe-redis")).ingress.clone().unwrap();
        assert_eq!(rules.len(), 3);
        let peer = |r: &NetworkPolicyIngressRule| r.from.as_ref().unwrap()[0].clone();
        assert_eq!(
            peer(&rules[1]).pod_selector.unwrap().match_labels,
            Some(selector_labels(&tp, Component::Redis))
        );
        assert_eq!(ports(&rules[1]), [6379, 16379]);
        let operator = peer(&rules[2]);
        assert_eq!(
            operator.namespace_selector.unwrap().match_labels.unwrap()[NAMESPACE_NAME_LABEL],
            "operators"
        );
        assert_eq!(ports(&rules[2]), [6379]);
        let anywhere = policies(&tp, None);
        let rules = spec(named(&anywhere, "pipe-redis"))
            .ingress
            .clone()
            .unwrap();
        assert_eq!(
            peer(&rules[2]).namespace_selector,
            Some(LabelSelector::default())
        );
    }

    #[test]
    fn ingest_ports_are_open_to_anyone_by_default() {
        let tp = TelemetryPipeline::test();
        let ps = policies(&tp, Some("operators"));
        let ingest = spec(named(&ps, "pipe-ingest"));
        let rules = ingest.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 1, "no operator rule needed: {rules:?}");
        assert!(rules[0].from.is_none());
        assert_eq!(ports(&rules[0]), [50051, 8000]);
    }

    #[test]
    fn a_restricted_ingest_keeps_the_operators_scrape_of_the_http_port() {
        let peer = NetworkPolicyPeer {
            namespace_selector: Some(match_labels([("team", "devices")])),
            ..NetworkPolicyPeer::default()
        };
        let mut tp = TelemetryPipeline::test().with_ingest(|i| i.ports.http = 9000);
        tp.spec.network_policy.ingest_from = vec![peer.clone()];
        let ps = policies(&tp, Some("operators"));
        let rules = spec(named(&ps, "pipe-ingest")).ingress.clone().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].from, Some(vec![peer]));
        assert_eq!(ports(&rules[0]), [50051, 9000]);
        let operator = &rules[1].from.as_ref().unwrap()[0];
        assert_eq!(
            operator.namespace_selector.as_ref().unwrap().match_labels,
            match_labels([("kubernetes.io/metadata.name", "operators")]).match_labels
        );
        assert_eq!(
            operator.pod_selector.as_ref().unwrap().match_labels,
            match_labels([("app.kubernetes.io/name", "telemetry-operator")]).match_labels
        );
        assert_eq!(ports(&rules[1]), [9000]);

        // An operator that does not know its namespace adds no rule.
        let ps = policies(&tp, None);
        assert_eq!(
            spec(named(&ps, "pipe-ingest"))
                .ingress
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn turned_off_or_external_redis_means_fewer_policies() {
        let mut tp = TelemetryPipeline::test();
        tp.spec.network_policy.enabled = false;
        assert!(policies(&tp, None).is_empty());
        let tp = TelemetryPipeline::test().with_external_redis("redis://r:6379", None);
        let names: Vec<_> = policies(&tp, None)
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, ["pipe-ingest"]);
    }
}
