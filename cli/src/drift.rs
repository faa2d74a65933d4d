//! `modelctl drift MODEL [--version N] [--picture FILE.svg]`: a version's live traffic against
//! its baseline, feature by feature — a table on stdout and a picture of both distributions
//! (each numeric feature's CDFs, each BYTES feature's category shares), flagged features in red.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use plotters::prelude::*;

use modelpipe_core::ModelName;
use modelpipe_drift::{FeatureDrift, Shape};
use modelpipe_registry::drift::{BaselineSource, DriftReport, DriftRequest};

use crate::target::{CliResult, Target};

/// Panels in the picture, at most (the table lists every feature).
const MAX_PANELS: usize = 24;

pub async fn run(
    target: &Target,
    model: ModelName,
    version: Option<u64>,
    picture: Option<PathBuf>,
) -> CliResult {
    let request = DriftRequest {
        model: Some(model),
        version,
    };
    let payload =
        serde_json::json!({"action": "drift", "model": request.model, "version": request.version});
    let monitoring = modelpipe_config::Config::from_env()
        .map_err(|e| e.to_string())?
        .monitoring;
    let reports: Vec<DriftReport> = target
        .call(payload, move |registry| {
            let settings = |own| monitoring.drift_settings(own);
            request.apply(registry, &settings, SystemTime::now())
        })
        .await?;
    let report = reports
        .into_iter()
        .next()
        .ok_or("the publisher returned no report")?;
    print!("{}", table(&report));
    if !report.features.is_empty() {
        let path = picture.unwrap_or_else(|| {
            PathBuf::from(format!("drift-{}-v{}.svg", report.model, report.version))
        });
        draw(&report, &path)?;
        println!("picture: {}", path.display());
    }
    Ok(())
}

/// The report as a table, with a line on the baseline and the live traffic above it.
fn table(report: &DriftReport) -> String {
    let mut out = format!("{} v{}: ", report.model, report.version);
    match &report.baseline {
        None => {
            out.push_str(&format!(
                "no baseline yet (no baseline.jsonl uploaded with it, and too little traffic to take one); {} live rows\n",
                report.live_rows
            ));
            return out;
        }
        Some(baseline) => {
            let source = match &baseline.source {
                BaselineSource::Upload { key, .. } => format!("uploaded {key}"),
                BaselineSource::Traffic { version } if *version == report.version => {
                    "its own first traffic".to_string()
                }
                BaselineSource::Traffic { version } => format!("the first traffic of v{version}"),
            };
            out.push_str(&format!(
                "baseline {} rows ({source}); live {} rows from {} environment(s); threshold {}\n",
                baseline.rows, report.live_rows, report.environments, report.threshold
            ));
        }
    }
    out.push_str(&format!(
        "{:<24} {:>9} {:>9} {:>7} {:>7} {:>13} {:>7}  {}\n",
        "feature", "baseline", "live", "L∞", "PSI", "NaN b→l", "noise", "drift"
    ));
    for f in &report.features {
        out.push_str(&format!(
            "{:<24} {:>9} {:>9} {:>7.3} {:>7.3} {:>6.1}→{:<5.1}% {:>7.3}  {}\n",
            f.feature,
            f.baseline_count,
            f.live_count,
            f.distance,
            f.psi,
            f.baseline_missing_share * 100.0,
            f.live_missing_share * 100.0,
            f.noise,
            if f.flagged { "DRIFTED" } else { "-" }
        ));
    }
    out
}

/// One panel per feature: baseline in blue, live in orange (red title when flagged).
fn draw(report: &DriftReport, path: &Path) -> CliResult {
    let features: Vec<&FeatureDrift> = report.features.iter().take(MAX_PANELS).collect();
    let columns = features.len().clamp(1, 3);
    let rows = features.len().div_ceil(columns);
    let size = (380 * columns as u32, 260 * rows as u32 + 40);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let failed = |e: &dyn std::fmt::Display| format!("could not draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let title = format!(
        "{} v{}: baseline (blue) vs live (orange)",
        report.model, report.version
    );
    let (header, body) = root.split_vertically(40);
    header
        .titled(&title, ("sans-serif", 20))
        .map_err(|e| failed(&e))?;
    for (panel, feature) in body.split_evenly((rows, columns)).iter().zip(features) {
        panel_for(panel, feature).map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel_for(panel: &Panel, feature: &FeatureDrift) -> Result<(), Box<dyn std::error::Error>> {
    let colour = if feature.flagged { RED } else { BLACK };
    let caption = format!(
        "{}  L∞ {:.3}  PSI {:.2}",
        feature.feature, feature.distance, feature.psi
    );
    let live = RGBColor(230, 120, 0);
    match &feature.shape {
        Shape::Quantiles {
            baseline,
            live: now,
        } => {
            let values = baseline.iter().chain(now).copied();
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            let pad = ((hi - lo) * 0.05).max(1e-9);
            let mut chart = ChartBuilder::on(panel)
                .margin(8)
                .caption(caption, ("sans-serif", 14).into_font().color(&colour))
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..1.0)?;
            chart
                .configure_mesh()
                .max_light_lines(0)
                .y_labels(3)
                .draw()?;
            let cdf = |values: &[f64]| -> Vec<(f64, f64)> {
                let last = values.len().saturating_sub(1).max(1) as f64;
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, i as f64 / last))
                    .collect()
            };
            chart.draw_series(LineSeries::new(cdf(baseline), BLUE.stroke_width(2)))?;
            chart.draw_series(LineSeries::new(cdf(now), live.stroke_width(2)))?;
        }
        Shape::Categories(shares) => {
            let top = shares
                .iter()
                .map(|c| c.baseline.max(c.live))
                .fold(0.0, f64::max)
                .max(0.01);
            let mut chart = ChartBuilder::on(panel)
                .margin(8)
                .caption(caption, ("sans-serif", 14).into_font().color(&colour))
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(0.0..shares.len() as f64, 0.0..top * 1.1)?;
            chart
                .configure_mesh()
                .max_light_lines(0)
                .x_labels(shares.len())
                .x_label_formatter(&|x| {
                    shares
                        .get(*x as usize)
                        .map(|c| c.value.chars().take(8).collect())
                        .unwrap_or_default()
                })
                .draw()?;
            for (i, share) in shares.iter().enumerate() {
                let x = i as f64;
                chart.draw_series([
                    Rectangle::new([(x + 0.1, 0.0), (x + 0.45, share.baseline)], BLUE.filled()),
                    Rectangle::new([(x + 0.5, 0.0), (x + 0.85, share.live)], live.filled()),
                ])?;
            }
        }
        Shape::Nothing => {
            panel.titled(&caption, ("sans-serif", 14).into_font().color(&colour))?;
        }
    }
    Ok(())
}
