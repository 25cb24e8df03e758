//! The scenario table of docs/autoscaling.md, one test per row, literally:
//! T = 100 events per pod, min 2, max 20, ticks every 15 s, default
//! tolerance and behavior, history steady at the starting replicas.

use super::*;
use crate::crd::autoscaling::{
    AutoscalingSpec, Fallback, FallbackBehavior, PolicyType, ScalingPolicy, SelectPolicy,
};

const S: Millis = 1000;

fn spec() -> AutoscalingSpec {
    AutoscalingSpec::test(2, 20)
}

fn sample(value: u64, at: Millis) -> Option<Sample> {
    Some(Sample {
        value: value * MILLI,
        at,
    })
}

fn pod(name: String, phase: Phase, queue: Option<Sample>) -> PodInput {
    PodInput {
        name,
        phase,
        terminating: false,
        ready: phase == Phase::Running,
        created: 0,
        queue,
        rate: None,
        deletion_cost: None,
    }
}

/// Running, ready pods reporting `depths`, sampled at `now`.
fn running(depths: &[u64], now: Millis) -> Vec<PodInput> {
    depths
        .iter()
        .enumerate()
        .map(|(i, &d)| pod(format!("run-{i}"), Phase::Running, sample(d, now)))
        .collect()
}

/// `n` running pods whose scrapes fail.
fn failing(n: i32) -> Vec<PodInput> {
    (0..n)
        .map(|i| pod(format!("fail-{i}"), Phase::Running, None))
        .collect()
}

fn pending(n: usize) -> Vec<PodInput> {
    (0..n)
        .map(|i| pod(format!("pending-{i}"), Phase::Pending, None))
        .collect()
}

/// `n` running pods sharing `total` events evenly (the first ones take the
/// remainder).
fn backlog(total: u64, n: i32, now: Millis) -> Vec<PodInput> {
    let n = u64::try_from(n.max(1)).unwrap();
    let depths: Vec<u64> = (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect();
    running(&depths, now)
}

/// A pipeline under the autoscaler: the Deployment's replicas and the
/// history, ticked like the operator does (a scale event is recorded when
/// the patch "succeeds", i.e. always here).
struct Sim {
    spec: AutoscalingSpec,
    current: i32,
    history: History,
    scale_events: usize,
}

impl Sim {
    /// Starting at `current` with a history steady at it (its last
    /// recommendation one tick before t = 0).
    fn new(spec: AutoscalingSpec, current: i32) -> Self {
        let history = History {
            recommendations: vec![Recommendation {
                replicas: current,
                at: -15 * S,
            }],
            ..History::default()
        };
        Self::with_history(spec, current, history)
    }

    fn with_history(spec: AutoscalingSpec, current: i32, history: History) -> Self {
        Self {
            spec,
            current,
            history,
            scale_events: 0,
        }
    }

    fn tick_at(&mut self, now: Millis, pods: Vec<PodInput>) -> Decision {
        let inputs = Inputs {
            current: self.current,
            pods,
            ..Inputs::default()
        };
        let d = decide(&self.spec, &self.history, &inputs, now);
        self.history = d.history.clone();
        if d.desired != self.current {
            self.history.record_scale(self.current, d.desired, now);
            self.current = d.desired;
            self.scale_events += 1;
        }
        d
    }

    fn tick(&mut self, t_seconds: i64, pods: Vec<PodInput>) -> i32 {
        self.tick_at(t_seconds * S, pods).desired
    }
}

fn one_tick(current: i32, depths: &[u64], spec: AutoscalingSpec) -> i32 {
    Sim::new(spec, current).tick(0, running(depths, 0))
}

#[test]
fn scenario_01_tolerance_band() {
    assert_eq!(one_tick(4, &[100, 105, 95, 108], spec()), 4, "(a)");
    assert_eq!(one_tick(4, &[110; 4], spec()), 4, "(b) 1.10 is inside");
    assert_eq!(one_tick(4, &[111; 4], spec()), 5, "(c)");
    assert_eq!(one_tick(4, &[90; 4], spec()), 4, "(d) 0.90 is inside");
    let mut wide = spec();
    wide.max_replicas = 200;
    assert_eq!(one_tick(100, &[105; 100], wide.clone()), 100, "(e)");
    wide.tolerance.scale_up = 0.02;
    assert_eq!(one_tick(100, &[105; 100], wide), 105, "(f)");
}

#[test]
fn scenario_02_pending_pods_and_rate_limits() {
    let mut sim = Sim::new(spec(), 2);
    let d = sim.tick_at(0, running(&[1000, 1000], 0));
    assert_eq!(d.desired, 6, "Pods +4 beats 100 %");
    assert_eq!(d.scaling_limited.reason, "ScaleUpLimit");
    assert!(d.scaling_limited.status);
    let mut pods = running(&[1000, 1000], 15 * S);
    pods.extend(pending(4));
    let mut early = Sim::with_history(spec(), sim.current, sim.history.clone());
    let d = sim.tick_at(15 * S, pods.clone());
    assert_eq!(d.desired, 12);
    assert_eq!(d.scaling_limited.reason, "ScaleUpLimit");
    assert_eq!(
        early.tick_at(14_990, pods).desired,
        6,
        "a tick at 14.99 s is still inside the period of the first step"
    );
    let mut pods = running(&[1000, 1000, 0, 0, 0, 0], 30 * S);
    pods.extend(pending(6));
    assert_eq!(sim.tick(30, pods), 20);
}

#[test]
fn scenario_03_alternating_load_is_held_by_the_down_window() {
    let mut sim = Sim::new(spec(), 10);
    let mut seen = Vec::new();
    for tick in 0..=60 {
        let t = tick * 15;
        let total = if t <= 300 && tick % 2 == 0 { 1400 } else { 600 };
        let replicas = sim.tick(t, backlog(total, sim.current, t * S));
        seen.push((t, replicas));
    }
    for &(t, replicas) in &seen {
        let expected = if t < 600 { 14 } else { 6 };
        assert_eq!(replicas, expected, "t = {t}");
    }
    assert_eq!(sim.scale_events, 2);
}

#[test]
fn scenario_04_scale_down_after_the_window_and_the_pods_policy() {
    let history = History {
        recommendations: vec![Recommendation {
            replicas: 10,
            at: -15 * S,
        }],
        ..History::default()
    };
    let mut sim = Sim::with_history(spec(), 10, history.clone());
    for t in (0..285).step_by(15) {
        assert_eq!(sim.tick(t, backlog(150, sim.current, t * S)), 10, "t = {t}");
    }
    assert_eq!(sim.tick(285, backlog(150, 10, 285 * S)), 2);

    let mut slow = spec();
    slow.behavior.scale_down.policies = vec![ScalingPolicy {
        type_: PolicyType::Pods,
        value: 1,
        period_seconds: 60,
    }];
    let mut sim = Sim::with_history(slow, 10, history);
    let mut steps = Vec::new();
    for t in (0..=720).step_by(15) {
        let before = sim.current;
        let after = sim.tick(t, backlog(150, sim.current, t * S));
        if after != before {
            steps.push((t, after));
        }
    }
    assert_eq!(
        steps,
        [
            (285, 9),
            (345, 8),
            (405, 7),
            (465, 6),
            (525, 5),
            (585, 4),
            (645, 3),
            (705, 2)
        ]
    );
}

#[test]
fn scenario_05_missing_pods_count_at_target_on_a_scale_down() {
    let mut s = spec();
    s.behavior.scale_down.stabilization_window_seconds = 0;
    let mut pods = running(&[20; 8], 0);
    pods.extend(failing(2));
    assert_eq!(Sim::new(s, 10).tick(0, pods), 4, "naive logic gives 2");
}

#[test]
fn scenario_06_a_missing_pod_counts_as_zero_on_a_scale_up() {
    let mut sim = Sim::new(spec(), 4);
    let mut pods = running(&[140; 3], 0);
    pods.extend(failing(1));
    assert_eq!(sim.tick(0, pods), 4);
    assert_eq!(sim.tick(15, running(&[140; 4], 15 * S)), 6);
}

#[test]
fn scenario_07a_no_metrics_and_no_fallback_holds() {
    let mut sim = Sim::new(spec(), 5);
    for t in (0..=600).step_by(15) {
        let d = sim.tick_at(t * S, failing(5));
        assert_eq!(d.desired, 5, "t = {t}");
        assert!(!d.scaling_active.status);
        assert_eq!(d.scaling_active.reason, "FailedGetMetrics");
    }
    assert_eq!(sim.history.consecutive_failures, 41);
}

#[test]
fn scenario_07b_fallback_after_the_threshold_then_metrics_return() {
    let mut s = spec();
    s.fallback = Some(Fallback {
        failure_threshold: 3,
        replicas: 8,
        behavior: FallbackBehavior::CurrentReplicasIfHigher,
    });
    let mut sim = Sim::new(s, 5);
    let mut steps = Vec::new();
    for t in (0..=450).step_by(15) {
        let before = sim.current;
        let pods = if t < 120 {
            failing(sim.current)
        } else {
            backlog(100, sim.current, t * S)
        };
        let d = sim.tick_at(t * S, pods);
        if t == 45 {
            assert!(d.fallback_active.status, "FallbackActive at 45 s");
        }
        if t == 120 {
            assert!(!d.fallback_active.status);
            assert_eq!(sim.history.consecutive_failures, 0);
        }
        if sim.current != before {
            steps.push((t, sim.current));
        }
    }
    assert_eq!(steps, [(45, 8), (405, 2)]);
}

#[test]
fn scenario_08_stale_samples_are_missing_and_deleted_pods_are_gone() {
    // Pod e was deleted; the scraper drops its cached sample, so it is not
    // an input at all (see scrape's cache tests).
    let now = 100 * S;
    let mut pods = running(&[150, 150, 150], now);
    pods.push(pod("d".into(), Phase::Running, sample(600, now - 45 * S)));
    assert_eq!(Sim::new(spec(), 4).tick(100, pods), 5);
}

#[test]
fn scenario_09_terminating_pods_are_ignored() {
    let mut pods = running(&[150; 4], 0);
    for i in 0..2 {
        let mut p = pod(format!("old-{i}"), Phase::Running, sample(0, 0));
        p.terminating = true;
        pods.push(p);
    }
    assert_eq!(Sim::new(spec(), 4).tick(0, pods), 6);
}

#[test]
fn scenario_10_pending_pods_hold_a_scale_up_in_flight() {
    let mut sim = Sim::new(spec(), 8);
    let mut pods = running(&[150; 4], 0);
    pods.extend(pending(4));
    assert_eq!(sim.tick(0, pods), 8);
    let last = sim.history.recommendations.last().unwrap();
    assert_eq!(
        (last.replicas, last.at),
        (8, 0),
        "recorded recommendation 8"
    );
}

#[test]
fn scenario_11a_below_min_goes_to_min_even_without_metrics() {
    assert_eq!(Sim::new(spec(), 1).tick(0, failing(1)), 2);
}

#[test]
fn scenario_11b_above_max_goes_to_max_at_once() {
    let d = Sim::new(spec(), 25).tick_at(0, backlog(2500, 25, 0));
    assert_eq!(d.desired, 20);
    assert_eq!(d.scaling_limited.reason, "TooManyReplicas");
    assert!(matches!(d.action, Action::ScaleDown { ref victims, .. } if victims.len() == 5));
}

#[test]
fn scenario_11c_huge_queues_do_not_overflow() {
    let d = Sim::new(spec(), 10).tick_at(0, running(&[100_000_000_000_000; 10], 0));
    assert_eq!(d.desired, 20);
}

#[test]
fn scenario_11d_an_idle_pipeline_shrinks_to_min_never_zero() {
    let mut sim = Sim::new(spec(), 10);
    for t in (0..=600).step_by(15) {
        let replicas = sim.tick(t, backlog(0, sim.current, t * S));
        let expected = if t < 285 { 10 } else { 2 };
        assert_eq!(replicas, expected, "t = {t}");
    }
}

#[test]
fn scenario_11e_scaled_to_zero_by_hand_stays_at_zero() {
    let mut sim = Sim::new(spec(), 0);
    let d = sim.tick_at(0, vec![]);
    assert_eq!(d.desired, 0);
    assert!(!d.scaling_active.status);
    assert_eq!(d.scaling_active.reason, "ScalingDisabled");
    assert_eq!(sim.tick(15, vec![]), 0);
}

#[test]
fn scenario_11f_a_manual_scale_down_under_load_is_undone_within_policy() {
    let mut sim = Sim::new(spec(), 10);
    assert_eq!(sim.tick(0, backlog(1000, 10, 0)), 10);
    sim.current = 3; // kubectl scale --replicas=3
    assert_eq!(sim.tick(15, backlog(1000, 3, 15 * S)), 7);
    assert_eq!(sim.tick(30, backlog(1000, 7, 30 * S)), 10);
}

/// Ticks every 15 s from −195 s to −15 s with the queue asking for 2 pods
/// while 10 run: the down window holds them (the first tick seeds the
/// history with {10, −195 s}).
fn history_of_a_pending_scale_down() -> History {
    let mut sim = Sim::with_history(spec(), 10, History::default());
    for t in (-195..0).step_by(15) {
        assert_eq!(sim.tick(t, backlog(150, 10, t * S)), 10);
    }
    sim.history
}

#[test]
fn scenario_12a_a_restart_without_history_waits_a_whole_window() {
    let _ = history_of_a_pending_scale_down();
    let mut sim = Sim::with_history(spec(), 10, History::default());
    for t in (0..300).step_by(15) {
        assert_eq!(sim.tick(t, backlog(150, 10, t * S)), 10, "t = {t}");
    }
    assert_eq!(sim.tick(300, backlog(150, 10, 300 * S)), 2);
}

#[test]
fn scenario_12b_a_restart_with_history_keeps_the_window() {
    let mut sim = Sim::with_history(spec(), 10, history_of_a_pending_scale_down());
    for t in (0..105).step_by(15) {
        assert_eq!(sim.tick(t, backlog(150, 10, t * S)), 10, "t = {t}");
    }
    assert_eq!(sim.tick(105, backlog(150, 10, 105 * S)), 2);
}

#[test]
fn scenario_12c_a_restart_keeps_the_scale_up_rate_limit() {
    let mut s = spec();
    s.behavior.scale_up.policies = vec![ScalingPolicy {
        type_: PolicyType::Pods,
        value: 4,
        period_seconds: 60,
    }];
    let history = History {
        recommendations: vec![Recommendation {
            replicas: 8,
            at: -5 * S,
        }],
        scale_events: vec![ScaleEvent {
            from: 4,
            to: 8,
            at: -5 * S,
        }],
        consecutive_failures: 0,
    };
    let mut sim = Sim::with_history(s, 8, history);
    for t in (0..60).step_by(15) {
        assert_eq!(sim.tick(t, backlog(2000, 8, t * S)), 8, "t = {t}");
    }
    assert_eq!(sim.tick(60, backlog(2000, 8, 60 * S)), 12);
}

#[test]
fn scenario_13a_the_emptiest_pods_get_the_low_deletion_cost() {
    let mut s = spec();
    s.target_queue_depth_per_pod = 300;
    s.behavior.scale_down.stabilization_window_seconds = 0;
    let pods = running(&[0, 50, 400, 10, 300], 0);
    let d = Sim::new(s, 5).tick_at(0, pods);
    assert_eq!(d.desired, 3);
    let Action::ScaleDown {
        victims,
        cost_writes,
    } = d.action
    else {
        panic!("expected a scale-down, got {:?}", d.action);
    };
    assert_eq!(victims, ["run-0", "run-3"]);
    assert_eq!(
        cost_writes,
        [
            victim::CostWrite {
                pod: "run-0".into(),
                cost: Some(victim::VICTIM_COST)
            },
            victim::CostWrite {
                pod: "run-3".into(),
                cost: Some(victim::VICTIM_COST)
            }
        ]
    );
}

#[test]
fn scenario_13b_a_not_ready_pod_with_a_queue_defers_the_scale_down() {
    let mut s = spec();
    s.target_queue_depth_per_pod = 300;
    s.behavior.scale_down.stabilization_window_seconds = 0;
    let mut pods = running(&[0, 50, 400, 10, 300], 0);
    pods[2].ready = false;
    let d = Sim::new(s, 5).tick_at(0, pods);
    assert_eq!(d.desired, 5);
    assert_eq!(d.action, Action::Hold);
    assert_eq!(d.scaling_limited.reason, SCALE_DOWN_DEFERRED);
    assert!(d.scaling_limited.message.contains("run-2 holds 400 events"));
}

fn with_rate(mut pods: Vec<PodInput>, rate: Option<u64>) -> Vec<PodInput> {
    for p in &mut pods {
        p.rate = rate.and_then(|r| sample(r, p.queue.map_or(0, |q| q.at)));
    }
    pods
}

#[test]
fn scenario_14_events_per_second_combine_by_max() {
    let mut s = spec();
    s.target_events_per_second_per_pod = Some(700);
    let pods = with_rate(running(&[0; 10], 0), Some(900));
    assert_eq!(Sim::new(s.clone(), 10).tick(0, pods), 13, "(a)");
    let pods = with_rate(backlog(500, 10, 0), None);
    let d = Sim::new(s.clone(), 10).tick_at(0, pods);
    assert_eq!(d.queue.as_ref().unwrap().replicas, Some(5));
    assert_eq!(d.desired, 10, "(b) no scale-down on partial data");
    let pods = with_rate(backlog(1500, 10, 0), None);
    assert_eq!(Sim::new(s, 10).tick(0, pods), 15, "(c)");
}

#[test]
fn redis_saturation_holds_a_scale_up_and_says_why() {
    let mut sim = Sim::new(spec(), 4);
    let inputs = Inputs {
        current: 4,
        pods: running(&[300; 4], 0),
        redis_busy_permille: Some(930),
        rollout_in_progress: false,
    };
    let d = decide(&sim.spec, &sim.history, &inputs, 0);
    assert_eq!(d.desired, 4);
    assert!(d.redis_saturated());
    assert!(
        d.scaling_limited.message.contains("93.0%"),
        "{}",
        d.scaling_limited.message
    );
    // Below the threshold the same load scales up.
    let inputs = Inputs {
        redis_busy_permille: Some(690),
        ..inputs
    };
    let d = decide(&sim.spec, &sim.history, &inputs, 0);
    assert_eq!(d.desired, 8, "12 wanted, 8 allowed by the default policies");
    assert!(!d.redis_saturated());
    // Scale-downs are unaffected by saturation.
    sim.spec.behavior.scale_down.stabilization_window_seconds = 0;
    let inputs = Inputs {
        current: 4,
        pods: running(&[10; 4], 0),
        redis_busy_permille: Some(1000),
        rollout_in_progress: false,
    };
    assert_eq!(decide(&sim.spec, &sim.history, &inputs, 0).desired, 2);
    // Disabled: no hold.
    sim.spec.redis_saturation.enabled = false;
    let inputs = Inputs {
        current: 4,
        pods: running(&[300; 4], 0),
        redis_busy_permille: Some(1000),
        rollout_in_progress: false,
    };
    assert_eq!(decide(&sim.spec, &sim.history, &inputs, 0).desired, 8);
}

#[test]
fn select_policy_disabled_forbids_its_direction() {
    let mut s = spec();
    s.behavior.scale_up.select_policy = SelectPolicy::Disabled;
    assert_eq!(one_tick(4, &[300; 4], s.clone()), 4);
    s.behavior.scale_down.select_policy = SelectPolicy::Disabled;
    s.behavior.scale_down.stabilization_window_seconds = 0;
    assert_eq!(one_tick(4, &[0; 4], s), 4);
}

#[test]
fn pods_that_are_still_starting_are_not_a_metrics_failure() {
    let d = Sim::new(spec(), 2).tick_at(0, pending(2));
    assert_eq!(d.desired, 2);
    assert_eq!(d.scaling_active.reason, "PodsStarting");
    let d = Sim::new(spec(), 2).tick_at(0, failing(2));
    assert_eq!(d.scaling_active.reason, "FailedGetMetrics");
}
