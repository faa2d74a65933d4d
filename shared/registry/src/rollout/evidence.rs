//! What inference records during a rollout step, per instance: each arm's requests, errors and
//! latency, and the shadow runs' agreement. Instances write their own totals; the controller
//! sums them, so both arms are judged over the same step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bucket `k` holds values in `[GROWTH^k, GROWTH^(k+1))`: quantiles within 5 % of the truth,
/// in a few hundred buckets from a microsecond to an hour. Zero (and less) has its own bucket.
const GROWTH: f64 = 1.05;
const ZERO: i32 = i32::MIN;

/// A log-bucketed histogram that merges by adding counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    buckets: BTreeMap<i32, u64>,
}

impl Histogram {
    pub fn record(&mut self, value: f64) {
        *self.buckets.entry(bucket(value)).or_default() += 1;
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    pub fn merge(&mut self, other: &Self) {
        for (&bucket, &count) in &other.buckets {
            *self.buckets.entry(bucket).or_default() += count;
        }
    }

    /// The value under which a share `q` of the recorded ones fall (each bucket's middle);
    /// `None` if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&bucket, &count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(middle(bucket));
            }
        }
        self.buckets.keys().next_back().map(|&b| middle(b))
    }
}

fn bucket(value: f64) -> i32 {
    if value.is_nan() || value <= 0.0 {
        return ZERO;
    }
    (value.ln() / GROWTH.ln()).floor().clamp(-2000.0, 2000.0) as i32
}

fn middle(bucket: i32) -> f64 {
    if bucket == ZERO {
        0.0
    } else {
        GROWTH.powf(f64::from(bucket) + 0.5)
    }
}

/// One arm's requests in a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    /// Requests routed to the arm that it could not answer: its signature refused the inputs,
    /// its run failed, or (the candidate) it could not be loaded. A body that cannot be parsed
    /// is refused before any routing and counted nowhere.
    pub errors: u64,
    /// Microseconds from the request read to its answer encoded.
    pub latency_us: Histogram,
}

impl ArmStats {
    pub fn record(&mut self, latency_us: f64, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.latency_us.record(latency_us);
    }

    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_us.merge(&other.latency_us);
    }
}

/// The candidate's runs on requests stable answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowStats {
    /// Runs (and their failures and latency) as for an arm.
    pub runs: ArmStats,
    /// Shadowed requests not run because the previous shadow run was still going.
    pub skipped: u64,
    /// Answer rows compared with stable's, and how many agreed.
    pub rows: u64,
    pub agreed_rows: u64,
    /// |candidate − stable| of regression outputs, per value.
    pub abs_diff: Histogram,
}

impl ShadowStats {
    pub fn merge(&mut self, other: &Self) {
        self.runs.merge(&other.runs);
        self.skipped += other.skipped;
        self.rows += other.rows;
        self.agreed_rows += other.agreed_rows;
        self.abs_diff.merge(&other.abs_diff);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvidence {
    pub stable: ArmStats,
    pub candidate: ArmStats,
    pub shadow: ShadowStats,
}

impl StepEvidence {
    pub fn merge(&mut self, other: &Self) {
        self.stable.merge(&other.stable);
        self.candidate.merge(&other.candidate);
        self.shadow.merge(&other.shadow);
    }
}

/// `rollouts/<alias>/<id>/step-<k>/<instance>.json`: one inference instance's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvidence {
    pub instance: String,
    pub updated_at: String,
    pub evidence: StepEvidence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_growth_of_the_truth() {
        let mut histogram = Histogram::default();
        for value in 1..=1000 {
            histogram.record(f64::from(value));
        }
        for (q, truth) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let estimate = histogram.quantile(q).unwrap();
            assert!(
                (estimate / truth - 1.0).abs() < GROWTH - 1.0,
                "q{q}: {estimate} vs {truth}"
            );
        }
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn merged_histograms_count_both_and_zero_has_its_bucket() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(0.0);
        a.record(0.0);
        b.record(10.0);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.5), Some(0.0));
        assert!((a.quantile(1.0).unwrap() - 10.0).abs() < 0.5);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), a);
    }
}
