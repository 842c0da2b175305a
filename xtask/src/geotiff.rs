//! A minimal GeoTIFF reader for single-band lon/lat rasters (what the Malaria
//! Atlas Project's WCS returns), on the pure-Rust `tiff` crate.
//!
//! Georeferencing comes from `ModelTiepointTag` (raster point (I, J) ↔ model
//! point (X, Y)) and `ModelPixelScaleTag` (degrees per pixel), with the
//! GeoKey directory's raster type: PixelIsArea (the default: (I, J) is a
//! pixel corner) or PixelIsPoint ((I, J) is a pixel centre). Rasters whose
//! model type is not geographic (lon/lat) are refused. No-data comes from
//! GDAL's `GDAL_NODATA` tag (42113), where present.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

/// A single-band raster on a lon/lat grid.
#[derive(Debug, Clone)]
pub struct GeoRaster {
    /// Columns.
    pub width: usize,
    /// Rows (north to south).
    pub height: usize,
    /// Longitude of the centre of column 0.
    pub lon0: f64,
    /// Latitude of the centre of row 0.
    pub lat0: f64,
    /// Pixel size in longitude (degrees, positive).
    pub dlon: f64,
    /// Pixel size in latitude (degrees, positive; rows go south).
    pub dlat: f64,
    /// Row-major values.
    pub values: Vec<f64>,
    /// The no-data value, if the file declares one.
    pub nodata: Option<f64>,
}

impl GeoRaster {
    /// The (lon, lat) of the centre of pixel (column `i`, row `j`).
    pub fn centre(&self, i: usize, j: usize) -> (f64, f64) {
        (
            self.lon0 + i as f64 * self.dlon,
            self.lat0 - j as f64 * self.dlat,
        )
    }

    /// Whether `v` is a data value (finite and not the no-data value).
    pub fn is_data(&self, v: f64) -> bool {
        v.is_finite() && self.nodata.is_none_or(|nd| v != nd)
    }

    /// Reads a GeoTIFF file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let file = File::open(path).map_err(|e| err(&e))?;
        let mut dec = Decoder::new(BufReader::new(file)).map_err(|e| err(&e))?;
        let (w, h) = dec.dimensions().map_err(|e| err(&e))?;
        let (width, height) = (w as usize, h as usize);
        let scale = dec
            .get_tag_f64_vec(Tag::ModelPixelScaleTag)
            .map_err(|e| err(&format!("no ModelPixelScaleTag ({e}): not a GeoTIFF")))?;
        let tie = dec
            .get_tag_f64_vec(Tag::ModelTiepointTag)
            .map_err(|e| err(&format!("no ModelTiepointTag ({e}): not a GeoTIFF")))?;
        if scale.len() < 2 || tie.len() < 6 || !(scale[0] > 0.0 && scale[1] > 0.0) {
            return Err(err(&format!(
                "unusable georeference: scale {scale:?}, tiepoint {tie:?}"
            )));
        }
        let keys = match dec.find_tag(Tag::GeoKeyDirectoryTag).map_err(|e| err(&e))? {
            Some(v) => v.into_u16_vec().map_err(|e| err(&e))?,
            None => Vec::new(),
        };
        if let Some(model) = geo_key(&keys, 1024)
            && model != 2
        {
            return Err(err(&format!(
                "model type {model} is not geographic (lon/lat): reproject the raster first"
            )));
        }
        // PixelIsArea (1, default): the tiepoint is a pixel corner, centres are half a pixel in.
        let half = if geo_key(&keys, 1025) == Some(2) {
            0.0
        } else {
            0.5
        };
        let (i0, j0, x0, y0) = (tie[0], tie[1], tie[3], tie[4]);
        let nodata = match dec.find_tag(Tag::GdalNodata).map_err(|e| err(&e))? {
            Some(v) => {
                let s = v.into_string().map_err(|e| err(&e))?;
                let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                Some(
                    s.parse::<f64>()
                        .map_err(|_| err(&format!("GDAL_NODATA `{s}` is not a number")))?,
                )
            }
            None => None,
        };
        let values: Vec<f64> = match dec.read_image().map_err(|e| err(&e))? {
            DecodingResult::F32(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::F64(v) => v,
            DecodingResult::U8(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::U16(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::I16(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::I32(v) => v.into_iter().map(f64::from).collect(),
            _ => {
                return Err(err(
                    &"unsupported sample type (want float or 8-32 bit integers)",
                ));
            }
        };
        if values.len() != width * height {
            return Err(err(&format!(
                "{} samples for {width} x {height} pixels: want a single band",
                values.len()
            )));
        }
        Ok(Self {
            width,
            height,
            lon0: x0 + (half - i0) * scale[0],
            lat0: y0 - (half - j0) * scale[1],
            dlon: scale[0],
            dlat: scale[1],
            values,
            nodata,
        })
    }
}

/// The value of GeoKey `id` stored inline (TIFFTagLocation 0) in a GeoKey
/// directory: header (version, revision, minor, count), then 4 shorts per key.
fn geo_key(dir: &[u16], id: u16) -> Option<u16> {
    let count = usize::from(*dir.get(3)?);
    dir.get(4..)?
        .chunks_exact(4)
        .take(count)
        .find(|k| k[0] == id && k[1] == 0)
        .map(|k| k[3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tiff::encoder::{TiffEncoder, colortype};

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

    #[test]
    fn geo_key_lookup() {
        let keys = [1, 1, 0, 2, 1024, 0, 1, 2, 1025, 0, 1, 2];
        assert_eq!(geo_key(&keys, 1024), Some(2));
        assert_eq!(geo_key(&keys, 1025), Some(2));
        assert_eq!(geo_key(&keys, 2048), None);
        assert_eq!(geo_key(&[1, 1], 1024), None);
    }
}
