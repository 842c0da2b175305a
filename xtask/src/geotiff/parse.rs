//! The bytes-to-raster part of the GeoTIFF reader: [`GeoRaster`] and
//! [`GeoRaster::from_bytes`], on the pure-Rust `tiff` crate.
//!
//! This file depends on `std` and `tiff` only: xtask reads rasters with it
//! (`xtask/src/geotiff.rs` adds reading from a path), and the fuzzing harness
//! (`crates/ntk-fuzz`) compiles the same file to fuzz it, so it must stay
//! self-contained.

use std::io::Cursor;

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

    /// Parses a GeoTIFF held in memory. Errors are messages without a file name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut dec = Decoder::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
        let (w, h) = dec.dimensions().map_err(|e| e.to_string())?;
        let (width, height) = (w as usize, h as usize);
        let scale = dec
            .get_tag_f64_vec(Tag::ModelPixelScaleTag)
            .map_err(|e| format!("no ModelPixelScaleTag ({e}): not a GeoTIFF"))?;
        let tie = dec
            .get_tag_f64_vec(Tag::ModelTiepointTag)
            .map_err(|e| format!("no ModelTiepointTag ({e}): not a GeoTIFF"))?;
        if scale.len() < 2 || tie.len() < 6 || !(scale[0] > 0.0 && scale[1] > 0.0) {
            return Err(format!(
                "unusable georeference: scale {scale:?}, tiepoint {tie:?}"
            ));
        }
        let keys = match dec
            .find_tag(Tag::GeoKeyDirectoryTag)
            .map_err(|e| e.to_string())?
        {
            Some(v) => v.into_u16_vec().map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        if let Some(model) = geo_key(&keys, 1024)
            && model != 2
        {
            return Err(format!(
                "model type {model} is not geographic (lon/lat): reproject the raster first"
            ));
        }
        // PixelIsArea (1, default): the tiepoint is a pixel corner, centres are half a pixel in.
        let half = if geo_key(&keys, 1025) == Some(2) {
            0.0
        } else {
            0.5
        };
        let (i0, j0, x0, y0) = (tie[0], tie[1], tie[3], tie[4]);
        let lon0 = x0 + (half - i0) * scale[0];
        let lat0 = y0 - (half - j0) * scale[1];
        // A NaN or infinite number, or an extent beyond f64's range, is no georeference:
        // the centres of the first and the last pixel must be finite.
        let last = (
            lon0 + width.saturating_sub(1) as f64 * scale[0],
            lat0 - height.saturating_sub(1) as f64 * scale[1],
        );
        if ![scale[0], scale[1], lon0, lat0, last.0, last.1]
            .iter()
            .all(|v| v.is_finite())
        {
            return Err(format!(
                "unusable georeference: scale {scale:?}, tiepoint {tie:?}"
            ));
        }
        let nodata = match dec.find_tag(Tag::GdalNodata).map_err(|e| e.to_string())? {
            Some(v) => {
                let s = v.into_string().map_err(|e| e.to_string())?;
                let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                Some(
                    s.parse::<f64>()
                        .map_err(|_| format!("GDAL_NODATA `{s}` is not a number"))?,
                )
            }
            None => None,
        };
        let values: Vec<f64> = match dec.read_image().map_err(|e| e.to_string())? {
            DecodingResult::F32(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::F64(v) => v,
            DecodingResult::U8(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::U16(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::I16(v) => v.into_iter().map(f64::from).collect(),
            DecodingResult::I32(v) => v.into_iter().map(f64::from).collect(),
            _ => {
                return Err("unsupported sample type (want float or 8-32 bit integers)".into());
            }
        };
        if values.len() != width * height {
            return Err(format!(
                "{} samples for {width} x {height} pixels: want a single band",
                values.len()
            ));
        }
        Ok(Self {
            width,
            height,
            lon0,
            lat0,
            dlon: scale[0],
            dlat: scale[1],
            values,
            nodata,
        })
    }
}

/// The value of GeoKey `id` stored inline (TIFFTagLocation 0) in a GeoKey
/// directory: header (version, revision, minor, count), then 4 shorts per key.
pub(crate) fn geo_key(dir: &[u16], id: u16) -> Option<u16> {
    let count = usize::from(*dir.get(3)?);
    dir.get(4..)?
        .chunks_exact(4)
        .take(count)
        .find(|k| k[0] == id && k[1] == 0)
        .map(|k| k[3])
}
