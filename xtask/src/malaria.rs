//! `cargo xtask data malaria`: Malaria Atlas Project *P. falciparum* parasite
//! rate over Nigeria for 2012 and 2016, for the paper's spatial transfer
//! experiment.
//!
//! Source: MAP's GeoServer, OGC WCS 2.0.1 `GetCoverage` of the coverage
//! `Malaria__202206_Global_Pf_Parasite_Rate` (annual PfPR, ages 2–10, 2.5′
//! cells, 2000–2020), as GeoTIFF, clipped to Nigeria's bounding box with
//! `subset=Long(..)`, `subset=Lat(..)` and the year with
//! `subset=time("YYYY-01-01T00:00:00.000Z")`:
//!
//! ```text
//! https://data.malariaatlas.org/geoserver/Malaria/ows?service=WCS&version=2.0.1
//!   &request=GetCoverage&coverageId=Malaria__202206_Global_Pf_Parasite_Rate
//!   &format=image/geotiff&subset=Long(2.6,14.7)&subset=Lat(4.2,13.9)
//!   &subset=time(%222012-01-01T00:00:00.000Z%22)
//! ```
//!
//! The rasters (`pfpr_2012.tif`, `pfpr_2016.tif`, recorded in
//! `manifest.json`) are converted to `nigeria_pfpr.csv`: header
//! `lon,lat,year,value`, one row per cell with data (cell centre in degrees,
//! parasite rate in [0, 1]); no-data cells and values outside [0, 1] are
//! dropped and counted. ntk-bench (`data::malaria`) reads it.
//!
//! `--authors-table` also fetches the cleaned table the paper's authors used
//! (`malaria_df.hdf5`, URL from amzn/xfer `finite_ntk/README.md`; columns
//! longitude, latitude, year, mean, std_dev, is_ng, pandas key `full`). It is
//! stored as is: reading HDF5 needs the C library, which this project avoids.

use std::fmt::Write as _;
use std::path::Path;

use crate::download::{Manifest, Outcome, ensure, write_atomic};
use crate::geotiff::GeoRaster;

/// MAP's GeoServer OWS endpoint for the `Malaria` workspace.
pub const WCS_URL: &str = "https://data.malariaatlas.org/geoserver/Malaria/ows";
/// The parasite-rate coverage (release 2022-06).
pub const COVERAGE: &str = "Malaria__202206_Global_Pf_Parasite_Rate";
/// Nigeria's bounding box with a small margin: longitudes, latitudes.
pub const NIGERIA_LON: (f64, f64) = (2.6, 14.7);
/// See [`NIGERIA_LON`].
pub const NIGERIA_LAT: (f64, f64) = (4.2, 13.9);
/// The source and target years.
pub const YEARS: [i32; 2] = [2012, 2016];
/// The converted table.
pub const CSV: &str = "nigeria_pfpr.csv";
/// The authors' cleaned table (HDF5), stored unconverted.
pub const AUTHORS_TABLE_URL: &str = "https://wjmaddox.github.io/assets/data/malaria_df.hdf5";

/// The WCS GetCoverage URL of one year's raster over Nigeria.
pub fn wcs_url(base: &str, year: i32) -> String {
    format!(
        "{base}?service=WCS&version=2.0.1&request=GetCoverage&coverageId={COVERAGE}\
         &format=image/geotiff&subset=Long({},{})&subset=Lat({},{})\
         &subset=time(%22{year}-01-01T00:00:00.000Z%22)",
        NIGERIA_LON.0, NIGERIA_LON.1, NIGERIA_LAT.0, NIGERIA_LAT.1
    )
}

/// Downloads (or verifies) both years' rasters from the WCS at `base` into
/// `dir` and converts them; with `authors_table`, also fetches the authors'
/// HDF5 table from `authors_url`.
pub fn download(
    base: &str,
    dir: &Path,
    force: bool,
    authors_url: Option<&str>,
) -> Result<(), String> {
    let agent = crate::download::agent();
    let mut rasters = Vec::new();
    for year in YEARS {
        let name = format!("pfpr_{year}.tif");
        let url = wcs_url(base, year);
        let (entry, outcome) = ensure(&agent, &url, dir, &name, force)?;
        reject_non_tiff(dir, &name, &url)?;
        eprintln!(
            "{name}: {} ({} bytes, sha256 {})",
            describe(outcome),
            entry.size,
            entry.sha256
        );
        rasters.push((year, dir.join(name)));
    }
    let summary = convert(&rasters, &dir.join(CSV))?;
    eprintln!("{summary}");
    if let Some(url) = authors_url {
        let (entry, outcome) = ensure(&agent, url, dir, "malaria_df.hdf5", force)?;
        eprintln!(
            "malaria_df.hdf5: {} ({} bytes); stored unconverted (HDF5, pandas key `full`)",
            describe(outcome),
            entry.size
        );
    }
    Ok(())
}

/// A WCS server reports a bad request as an XML exception, sometimes with
/// status 200: if `dir/name` is not a TIFF, delete it and its record and
/// show the start of what the server said.
fn reject_non_tiff(dir: &Path, name: &str, url: &str) -> Result<(), String> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        return Ok(());
    }
    let said: String = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
    std::fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
    Manifest::load(dir)?.remove(name)?;
    Err(format!(
        "{url} did not return a GeoTIFF (the coverage name or the WCS may have changed; \
         see xtask/src/malaria.rs). The server said:\n{said}"
    ))
}

fn describe(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Verified => "verified against manifest.json",
        Outcome::Recorded => "found, recorded in manifest.json",
        Outcome::Downloaded => "downloaded, recorded in manifest.json",
    }
}

/// Converts (year, GeoTIFF) pairs to the `lon,lat,year,value` table at `out`
/// (written atomically) and returns a one-line summary.
pub fn convert(rasters: &[(i32, std::path::PathBuf)], out: &Path) -> Result<String, String> {
    let mut csv = String::from("lon,lat,year,value\n");
    let mut summary = Vec::new();
    for (year, path) in rasters {
        let r = GeoRaster::read(path)?;
        let (mut kept, mut nodata, mut out_of_range) = (0usize, 0usize, 0usize);
        for j in 0..r.height {
            for i in 0..r.width {
                let v = r.values[j * r.width + i];
                if !r.is_data(v) {
                    nodata += 1;
                } else if !(0.0..=1.0).contains(&v) {
                    out_of_range += 1;
                } else {
                    let (lon, lat) = r.centre(i, j);
                    // Writing to a String cannot fail.
                    let _ = writeln!(csv, "{lon:.6},{lat:.6},{year},{v}");
                    kept += 1;
                }
            }
        }
        if kept == 0 {
            return Err(format!("{}: no cell with a parasite rate", path.display()));
        }
        summary.push(format!(
            "{year}: {kept} cells ({nodata} no-data, {out_of_range} outside [0, 1] dropped)"
        ));
    }
    write_atomic(out, csv.as_bytes())?;
    Ok(format!("wrote {}: {}", out.display(), summary.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::tests::temp_dir;
    use crate::geotiff::tests::write_geotiff;
    use crate::testserver::{Behaviour, TestServer};
    use std::fs;

    #[test]
    fn wcs_url_has_the_coverage_box_and_year() {
        let u = wcs_url(WCS_URL, 2012);
        assert!(u.starts_with("https://data.malariaatlas.org/geoserver/Malaria/ows?service=WCS"));
        assert!(u.contains("coverageId=Malaria__202206_Global_Pf_Parasite_Rate"));
        assert!(u.contains("subset=Long(2.6,14.7)&subset=Lat(4.2,13.9)"));
        assert!(u.ends_with("subset=time(%222012-01-01T00:00:00.000Z%22)"));
    }

    #[test]
    fn downloads_and_converts_both_years() {
        let dir = temp_dir("malaria");
        let t12 = dir.join("src12.tif");
        let t16 = dir.join("src16.tif");
        write_geotiff(&t12, 2, 2, (3.0, 10.0), 0.5, &[0.25, -9999.0, 0.5, 0.75]);
        write_geotiff(&t16, 2, 2, (3.0, 10.0), 0.5, &[0.125, 0.375, 7.0, 0.625]);
        let server = TestServer::start(
            vec![
                ("2012-01-01".into(), fs::read(&t12).unwrap()),
                ("2016-01-01".into(), fs::read(&t16).unwrap()),
                ("/malaria_df.hdf5".into(), b"HDF".to_vec()),
            ],
            Behaviour::Normal,
        );
        let out = dir.join("dl");
        let authors = format!("{}/malaria_df.hdf5", server.base());
        download(
            &format!("{}/ows", server.base()),
            &out,
            false,
            Some(&authors),
        )
        .unwrap();
        let text = fs::read_to_string(out.join(CSV)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "lon,lat,year,value",
                "3.250000,9.750000,2012,0.25",
                "3.250000,9.250000,2012,0.5",
                "3.750000,9.250000,2012,0.75",
                "3.250000,9.750000,2016,0.125",
                "3.750000,9.750000,2016,0.375",
                "3.750000,9.250000,2016,0.625",
            ]
        );
        assert!(
            server.requests()[0]
                .target
                .contains("coverageId=Malaria__202206_Global_Pf_Parasite_Rate")
        );
        assert_eq!(fs::read(out.join("malaria_df.hdf5")).unwrap(), b"HDF");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wcs_exception_is_reported_and_not_kept() {
        let report =
            b"<?xml version=\"1.0\"?><ows:ExceptionReport>No such coverage</ows:ExceptionReport>";
        let server = TestServer::start(vec![("/ows".into(), report.to_vec())], Behaviour::Normal);
        let dir = temp_dir("malaria-exception");
        let err = download(&format!("{}/ows", server.base()), &dir, false, None).unwrap_err();
        assert!(
            err.contains("did not return a GeoTIFF") && err.contains("No such coverage"),
            "{err}"
        );
        assert!(!dir.join("pfpr_2012.tif").exists());
        assert!(
            !fs::read_to_string(dir.join("manifest.json"))
                .unwrap()
                .contains("pfpr_2012")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
