//! Least-squares fits of the vendor-to-sector transform from reference points: a similarity
//! (uniform scale, rotation, optional mirror, translation; 4 parameters) and a full affine
//! (6 parameters), both in closed form about the points' centroids.

use serde::Serialize;

/// One reference point read off both maps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub name: String,
    /// Vendor map frame, metres.
    pub vendor: [f64; 2],
    /// Twinzo sector, millimetres.
    pub twinzo: [f64; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    Similarity,
    Affine,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Similarity => "similarity",
            Model::Affine => "affine",
        }
    }

    /// Points the model needs at the least.
    pub fn needs(self) -> usize {
        match self {
            Model::Similarity => 2,
            Model::Affine => 3,
        }
    }

    fn parameters(self) -> usize {
        match self {
            Model::Similarity => 4,
            Model::Affine => 6,
        }
    }
}

/// A fitted transform and how well it fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    pub model: Model,
    /// `[a, b, c, d, tx, ty]`: `X = a·x + b·y + tx`, `Y = c·x + d·y + ty` (edge.yaml's order).
    pub affine: [f64; 6],
    /// Millimetres per vendor unit (for an affine, the square root of the determinant's magnitude).
    pub scale: f64,
    pub rotation_deg: f64,
    /// The vendor's Y runs the other way (the determinant is negative).
    pub mirrored: bool,
    /// Per point, in the order given, millimetres.
    pub residuals_mm: Vec<f64>,
    pub mean_mm: f64,
    pub rms_mm: f64,
    pub max_mm: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("a {} fit needs at least {needed} points, {got} given", model.name())]
    TooFew { model: Model, needed: usize, got: usize },
    #[error("every point is at the same vendor position: nothing to fit")]
    NoSpread,
    #[error(
        "the points lie (nearly) on one line in the vendor map: an affine fit is undetermined there (add a point off the line, or use the similarity)"
    )]
    Collinear,
}

/// Sums about the centroids.
struct Moments {
    centroid: [f64; 2],
    target_centroid: [f64; 2],
    uu: f64,
    vv: f64,
    uv: f64,
    u_x: f64,
    v_x: f64,
    u_y: f64,
    v_y: f64,
}

fn moments(pairs: &[Pair]) -> Moments {
    let n = pairs.len() as f64;
    let mean = |f: &dyn Fn(&Pair) -> f64| pairs.iter().map(f).sum::<f64>() / n;
    let (mx, my) = (mean(&|p| p.vendor[0]), mean(&|p| p.vendor[1]));
    let (tx, ty) = (mean(&|p| p.twinzo[0]), mean(&|p| p.twinzo[1]));
    let mut m = Moments {
        centroid: [mx, my],
        target_centroid: [tx, ty],
        uu: 0.0,
        vv: 0.0,
        uv: 0.0,
        u_x: 0.0,
        v_x: 0.0,
        u_y: 0.0,
        v_y: 0.0,
    };
    for p in pairs {
        let (u, v, x, y) = (p.vendor[0] - mx, p.vendor[1] - my, p.twinzo[0] - tx, p.twinzo[1] - ty);
        m.uu += u * u;
        m.vv += v * v;
        m.uv += u * v;
        m.u_x += u * x;
        m.v_x += v * x;
        m.u_y += u * y;
        m.v_y += v * y;
    }
    m
}

/// The best similarity, mirrored or not, whichever fits better.
pub fn similarity(pairs: &[Pair]) -> Result<Fit, FitError> {
    check_count(Model::Similarity, pairs)?;
    let m = moments(pairs);
    let spread = m.uu + m.vv;
    if spread <= f64::EPSILON * (1.0 + m.centroid[0].abs() + m.centroid[1].abs()) {
        return Err(FitError::NoSpread);
    }
    // Unmirrored: [p -q; q p]. Mirrored: [p q; q -p] (the fit of (x, -y)).
    let (p, q) = ((m.u_x + m.v_y) / spread, (m.u_y - m.v_x) / spread);
    let straight = finish(pairs, &m, [p, -q, q, p], Model::Similarity);
    let (p, q) = ((m.u_x - m.v_y) / spread, (m.u_y + m.v_x) / spread);
    let mirrored = finish(pairs, &m, [p, q, q, -p], Model::Similarity);
    Ok(if mirrored.rms_mm < straight.rms_mm { mirrored } else { straight })
}

/// The best affine.
pub fn affine(pairs: &[Pair]) -> Result<Fit, FitError> {
    check_count(Model::Affine, pairs)?;
    let m = moments(pairs);
    let det = m.uu * m.vv - m.uv * m.uv;
    if det <= 1e-9 * (m.uu + m.vv).powi(2) {
        return Err(if m.uu + m.vv <= f64::EPSILON { FitError::NoSpread } else { FitError::Collinear });
    }
    let solve = |rx: f64, ry: f64| ((m.vv * rx - m.uv * ry) / det, (m.uu * ry - m.uv * rx) / det);
    let (a, b) = solve(m.u_x, m.v_x);
    let (c, d) = solve(m.u_y, m.v_y);
    Ok(finish(pairs, &m, [a, b, c, d], Model::Affine))
}

/// How well `affine` maps the pairs.
pub fn evaluate(pairs: &[Pair], affine: [f64; 6], model: Model) -> Fit {
    let [a, b, c, d, tx, ty] = affine;
    let residuals_mm: Vec<f64> = pairs
        .iter()
        .map(|p| {
            let (x, y) = (p.vendor[0], p.vendor[1]);
            (a * x + b * y + tx - p.twinzo[0]).hypot(c * x + d * y + ty - p.twinzo[1])
        })
        .collect();
    let n = residuals_mm.len().max(1) as f64;
    let det = a * d - b * c;
    Fit {
        model,
        affine,
        scale: det.abs().sqrt(),
        // The angle of the mapped vendor x axis.
        rotation_deg: c.atan2(a).to_degrees(),
        mirrored: det < 0.0,
        mean_mm: residuals_mm.iter().sum::<f64>() / n,
        rms_mm: (residuals_mm.iter().map(|r| r * r).sum::<f64>() / n).sqrt(),
        max_mm: residuals_mm.iter().copied().fold(0.0, f64::max),
        residuals_mm,
    }
}

/// The fit's error per degree of freedom (`None` when it fits its points exactly by
/// construction: as many parameters as coordinates).
pub fn variance_per_dof(fit: &Fit) -> Option<f64> {
    let dof = (2 * fit.residuals_mm.len()).checked_sub(fit.model.parameters()).filter(|d| *d > 0)?;
    Some(fit.residuals_mm.iter().map(|r| r * r).sum::<f64>() / dof as f64)
}

fn finish(pairs: &[Pair], m: &Moments, [a, b, c, d]: [f64; 4], model: Model) -> Fit {
    let [mx, my] = m.centroid;
    let [cx, cy] = m.target_centroid;
    evaluate(pairs, [a, b, c, d, cx - (a * mx + b * my), cy - (c * mx + d * my)], model)
}

fn check_count(model: Model, pairs: &[Pair]) -> Result<(), FitError> {
    if pairs.len() < model.needs() {
        return Err(FitError::TooFew { model, needed: model.needs(), got: pairs.len() });
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The older plant's fitted similarity (examples/ati-plant.yaml).
    pub const OLDER: [f64; 6] = [999.738230, 22.879501, 22.879501, -999.738230, 95598.77, 167357.60];

    pub fn pairs_of(affine: [f64; 6], vendor: &[[f64; 2]], noise_mm: &[[f64; 2]]) -> Vec<Pair> {
        let [a, b, c, d, tx, ty] = affine;
        vendor
            .iter()
            .enumerate()
            .map(|(i, &[x, y])| {
                let [nx, ny] = noise_mm.get(i).copied().unwrap_or_default();
                Pair {
                    name: format!("P{i}"),
                    vendor: [x, y],
                    twinzo: [a * x + b * y + tx + nx, c * x + d * y + ty + ny],
                }
            })
            .collect()
    }

    pub const STATIONS: [[f64; 2]; 8] = [
        [10.0, 5.0],
        [120.0, 8.0],
        [115.0, 90.0],
        [12.0, 85.0],
        [60.0, 45.0],
        [30.0, 60.0],
        [95.0, 20.0],
        [80.0, 70.0],
    ];

    fn close(a: [f64; 6], b: [f64; 6], tolerance: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance * (1.0 + y.abs()))
    }

    #[test]
    fn exact_points_give_back_the_older_plants_similarity_mirrored() {
        let pairs = pairs_of(OLDER, &STATIONS, &[]);
        let fit = similarity(&pairs).unwrap();
        assert!(close(fit.affine, OLDER, 1e-9), "{:?}", fit.affine);
        assert!(fit.mirrored && (fit.scale - 1000.0).abs() < 0.01, "{fit:?}");
        assert!((fit.rotation_deg - 1.311).abs() < 0.01, "{}", fit.rotation_deg);
        assert!(fit.max_mm < 1e-6);
        assert!(close(affine(&pairs).unwrap().affine, OLDER, 1e-9));
    }

    #[test]
    fn a_rotated_unmirrored_similarity_and_a_sheared_affine() {
        let (s, t) = (850.0, 30f64.to_radians());
        let rotated = [s * t.cos(), -s * t.sin(), s * t.sin(), s * t.cos(), -5000.0, 12000.0];
        let fit = similarity(&pairs_of(rotated, &STATIONS, &[])).unwrap();
        assert!(!fit.mirrored && (fit.rotation_deg - 30.0).abs() < 1e-6 && close(fit.affine, rotated, 1e-9));
        let sheared = [1000.0, 150.0, -20.0, 1100.0, 300.0, -400.0];
        let pairs = pairs_of(sheared, &STATIONS, &[]);
        assert!(close(affine(&pairs).unwrap().affine, sheared, 1e-9));
        assert!(similarity(&pairs).unwrap().rms_mm > 1000.0, "a similarity cannot follow a shear");
    }

    #[test]
    fn what_cannot_be_fitted_is_refused() {
        let one = pairs_of(OLDER, &STATIONS[..1], &[]);
        assert!(matches!(similarity(&one), Err(FitError::TooFew { needed: 2, got: 1, .. })));
        let line = pairs_of(OLDER, &[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0]], &[]);
        assert_eq!(affine(&line), Err(FitError::Collinear));
        assert!(similarity(&line).is_ok(), "two distinct points determine a similarity");
        let same = pairs_of(OLDER, &[[3.0, 4.0], [3.0, 4.0], [3.0, 4.0]], &[]);
        assert_eq!(similarity(&same), Err(FitError::NoSpread));
        assert_eq!(affine(&same), Err(FitError::NoSpread));
    }
}
