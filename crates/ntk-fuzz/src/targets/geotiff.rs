//! The GeoTIFF raster reader of `cargo xtask data` (malaria rasters),
//! [`GeoRaster::from_bytes`], compiled from xtask's own source file
//! (`xtask/src/geotiff/parse.rs`; xtask depends on no workspace crate, so the file is
//! shared rather than the crate).
//!
//! Checked on every accepted raster: one value per pixel, positive finite pixel sizes, and a
//! finite georeference (the centres of the first and the last pixel).

use std::io::Cursor;

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngExt};
use tiff::encoder::{Compression, DeflateLevel, TiffEncoder, TiffKind, colortype};
use tiff::tags::Tag;

use crate::mutate::INTERESTING_U64;

#[path = "../../../../xtask/src/geotiff/parse.rs"]
pub mod parse;

pub use parse::GeoRaster;

/// TIFF structure the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b"II*\0",
    b"MM\0*",
    b"II+\0\x08\0\0\0",
    b"\0\0\0\0",
    b"\xff\xff\xff\xff",
    b"-9999\0",
    b"nan\0",
    // A DOUBLE NaN and +Inf, little-endian.
    b"\0\0\0\0\0\0\xf8\x7f",
    b"\0\0\0\0\0\0\xf0\x7f",
];

/// The tags a GeoTIFF reader looks at: image structure, strips and tiles, sample format,
/// and the GeoTIFF and GDAL tags.
const TAGS: [u16; 22] = [
    256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 33550,
    33922, 34735, 34736, 42113,
];

/// Parses `data`; checks what is accepted.
pub fn run(data: &[u8]) -> super::Outcome {
    let r = GeoRaster::from_bytes(data).map_err(|e| super::one_line(&e))?;
    assert_eq!(r.values.len(), r.width * r.height, "values vs pixels");
    assert!(
        r.dlon > 0.0 && r.dlat > 0.0 && r.dlon.is_finite() && r.dlat.is_finite(),
        "pixel size {} x {}",
        r.dlon,
        r.dlat
    );
    let first = r.centre(0, 0);
    let last = r.centre(r.width.saturating_sub(1), r.height.saturating_sub(1));
    assert!(
        [first.0, first.1, last.0, last.1]
            .iter()
            .all(|v| v.is_finite()),
        "georeference: centres {first:?} to {last:?}"
    );
    let data_values = r.values.iter().filter(|&&v| r.is_data(v)).count();
    Ok(format!(
        "ok: ~2^{} x ~2^{} pixels, nodata {}, data ~2^{}",
        super::size_class(r.width),
        super::size_class(r.height),
        r.nodata.is_some(),
        super::size_class(data_values)
    ))
}

/// The seeds: small single-band rasters in the sample types the reader takes, plain, LZW and
/// Deflate, classic TIFF and BigTIFF, PixelIsArea and PixelIsPoint, with and without no-data.
pub fn generated_seeds() -> Vec<(String, Vec<u8>)> {
    let f32s = [0.1f32, 0.2, -9999.0, 0.4, 0.5, 0.6];
    let geo = Geo {
        pixel_is_point: false,
        nodata: Some("-9999"),
    };
    let point = Geo {
        pixel_is_point: true,
        nodata: None,
    };
    let plain = Compression::default();
    vec![
        (
            "f32-area-nodata.tif".into(),
            write::<colortype::Gray32Float>(false, (3, 2), &f32s, geo, plain),
        ),
        (
            "u8-point.tif".into(),
            write::<colortype::Gray8>(false, (4, 4), &Vec::from_iter(0..16), point, plain),
        ),
        (
            "f64-deflate.tif".into(),
            write::<colortype::Gray64Float>(
                false,
                (2, 2),
                &[1.5, -2.5, 1e300, -9999.0],
                geo,
                Compression::Deflate(DeflateLevel::Fast),
            ),
        ),
        (
            "i16-lzw.tif".into(),
            write::<colortype::GrayI16>(
                false,
                (3, 3),
                &[-3, -2, -1, 0, 1, 2, 3, 4, 5],
                geo,
                Compression::Lzw,
            ),
        ),
        (
            "u16-bigtiff.tif".into(),
            write::<colortype::Gray16>(true, (2, 1), &[7, 65535], point, plain),
        ),
    ]
}

/// The georeferencing options of a seed.
#[derive(Clone, Copy)]
struct Geo {
    pixel_is_point: bool,
    nodata: Option<&'static str>,
}

/// A single-band GeoTIFF (BigTIFF if `big`) with its top-left corner at (2.5° E, 14° N),
/// 0.5° pixels.
fn write<C: colortype::ColorType>(
    big: bool,
    (w, h): (u32, u32),
    values: &[C::Inner],
    geo: Geo,
    compression: Compression,
) -> Vec<u8>
where
    [C::Inner]: tiff::encoder::TiffValue,
{
    let mut out = Cursor::new(Vec::new());
    if big {
        let enc = TiffEncoder::new_big(&mut out).expect("a BigTIFF header");
        encode::<C, _, _>(enc.with_compression(compression), w, h, values, geo);
    } else {
        let enc = TiffEncoder::new(&mut out).expect("a TIFF header");
        encode::<C, _, _>(enc.with_compression(compression), w, h, values, geo);
    }
    out.into_inner()
}

fn encode<C: colortype::ColorType, K: TiffKind, W: std::io::Write + std::io::Seek>(
    mut enc: TiffEncoder<W, K>,
    w: u32,
    h: u32,
    values: &[C::Inner],
    geo: Geo,
) where
    [C::Inner]: tiff::encoder::TiffValue,
{
    let mut img = enc.new_image::<C>(w, h).expect("an image");
    let dir = img.encoder();
    let ok = "a GeoTIFF tag";
    dir.write_tag(Tag::ModelPixelScaleTag, &[0.5, 0.5, 0.0][..])
        .expect(ok);
    dir.write_tag(Tag::ModelTiepointTag, &[0.0, 0.0, 0.0, 2.5, 14.0, 0.0][..])
        .expect(ok);
    // GeoKeys: geographic model (1024 = 2), raster type (1025: 1 area, 2 point), WGS 84.
    let raster_type = if geo.pixel_is_point { 2 } else { 1 };
    let keys: [u16; 16] = [
        1,
        1,
        0,
        3,
        1024,
        0,
        1,
        2,
        1025,
        0,
        1,
        raster_type,
        2048,
        0,
        1,
        4326,
    ];
    dir.write_tag(Tag::GeoKeyDirectoryTag, &keys[..]).expect(ok);
    if let Some(nodata) = geo.nodata {
        dir.write_tag(Tag::GdalNodata, nodata).expect(ok);
    }
    img.write_data(values).expect("the image data");
}

/// The byte order and kind of a TIFF file, from its header.
struct Layout {
    little: bool,
    big_tiff: bool,
}

impl Layout {
    fn of(data: &[u8]) -> Option<Self> {
        let little = match data.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let mut l = Self {
            little,
            big_tiff: false,
        };
        l.big_tiff = l.get(data, 2, 2)? == 43;
        Some(l)
    }

    /// The `width`-byte unsigned integer at `at`.
    fn get(&self, data: &[u8], at: usize, width: usize) -> Option<u64> {
        let b = data.get(at..at.checked_add(width)?)?;
        let fold = |acc: u64, &x: &u8| (acc << 8) | u64::from(x);
        Some(if self.little {
            b.iter().rev().fold(0, fold)
        } else {
            b.iter().fold(0, fold)
        })
    }

    /// Writes the low `width` bytes of `v` at `at`, where they fit.
    fn set(&self, data: &mut [u8], at: usize, width: usize, v: u64) {
        let Some(b) = at.checked_add(width).and_then(|end| data.get_mut(at..end)) else {
            return;
        };
        for (i, byte) in b.iter_mut().enumerate() {
            let shift = if self.little { i } else { width - 1 - i };
            *byte = (v >> (8 * shift)) as u8;
        }
    }

    /// Offset width (4 or 8 bytes), entry size, and the offset of the first IFD's pointer.
    fn sizes(&self) -> (usize, usize, usize) {
        if self.big_tiff {
            (8, 20, 8)
        } else {
            (4, 12, 4)
        }
    }
}

/// One mutation that knows TIFF: in the first directory, an entry's tag, type, count or
/// value/offset set to an interesting value, the data it points at overwritten with
/// interesting numbers, an entry dropped or repeated, the entry count changed, or the
/// next-directory pointer turned into a loop.
pub fn mutate(data: &mut Vec<u8>, rng: &mut SmallRng) {
    let Some(l) = Layout::of(data) else {
        return;
    };
    let (word, entry_size, first_ptr) = l.sizes();
    let Some(ifd) = l
        .get(data, first_ptr, word)
        .and_then(|v| usize::try_from(v).ok())
    else {
        return;
    };
    let count_width = if l.big_tiff { 8 } else { 2 };
    let Some(count) = l.get(data, ifd, count_width) else {
        return;
    };
    let entries = ifd + count_width;
    let n = usize::try_from(count).unwrap_or(0).min(64);
    let next_ptr = entries + n * entry_size;
    if n == 0 || next_ptr > data.len() {
        // A broken directory: point the header at a random place instead.
        let to = rng.random_range(0..=data.len() as u64);
        l.set(data, first_ptr, word, to);
        return;
    }
    let e = entries + rng.random_range(0..n) * entry_size;
    let value_at = e + 4 + word;
    match rng.random_range(0..9) {
        0 => {
            let tag = if rng.random_ratio(3, 4) {
                *TAGS.choose(rng).unwrap()
            } else {
                rng.random()
            };
            l.set(data, e, 2, u64::from(tag));
        }
        1 => l.set(data, e + 2, 2, rng.random_range(0..=19)),
        2 => {
            let v = interesting(rng, data.len());
            l.set(data, e + 4, word, v);
        }
        3 => {
            let v = interesting(rng, data.len());
            l.set(data, value_at, word, v);
        }
        4 => {
            // Overwrite what the entry points at with interesting doubles, or integers.
            let Some(at) = l
                .get(data, value_at, word)
                .and_then(|v| usize::try_from(v).ok())
            else {
                return;
            };
            let v: u64 = if rng.random() {
                [
                    f64::NAN,
                    f64::INFINITY,
                    -f64::INFINITY,
                    0.0,
                    -1.0,
                    1e308,
                    5e-324,
                ]
                .choose(rng)
                .unwrap()
                .to_bits()
            } else {
                interesting(rng, data.len())
            };
            let width = *[2usize, 4, 8].choose(rng).unwrap();
            l.set(
                data,
                at.saturating_add(8 * rng.random_range(0..4)),
                width,
                v,
            );
        }
        5 => {
            // Drop the entry.
            data.drain(e..e + entry_size);
            l.set(data, ifd, count_width, count - 1);
        }
        6 => {
            let copy = data[e..e + entry_size].to_vec();
            data.splice(e..e, copy);
            l.set(data, ifd, count_width, count.wrapping_add(1));
        }
        7 => {
            let v = match rng.random_range(0..3) {
                0 => count.wrapping_add(1),
                1 => count.saturating_sub(1),
                _ => interesting(rng, data.len()),
            };
            l.set(data, ifd, count_width, v);
        }
        _ => {
            let to = if rng.random() {
                ifd as u64
            } else {
                interesting(rng, data.len())
            };
            l.set(data, next_ptr, word, to);
        }
    }
}

/// An interesting count, size or offset: a boundary value, or near the end of the file.
fn interesting(rng: &mut impl Rng, len: usize) -> u64 {
    match rng.random_range(0..3) {
        0 => *INTERESTING_U64.choose(rng).unwrap(),
        1 => (len as u64)
            .wrapping_add(rng.random_range(0..16))
            .wrapping_sub(8),
        _ => rng.random_range(0..=len as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn seeds_are_accepted() {
        for (name, bytes) in generated_seeds() {
            let r = run(&bytes);
            assert!(r.is_ok(), "{name}: {r:?}");
        }
        let f32s = &generated_seeds()[0].1;
        let r = GeoRaster::from_bytes(f32s).unwrap();
        assert_eq!((r.width, r.height, r.nodata), (3, 2, Some(-9999.0)));
        assert_eq!(r.centre(0, 0), (2.75, 13.75));
    }

    #[test]
    fn structured_mutants_change_the_directory() {
        let seeds = generated_seeds();
        let mut rng = SmallRng::seed_from_u64(11);
        let (mut changed, mut refused) = (0, 0);
        for i in 0..500 {
            let seed = &seeds[i % seeds.len()].1;
            let mut data = seed.clone();
            mutate(&mut data, &mut rng);
            changed += usize::from(&data != seed);
            refused += usize::from(run(&data).is_err());
        }
        assert!(
            changed > 400 && refused > 50,
            "{changed} changed, {refused} refused"
        );
    }
}
