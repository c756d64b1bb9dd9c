//! `edge calibrate`: fits a source's `transform:` from reference points read off both maps and
//! prints the fits, residuals, outliers and the snippet for edge.yaml; `--check` judges the
//! transform a config already has against the same points.

use crate::calibrate::{Fit, Model, Pair, Report, calibrate, evaluate, read_pairs};
use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Reference points, CSV (`name, vendor x, vendor y, twinzo X, twinzo Y`) or JSON.
    /// Vendor metres, Twinzo millimetres.
    pairs: PathBuf,
    /// Leave this point out (repeatable).
    #[arg(long, value_name = "NAME")]
    drop: Vec<String>,
    /// The sector's size in millimetres, WIDTHxHEIGHT, to warn when the points cover little of it.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    sector: Option<(f64, f64)>,
    /// Use this model rather than the recommended one.
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Print only the `transform:` snippet for edge.yaml.
    #[arg(long, conflicts_with = "json")]
    yaml: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Judge the transform this config gives `--source` against the points, instead of fitting.
    #[arg(long, value_name = "CONFIG", requires = "source")]
    check: Option<PathBuf>,
    /// The source whose transform `--check` judges.
    #[arg(long)]
    source: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Similarity,
    Affine,
}

fn parse_size(text: &str) -> Result<(f64, f64), String> {
    let (w, h) = text.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT in millimetres, e.g. 265000x180000")?;
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
    Ok((
        number(w).ok_or("the width is not a positive number")?,
        number(h).ok_or("the height is not a positive number")?,
    ))
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let pairs = read_pairs(&args.pairs)?;
    if let (Some(config), Some(source)) = (&args.check, &args.source) {
        return check(&args, &pairs, config, source);
    }
    let report = calibrate(&pairs, &args.drop, args.sector)?;
    let chosen = match (args.model, &report.affine) {
        (Some(ModelArg::Affine), None) => {
            anyhow::bail!("no affine fit: {}", report.affine_error.as_deref().unwrap_or("too few points"))
        }
        (Some(ModelArg::Affine), Some(affine)) => affine,
        (Some(ModelArg::Similarity), _) => &report.similarity,
        (None, _) => report.recommended_fit(),
    };
    if args.yaml {
        print!("{}", snippet(chosen));
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, &pairs, chosen));
    }
    Ok(ExitCode::SUCCESS)
}

/// How the configured transform of `source` fits the points, beside the best fit.
fn check(args: &CalibrateArgs, pairs: &[Pair], config: &std::path::Path, source: &str) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load_local(config)?;
    let configured = loaded
        .config
        .sources
        .iter()
        .find(|s| s.name == source)
        .ok_or_else(|| anyhow::anyhow!("{} has no source named `{source}`", config.display()))?;
    let kept: Vec<Pair> = pairs.iter().filter(|p| !args.drop.contains(&p.name)).cloned().collect();
    let fit = evaluate(&kept, configured.transform.affine, Model::Affine);
    let best = calibrate(pairs, &args.drop, args.sector)?;
    let mut out = format!("the transform of source {source} in {}:\n", config.display());
    describe(&mut out, "configured", &fit);
    describe(&mut out, "best fit", best.recommended_fit());
    out += "\nresiduals (mm):\n";
    for (p, r) in kept.iter().zip(&fit.residuals_mm) {
        let _ = writeln!(out, "  {:<16} {r:>10.0}", p.name);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "configured": fit, "best": best }))?);
    } else {
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

fn render(report: &Report, pairs: &[Pair], chosen: &Fit) -> String {
    let mut out = format!("{} points", report.points.len());
    if !report.dropped.is_empty() {
        let _ = write!(out, " (dropped: {})", report.dropped.join(", "));
    }
    out += "\n\n";
    describe(&mut out, "similarity", &report.similarity);
    match &report.affine {
        Some(affine) => describe(&mut out, "affine", affine),
        None => {
            let _ = writeln!(out, "affine: not fitted: {}", report.affine_error.as_deref().unwrap_or(""));
        }
    }
    let _ = writeln!(out, "\nresiduals (mm)    similarity     affine");
    let kept = pairs.iter().filter(|p| report.points.contains(&p.name));
    for (i, p) in kept.enumerate() {
        let affine = report.affine.as_ref().map_or("-".to_string(), |a| format!("{:.0}", a.residuals_mm[i]));
        let flag = if report.outliers.iter().any(|(n, _)| n == &p.name) { "  outlier" } else { "" };
        let _ = writeln!(out, "  {:<16} {:>10.0} {affine:>10}{flag}", p.name, report.similarity.residuals_mm[i]);
    }
    if !report.outliers.is_empty() {
        let list: Vec<String> = report.outliers.iter().map(|(n, r)| format!("{n} ({:.1} m)", r / 1000.0)).collect();
        let _ = writeln!(
            out,
            "\noutliers: {} (residual against the fit of the others above {} times their median and {} mm)",
            list.join(", "),
            crate::calibrate::OUTLIER_FACTOR,
            crate::calibrate::OUTLIER_FLOOR_MM
        );
        if let Some(without) = &report.without_outliers {
            describe(&mut out, "without them", without);
            let drops: Vec<String> = report.outliers.iter().map(|(n, _)| format!("--drop {n}")).collect();
            let _ = writeln!(out, "  (to use it: {})", drops.join(" "));
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    let _ = writeln!(out, "\nrecommended: {} ({})", report.recommended.name(), report.why);
    out + "\n" + &snippet(chosen)
}

fn describe(out: &mut String, label: &str, fit: &Fit) {
    let _ = writeln!(
        out,
        "{label}: scale {:.3} mm per vendor unit, rotation {:.3}°{}; residuals mean {:.0} mm, RMS {:.0} mm, max {:.0} mm",
        fit.scale,
        fit.rotation_deg,
        if fit.mirrored { ", vendor Y mirrored" } else { "" },
        fit.mean_mm,
        fit.rms_mm,
        fit.max_mm
    );
}

/// The edge.yaml lines for a source.
fn snippet(fit: &Fit) -> String {
    let [a, b, c, d, tx, ty] = fit.affine;
    format!(
        "# {} fit: mean residual {:.0} mm, max {:.0} mm\ntransform:\n  affine: [{a:.6}, {b:.6}, {c:.6}, {d:.6}, {tx:.2}, {ty:.2}]\n",
        fit.model.name(),
        fit.mean_mm,
        fit.max_mm
    )
}
