//! What the reconcile observed, the input of [`compute`](super::compute):
//! the children and their pods ([`Observed`]), the Secrets the spec refers to
//! ([`SecretRef`], [`SecretState`]) and a [`Problem`] met while applying.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;

use crate::crd::TelemetryPipeline;
use crate::redis_cluster::{Health, Plan};

/// The spec field that names an external Redis' password Secret.
pub const EXTERNAL_PASSWORD_FIELD: &str = "spec.redis.external.passwordSecretRef";
/// The spec field that names an external Redis' CA Secret.
pub const EXTERNAL_CA_FIELD: &str = "spec.redis.external.tls.caSecretRef";
/// The spec field that names the ingest pods' TLS Secret.
pub const INGEST_TLS_FIELD: &str = "spec.ingest.tls.secretRef";
/// The spec field that names the ingest pods' API key Secret.
pub const API_KEYS_FIELD: &str = "spec.ingest.auth.secretRef";

/// A problem the reconcile ran into that the user must fix (it is not retried
/// in a hot loop), reported as `Degraded=True` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason, e.g. `InvalidAggregation`.
    pub reason: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// A Secret the spec refers to that the operator does not manage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The spec field that names it, e.g. `spec.redis.external.passwordSecretRef`.
    pub field: &'static str,
    /// The Secret's name (in the pipeline's namespace).
    pub name: String,
    /// The key the pods read from it.
    pub key: String,
    /// What that key must hold, e.g. `the Redis password`.
    pub holds: &'static str,
    /// The start of the Degraded reason when it is missing, e.g.
    /// `RedisSecret` (`RedisSecretMissing`, `RedisSecretKeyMissing`).
    pub reason: &'static str,
}

impl SecretRef {
    /// The Secrets `tp` refers to: an external Redis' password Secret and
    /// CA Secret, the ingest pods' TLS Secret (its two keys) and their API
    /// key Secret.
    pub fn all_of(tp: &TelemetryPipeline) -> Vec<SecretRef> {
        let mut refs = Self::redis(tp);
        if let Some(tls) = &tp.spec.ingest.tls {
            for (key, holds) in [
                ("tls.crt", "the PEM certificate chain of the ingest pods"),
                ("tls.key", "the PEM private key of that certificate"),
            ] {
                refs.push(SecretRef {
                    field: INGEST_TLS_FIELD,
                    name: tls.secret_ref.name.clone(),
                    key: key.to_string(),
                    holds,
                    reason: "TlsSecret",
                });
            }
        }
        if let Some(auth) = &tp.spec.ingest.auth {
            refs.push(SecretRef {
                field: API_KEYS_FIELD,
                name: auth.secret_ref.name.clone(),
                key: auth.secret_ref.key.clone(),
                holds: "the API key file (telemetryctl key new prints its entries)",
                reason: "ApiKeysSecret",
            });
        }
        refs
    }

    fn redis(tp: &TelemetryPipeline) -> Vec<SecretRef> {
        let Some(ext) = tp.spec.redis.external.as_ref() else {
            return Vec::new();
        };
        let password = ext.password_secret_ref.as_ref().map(|r| SecretRef {
            field: EXTERNAL_PASSWORD_FIELD,
            name: r.name.clone(),
            key: r.key.clone(),
            holds: "the Redis password",
            reason: "RedisSecret",
        });
        let ca = ext.tls.as_ref().map(|tls| SecretRef {
            field: EXTERNAL_CA_FIELD,
            name: tls.ca_secret_ref.name.clone(),
            key: tls.ca_secret_ref.key.clone(),
            holds: "the PEM CA certificate of the Redis",
            reason: "RedisSecret",
        });
        password.into_iter().chain(ca).collect()
    }
}

/// What the reconcile found of a referenced Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// The Secret exists and has the key.
    Present,
    /// The Secret exists without the key.
    KeyMissing,
    /// There is no such Secret.
    Missing,
}

/// What the operator saw of the children in this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The managed Redis StatefulSet (None when missing or when Redis is external).
    pub redis: Option<StatefulSet>,
    /// The ingest Deployment, if it exists.
    pub deployment: Option<Deployment>,
    /// The managed Redis' pods (by its selector labels).
    pub redis_pods: Vec<Pod>,
    /// The ingest pods (by the Deployment's selector labels), old and new.
    pub ingest_pods: Vec<Pod>,
    /// Each Secret the spec refers to ([`SecretRef::all_of`]) and what was found.
    pub secrets: Vec<(SecretRef, SecretState)>,
    /// A permanent problem met while applying, if any.
    pub problem: Option<Problem>,
    /// The managed Redis Cluster, for a sharded pipeline, as this pass's
    /// round found it.
    pub redis_cluster: Option<ClusterObservation>,
}

/// What a reconcile pass found of a managed Redis Cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterObservation {
    /// Not every pod runs with an address yet, so no round was run.
    PodsStarting {
        /// Pods with an address.
        running: usize,
        /// Pods the StatefulSet is to have.
        wanted: usize,
    },
    /// A round ran: the cluster at its start, what it planned, and the error
    /// of the step that failed, if one did.
    Round {
        health: Health,
        plan: Plan,
        error: Option<String>,
    },
}

/// The problem a missing Secret or key is, if any: the pods that read it
/// cannot start until it exists.
pub fn secret_problem(secrets: &[(SecretRef, SecretState)]) -> Option<Problem> {
    secrets.iter().find_map(|(r, state)| match state {
        SecretState::Present => None,
        SecretState::Missing => Some(Problem {
            reason: format!("{}Missing", r.reason),
            message: format!(
                "Secret {:?} named in {} does not exist: create it with {} under key {:?}; the ingest pods start once it exists",
                r.name, r.field, r.holds, r.key
            ),
        }),
        SecretState::KeyMissing => Some(Problem {
            reason: format!("{}KeyMissing", r.reason),
            message: format!(
                "Secret {:?} named in {} has no key {:?}: add {} under that key; the ingest pods start once it exists",
                r.name, r.field, r.key, r.holds
            ),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixtures::*;
    use crate::status::{DEGRADED, READY, compute};

    #[test]
    fn a_missing_external_redis_secret_is_named_in_degraded_and_ready() {
        let tp = TelemetryPipeline::test().with_external_redis("redis://cache:6379", Some("creds"));
        let secret = SecretRef::all_of(&tp);
        assert_eq!(
            secret,
            [SecretRef {
                field: "spec.redis.external.passwordSecretRef",
                name: "creds".into(),
                key: "password".into(),
                holds: "the Redis password",
                reason: "RedisSecret",
            }]
        );
        let stuck = pod(
            "pipe-ingest-abc",
            false,
            100,
            container(
                false,
                waiting(
                    "CreateContainerConfigError",
                    "key \"password\" of secret \"creds\" not found",
                ),
                None,
            ),
        );
        let observed = Observed {
            redis: None,
            redis_pods: vec![],
            deployment: Some(deployment(1, 0, 1)),
            ingest_pods: vec![stuck],
            secrets: vec![(secret[0].clone(), SecretState::Missing)],
            problem: None,
            redis_cluster: None,
        };
        let s = compute(&tp, &observed, at(105));
        for t in [READY, DEGRADED] {
            let c = cond(&s, t);
            assert_eq!(c.reason, "RedisSecretMissing", "{t}");
            for part in [
                "\"creds\"",
                "\"password\"",
                "spec.redis.external.passwordSecretRef",
            ] {
                assert!(c.message.contains(part), "{t}: {}", c.message);
            }
        }
        assert_eq!(cond(&s, DEGRADED).status, "True");

        let key_missing = Observed {
            secrets: vec![(secret[0].clone(), SecretState::KeyMissing)],
            ..observed.clone()
        };
        let s = compute(&tp, &key_missing, at(105));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisSecretKeyMissing"));

        // Deleted after the pods started: they still serve, but the next one
        // to start will not.
        let serving = Observed {
            deployment: Some(deployment(1, 1, 1)),
            ingest_pods: vec![ready_pod("pipe-ingest-abc")],
            ..observed
        };
        let s = compute(&tp, &serving, at(105));
        assert_eq!(state(&s, READY), ("True", "Ready"));
        assert_eq!(state(&s, DEGRADED), ("True", "RedisSecretMissing"));
    }

    #[test]
    fn a_missing_redis_ca_secret_is_checked_and_named_with_what_it_must_hold() {
        use crate::crd::redis::{CaSecretKeyRef, ExternalRedisTls};
        let mut tp =
            TelemetryPipeline::test().with_external_redis("rediss://cache:6380", Some("creds"));
        tp.spec.redis.external.as_mut().unwrap().tls = Some(ExternalRedisTls {
            ca_secret_ref: CaSecretKeyRef {
                name: "redis-ca".into(),
                key: "ca.crt".into(),
            },
        });
        let refs = SecretRef::all_of(&tp);
        assert_eq!(
            refs.iter()
                .map(|r| (r.field, r.name.as_str(), r.key.as_str()))
                .collect::<Vec<_>>(),
            [
                (EXTERNAL_PASSWORD_FIELD, "creds", "password"),
                (EXTERNAL_CA_FIELD, "redis-ca", "ca.crt"),
            ]
        );
        let secrets = vec![
            (refs[0].clone(), SecretState::Present),
            (refs[1].clone(), SecretState::KeyMissing),
        ];
        let p = secret_problem(&secrets).expect("a problem");
        assert_eq!(p.reason, "RedisSecretKeyMissing");
        for part in [
            "\"redis-ca\"",
            "\"ca.crt\"",
            "spec.redis.external.tls.caSecretRef",
            "PEM CA certificate",
        ] {
            assert!(p.message.contains(part), "{}", p.message);
        }
    }

    #[test]
    fn a_missing_ingest_tls_secret_is_named_with_its_field_and_keys() {
        let mut tp = TelemetryPipeline::test();
        tp.spec.ingest.tls = Some(crate::crd::IngestTls {
            secret_ref: crate::crd::TlsSecretRef {
                name: "ingest-tls".into(),
            },
        });
        let refs = SecretRef::all_of(&tp);
        assert_eq!(
            refs.iter()
                .map(|r| (r.field, r.name.as_str(), r.key.as_str()))
                .collect::<Vec<_>>(),
            [
                (INGEST_TLS_FIELD, "ingest-tls", "tls.crt"),
                (INGEST_TLS_FIELD, "ingest-tls", "tls.key"),
            ]
        );
        let missing = vec![
            (refs[0].clone(), SecretState::Missing),
            (refs[1].clone(), SecretState::Missing),
        ];
        let p = secret_problem(&missing).expect("a problem");
        assert_eq!(p.reason, "TlsSecretMissing");
        assert!(
            p.message.contains("\"ingest-tls\"") && p.message.contains(INGEST_TLS_FIELD),
            "{}",
            p.message
        );
        let no_key = vec![
            (refs[0].clone(), SecretState::Present),
            (refs[1].clone(), SecretState::KeyMissing),
        ];
        let p = secret_problem(&no_key).expect("a problem");
        assert_eq!(p.reason, "TlsSecretKeyMissing");
        assert!(p.message.contains("\"tls.key\""), "{}", p.message);
    }

    #[test]
    fn a_missing_api_key_secret_is_checked_and_named_with_what_it_must_hold() {
        let tp = TelemetryPipeline::test().with_api_keys("ingest-keys");
        let refs = SecretRef::all_of(&tp);
        assert_eq!(
            refs.iter()
                .map(|r| (r.field, r.name.as_str(), r.key.as_str()))
                .collect::<Vec<_>>(),
            [(API_KEYS_FIELD, "ingest-keys", "keys.yaml")]
        );
        let p = secret_problem(&[(refs[0].clone(), SecretState::Missing)]).expect("a problem");
        assert_eq!(p.reason, "ApiKeysSecretMissing");
        for part in [
            "\"ingest-keys\"",
            "\"keys.yaml\"",
            "spec.ingest.auth.secretRef",
            "API key file",
        ] {
            assert!(p.message.contains(part), "{}", p.message);
        }
        let p = secret_problem(&[(refs[0].clone(), SecretState::KeyMissing)]).expect("a problem");
        assert_eq!(p.reason, "ApiKeysSecretKeyMissing");
        assert!(SecretRef::all_of(&TelemetryPipeline::test()).is_empty());
    }
}
