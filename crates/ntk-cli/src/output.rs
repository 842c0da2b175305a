//! Writing predictions: all or nothing, numbers that round-trip an f64.

use std::io::Write;
use std::path::Path;

use nalgebra::{DMatrix, DVector};

use crate::error::CliError;

/// $z_{0.975}$: the 95% interval is mean $\mp$ this many standard deviations.
pub const Z95: f64 = 1.959964;

/// The prediction table of `ntk adapt`: the input columns, then
/// `mean,var,std,lower,upper` with `lower`/`upper` = mean ∓ 1.959964·√(var + σ²).
///
/// Rust's `{}` formatting of `f64` prints the shortest decimal that parses back to the
/// same number, so every value round-trips.
pub fn prediction_csv(
    names: &[String],
    inputs: &DMatrix<f64>,
    mean: &DVector<f64>,
    var: &DVector<f64>,
    noise: f64,
) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name);
        out.push(',');
    }
    out.push_str("mean,var,std,lower,upper\n");
    for i in 0..inputs.nrows() {
        for j in 0..inputs.ncols() {
            out.push_str(&format!("{},", inputs[(i, j)]));
        }
        let half = Z95 * (var[i] + noise).sqrt();
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            mean[i],
            var[i],
            var[i].sqrt(),
            mean[i] - half,
            mean[i] + half
        ));
    }
    out
}

/// Writes `contents` to `path` through a temporary file in the same folder and a rename,
/// so that a failure never leaves a partial file behind.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        CliError::Usage(format!("output path `{}` has no file name", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_values_round_trip_and_intervals_include_noise() {
        let names = vec!["x".to_string()];
        let inputs = DMatrix::from_row_slice(1, 1, &[0.1]);
        let mean = DVector::from_vec(vec![1.0 / 3.0]);
        let var = DVector::from_vec(vec![0.04]);
        let text = prediction_csv(&names, &inputs, &mean, &var, 0.05);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("x,mean,var,std,lower,upper"));
        let v: Vec<f64> = lines
            .next()
            .unwrap()
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(v[1], 1.0 / 3.0);
        assert_eq!(v[2], 0.04);
        assert!((v[3] - 0.2).abs() < 1e-15);
        assert!((v[4] - (1.0 / 3.0 - Z95 * 0.3)).abs() < 1e-12);
        assert!((v[5] - (1.0 / 3.0 + Z95 * 0.3)).abs() < 1e-12);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("ntk-cli-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("out.csv");
        write_atomically(&ok, b"a\n").unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"a\n");
        // A folder where the file should go: the rename fails and no temporary is left.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomically(&blocked, b"b\n").is_err());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
