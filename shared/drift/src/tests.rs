use super::*;

/// Deterministic draws: SplitMix64, then Box–Muller for a normal.
struct Draws(u64);

impl Draws {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn profile(seed: u64, rows: usize, shift_b: f64) -> Profile {
    let mut draws = Draws(seed);
    let mut profile = Profile::default();
    for _ in 0..rows {
        profile.rows += 1;
        profile.feature("a").add_number(draws.normal(5.0, 1.0));
        profile
            .feature("b")
            .add_number(draws.normal(-2.0 + shift_b, 0.5));
        let colour = ["red", "green", "blue"][(draws.uniform() * 3.0) as usize];
        profile.feature("colour").add_category(colour);
    }
    profile
}

#[test]
fn the_same_distribution_is_not_flagged() {
    let drifts = compare(&profile(1, 5_000, 0.0), &profile(2, 3_000, 0.0), 0.1);
    assert_eq!(drifts.len(), 3);
    for drift in &drifts {
        assert!(!drift.flagged, "{drift:?}");
        assert!(drift.distance < 0.05, "{drift:?}");
        assert!(drift.psi < 0.02, "{drift:?}");
    }
}

#[test]
fn a_shifted_feature_is_flagged_and_only_it() {
    let drifts = compare(&profile(1, 5_000, 0.0), &profile(2, 3_000, 0.5), 0.1);
    let flagged: Vec<&str> = drifts
        .iter()
        .filter(|d| d.flagged)
        .map(|d| d.feature.as_str())
        .collect();
    assert_eq!(flagged, ["b"]);
    let b = drifts.iter().find(|d| d.feature == "b").unwrap();
    // A shift of one standard deviation: the KS distance is 2Φ(0.5) − 1 ≈ 0.383.
    assert!((b.distance - 0.383).abs() < 0.04, "{b:?}");
    assert!(b.psi > 0.25, "{b:?}");
}

#[test]
fn a_small_sample_is_not_flagged_on_noise() {
    // 40 rows of the same distribution can be 0.2 apart by chance: above the threshold, not
    // above the noise bound.
    for seed in 0..20 {
        let drifts = compare(&profile(1, 5_000, 0.0), &profile(100 + seed, 40, 0.0), 0.1);
        assert!(drifts.iter().all(|d| !d.flagged), "{drifts:?}");
    }
    assert!(noise_bound(5_000, 40) > 0.3);
}

#[test]
fn a_change_in_the_nan_share_is_drift() {
    let mut baseline = Profile::default();
    let mut live = Profile::default();
    for i in 0..2_000 {
        baseline.feature("x").add_number(f64::from(i % 10));
        let value = if i % 4 == 0 {
            f64::NAN
        } else {
            f64::from(i % 10)
        };
        live.feature("x").add_number(value);
    }
    let drift = &compare(&baseline, &live, 0.1)[0];
    assert_eq!(drift.live_missing_share, 0.25);
    assert!((drift.distance - 0.25).abs() < 1e-9, "{drift:?}");
    assert!(drift.flagged);
}

#[test]
fn a_new_category_is_drift() {
    let mut baseline = Profile::default();
    let mut live = Profile::default();
    for i in 0..3_000 {
        baseline.feature("c").add_category(["a", "b"][i % 2]);
        live.feature("c").add_category(["a", "b", "c"][i % 3]);
    }
    let drift = &compare(&baseline, &live, 0.1)[0];
    assert!((drift.distance - 1.0 / 3.0).abs() < 1e-9, "{drift:?}");
    assert!(drift.flagged);
}

#[test]
fn merged_profiles_are_the_profile_of_all_rows() {
    let mut parts = profile(7, 1_000, 0.0);
    parts.merge(&profile(8, 1_000, 0.0));
    let drift = compare(&parts, &profile(9, 4_000, 0.0), 0.1);
    assert_eq!(parts.rows, 2_000);
    assert_eq!(parts.features["a"].count, 2_000);
    assert!(drift.iter().all(|d| !d.flagged), "{drift:?}");
    let json = serde_json::to_string(&parts).unwrap();
    let back: Profile = serde_json::from_str(&json).unwrap();
    assert_eq!(back.features["a"].sketch.as_ref().unwrap().count(), 2_000);
    assert_eq!(
        back.features["colour"].categories,
        parts.features["colour"].categories
    );
}

#[test]
fn the_cdf_of_a_sketch_is_within_its_accuracy() {
    let mut sketch = Sketch::default();
    for i in 1..=1_000 {
        sketch.add(f64::from(i));
    }
    for (x, share) in [(100.0, 0.1), (500.0, 0.5), (990.0, 0.99)] {
        assert!(
            (sketch.cdf(x) - share).abs() < 0.015,
            "F({x}) = {}",
            sketch.cdf(x)
        );
    }
    assert_eq!(sketch.cdf(0.0), 0.0);
    assert_eq!(sketch.cdf(2_000.0), 1.0);
}

#[test]
fn categories_keep_the_most_frequent_and_count_the_rest() {
    let mut categories = Categories::default();
    let distinct = MAX_CATEGORIES + 10;
    // Each value's occurrences in a row, the rarest first: late, frequent values still get in.
    for i in 0..distinct {
        for _ in 0..=i {
            categories.add(&format!("v{i:03}"));
        }
    }
    assert_eq!(categories.top.len(), MAX_CATEGORIES);
    for i in (distinct - 10)..distinct {
        assert!(categories.top.contains_key(&format!("v{i:03}")), "v{i:03}");
    }
    let all: u64 = (1..=distinct as u64).sum();
    assert_eq!(categories.total, all);
    assert_eq!(
        categories.other() + categories.top.values().sum::<u64>(),
        all
    );
    // Cut at a character boundary: "é" is two bytes.
    assert_eq!(truncate(&"é".repeat(100), 63), "é".repeat(31));
}
