//! Test fixtures: `TelemetryPipeline::test().with_...()` builders.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use telemetry_config::AggregationConfig;

use crate::crd::autoscaling::AutoscalingSpec;
use crate::crd::ingest::IngestSpec;
use crate::crd::redis::{ExternalRedis, ManagedRedis, SecretKeyRef};
use crate::crd::{TelemetryPipeline, TelemetryPipelineSpec, TelemetryPipelineStatus};

impl TelemetryPipeline {
    /// `ns/pipe`, uid `uid-1`, generation 1, every spec field at its default.
    pub fn test() -> Self {
        let mut tp = TelemetryPipeline::new("pipe", TelemetryPipelineSpec::default());
        tp.metadata = ObjectMeta {
            name: Some("pipe".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        tp
    }

    /// With `spec.ingest` changed by `f`.
    pub fn with_ingest(mut self, f: impl FnOnce(&mut IngestSpec)) -> Self {
        f(&mut self.spec.ingest);
        self
    }

    /// With an explicit `spec.redis.managed`, changed by `f`.
    pub fn with_managed_redis(mut self, f: impl FnOnce(&mut ManagedRedis)) -> Self {
        let mut managed = ManagedRedis::default();
        f(&mut managed);
        self.spec.redis.managed = Some(managed);
        self.spec.redis.external = None;
        self
    }

    /// With a managed Redis Cluster of `shards` primaries, `replicas` each.
    pub fn with_shards(self, shards: i32, replicas: i32) -> Self {
        self.with_managed_redis(|m| {
            m.shards = shards;
            m.replicas_per_shard = replicas;
        })
    }

    /// With an external Redis at `url`, its password in Secret `secret`.
    pub fn with_external_redis(mut self, url: &str, secret: Option<&str>) -> Self {
        self.spec.redis.managed = None;
        self.spec.redis.external = Some(ExternalRedis {
            url: url.into(),
            password_secret_ref: secret.map(|name| SecretKeyRef {
                name: name.into(),
                key: "password".into(),
            }),
            username: None,
            tls: None,
            cluster: false,
        });
        self
    }

    /// With API keys from Secret `secret` (key `keys.yaml`).
    pub fn with_api_keys(mut self, secret: &str) -> Self {
        self.spec.ingest.auth = Some(crate::crd::IngestAuth::from_secret(secret));
        self
    }

    /// With autoscaling enabled between `min` and `max`.
    pub fn with_autoscaling(mut self, min: i32, max: i32) -> Self {
        self.spec.autoscaling = Some(AutoscalingSpec::test(min, max));
        self
    }

    /// With `spec.aggregation`.
    pub fn with_aggregation(mut self, aggregation: AggregationConfig) -> Self {
        self.spec.aggregation = aggregation;
        self
    }

    /// With `spec.paused: true`.
    pub fn paused(mut self) -> Self {
        self.spec.paused = true;
        self
    }

    /// At `metadata.generation`.
    pub fn at_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    /// With a status.
    pub fn with_status(mut self, status: TelemetryPipelineStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl AutoscalingSpec {
    /// Enabled, `min..=max`, target 100 events per pod, every other field at
    /// its default (as the apiserver would fill it in).
    pub fn test(min: i32, max: i32) -> Self {
        serde_json::from_value(serde_json::json!({
            "minReplicas": min,
            "maxReplicas": max,
            "targetQueueDepthPerPod": 100,
        }))
        .expect("a valid autoscaling spec")
    }
}
