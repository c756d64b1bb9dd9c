//! Reference points from a file: CSV (`name, vendor x, vendor y, twinzo X, twinzo Y` per line;
//! a header line, blank lines and `#` comments allowed) or JSON (a list of objects with
//! `name`, `vendor_x`, `vendor_y`, `twinzo_x`, `twinzo_y`). Vendor metres, Twinzo millimetres.

use super::Pair;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {what}")]
    Line { path: PathBuf, line: usize, what: String },
    #[error("{path}: {what}")]
    Json { path: PathBuf, what: String },
    #[error("{path}: point name {name:?} given twice")]
    DuplicateName { path: PathBuf, name: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPair {
    name: String,
    vendor_x: f64,
    vendor_y: f64,
    twinzo_x: f64,
    twinzo_y: f64,
}

/// Reads the points at `path` (JSON when it ends in `.json`, else CSV).
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, PairsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PairsError::Read { path: path.into(), source })?;
    let pairs = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        from_json(&text, path)?
    } else {
        from_csv(&text, path)?
    };
    for (i, p) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|q| q.name == p.name) {
            return Err(PairsError::DuplicateName { path: path.into(), name: p.name.clone() });
        }
    }
    Ok(pairs)
}

fn from_json(text: &str, path: &Path) -> Result<Vec<Pair>, PairsError> {
    let parsed: Vec<JsonPair> = serde_json::from_str(text)
        .map_err(|e| PairsError::Json { path: path.into(), what: format!("not a list of points: {e}") })?;
    parsed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let pair = Pair { name: p.name, vendor: [p.vendor_x, p.vendor_y], twinzo: [p.twinzo_x, p.twinzo_y] };
            finite(pair).map_err(|what| PairsError::Json { path: path.into(), what: format!("[{i}]: {what}") })
        })
        .collect()
}

fn from_csv(text: &str, path: &Path) -> Result<Vec<Pair>, PairsError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let fail = |what: String| PairsError::Line { path: path.into(), line: i + 1, what };
        if fields.len() != 5 {
            return Err(fail(format!(
                "expected 5 fields (name, vendor x, vendor y, twinzo X, twinzo Y), found {}",
                fields.len()
            )));
        }
        let numbers: Result<Vec<f64>, usize> =
            fields[1..].iter().enumerate().map(|(k, f)| f.parse::<f64>().map_err(|_| k)).collect();
        let numbers = match numbers {
            Ok(numbers) => numbers,
            // A first line of words is the header.
            Err(_) if pairs.is_empty() && fields[1..].iter().all(|f| f.parse::<f64>().is_err()) => continue,
            Err(k) => {
                const NAMES: [&str; 4] = ["vendor x", "vendor y", "twinzo X", "twinzo Y"];
                return Err(fail(format!("{}: {:?} is not a number", NAMES[k], fields[k + 1])));
            }
        };
        let pair = Pair { name: fields[0].into(), vendor: [numbers[0], numbers[1]], twinzo: [numbers[2], numbers[3]] };
        pairs.push(finite(pair).map_err(fail)?);
    }
    Ok(pairs)
}

fn finite(pair: Pair) -> Result<Pair, String> {
    if pair.name.is_empty() {
        return Err("a point needs a name".into());
    }
    if pair.vendor.iter().chain(&pair.twinzo).any(|v| !v.is_finite()) {
        return Err(format!("point {}: coordinates must be finite numbers", pair.name));
    }
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn csv_with_header_comments_and_json_read_the_same() {
        let (_d, csv) = write(
            "p.csv",
            "name, vendor_x, vendor_y, twinzo_x, twinzo_y\n# dock\nA, 1.5, 2, 1000, 2000\n\nB,3,4,5,6 # gate\n",
        );
        let (_e, json) = write(
            "p.json",
            r#"[{"name":"A","vendor_x":1.5,"vendor_y":2,"twinzo_x":1000,"twinzo_y":2000},{"name":"B","vendor_x":3,"vendor_y":4,"twinzo_x":5,"twinzo_y":6}]"#,
        );
        let from_csv = read_pairs(&csv).unwrap();
        assert_eq!(from_csv, read_pairs(&json).unwrap());
        assert_eq!(from_csv[0], Pair { name: "A".into(), vendor: [1.5, 2.0], twinzo: [1000.0, 2000.0] });
    }

    #[test]
    fn bad_lines_are_named_by_file_line_and_field() {
        let (_d, path) = write("p.csv", "A,1,2,3,4\nB,1,x,3,4\n");
        assert!(read_pairs(&path).unwrap_err().to_string().ends_with("p.csv:2: vendor y: \"x\" is not a number"));
        let (_d, path) = write("p.csv", "A,1,2,3\n");
        assert!(read_pairs(&path).unwrap_err().to_string().contains(":1: expected 5 fields"));
        let (_d, path) = write("p.csv", "A,1,NaN,3,4\n");
        assert!(read_pairs(&path).unwrap_err().to_string().contains("must be finite"));
        let (_d, path) = write("p.csv", "A,1,2,3,4\nA,5,6,7,8\n");
        assert!(matches!(read_pairs(&path), Err(PairsError::DuplicateName { .. })));
    }
}
