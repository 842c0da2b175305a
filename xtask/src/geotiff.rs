//! A minimal GeoTIFF reader for single-band lon/lat rasters (what the Malaria
//! Atlas Project's WCS returns), on the pure-Rust `tiff` crate.
//!
//! Georeferencing comes from `ModelTiepointTag` (raster point (I, J) ↔ model
//! point (X, Y)) and `ModelPixelScaleTag` (degrees per pixel), with the
//! GeoKey directory's raster type: PixelIsArea (the default: (I, J) is a
//! pixel corner) or PixelIsPoint ((I, J) is a pixel centre). Rasters whose
//! model type is not geographic (lon/lat) are refused. No-data comes from
//! GDAL's `GDAL_NODATA` tag (42113), where present.
//!
//! The parsing lives in `geotiff/parse.rs` (bytes in, [`GeoRaster`] out), which
//! the fuzzing harness (`cargo xtask fuzz geotiff`) compiles too; this module
//! adds reading from a file.

use std::path::Path;

mod parse;

pub use parse::GeoRaster;

impl GeoRaster {
    /// Reads a GeoTIFF file (see [`GeoRaster::from_bytes`]); errors name the file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let bytes = std::fs::read(path).map_err(|e| err(&e))?;
        Self::from_bytes(&bytes).map_err(|e| err(&e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::parse::geo_key;
    use super::*;
    use std::fs::File;
    use tiff::encoder::{TiffEncoder, colortype};
    use tiff::tags::Tag;

    /// Writes a small GeoTIFF: `values` (row-major, `w` columns), top-left
    /// corner at (lon, lat), `step` degrees per pixel, no-data −9999.
    pub(crate) fn write_geotiff(
        path: &Path,
        w: u32,
        h: u32,
        corner: (f64, f64),
        step: f64,
        values: &[f32],
    ) {
        let file = File::create(path).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<colortype::Gray32Float>(w, h).unwrap();
        let dir = img.encoder();
        dir.write_tag(Tag::ModelPixelScaleTag, &[step, step, 0.0][..])
            .unwrap();
        dir.write_tag(
            Tag::ModelTiepointTag,
            &[0.0, 0.0, 0.0, corner.0, corner.1, 0.0][..],
        )
        .unwrap();
        // GeoKeys: geographic model (1024 = 2), PixelIsArea (1025 = 1), WGS 84 (2048 = 4326).
        let keys: [u16; 16] = [1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326];
        dir.write_tag(Tag::GeoKeyDirectoryTag, &keys[..]).unwrap();
        dir.write_tag(Tag::GdalNodata, "-9999").unwrap();
        img.write_data(values).unwrap();
    }

    #[test]
    fn reads_georeference_nodata_and_values() {
        let dir = crate::download::tests::temp_dir("geotiff");
        let path = dir.join("t.tif");
        let vals = [0.1f32, 0.2, -9999.0, 0.4, 0.5, 0.6];
        write_geotiff(&path, 3, 2, (2.5, 14.0), 0.5, &vals);
        let r = GeoRaster::read(&path).unwrap();
        assert_eq!((r.width, r.height, r.nodata), (3, 2, Some(-9999.0)));
        assert_eq!(r.centre(0, 0), (2.75, 13.75));
        assert_eq!(r.centre(2, 1), (3.75, 13.25));
        assert!(!r.is_data(r.values[2]) && r.is_data(r.values[0]));
        assert!((r.values[4] - 0.5).abs() < 1e-7);

        std::fs::write(&path, b"not a tiff").unwrap();
        assert!(GeoRaster::read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by `cargo xtask fuzz geotiff` (inputs in crates/ntk-fuzz/regressions/geotiff/):
    /// a NaN tiepoint or an infinite pixel size was read as a raster with NaN or infinite
    /// coordinates.
    #[test]
    fn refuses_a_georeference_that_is_not_finite() {
        let dir = crate::download::tests::temp_dir("geotiff-nan");
        let path = dir.join("t.tif");
        let vals = [0.5f32; 6];
        for (corner, step) in [
            ((f64::NAN, 14.0), 0.5),
            ((2.5, f64::INFINITY), 0.5),
            ((2.5, 14.0), f64::INFINITY),
            // Finite numbers, but the last pixel's longitude overflows.
            ((2.5, 14.0), 1e308),
        ] {
            write_geotiff(&path, 3, 2, corner, step, &vals);
            let err = GeoRaster::read(&path).unwrap_err();
            assert!(
                err.contains("unusable georeference"),
                "{corner:?} {step}: {err}"
            );
        }
        write_geotiff(&path, 3, 2, (2.5, 14.0), 1e300, &vals);
        assert!(GeoRaster::read(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn geo_key_lookup() {
        let keys = [1, 1, 0, 2, 1024, 0, 1, 2, 1025, 0, 1, 2];
        assert_eq!(geo_key(&keys, 1024), Some(2));
        assert_eq!(geo_key(&keys, 1025), Some(2));
        assert_eq!(geo_key(&keys, 2048), None);
        assert_eq!(geo_key(&[1, 1], 1024), None);
    }
}
