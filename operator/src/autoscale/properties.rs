//! Property tests of [`decide`] over random specs, pods, samples, histories
//! and times (docs/autoscaling.md, below the scenario table).

use proptest::prelude::*;

use super::*;
use crate::crd::autoscaling::{AutoscalingSpec, Fallback, PolicyType, ScalingPolicy, SelectPolicy};

const NOW: Millis = 10_000_000;

fn policy() -> impl Strategy<Value = ScalingPolicy> {
    (
        prop_oneof![Just(PolicyType::Pods), Just(PolicyType::Percent)],
        1..300i32,
        1..120i32,
    )
        .prop_map(|(type_, value, period_seconds)| ScalingPolicy {
            type_,
            value,
            period_seconds,
        })
}

fn select() -> impl Strategy<Value = SelectPolicy> {
    prop_oneof![
        4 => Just(SelectPolicy::Max),
        2 => Just(SelectPolicy::Min),
        1 => Just(SelectPolicy::Disabled)
    ]
}

fn tolerance() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.02), Just(0.1), Just(0.3), Just(0.999)]
}

prop_compose! {
    fn spec()(
        min in 0..6i32,
        extra in 0..25i32,
        target in 1..2_000i64,
        rate_target in proptest::option::of(1..5_000i64),
        tol_up in tolerance(),
        tol_down in tolerance(),
        up_window in 0..400i32,
        down_window in 0..700i32,
        up_select in select(),
        down_select in select(),
        up_policies in proptest::collection::vec(policy(), 1..4),
        down_policies in proptest::collection::vec(policy(), 1..4),
        fallback in proptest::option::of((1..5i32, 0..30i32)),
    ) -> AutoscalingSpec {
        let mut s = AutoscalingSpec::test(min, min.max(1) + extra);
        s.target_queue_depth_per_pod = target;
        s.target_events_per_second_per_pod = rate_target;
        s.tolerance.scale_up = tol_up;
        s.tolerance.scale_down = tol_down;
        s.behavior.scale_up.stabilization_window_seconds = up_window;
        s.behavior.scale_down.stabilization_window_seconds = down_window;
        s.behavior.scale_up.select_policy = up_select;
        s.behavior.scale_down.select_policy = down_select;
        s.behavior.scale_up.policies = up_policies;
        s.behavior.scale_down.policies = down_policies;
        s.fallback = fallback.map(|(failure_threshold, replicas)| Fallback {
            failure_threshold,
            replicas,
            behavior: Default::default(),
        });
        s
    }
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        8 => Just(Phase::Running),
        2 => Just(Phase::Pending),
        1 => Just(Phase::Unknown),
        1 => Just(Phase::Failed),
        1 => Just(Phase::Succeeded),
    ]
}

fn sample() -> impl Strategy<Value = Option<Sample>> {
    proptest::option::weighted(0.8, (0..5_000_000u64, 0..60_000i64)).prop_map(|s| {
        s.map(|(value, age)| Sample {
            value,
            at: NOW - age,
        })
    })
}

prop_compose! {
    fn pod()(
        id in 0..1_000_000u32,
        phase in phase(),
        terminating in proptest::bool::weighted(0.1),
        ready in proptest::bool::weighted(0.8),
        created in 0..NOW,
        queue in sample(),
        rate in sample(),
        cost in proptest::option::weighted(0.2, Just(victim::VICTIM_COST)),
    ) -> PodInput {
        PodInput {
            name: format!("pod-{id}"),
            phase,
            terminating,
            ready,
            created,
            queue,
            rate,
            deletion_cost: cost,
        }
    }
}

prop_compose! {
    fn history()(
        recs in proptest::collection::vec((0..40i32, 0..800_000i64), 0..20),
        events in proptest::collection::vec((0..40i32, 0..40i32, 0..200_000i64), 0..6),
        failures in 0..10u32,
    ) -> History {
        History {
            recommendations: recs
                .into_iter()
                .map(|(replicas, age)| Recommendation { replicas, at: NOW - age })
                .collect(),
            scale_events: events
                .into_iter()
                .map(|(from, to, age)| ScaleEvent { from, to, at: NOW - age })
                .collect(),
            consecutive_failures: failures,
        }
    }
}

prop_compose! {
    fn inputs()(
        current in 0..35i32,
        pods in proptest::collection::vec(pod(), 0..30),
        busy in proptest::option::of(0..1_001u32),
        rollout in proptest::bool::weighted(0.1),
    ) -> Inputs {
        Inputs { current, pods, redis_busy_permille: busy, rollout_in_progress: rollout }
    }
}

/// The same inputs with the current count moved inside min..=max (outside,
/// step 1 answers without looking at metrics or history).
fn within_bounds(spec: &AutoscalingSpec, mut inputs: Inputs) -> Inputs {
    inputs.current = inputs.current.clamp(floor(spec), ceiling(spec));
    inputs
}

/// The queue metric's usage ratio S/(n·T) as (S, n·T), over the pods that
/// have a valid, fresh sample; None without any.
fn queue_ratio(spec: &AutoscalingSpec, inputs: &Inputs) -> Option<(u128, u128)> {
    let max_age = Millis::from(spec.max_sample_age_seconds()) * 1000;
    let fresh: Vec<u64> = inputs
        .pods
        .iter()
        .filter(|p| !p.terminating && p.phase == Phase::Running)
        .filter_map(|p| p.queue.filter(|s| NOW - s.at < max_age).map(|s| s.value))
        .collect();
    if fresh.is_empty() {
        return None;
    }
    let sum: u128 = fresh.iter().map(|&v| u128::from(v)).sum();
    let target = u128::try_from(spec.target_queue_depth_per_pod).unwrap() * 1000;
    Some((sum, fresh.len() as u128 * target))
}

fn ppm(t: f64) -> u128 {
    (t * 1e6).round() as u128
}

/// The most the policies of one direction let the count move from `current`
/// (as a count), computed independently of `behavior`.
fn policy_bound(
    history: &History,
    policies: &[ScalingPolicy],
    select: SelectPolicy,
    current: i32,
    up: bool,
) -> Option<i64> {
    let bounds = policies.iter().map(|p| {
        let cutoff = NOW - Millis::from(p.period_seconds) * 1000;
        let mut start = i64::from(current);
        for e in history.scale_events.iter().filter(|e| e.at > cutoff) {
            start -= i64::from(e.to) - i64::from(e.from);
        }
        let v = i64::from(p.value);
        match (p.type_, up) {
            (PolicyType::Pods, true) => start + v,
            (PolicyType::Pods, false) => start - v,
            (PolicyType::Percent, true) => (start * (100 + v) + 99).div_euclid(100),
            (PolicyType::Percent, false) => start * (100 - v) / 100,
        }
    });
    match (select, up) {
        (SelectPolicy::Disabled, _) => None,
        (SelectPolicy::Max, true) | (SelectPolicy::Min, false) => bounds.max(),
        (SelectPolicy::Max, false) | (SelectPolicy::Min, true) => bounds.min(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_decision_is_a_deterministic_function_of_its_inputs(
        spec in spec(), history in history(), inputs in inputs(),
    ) {
        let a = decide(&spec, &history, &inputs, NOW);
        let b = decide(&spec, &history, &inputs, NOW);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_result_stays_within_min_and_max(
        spec in spec(), history in history(), inputs in inputs(),
    ) {
        let d = decide(&spec, &history, &inputs, NOW);
        if inputs.current > 0 {
            prop_assert!(d.desired >= floor(&spec) && d.desired <= ceiling(&spec),
                "{} not in {}..={}", d.desired, floor(&spec), ceiling(&spec));
        } else {
            prop_assert_eq!(d.desired, 0);
        }
    }

    #[test]
    fn the_result_never_moves_against_the_ratio_beyond_tolerance(
        mut spec in spec(), history in history(), inputs in inputs(),
    ) {
        spec.target_events_per_second_per_pod = None;
        let inputs = within_bounds(&spec, inputs);
        let Some((sum, denominator)) = queue_ratio(&spec, &inputs) else {
            return Ok(());
        };
        let d = decide(&spec, &history, &inputs, NOW);
        let scaled = sum * 1_000_000;
        if scaled > (1_000_000 + ppm(spec.tolerance.scale_up)) * denominator {
            prop_assert!(d.desired >= inputs.current, "r above the band, yet {} < {}", d.desired, inputs.current);
        }
        if scaled < (1_000_000 - ppm(spec.tolerance.scale_down)) * denominator {
            prop_assert!(d.desired <= inputs.current, "r below the band, yet {} > {}", d.desired, inputs.current);
        }
    }

    #[test]
    fn a_scale_down_never_goes_below_a_recommendation_inside_the_down_window(
        spec in spec(), history in history(), inputs in inputs(),
    ) {
        let inputs = within_bounds(&spec, inputs);
        let d = decide(&spec, &history, &inputs, NOW);
        if d.desired < inputs.current {
            let cutoff = NOW - Millis::from(spec.behavior.scale_down.stabilization_window_seconds) * 1000;
            for rec in history.recommendations.iter().filter(|r| r.at > cutoff) {
                prop_assert!(d.desired >= rec.replicas.min(inputs.current),
                    "scaled down to {} below {:?}", d.desired, rec);
            }
        }
    }

    #[test]
    fn missing_data_never_lowers_the_result_below_pods_reporting_the_target(
        mut spec in spec(), history in history(), inputs in inputs(),
    ) {
        // A configured fallback is meant to act on missing data.
        spec.fallback = None;
        spec.target_events_per_second_per_pod = None;
        let inputs = within_bounds(&spec, inputs);
        let max_age = Millis::from(spec.max_sample_age_seconds()) * 1000;
        let target = u64::try_from(spec.target_queue_depth_per_pod).unwrap() * 1000;
        let mut reporting = inputs.clone();
        let mut any_missing = false;
        for p in &mut reporting.pods {
            let missing = !p.terminating
                && (p.phase == Phase::Unknown
                    || p.phase == Phase::Running && p.queue.is_none_or(|s| NOW - s.at >= max_age));
            if missing {
                any_missing = true;
                p.phase = Phase::Running;
                p.ready = true;
                p.queue = Some(Sample { value: target, at: NOW });
            }
        }
        prop_assume!(any_missing);
        let with_missing = decide(&spec, &history, &inputs, NOW).desired;
        let with_target = decide(&spec, &history, &reporting, NOW).desired;
        prop_assert!(with_missing >= with_target.min(inputs.current),
            "missing pods gave {with_missing}, the same pods at the target {with_target}");
    }

    #[test]
    fn the_change_per_period_stays_within_the_policies(
        spec in spec(), history in history(), inputs in inputs(),
    ) {
        let inputs = within_bounds(&spec, inputs);
        let d = decide(&spec, &history, &inputs, NOW);
        let current = inputs.current;
        let b = &spec.behavior;
        if d.desired > current {
            let bound = policy_bound(&history, &b.scale_up.policies, b.scale_up.select_policy, current, true);
            prop_assert!(bound.is_some(), "scaled up while scale-up is disabled");
            prop_assert!(i64::from(d.desired) <= bound.unwrap().max(i64::from(current)),
                "up to {} beyond the policy bound {:?}", d.desired, bound);
        }
        if d.desired < current {
            let bound = policy_bound(&history, &b.scale_down.policies, b.scale_down.select_policy, current, false);
            prop_assert!(bound.is_some(), "scaled down while scale-down is disabled");
            prop_assert!(i64::from(d.desired) >= bound.unwrap().min(i64::from(current)),
                "down to {} beyond the policy bound {:?}", d.desired, bound);
        }
    }

    #[test]
    fn a_scale_down_names_exactly_as_many_victims_as_pods_removed_when_they_exist(
        spec in spec(), history in history(), inputs in inputs(),
    ) {
        let d = decide(&spec, &history, &inputs, NOW);
        if let Action::ScaleDown { victims, .. } = &d.action {
            let candidates = inputs.pods.iter()
                .filter(|p| !p.terminating && !matches!(p.phase, Phase::Failed | Phase::Succeeded))
                .count();
            let removed = usize::try_from(inputs.current - d.desired).unwrap();
            prop_assert_eq!(victims.len(), removed.min(candidates));
        }
    }
}
