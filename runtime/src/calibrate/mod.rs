//! `edge calibrate`: the transform from a vendor's map to a Twinzo sector, fitted from reference
//! points read off both maps, with residuals, outliers, a recommendation and the edge.yaml snippet.

mod fit;
mod pairs;

pub use fit::{Fit, FitError, Model, Pair, affine, evaluate, similarity};
pub use pairs::{PairsError, read_pairs};

use serde::Serialize;

/// A point is an outlier when its residual against the fit of the other points exceeds this
/// many times the median such residual...
pub const OUTLIER_FACTOR: f64 = 2.5;
/// ...and this many millimetres (points read off maps are rarely better than half a metre).
pub const OUTLIER_FLOOR_MM: f64 = 500.0;
/// The affine is recommended only when its error per degree of freedom is below this share
/// of the similarity's: two more parameters must buy a clear improvement.
const AFFINE_CLEARLY_BETTER: f64 = 0.5;
/// Scales outside this range (mm per vendor unit) are worth a warning: metres map to 1000.
const PLAUSIBLE_SCALE: std::ops::RangeInclusive<f64> = 800.0..=1250.0;
/// The points should cover at least this share of the sector's area.
const SMALL_SPAN: f64 = 0.25;

/// Everything `edge calibrate` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub points: Vec<String>,
    pub dropped: Vec<String>,
    pub similarity: Fit,
    /// `None` with fewer than 3 points or points on one line (see `affine_error`).
    pub affine: Option<Fit>,
    pub affine_error: Option<String>,
    pub recommended: Model,
    pub why: String,
    /// Points whose residual stands out, with their residual against the fit of the others (mm).
    pub outliers: Vec<(String, f64)>,
    /// The recommended model fitted without the outliers.
    pub without_outliers: Option<Fit>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn recommended_fit(&self) -> &Fit {
        match (self.recommended, &self.affine) {
            (Model::Affine, Some(affine)) => affine,
            _ => &self.similarity,
        }
    }
}

/// Fits `pairs` minus those named in `drop`; `sector` (width, height in mm), when known, is
/// compared with the points' span.
pub fn calibrate(pairs: &[Pair], drop: &[String], sector: Option<(f64, f64)>) -> Result<Report, CalibrateError> {
    for name in drop {
        if !pairs.iter().any(|p| &p.name == name) {
            return Err(CalibrateError::UnknownPoint(name.clone()));
        }
    }
    let kept: Vec<Pair> = pairs.iter().filter(|p| !drop.contains(&p.name)).cloned().collect();
    repeated(&kept)?;
    let similarity = similarity(&kept)?;
    let (affine, affine_error) = match affine(&kept) {
        Ok(fit) => (Some(fit), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (recommended, why) = recommend(&similarity, affine.as_ref());
    let outliers = outliers(&kept, recommended);
    let without_outliers = (!outliers.is_empty())
        .then(|| {
            let rest: Vec<Pair> =
                kept.iter().filter(|p| !outliers.iter().any(|(n, _)| n == &p.name)).cloned().collect();
            fit_model(&rest, recommended).ok()
        })
        .flatten();
    let mut report = Report {
        points: kept.iter().map(|p| p.name.clone()).collect(),
        dropped: drop.to_vec(),
        similarity,
        affine,
        affine_error,
        recommended,
        why,
        outliers,
        without_outliers,
        warnings: Vec::new(),
    };
    report.warnings = warnings(&kept, report.recommended_fit(), sector);
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("--drop {0}: no point has that name")]
    UnknownPoint(String),
    #[error(
        "points {0} and {1} are at the same vendor position but different Twinzo positions: one of them is misread"
    )]
    Contradicting(String, String),
}

fn fit_model(pairs: &[Pair], model: Model) -> Result<Fit, FitError> {
    match model {
        Model::Similarity => similarity(pairs),
        Model::Affine => affine(pairs),
    }
}

/// Two points at one vendor position must be at one Twinzo position too.
fn repeated(pairs: &[Pair]) -> Result<(), CalibrateError> {
    for (i, p) in pairs.iter().enumerate() {
        for q in &pairs[i + 1..] {
            let same_vendor = (p.vendor[0] - q.vendor[0]).hypot(p.vendor[1] - q.vendor[1]) < 1e-9;
            let same_twinzo = (p.twinzo[0] - q.twinzo[0]).hypot(p.twinzo[1] - q.twinzo[1]) < 1e-6;
            if same_vendor && !same_twinzo {
                return Err(CalibrateError::Contradicting(p.name.clone(), q.name.clone()));
            }
        }
    }
    Ok(())
}

fn recommend(similarity: &Fit, affine: Option<&Fit>) -> (Model, String) {
    let Some(affine) = affine else {
        return (Model::Similarity, "the affine cannot be fitted to these points".into());
    };
    let (Some(s), Some(a)) = (fit::variance_per_dof(similarity), fit::variance_per_dof(affine)) else {
        return (Model::Similarity, "3 points fit an affine exactly: nothing shows whether it is better".into());
    };
    if a < AFFINE_CLEARLY_BETTER * s {
        let why = format!(
            "the affine's error per degree of freedom is {:.0} % of the similarity's: the map is sheared or scaled unevenly",
            100.0 * a / s.max(f64::MIN_POSITIVE)
        );
        (Model::Affine, why)
    } else {
        (Model::Similarity, "the affine is not clearly better: the simpler fit extrapolates more safely".into())
    }
}

/// Points whose residual against the fit of all the others stands out, found one at a time
/// (the worst first, then again without it), so that several misread points do not hide
/// each other.
fn outliers(pairs: &[Pair], model: Model) -> Vec<(String, f64)> {
    let mut rest: Vec<Pair> = pairs.to_vec();
    let mut found = Vec::new();
    // The others must still determine the model with one to spare.
    while rest.len() >= model.needs() + 2 {
        let left_out: Vec<f64> = (0..rest.len()).map(|i| left_out_residual(&rest, i, model)).collect();
        let mut sorted = left_out.clone();
        sorted.sort_by(f64::total_cmp);
        let limit = (OUTLIER_FACTOR * sorted[sorted.len() / 2]).max(OUTLIER_FLOOR_MM);
        let (worst, residual) =
            left_out.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).expect("points remain");
        if residual <= limit {
            break;
        }
        found.push((rest.remove(worst).name, residual));
    }
    // In the order given.
    found.sort_by_key(|(name, _)| pairs.iter().position(|p| &p.name == name));
    found
}

/// Point `i`'s residual against the fit of the others (0 when they cannot be fitted).
fn left_out_residual(pairs: &[Pair], i: usize, model: Model) -> f64 {
    let others: Vec<Pair> = pairs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| p.clone()).collect();
    fit_model(&others, model).map_or(0.0, |fit| fit::evaluate(&pairs[i..=i], fit.affine, model).residuals_mm[0])
}

fn warnings(pairs: &[Pair], fit: &Fit, sector: Option<(f64, f64)>) -> Vec<String> {
    let mut warnings = Vec::new();
    if !PLAUSIBLE_SCALE.contains(&fit.scale) {
        warnings.push(format!(
            "the scale is {:.1} mm per vendor unit, far from 1000: are the vendor coordinates in metres and the Twinzo ones in millimetres?",
            fit.scale
        ));
    }
    let (xs, ys) = (pairs.iter().map(|p| p.twinzo[0]), pairs.iter().map(|p| p.twinzo[1]));
    let span = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        hi - lo
    };
    let (w, h) = (span(&mut xs.into_iter()), span(&mut ys.into_iter()));
    if let Some((sw, sh)) = sector.filter(|(sw, sh)| *sw > 0.0 && *sh > 0.0)
        && w * h < SMALL_SPAN * sw * sh
    {
        warnings.push(format!(
            "the points span {:.0} × {:.0} m, {:.0} % of the sector: positions far from them are extrapolated (add points near the sector's edges)",
            w / 1000.0,
            h / 1000.0,
            100.0 * w * h / (sw * sh)
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::fit::tests::{OLDER, STATIONS, pairs_of};
    use super::*;

    /// Eight stations read to about 3 m, as at the older plant, and four misread by 10-14 m.
    fn older_plant_survey() -> Vec<Pair> {
        let mut stations = STATIONS.to_vec();
        stations.extend([[40.0, 20.0], [100.0, 50.0], [20.0, 40.0], [70.0, 88.0]]);
        let noise = [
            [2500.0, -1800.0],
            [-3000.0, 1200.0],
            [1500.0, 2800.0],
            [-2200.0, -2600.0],
            [3100.0, 400.0],
            [-900.0, 3300.0],
            [2000.0, -2900.0],
            [-2800.0, -300.0],
            [11000.0, 3000.0],
            [-9000.0, 9000.0],
            [4000.0, -12500.0],
            [-13000.0, -5000.0],
        ];
        pairs_of(OLDER, &stations, &noise)
    }

    #[test]
    fn the_older_plants_survey_is_fitted_and_its_misread_points_flagged() {
        let report = calibrate(&older_plant_survey(), &[], None).unwrap();
        assert_eq!(report.recommended, Model::Similarity, "{}", report.why);
        let flagged: Vec<&str> = report.outliers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(flagged, ["P8", "P9", "P10", "P11"]);
        let clean = report.without_outliers.as_ref().unwrap();
        assert!(
            clean.mirrored && (clean.scale - 1000.0).abs() < 30.0 && (clean.rotation_deg - 1.3).abs() < 1.5,
            "{clean:?}"
        );
        assert!(clean.mean_mm < 4000.0 && clean.rms_mm < report.similarity.rms_mm, "{clean:?}");
        // Dropping them by name gives the same fit.
        let names: Vec<String> = flagged.iter().map(|s| s.to_string()).collect();
        let dropped = calibrate(&older_plant_survey(), &names, None).unwrap();
        assert_eq!(dropped.similarity.affine, clean.affine);
        assert!(dropped.outliers.is_empty());
    }

    #[test]
    fn honest_noise_is_not_taken_for_outliers() {
        let report = calibrate(&older_plant_survey()[..8], &[], None).unwrap();
        assert!(report.outliers.is_empty(), "{:?}", report.outliers);
        assert!(report.similarity.mean_mm < 4000.0 && report.warnings.is_empty(), "{report:?}");
    }

    #[test]
    fn the_affine_is_recommended_only_when_clearly_better() {
        let sheared = [1000.0, 150.0, -20.0, 1100.0, 300.0, -400.0];
        let report = calibrate(&pairs_of(sheared, &STATIONS, &[]), &[], None).unwrap();
        assert_eq!(report.recommended, Model::Affine, "{}", report.why);
        let three = calibrate(&pairs_of(sheared, &STATIONS[..3], &[]), &[], None).unwrap();
        assert_eq!(three.recommended, Model::Similarity, "3 points: the affine is exact, not better");
    }

    #[test]
    fn refusals_and_warnings_name_the_problem() {
        let mut pairs = pairs_of(OLDER, &STATIONS, &[]);
        pairs[3].vendor = pairs[1].vendor;
        assert!(
            matches!(calibrate(&pairs, &[], None), Err(CalibrateError::Contradicting(a, b)) if a == "P1" && b == "P3")
        );
        assert!(matches!(calibrate(&pairs, &["P9".into()], None), Err(CalibrateError::UnknownPoint(_))));
        // Millimetres given where metres belong, points in one corner of a large sector.
        let mm = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let report = calibrate(&pairs_of(mm, &STATIONS, &[]), &[], Some((265_000.0, 265_000.0))).unwrap();
        assert!(report.warnings.iter().any(|w| w.contains("far from 1000")), "{:?}", report.warnings);
        assert!(report.warnings.iter().any(|w| w.contains("of the sector")), "{:?}", report.warnings);
    }
}
