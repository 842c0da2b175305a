//! The offline spatial transfer problem: the shipped 2016 global annual
//! precipitation raster (`data/annual-precip.json`, NOAA CFSv2, 1° cells;
//! provenance in `data/README.md`) as a stand-in for the malaria map.
//!
//! The raster has one year only, so the transfer is between regions rather
//! than years:
//! - source: western Africa and the eastern Atlantic, lon −20°…15°, lat −30°…30°;
//! - target: eastern Africa and the western Indian Ocean, lon 15°…50°, lat −30°…30°.
//!
//! Why these: two boxes of the same size (35 × 60 = 2100 cells each, the
//! most in a 60°-tall band around the equator that stays within Africa's
//! longitudes), side by side in the same latitude band, so the source teaches
//! the rain belt's dependence on latitude (wet tropics, dry subtropics: the
//! Sahara in the north, the Namib and Kalahari in the south) that carries over,
//! while the target's highlands and monsoon make it genuinely different. The
//! raster has no land mask, so the boxes include coastal ocean cells; their
//! values are real model output, not fill.
//!
//! Missing values: the file has none (every one of the 60,480 values is a
//! non-negative integer; no null and no negative sentinel). The 26 zero cells
//! (25 in the target box) are hyper-arid Sahara, real data, kept. The loader
//! still rejects null, negative or non-finite values, so a different file
//! cannot slip a sentinel in.
//!
//! Scaling (as the authors did for malaria): inputs (lon, lat) to [0, 1]² with
//! the min and max over the rows of both regions together, so the target lies
//! in the right half of the square, away from the source's inputs; targets
//! standardized with the mean and standard deviation of the source region only
//! (what a model trained on the source knows; target statistics would leak the
//! test points), the same affine map for both regions.

use std::path::Path;

use serde::Deserialize;

use crate::data::spatial::{SpatialProblem, unit_scale};
use crate::data::{DataError, data_dir};

/// File name of the shipped raster in `data/`.
pub const ANNUAL_PRECIP_JSON: &str = "annual-precip.json";

/// A lon/lat box, half-open: `lon.0 <= lon < lon.1`, `lat.0 <= lat < lat.1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// A readable name.
    pub name: &'static str,
    /// Longitude range in degrees east.
    pub lon: (f64, f64),
    /// Latitude range in degrees north.
    pub lat: (f64, f64),
}

impl Region {
    /// Whether the point lies in the box.
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        (self.lon.0..self.lon.1).contains(&lon) && (self.lat.0..self.lat.1).contains(&lat)
    }

    /// Whether two boxes share any point.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.lon.0 < other.lon.1
            && other.lon.0 < self.lon.1
            && self.lat.0 < other.lat.1
            && other.lat.0 < self.lat.1
    }
}

/// The offline source region (see the module docs).
pub const SOURCE_REGION: Region = Region {
    name: "western Africa",
    lon: (-20.0, 15.0),
    lat: (-30.0, 30.0),
};

/// The offline target region (see the module docs).
pub const TARGET_REGION: Region = Region {
    name: "eastern Africa",
    lon: (15.0, 50.0),
    lat: (-30.0, 30.0),
};

/// A global lon/lat raster: cell (i, j) is at lon = lon0 + i·dlon,
/// lat = lat0 + j·dlat, values row-major (row j, column i).
#[derive(Debug, Clone)]
pub struct Raster {
    /// Columns (longitudes).
    pub width: usize,
    /// Rows (latitudes).
    pub height: usize,
    /// Longitude of column 0 and step per column.
    pub lon0: f64,
    /// Step in longitude per column.
    pub dlon: f64,
    /// Latitude of row 0.
    pub lat0: f64,
    /// Step in latitude per row (negative: north to south).
    pub dlat: f64,
    /// `width * height` values.
    pub values: Vec<f64>,
}

#[derive(Deserialize)]
struct RasterJson {
    width: usize,
    height: usize,
    scale: [f64; 2],
    translate: [f64; 2],
    values: Vec<Option<f64>>,
}

impl Raster {
    /// Reads a raster in the `annual-precip.json` layout (`width`, `height`,
    /// `scale`, `translate`, `values`), rejecting missing, negative or
    /// non-finite values and a wrong number of them.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let json_err = |message: String| DataError::Json {
            path: path.to_path_buf(),
            message,
        };
        let r: RasterJson = serde_json::from_slice(&bytes).map_err(|e| json_err(e.to_string()))?;
        if r.width.checked_mul(r.height) != Some(r.values.len()) {
            return Err(json_err(format!(
                "{} values for a {} x {} raster",
                r.values.len(),
                r.width,
                r.height
            )));
        }
        let mut values = Vec::with_capacity(r.values.len());
        for (k, v) in r.values.iter().enumerate() {
            match v {
                Some(v) if v.is_finite() && *v >= 0.0 => values.push(*v),
                other => {
                    return Err(json_err(format!(
                        "value {k} (column {}, row {}) is {other:?}: missing or a sentinel",
                        k % r.width,
                        k / r.width
                    )));
                }
            }
        }
        Ok(Self {
            width: r.width,
            height: r.height,
            lon0: r.translate[0],
            dlon: r.scale[0],
            lat0: r.translate[1],
            dlat: r.scale[1],
            values,
        })
    }

    /// The cells in `region`: (lon, lat) and value, row-major order.
    pub fn cells_in(&self, region: &Region) -> (Vec<[f64; 2]>, Vec<f64>) {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for j in 0..self.height {
            for i in 0..self.width {
                let (lon, lat) = (
                    self.lon0 + i as f64 * self.dlon,
                    self.lat0 + j as f64 * self.dlat,
                );
                if region.contains(lon, lat) {
                    xs.push([lon, lat]);
                    ys.push(self.values[j * self.width + i]);
                }
            }
        }
        (xs, ys)
    }
}

/// The affine map applied to the targets: $y' = (y - \text{mean}) / \text{sd}$.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standardization {
    /// Mean of the source region's values (the file's units).
    pub mean: f64,
    /// Standard deviation (population) of the source region's values.
    pub sd: f64,
}

/// The offline spatial problem from the shipped raster and the default
/// regions ([`SOURCE_REGION`] → [`TARGET_REGION`]).
pub fn raster_problem() -> Result<SpatialProblem, DataError> {
    let raster = Raster::read(&data_dir().join(ANNUAL_PRECIP_JSON))?;
    raster_problem_in(&raster, &SOURCE_REGION, &TARGET_REGION).map(|(p, _)| p)
}

/// The spatial problem of two disjoint regions of a raster, with the target
/// standardization it used. Fails if the regions overlap, a region has fewer
/// than two cells, or the source is constant.
pub fn raster_problem_in(
    raster: &Raster,
    source: &Region,
    target: &Region,
) -> Result<(SpatialProblem, Standardization), DataError> {
    if source.overlaps(target) {
        return Err(DataError::Invalid(format!(
            "source region {} overlaps target region {}",
            source.name, target.name
        )));
    }
    let (xs, ys) = raster.cells_in(source);
    let (xt, yt) = raster.cells_in(target);
    for (region, n) in [(source, ys.len()), (target, yt.len())] {
        if n < 2 {
            return Err(DataError::Invalid(format!(
                "region {} has {n} cells",
                region.name
            )));
        }
    }
    let n = ys.len() as f64;
    let mean = ys.iter().sum::<f64>() / n;
    let sd = (ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd == 0.0 {
        return Err(DataError::Invalid(format!(
            "region {} is constant",
            source.name
        )));
    }
    let std = |y: Vec<f64>| {
        nalgebra::DVector::from_iterator(y.len(), y.into_iter().map(|v| (v - mean) / sd))
    };
    let (x_source, x_target) = unit_scale(&xs, &xt);
    Ok((
        SpatialProblem {
            source: (x_source, std(ys)),
            target: (x_target, std(yt)),
        },
        Standardization { mean, sd },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::spatial::tests::row_keys;

    #[test]
    fn shipped_raster_is_complete_and_sentinel_free() {
        let r = Raster::read(&data_dir().join(ANNUAL_PRECIP_JSON)).unwrap();
        assert_eq!((r.width, r.height, r.values.len()), (360, 168, 60_480));
        assert_eq!((r.lon0, r.lat0, r.dlon, r.dlat), (-180.0, 87.0, 1.0, -1.0));
        assert_eq!(r.values.iter().filter(|&&v| v == 0.0).count(), 26);
    }

    #[test]
    fn offline_problem_has_disjoint_regions_and_the_right_scaling() {
        let raster = Raster::read(&data_dir().join(ANNUAL_PRECIP_JSON)).unwrap();
        let (p, s) = raster_problem_in(&raster, &SOURCE_REGION, &TARGET_REGION).unwrap();
        assert_eq!((p.source.0.nrows(), p.target.0.nrows()), (2100, 2100));
        assert_eq!((p.source.0.ncols(), p.target.0.ncols()), (2, 2));

        // Source and target share no point, and each comes from its own box.
        assert!(row_keys(&p.source.0).is_disjoint(&row_keys(&p.target.0)));
        let (src_cells, _) = raster.cells_in(&SOURCE_REGION);
        assert!(
            src_cells
                .iter()
                .all(|&[lon, lat]| !TARGET_REGION.contains(lon, lat))
        );

        // Inputs in [0, 1]² with both ends reached over the two sets together.
        let all: Vec<f64> = p
            .source
            .0
            .iter()
            .chain(p.target.0.iter())
            .copied()
            .collect();
        assert!(all.iter().all(|v| (0.0..=1.0).contains(v)));
        for k in 0..2 {
            let col = |x: &nalgebra::DMatrix<f64>| x.column(k).iter().copied().collect::<Vec<_>>();
            let both: Vec<f64> = [col(&p.source.0), col(&p.target.0)].concat();
            assert_eq!(both.iter().copied().fold(f64::INFINITY, f64::min), 0.0);
            assert_eq!(both.iter().copied().fold(f64::NEG_INFINITY, f64::max), 1.0);
        }
        // The target lies to the east of the source.
        assert!(p.source.0.column(0).max() < p.target.0.column(0).min());

        // Source targets standardized with their own statistics.
        let y = &p.source.1;
        assert!(y.mean().abs() < 1e-12);
        assert!((y.variance() - 1.0).abs() < 1e-12);
        assert!(s.mean > 0.0 && s.sd > 0.0);

        // Adaptation and test draws come from the target only.
        let split = p.split_target(100, 5000, 3).unwrap();
        assert_eq!((split.adapt.1.len(), split.test.1.len()), (100, 2000));
        let target = row_keys(&p.target.0);
        assert!(row_keys(&split.test.0).is_subset(&target));
        assert!(row_keys(&split.test.0).is_disjoint(&row_keys(&p.source.0)));
        assert!(row_keys(&split.adapt.0).is_disjoint(&row_keys(&split.test.0)));
    }

    #[test]
    fn bad_rasters_and_regions_are_errors() {
        let dir = std::env::temp_dir().join(format!("ntk-raster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let write = |values: &str| {
            std::fs::write(
                &path,
                format!(
                    r#"{{"width":2,"height":2,"scale":[1,-1],"translate":[0,1],"values":{values}}}"#
                ),
            )
            .unwrap()
        };
        write("[1,2,3,null]");
        assert!(matches!(Raster::read(&path), Err(DataError::Json { .. })));
        write("[1,2,3,-9999]");
        assert!(
            Raster::read(&path)
                .unwrap_err()
                .to_string()
                .contains("sentinel")
        );
        write("[1,2,3]");
        assert!(Raster::read(&path).is_err());
        write("[1,2,3,4]");
        let r = Raster::read(&path).unwrap();
        let left = Region {
            name: "left",
            lon: (0.0, 1.0),
            lat: (0.0, 2.0),
        };
        let right = Region {
            name: "right",
            lon: (1.0, 2.0),
            lat: (0.0, 2.0),
        };
        let (p, _) = raster_problem_in(&r, &left, &right).unwrap();
        assert_eq!((p.source.1.len(), p.target.1.len()), (2, 2));
        assert!(raster_problem_in(&r, &left, &left).is_err(), "overlap");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
