//! Writing predictions: all or nothing, numbers that round-trip an f64.

use std::io::Write;
use std::path::{Path, PathBuf};

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
///
/// The temporary file has a random name and is created exclusively (`O_EXCL`, by the
/// `tempfile` crate), so a file or link planted under a guessable name cannot redirect
/// the write; it is removed if anything fails before the rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    let mut staged = Staged::default();
    staged.add(path, contents)?;
    staged.commit()
}

/// Output files written all together or not at all: each is staged as a temporary file
/// beside its destination, and only when every one is written are they renamed into place.
#[derive(Default)]
pub struct Staged {
    files: Vec<(tempfile::NamedTempFile, PathBuf)>,
}

impl Staged {
    /// Writes `contents` to a temporary file beside `path`.
    pub fn add(&mut self, path: &Path, contents: &[u8]) -> Result<(), CliError> {
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
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(contents)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io)?;
        self.files.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Renames every staged file into place. If one rename fails, the files already moved
    /// are removed again and the rest are deleted, so no partial set is left.
    pub fn commit(self) -> Result<(), CliError> {
        let mut done: Vec<PathBuf> = Vec::new();
        // On an early return the files not yet moved are dropped, which deletes them.
        for (tmp, path) in self.files {
            if let Err(e) = tmp.persist(&path) {
                for p in &done {
                    let _ = std::fs::remove_file(p);
                }
                return Err(CliError::Io {
                    path,
                    source: e.error,
                });
            }
            done.push(path);
        }
        Ok(())
    }
}

/// Fails if `output` names the same file as any of `inputs` (also through links or
/// another spelling of the path), so that writing it cannot destroy an input.
pub fn refuse_overwriting(output: &Path, inputs: &[&Path]) -> Result<(), CliError> {
    for input in inputs {
        if same_file(output, input) {
            return Err(CliError::Usage(format!(
                "the output `{}` is the input `{}`: writing it would destroy the input; \
                 choose another output path",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Whether two paths name one file: the same device and inode when both exist, else the
/// same canonical path (of the parent folder, for a file not yet written).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    let canonical = |p: &Path| {
        p.canonicalize().ok().or_else(|| {
            let parent = p.parent().filter(|q| !q.as_os_str().is_empty());
            let dir = parent.unwrap_or(Path::new(".")).canonicalize().ok()?;
            Some(dir.join(p.file_name()?))
        })
    };
    matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
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

    #[test]
    fn the_temporary_file_has_an_unguessable_name_and_a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        let out = dir.path().join("out.csv");
        // The old scheme's name, planted as a link to another file.
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            &target,
            dir.path()
                .join(format!(".out.csv.tmp-{}", std::process::id())),
        )
        .unwrap();
        write_atomically(&out, b"new\n").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new\n");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let temps = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn a_staged_set_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let mut staged = Staged::default();
        staged.add(&a, b"a\n").unwrap();
        staged.add(&b, b"b\n").unwrap();
        // The second destination becomes a non-empty folder: its rename must fail.
        std::fs::create_dir_all(b.join("x")).unwrap();
        assert!(staged.commit().is_err());
        assert!(!a.exists(), "the first file was rolled back");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}"); // only the folder b.csv
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_under_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("train.csv");
        std::fs::write(&input, b"x,y\n").unwrap();
        let other = dir.path().join("sub/../train.csv");
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        assert!(refuse_overwriting(&other, &[&input]).is_err());
        #[cfg(unix)]
        {
            let link = dir.path().join("link.csv");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(refuse_overwriting(&link, &[&input]).is_err());
        }
        assert!(refuse_overwriting(&dir.path().join("out.csv"), &[&input]).is_ok());
        let e = refuse_overwriting(&input, &[&input])
            .unwrap_err()
            .to_string();
        assert!(e.contains("would destroy the input"), "{e}");
    }
}
