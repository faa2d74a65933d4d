//! Shadow runs: a share of the requests stable answers is also run on a rollout's candidate, on
//! a blocking thread after stable's answer is ready, at most one at a time per instance (a
//! shadowed request that finds one running is counted as skipped). The candidate's answer is
//! compared with stable's and thrown away.
//!
//! Agreement is per answer row (the first dimension): a row agrees when every output agrees on
//! it. An output whose rows are probability distributions (non-negative, each summing to 1
//! within 1e-3) agrees on its top-1 class; integer, boolean and string outputs (class labels)
//! agree when equal; any other float output (a regressor) agrees value by value within
//! `1e-4 + 1e-3·|stable|`, and each |candidate − stable| is kept for the |Δ| quantiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tract_onnx::prelude::{DatumType, Tensor};

/// What one shadow run's answer did against stable's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub rows: u64,
    pub agreed_rows: u64,
    /// |candidate − stable| of every regression value.
    pub abs_diffs: Vec<f64>,
}

impl Comparison {
    pub fn agreement(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.agreed_rows as f64 / self.rows as f64)
    }
}

/// Compares a candidate's outputs with stable's on the same inputs.
pub fn compare(stable: &[Tensor], candidate: &[Tensor]) -> Comparison {
    let rows = stable
        .first()
        .map_or(1, |t| t.shape().first().copied().unwrap_or(1));
    let mut agreed = vec![true; rows];
    let mut abs_diffs = Vec::new();
    if stable.len() != candidate.len() {
        agreed.fill(false);
    }
    for (s, c) in stable.iter().zip(candidate) {
        let same_shape = s.shape() == c.shape() && s.shape().first().copied().unwrap_or(1) == rows;
        if !same_shape || s.datum_type() != c.datum_type() && !(is_float(s) && is_float(c)) {
            agreed.fill(false);
            continue;
        }
        let width = s.len().checked_div(rows).unwrap_or(0);
        if is_float(s) {
            let (Some(s), Some(c)) = (floats(s), floats(c)) else {
                agreed.fill(false);
                continue;
            };
            let distributions = width > 1 && s.chunks(width).all(is_distribution);
            for (row, (sr, cr)) in s
                .chunks(width.max(1))
                .zip(c.chunks(width.max(1)))
                .enumerate()
            {
                let ok = if distributions {
                    top1(sr) == top1(cr)
                } else {
                    sr.iter().zip(cr).fold(true, |ok, (a, b)| {
                        let diff = (a - b).abs();
                        abs_diffs.push(if diff.is_nan() { f64::INFINITY } else { diff });
                        ok && (diff <= 1e-4 + 1e-3 * a.abs() || a.is_nan() && b.is_nan())
                    })
                };
                agreed[row] &= ok;
            }
        } else {
            let (Some(s), Some(c)) = (cells(s), cells(c)) else {
                agreed.fill(false);
                continue;
            };
            for (row, (sr, cr)) in s
                .chunks(width.max(1))
                .zip(c.chunks(width.max(1)))
                .enumerate()
            {
                agreed[row] &= sr == cr;
            }
        }
    }
    Comparison {
        rows: rows as u64,
        agreed_rows: agreed.iter().filter(|&&a| a).count() as u64,
        abs_diffs,
    }
}

fn is_float(t: &Tensor) -> bool {
    matches!(
        t.datum_type(),
        DatumType::F16 | DatumType::F32 | DatumType::F64
    )
}

fn floats(t: &Tensor) -> Option<Vec<f64>> {
    let cast = t.cast_to::<f64>().ok()?;
    let view = cast.to_plain_array_view::<f64>().ok()?;
    Some(view.iter().copied().collect())
}

/// Each element as comparable bytes (strings by content).
fn cells(t: &Tensor) -> Option<Vec<Vec<u8>>> {
    if t.datum_type() == DatumType::String {
        let view = t.to_plain_array_view::<String>().ok()?;
        return Some(view.iter().map(|s| s.as_bytes().to_vec()).collect());
    }
    let size = t.datum_type().size_of();
    Some(
        t.as_bytes()
            .chunks(size.max(1))
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

fn is_distribution(row: &[f64]) -> bool {
    row.iter().all(|&p| p >= 0.0) && (row.iter().sum::<f64>() - 1.0).abs() <= 1e-3
}

fn top1(row: &[f64]) -> Option<usize> {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// The one shadow run an instance may have going.
#[derive(Debug, Default)]
pub struct ShadowSlot(AtomicBool);

/// Held while a shadow run goes; frees the slot when dropped.
#[derive(Debug)]
pub struct ShadowPermit(Arc<ShadowSlot>);

impl ShadowSlot {
    pub fn try_acquire(self: &Arc<Self>) -> Option<ShadowPermit> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| ShadowPermit(self.clone()))
    }
}

impl Drop for ShadowPermit {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tract_ndarray::{Array1, Array2};

    fn probabilities(rows: &[[f32; 3]]) -> Tensor {
        Array2::from_shape_vec((rows.len(), 3), rows.iter().flatten().copied().collect())
            .unwrap()
            .into()
    }

    #[test]
    fn classifier_rows_agree_on_their_top_class_not_their_exact_probabilities() {
        let stable = probabilities(&[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]]);
        let candidate = probabilities(&[[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]);
        let c = compare(&[stable], &[candidate]);
        assert_eq!((c.rows, c.agreed_rows), (3, 2));
        assert!(
            c.abs_diffs.is_empty(),
            "probabilities are not regression values"
        );
    }

    #[test]
    fn regression_values_agree_within_the_tolerance_and_record_each_difference() {
        let stable: Tensor = Array2::from_shape_vec((3, 1), vec![100.0f32, 2.0, -5.0])
            .unwrap()
            .into();
        let candidate: Tensor = Array2::from_shape_vec((3, 1), vec![100.05f32, 2.5, -5.0])
            .unwrap()
            .into();
        let c = compare(&[stable], &[candidate]);
        // 0.05 ≤ 1e-4 + 0.1 agrees; 0.5 > 1e-4 + 0.002 does not.
        assert_eq!((c.rows, c.agreed_rows), (3, 2));
        assert_eq!(c.abs_diffs.len(), 3);
        assert!((c.abs_diffs[1] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_row_agrees_only_when_its_label_and_its_scores_agree() {
        let labels = |v: Vec<i64>| -> Tensor { Array1::from_vec(v).into() };
        let stable_p = probabilities(&[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]);
        let candidate_p = probabilities(&[[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]);
        let c = compare(
            &[labels(vec![0, 2]), stable_p],
            &[labels(vec![0, 1]), candidate_p],
        );
        assert_eq!((c.rows, c.agreed_rows), (2, 1));
        let strings: Tensor = Array1::from_vec(vec!["setosa".to_string()]).into();
        let other: Tensor = Array1::from_vec(vec!["virginica".to_string()]).into();
        assert_eq!(
            compare(&[strings.clone()], &[strings.clone()]).agreed_rows,
            1
        );
        assert_eq!(compare(&[strings], &[other]).agreed_rows, 0);
    }

    #[test]
    fn a_different_shape_or_output_count_disagrees_on_every_row() {
        let stable = probabilities(&[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]);
        let narrower: Tensor = Array2::from_shape_vec((2, 2), vec![0.5f32, 0.5, 0.5, 0.5])
            .unwrap()
            .into();
        assert_eq!(compare(&[stable.clone()], &[narrower]).agreed_rows, 0);
        assert_eq!(compare(&[stable.clone()], &[]).agreed_rows, 0);
        assert_eq!(compare(&[stable.clone()], &[stable]).agreed_rows, 2);
    }

    #[test]
    fn one_shadow_run_at_a_time() {
        let slot = Arc::new(ShadowSlot::default());
        let permit = slot.try_acquire().expect("free");
        assert!(slot.try_acquire().is_none());
        drop(permit);
        assert!(slot.try_acquire().is_some());
    }
}
