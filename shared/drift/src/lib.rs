//! What a model sees, feature by feature, in a form that merges: a [`Profile`] holds per
//! numeric feature a DDSketch (quantiles within 1 % of the value), counts and the NaN share, and
//! per BYTES feature its most frequent categories. Inference environments each keep one per
//! live version and arm; the publisher adds them up and compares the sum with the version's
//! baseline ([`compare`]). This crate knows no tensors, registry or HTTP.

mod distance;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

pub use self::distance::{CategoryShare, FeatureDrift, Shape, compare, noise_bound};

/// Categories kept per BYTES feature; the rest are counted together as "other".
pub const MAX_CATEGORIES: usize = 64;
/// Bytes of a category kept (longer values are cut at a character boundary).
pub const MAX_CATEGORY_BYTES: usize = 64;
/// The L∞ distance above which a feature drifted, when the model names no other: Model
/// Monitor's default comparison threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.1;

/// The statistics of a set of rows, per feature.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    /// Rows (a request's batch size, summed) the features were observed on.
    pub rows: u64,
    pub features: BTreeMap<String, Feature>,
}

/// One feature's values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Feature {
    /// Values observed, NaN included.
    pub count: u64,
    /// Of which NaN.
    pub missing: u64,
    /// The numbers' distribution (NaN excluded); `None` for a BYTES feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<Sketch>,
    /// A BYTES feature's most frequent values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Categories>,
}

/// A DDSketch at 1 % relative accuracy (the crate's defaults), so any two merge.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sketch(DDSketch);

impl Default for Sketch {
    fn default() -> Self {
        Self(DDSketch::new(Config::defaults()))
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch({} values)", self.count())
    }
}

impl Sketch {
    pub fn add(&mut self, value: f64) {
        self.0.add(value);
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    pub fn merge(&mut self, other: &Self) {
        // Both were made with `Config::defaults()`; the only error is a config mismatch.
        let _ = self.0.merge(&other.0);
    }

    /// The value at quantile `q` (0 is the least, 1 the greatest); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// The share of values at or below `x` (the sketch's CDF), found by bisecting its ranks.
    pub fn cdf(&self, x: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        // The number of values ≤ x is the least rank whose value is above x.
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at_rank(mid, n) <= x {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as f64 / n as f64
    }

    /// The value of rank `rank` (0-based) of `n`, as DDSketch's quantile maps a share to a rank.
    fn at_rank(&self, rank: u64, n: u64) -> f64 {
        let q = if rank + 1 >= n {
            1.0
        } else {
            (rank as f64 + 0.5) / (n - 1) as f64
        };
        self.quantile(q).unwrap_or(f64::NAN)
    }
}

/// A BYTES feature's most frequent values (Space-Saving: a value more frequent than
/// `total / MAX_CATEGORIES` is always kept; a kept count may include up to the count of the value
/// it replaced) and how many values there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    pub top: BTreeMap<String, u64>,
    pub total: u64,
}

impl Categories {
    pub fn add(&mut self, value: &str) {
        let value = truncate(value, MAX_CATEGORY_BYTES);
        self.total += 1;
        if let Some(count) = self.top.get_mut(value) {
            *count += 1;
            return;
        }
        let mut count = 1;
        if self.top.len() >= MAX_CATEGORIES
            && let Some((least, least_count)) = self.least()
        {
            self.top.remove(&least);
            count += least_count;
        }
        self.top.insert(value.to_string(), count);
    }

    /// The least kept value and its count (ties: the first by value).
    fn least(&self) -> Option<(String, u64)> {
        self.top
            .iter()
            .min_by_key(|&(_, &count)| count)
            .map(|(value, &count)| (value.clone(), count))
    }

    pub fn merge(&mut self, other: &Self) {
        for (value, count) in &other.top {
            *self.top.entry(value.clone()).or_default() += count;
        }
        self.total += other.total;
        if self.top.len() > MAX_CATEGORIES {
            let mut ranked: Vec<(String, u64)> =
                std::mem::take(&mut self.top).into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(MAX_CATEGORIES);
            self.top = ranked.into_iter().collect();
        }
    }

    /// Values not among the kept ones.
    pub fn other(&self) -> u64 {
        self.total.saturating_sub(self.top.values().sum())
    }
}

fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

impl Feature {
    pub fn add_number(&mut self, value: f64) {
        self.count += 1;
        if value.is_nan() {
            self.missing += 1;
        } else {
            self.sketch.get_or_insert_with(Sketch::default).add(value);
        }
    }

    pub fn add_category(&mut self, value: &str) {
        self.count += 1;
        self.categories
            .get_or_insert_with(Categories::default)
            .add(value);
    }

    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.missing += other.missing;
        if let Some(sketch) = &other.sketch {
            self.sketch
                .get_or_insert_with(Sketch::default)
                .merge(sketch);
        }
        if let Some(categories) = &other.categories {
            self.categories
                .get_or_insert_with(Categories::default)
                .merge(categories);
        }
    }

    /// The share of values that were NaN.
    pub fn missing_share(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.missing as f64 / self.count as f64
        }
    }
}

impl Profile {
    /// The feature named `name`, made empty if new.
    pub fn feature(&mut self, name: &str) -> &mut Feature {
        if !self.features.contains_key(name) {
            self.features.insert(name.to_string(), Feature::default());
        }
        self.features.get_mut(name).expect("inserted above")
    }

    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        for (name, feature) in &other.features {
            self.feature(name).merge(feature);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

#[cfg(test)]
mod tests;
