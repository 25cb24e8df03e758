//! How long one autoscaler decision takes over 1 000 pods (target: < 1 ms).
//!
//! Reproduce: `cargo bench -p telemetry-operator --bench decide`
//!
//! Every tick of every pipeline runs `decide` once; it is pure, so its cost
//! is CPU alone. The inputs mix ready, missing and pending pods, a rate
//! metric, and a long history, so every branch of the maths runs.

use std::hint::black_box;
use std::time::Instant;

use telemetry_operator::autoscale::{
    History, Inputs, MILLI, Phase, PodInput, Recommendation, Sample, ScaleEvent, decide,
};
use telemetry_operator::crd::autoscaling::AutoscalingSpec;

const PODS: usize = 1000;
const RUNS: usize = 2000;

fn main() {
    println!("reproduce: cargo bench -p telemetry-operator --bench decide");
    let mut spec: AutoscalingSpec = serde_json::from_value(serde_json::json!({
        "minReplicas": 2,
        "maxReplicas": 2000,
        "targetQueueDepthPerPod": 100,
        "targetEventsPerSecondPerPod": 700,
    }))
    .expect("a valid spec");
    spec.behavior.scale_down.stabilization_window_seconds = 3600;
    let now = 10_000_000;
    let pods: Vec<PodInput> = (0..PODS)
        .map(|i| PodInput {
            name: format!("ingest-{i:04}"),
            phase: if i % 50 == 0 {
                Phase::Pending
            } else {
                Phase::Running
            },
            terminating: i % 97 == 0,
            ready: i % 13 != 0,
            created: i as i64,
            queue: (i % 31 != 0).then_some(Sample {
                value: (i as u64 * 37 % 300) * MILLI,
                at: now - 1000,
            }),
            rate: (i % 29 != 0).then_some(Sample {
                value: (i as u64 * 53 % 1500) * MILLI,
                at: now - 1000,
            }),
            deletion_cost: None,
        })
        .collect();
    let inputs = Inputs {
        current: PODS as i32,
        pods,
        redis_busy_permille: Some(400),
        rollout_in_progress: false,
    };
    // A history as long as a 3600 s window at a 15 s period can make it.
    let history = History {
        recommendations: (0..240)
            .map(|i| Recommendation {
                replicas: 1000 - i,
                at: now - 3_600_000 + i64::from(i) * 15_000,
            })
            .collect(),
        scale_events: (0..100)
            .map(|i| ScaleEvent {
                from: 900 + i,
                to: 901 + i,
                at: now - 1_000_000 + i64::from(i) * 1000,
            })
            .collect(),
        consecutive_failures: 0,
    };

    // The same pods nearly idle: a scale-down, which sorts victims.
    let mut idle = inputs.clone();
    for p in &mut idle.pods {
        p.queue = p.queue.map(|s| Sample {
            value: s.value / 100,
            ..s
        });
        p.rate = None;
        // Nothing that would defer the scale-down.
        p.terminating = false;
        p.ready = true;
    }
    let mut idle_spec = spec.clone();
    idle_spec.target_events_per_second_per_pod = None;
    idle_spec.behavior.scale_down.stabilization_window_seconds = 0;

    for (case, spec, inputs) in [
        ("scale-up", &spec, &inputs),
        ("scale-down", &idle_spec, &idle),
    ] {
        let mut times = Vec::with_capacity(RUNS);
        let mut desired = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let d = decide(black_box(spec), black_box(&history), black_box(inputs), now);
            times.push(started.elapsed());
            desired = d.desired;
        }
        times.sort();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        println!(
            "decide over {PODS} pods, {case} to {desired}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs over {RUNS} runs (target < 1000 µs)",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}
