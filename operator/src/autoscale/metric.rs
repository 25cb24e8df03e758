//! Replicas one metric asks for: HPA's replica calculator for an
//! AverageValue target (`calcPlainMetricReplicas`), in exact arithmetic.
//!
//! With S the sum over pods with a valid sample, n their number and T the
//! target, the usage ratio is r = S / (n·T) and the answer ceil(r·n) =
//! ceil(S / T). Every comparison is done on integers (u128 on milli-units):
//! `r ≤ 1 + tol` becomes `10⁶·S ≤ (10⁶ + tol_ppm)·n·T`. Floating point would
//! turn 800/7/100·7 into 8.000000000000002 and ask for a ninth pod.

use std::cmp::Ordering;

/// One pod's standing for one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodValue {
    /// A valid, fresh sample (milli-units).
    Ready(u64),
    /// Running, but no valid sample (scrape failed, series absent, too old),
    /// or phase Unknown.
    Missing,
    /// Pending: not running yet.
    Unready,
}

/// The tolerance band around the target, in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    /// No scale-up while r ≤ 1 + up.
    pub up_ppm: u128,
    /// No scale-down while r ≥ 1 − down.
    pub down_ppm: u128,
}

const PPM: u128 = 1_000_000;

/// A usage ratio S / (n·T) kept as its numerator and denominator.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    sum: u128,
    pods: u128,
    target: u128,
}

impl Ratio {
    fn denominator(&self) -> u128 {
        self.pods.saturating_mul(self.target)
    }

    /// r compared with 1.
    fn vs_one(&self) -> Ordering {
        self.sum.cmp(&self.denominator())
    }

    /// r > 1 + up.
    fn above(&self, tol: Tolerance) -> bool {
        self.sum.saturating_mul(PPM) > (PPM + tol.up_ppm).saturating_mul(self.denominator())
    }

    /// r < 1 − down.
    fn below(&self, tol: Tolerance) -> bool {
        self.sum.saturating_mul(PPM)
            < PPM
                .saturating_sub(tol.down_ppm)
                .saturating_mul(self.denominator())
    }

    fn within(&self, tol: Tolerance) -> bool {
        !self.above(tol) && !self.below(tol)
    }

    /// ceil(r · pods) = ceil(S / T), saturated to i32.
    fn replicas(&self) -> i32 {
        let n = self.sum.div_ceil(self.target.max(1));
        i32::try_from(n).unwrap_or(i32::MAX)
    }
}

/// What one metric says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricOutcome {
    /// Replicas asked for; None when no pod has a valid sample.
    pub replicas: Option<i32>,
    /// Sum over ready pods (milli-units).
    pub total: u128,
    /// Largest single value (milli-units).
    pub max: u64,
    /// Pods with a valid sample.
    pub ready: usize,
    /// Pods without one.
    pub missing: usize,
    /// Pending pods.
    pub unready: usize,
}

/// Replicas for one metric with an AverageValue `target` (milli-units > 0),
/// given every non-ignored pod's standing (docs/autoscaling.md step 3).
pub fn replicas(pods: &[PodValue], current: i32, target: u128, tol: Tolerance) -> MetricOutcome {
    let target = target.max(1);
    let mut sum: u128 = 0;
    let mut max = 0;
    let (mut ready, mut missing, mut unready) = (0usize, 0usize, 0usize);
    for pod in pods {
        match *pod {
            PodValue::Ready(v) => {
                sum = sum.saturating_add(u128::from(v));
                max = max.max(v);
                ready += 1;
            }
            PodValue::Missing => missing += 1,
            PodValue::Unready => unready += 1,
        }
    }
    let mut outcome = MetricOutcome {
        replicas: None,
        total: sum,
        max,
        ready,
        missing,
        unready,
    };
    if ready == 0 {
        return outcome;
    }
    let r = Ratio {
        sum,
        pods: ready as u128,
        target,
    };
    let scale_up_with_unready = unready > 0 && r.vs_one() == Ordering::Greater;

    let raw = if missing == 0 && !scale_up_with_unready {
        if r.within(tol) { current } else { r.replicas() }
    } else {
        // Missing pods: at the target when the ratio says scale down (or is
        // exactly 1), at zero when it says scale up. Pending pods: at zero,
        // and only when scaling up. Both make the move smaller, never larger.
        let mut r2 = r;
        if missing > 0 {
            r2.pods += missing as u128;
            if r.vs_one() != Ordering::Greater {
                r2.sum = r2
                    .sum
                    .saturating_add(target.saturating_mul(missing as u128));
            }
        }
        if scale_up_with_unready {
            r2.pods += unready as u128;
        }
        let crossed = r.vs_one() != Ordering::Equal
            && r2.vs_one() != Ordering::Equal
            && r.vs_one() != r2.vs_one();
        if r2.within(tol) || crossed {
            current
        } else {
            r2.replicas()
        }
    };
    // Direction guard: never move against the measured ratio.
    let raw = if r.above(tol) {
        raw.max(current)
    } else if r.below(tol) {
        raw.min(current)
    } else {
        raw
    };
    outcome.replicas = Some(raw);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        up_ppm: 100_000,
        down_ppm: 100_000,
    };

    fn ready(values: &[u64]) -> Vec<PodValue> {
        values.iter().map(|v| PodValue::Ready(v * 1000)).collect()
    }

    #[test]
    fn integer_maths_does_not_overshoot_where_floats_would() {
        // 800 events over 7 pods at 100 per pod: exactly 8 pods.
        let mut pods = ready(&[115, 115, 114, 114, 114, 114, 114]);
        assert_eq!(
            pods.iter()
                .map(|p| match p {
                    PodValue::Ready(v) => v / 1000,
                    _ => 0,
                })
                .sum::<u64>(),
            800
        );
        assert_eq!(replicas(&pods, 7, 100_000, TOL).replicas, Some(8));
        // The float route: (800/7)/100*7 = 8.000000000000002 → 9.
        let float = (800.0_f64 / 7.0) / 100.0 * 7.0;
        assert!(float.ceil() > 8.0, "the float route overshoots: {float}");
        pods.push(PodValue::Missing);
        assert_eq!(replicas(&pods, 7, 100_000, TOL).replicas, Some(7));
    }

    #[test]
    fn tolerance_band_is_inclusive_at_both_ends() {
        assert_eq!(
            replicas(&ready(&[110; 4]), 4, 100_000, TOL).replicas,
            Some(4)
        );
        assert_eq!(
            replicas(&ready(&[90; 4]), 4, 100_000, TOL).replicas,
            Some(4)
        );
        assert_eq!(
            replicas(&ready(&[111; 4]), 4, 100_000, TOL).replicas,
            Some(5)
        );
        assert_eq!(
            replicas(&ready(&[89; 4]), 4, 100_000, TOL).replicas,
            Some(4)
        );
        assert_eq!(
            replicas(&ready(&[89; 10]), 10, 100_000, TOL).replicas,
            Some(9)
        );
    }

    #[test]
    fn no_ready_pod_makes_the_metric_invalid() {
        let pods = [PodValue::Missing, PodValue::Unready];
        assert_eq!(replicas(&pods, 2, 100_000, TOL).replicas, None);
        assert_eq!(replicas(&[], 2, 100_000, TOL).replicas, None);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let pods = vec![PodValue::Ready(u64::MAX); 1000];
        assert_eq!(replicas(&pods, 10, 1, TOL).replicas, Some(i32::MAX));
    }

    #[test]
    fn a_ratio_of_exactly_one_with_missing_pods_holds() {
        let mut pods = ready(&[100, 100]);
        pods.push(PodValue::Missing);
        assert_eq!(replicas(&pods, 3, 100_000, TOL).replicas, Some(3));
    }
}
