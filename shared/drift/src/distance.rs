//! How far live traffic is from a baseline, per feature: the L∞ distance between the two
//! CDFs (the largest gap between the shares of values at or below any point — Model Monitor's
//! distance, the Kolmogorov–Smirnov statistic), the population stability index over the
//! baseline's deciles, and how far apart two samples of the *same* distribution could be by
//! chance at their sizes. A feature is flagged only when its distance passes both the threshold
//! and that noise bound, so a small sample never raises an alarm on its own.

use serde::{Deserialize, Serialize};

use super::{Categories, Feature, Profile, Sketch};

/// One feature's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub baseline_count: u64,
    pub live_count: u64,
    /// L∞ distance between the CDFs (numbers) or the category shares (BYTES), or the change
    /// in the NaN share if that is larger; 0 to 1.
    pub distance: f64,
    /// Population stability index over the baseline's deciles (or categories).
    pub psi: f64,
    pub baseline_missing_share: f64,
    pub live_missing_share: f64,
    /// The distance two samples of one distribution exceed by chance once in a thousand at these
    /// sizes (the two-sample Kolmogorov–Smirnov bound).
    pub noise: f64,
    /// `distance` is above both the threshold and `noise`.
    pub flagged: bool,
    /// What a picture needs: both sides' quantiles or category shares.
    pub shape: Shape,
}

/// Both sides of a feature, for a picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// The values at quantiles 0, 0.05, …, 1 (21 each).
    Quantiles { baseline: Vec<f64>, live: Vec<f64> },
    /// Each category's share on each side ("other" last).
    Categories(Vec<CategoryShare>),
    /// One side has no values to draw (all NaN, or numbers against text).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryShare {
    pub value: String,
    pub baseline: f64,
    pub live: f64,
}

fn quantiles(sketch: &Sketch) -> Vec<f64> {
    (0..=20)
        .filter_map(|i| sketch.quantile(f64::from(i) / 20.0))
        .collect()
}

/// `c(α)·√((n+m)/(n·m))` with c(0.001) = 1.949: the two-sample KS critical value.
pub fn noise_bound(n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let (n, m) = (n as f64, m as f64);
    1.949 * ((n + m) / (n * m)).sqrt()
}

/// Every feature both profiles observed, compared; features only one side saw are left out
/// (the caller can tell them from the profiles).
pub fn compare(baseline: &Profile, live: &Profile, threshold: f64) -> Vec<FeatureDrift> {
    baseline
        .features
        .iter()
        .filter_map(|(name, base)| {
            let now = live.features.get(name)?;
            (base.count > 0 && now.count > 0).then(|| feature(name, base, now, threshold))
        })
        .collect()
}

fn feature(name: &str, base: &Feature, now: &Feature, threshold: f64) -> FeatureDrift {
    let (spread, psi, sizes, shape) =
        match (&base.sketch, &now.sketch, &base.categories, &now.categories) {
            (Some(b), Some(l), _, _) => {
                let shape = Shape::Quantiles {
                    baseline: quantiles(b),
                    live: quantiles(l),
                };
                (linf(b, l), psi(b, l), (b.count(), l.count()), shape)
            }
            (_, _, Some(b), Some(l)) => {
                let shares = category_shares(b, l);
                let distance = shares
                    .iter()
                    .map(|c| (c.baseline - c.live).abs())
                    .fold(0.0, f64::max);
                let psi = shares.iter().map(|c| psi_term(c.baseline, c.live)).sum();
                let sizes = (b.total, l.total);
                (distance, psi, sizes, Shape::Categories(shares))
            }
            // One side all NaN, or a number where the other saw text: as far apart as can be.
            _ => (1.0, 0.0, (base.count, now.count), Shape::Nothing),
        };
    let missing = (base.missing_share() - now.missing_share()).abs();
    let distance = spread.max(missing);
    let noise = noise_bound(sizes.0, sizes.1);
    FeatureDrift {
        feature: name.to_string(),
        baseline_count: base.count,
        live_count: now.count,
        distance,
        psi,
        baseline_missing_share: base.missing_share(),
        live_missing_share: now.missing_share(),
        noise,
        flagged: distance > threshold.max(noise),
        shape,
    }
}

/// The largest |F_baseline(x) − F_live(x)| over both sketches' percentiles.
fn linf(baseline: &Sketch, live: &Sketch) -> f64 {
    (0..=100)
        .flat_map(|i| {
            let q = f64::from(i) / 100.0;
            [baseline.quantile(q), live.quantile(q)]
        })
        .flatten()
        .map(|x| (baseline.cdf(x) - live.cdf(x)).abs())
        .fold(0.0, f64::max)
}

/// Shares below this count as this much, so an empty bin does not make the index infinite.
const FLOOR: f64 = 1e-4;

fn psi_term(expected: f64, actual: f64) -> f64 {
    let (e, a) = (expected.max(FLOOR), actual.max(FLOOR));
    (a - e) * (a / e).ln()
}

/// PSI over the bins the baseline's deciles cut.
fn psi(baseline: &Sketch, live: &Sketch) -> f64 {
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|i| baseline.quantile(f64::from(i) / 10.0))
        .collect();
    edges.dedup();
    let (mut below_b, mut below_l, mut total) = (0.0, 0.0, 0.0);
    for edge in edges {
        let (b, l) = (baseline.cdf(edge), live.cdf(edge));
        total += psi_term(b - below_b, l - below_l);
        (below_b, below_l) = (b, l);
    }
    total + psi_term(1.0 - below_b, 1.0 - below_l)
}

/// The share of each category either side kept, and of the others ("other", last).
fn category_shares(baseline: &Categories, live: &Categories) -> Vec<CategoryShare> {
    let (nb, nl) = (baseline.total.max(1) as f64, live.total.max(1) as f64);
    let share = |c: &Categories, value: &str, n: f64| {
        c.top.get(value).copied().unwrap_or_default() as f64 / n
    };
    let mut values: Vec<&String> = baseline.top.keys().chain(live.top.keys()).collect();
    values.sort();
    values.dedup();
    let mut shares: Vec<CategoryShare> = values
        .into_iter()
        .map(|v| CategoryShare {
            value: v.clone(),
            baseline: share(baseline, v, nb),
            live: share(live, v, nl),
        })
        .collect();
    shares.push(CategoryShare {
        value: "(other)".into(),
        baseline: baseline.other() as f64 / nb,
        live: live.other() as f64 / nl,
    });
    shares
}
