//! The paper's spatial transfer data: Malaria Atlas Project *P. falciparum*
//! parasite rate over Nigeria, 2012 (source) and 2016 (target), and the choice
//! between it and the offline raster stand-in ([`crate::data::raster`]).
//!
//! `cargo xtask data malaria` downloads the MAP rasters (WCS GetCoverage of
//! `Malaria__202206_Global_Pf_Parasite_Rate`, GeoTIFF, clipped to Nigeria's
//! bounding box) into `data/downloads/malaria/` and converts them to
//! `nigeria_pfpr.csv` with columns `lon,lat,year,value`: one row per raster
//! cell with data (cell centre in degrees; `value` the parasite rate in
//! [0, 1]; no-data cells dropped). The CSV is written last, under a temporary
//! name then renamed, so its presence means a complete conversion.
//!
//! The problem follows the authors' preprocessing: inputs (lon, lat) scaled to
//! [0, 1]² with min/max over all rows of both years, targets the parasite rate
//! unscaled (the paper's MSE of about 0.01 is in those units). Source rows are
//! the 2012 rows and target rows the 2016 rows, never mixed (the authors'
//! published script trained on the 2016 rows by mistake). Unlike the authors'
//! table, the bounding box also covers border areas of the neighbouring
//! countries (there is no `is_ng` mask).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::raster::raster_problem;
use crate::data::spatial::{SpatialProblem, unit_scale};
use crate::data::{DataError, downloads_dir};

/// The converted table inside the malaria download folder.
pub const MALARIA_CSV: &str = "nigeria_pfpr.csv";
/// The source year (training map).
pub const SOURCE_YEAR: i32 = 2012;
/// The target year (adaptation and test map).
pub const TARGET_YEAR: i32 = 2016;

/// The default malaria download folder: `data/downloads/malaria/`.
pub fn malaria_dir() -> PathBuf {
    downloads_dir().join("malaria")
}

#[derive(Deserialize)]
struct Row {
    lon: f64,
    lat: f64,
    year: i32,
    value: f64,
}

/// The malaria problem from a converted `lon,lat,year,value` table: source =
/// the [`SOURCE_YEAR`] rows, target = the [`TARGET_YEAR`] rows (other years
/// are ignored). Fails on a malformed row (with its line) or a missing year.
pub fn malaria_problem_from(path: &Path) -> Result<SpatialProblem, DataError> {
    let csv_err = |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let (mut xs, mut ys, mut xt, mut yt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let r = row.map_err(csv_err)?;
        let ok = r.lon.is_finite()
            && r.lat.is_finite()
            && (-180.0..=180.0).contains(&r.lon)
            && (-90.0..=90.0).contains(&r.lat)
            && (0.0..=1.0).contains(&r.value);
        if !ok {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                line: i + 2,
                message: format!(
                    "({}, {}) = {} is not a location with a parasite rate in [0, 1]",
                    r.lon, r.lat, r.value
                ),
            });
        }
        match r.year {
            SOURCE_YEAR => {
                xs.push([r.lon, r.lat]);
                ys.push(r.value);
            }
            TARGET_YEAR => {
                xt.push([r.lon, r.lat]);
                yt.push(r.value);
            }
            _ => {}
        }
    }
    for (year, n) in [(SOURCE_YEAR, ys.len()), (TARGET_YEAR, yt.len())] {
        if n < 2 {
            return Err(DataError::Invalid(format!(
                "{}: {n} rows for {year}; rerun `cargo xtask data malaria`",
                path.display()
            )));
        }
    }
    let (x_source, x_target) = unit_scale(&xs, &xt);
    Ok(SpatialProblem {
        source: (x_source, nalgebra::DVector::from_vec(ys)),
        target: (x_target, nalgebra::DVector::from_vec(yt)),
    })
}

/// Where the spatial transfer experiment's data come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpatialSource {
    /// The downloaded and converted MAP parasite-rate table.
    Malaria {
        /// The `nigeria_pfpr.csv` file.
        csv: PathBuf,
    },
    /// The shipped precipitation raster, western → eastern Africa.
    Offline {
        /// Why the malaria data were not used.
        reason: String,
    },
}

impl SpatialSource {
    /// One line saying which data this is, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Malaria { csv } => format!(
                "Malaria Atlas Project Pf parasite rate, Nigeria {SOURCE_YEAR} -> {TARGET_YEAR}, from {}",
                super::shown(csv)
            ),
            Self::Offline { reason } => format!(
                "offline stand-in: 2016 annual precipitation raster, western -> eastern Africa \
                 ({reason}; run `cargo xtask data malaria` for the paper's data)"
            ),
        }
    }

    /// The problem.
    pub fn problem(&self) -> Result<SpatialProblem, DataError> {
        match self {
            Self::Malaria { csv } => malaria_problem_from(csv),
            Self::Offline { .. } => raster_problem(),
        }
    }
}

/// The converted malaria table when present, the offline raster otherwise.
pub fn spatial_source() -> SpatialSource {
    spatial_source_in(&malaria_dir())
}

/// [`spatial_source`] with an explicit download folder.
pub fn spatial_source_in(dir: &Path) -> SpatialSource {
    let csv = dir.join(MALARIA_CSV);
    if csv.is_file() {
        SpatialSource::Malaria { csv }
    } else {
        SpatialSource::Offline {
            reason: format!("{} not found", super::shown(&csv)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_2012_and_target_is_2016() {
        let dir = std::env::temp_dir().join(format!("ntk-malaria-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = spatial_source_in(&dir);
        assert!(
            matches!(src, SpatialSource::Offline { .. }),
            "{}",
            src.describe()
        );
        assert_eq!(src.problem().unwrap().target.1.len(), 2100);

        let mut text = String::from("lon,lat,year,value\n");
        for (k, year) in [(0, 2012), (1, 2016), (2, 2014)] {
            for i in 0..4 {
                let v = 0.1 * f64::from(k) + 0.01 * f64::from(i);
                text.push_str(&format!(
                    "{},{},{year},{v}\n",
                    3.0 + f64::from(i),
                    5.0 + f64::from(k)
                ));
            }
        }
        std::fs::write(dir.join(MALARIA_CSV), &text).unwrap();
        let src = spatial_source_in(&dir);
        assert!(matches!(src, SpatialSource::Malaria { .. }));
        let p = src.problem().unwrap();
        assert_eq!((p.source.1.len(), p.target.1.len()), (4, 4));
        assert!(p.source.1.iter().all(|&v| v < 0.05), "2012 rows only");
        assert!(
            p.target.1.iter().all(|&v| (0.1..0.15).contains(&v)),
            "2016 rows only"
        );
        // lat 5 (2012) -> 0 and 6 (2016) -> 1: scaled over both years' rows.
        assert!(p.source.0.column(1).iter().all(|&v| v == 0.0));
        assert!(p.target.0.column(1).iter().all(|&v| v == 1.0));

        std::fs::write(
            dir.join(MALARIA_CSV),
            "lon,lat,year,value\n3,5,2012,0.5\n3,5,2012,7\n",
        )
        .unwrap();
        let err = malaria_problem_from(&dir.join(MALARIA_CSV)).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 3, .. }), "{err}");
        std::fs::write(
            dir.join(MALARIA_CSV),
            "lon,lat,year,value\n3,5,2012,0.5\n4,5,2012,0.5\n",
        )
        .unwrap();
        assert!(matches!(
            malaria_problem_from(&dir.join(MALARIA_CSV)),
            Err(DataError::Invalid(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
