//! The experiments' data: the shipped offline sets in `data/`, the parsers for
//! the downloaded full sets in `data/downloads/`, and their preprocessing.
//!
//! - Precipitation transfer (the paper's US Historical Climatology Network
//!   experiment): [`ghcn`] reads GHCN-Daily `.dly` files and the station list,
//!   [`precip`] turns a daily series into the paper's smoothed 365-day profile
//!   and its train/test split, [`weather`] builds the same tasks from the
//!   shipped `data/weather.csv`, [`ushcn`] reads the download, and
//!   [`precipitation_source`] picks the downloaded USHCN data when present,
//!   the shipped data otherwise.
//! - Spatial transfer (the paper's malaria experiment): [`spatial`] holds the
//!   problem type and its seeded split, [`raster`] builds the offline stand-in
//!   from `data/annual-precip.json`, [`malaria`] reads the converted Malaria
//!   Atlas Project table written by `cargo xtask data malaria`, and
//!   [`spatial_source`] picks between them.
//!
//! Nothing here touches the network: downloads are `cargo xtask data …`.

mod error;
pub mod ghcn;
pub mod malaria;
pub mod precip;
pub mod raster;
pub mod spatial;
pub mod ushcn;
pub mod weather;

use std::path::{Path, PathBuf};

pub use error::DataError;
pub use malaria::{SpatialSource, spatial_source};
pub use precip::PrecipTask;
pub use spatial::SpatialProblem;
pub use ushcn::{PrecipSource, precipitation_source};

/// The workspace's `data/` folder (shipped data; downloads under `downloads/`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// `path` as reports show it: relative to the repository root when it lies inside it (so that
/// a report names `data/weather.csv`, not the folder of the machine it ran on), else as given.
pub fn shown(path: &Path) -> String {
    let normal = |p: &Path| {
        let mut out = PathBuf::new();
        for part in p.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    let root = normal(&data_dir().join(".."));
    let full = normal(path);
    match full.strip_prefix(&root) {
        Ok(rel) if path.is_absolute() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// The folder that `cargo xtask data …` downloads into: `data/downloads/`.
pub fn downloads_dir() -> PathBuf {
    data_dir().join("downloads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_the_repository_are_shown_relative_to_it() {
        assert_eq!(shown(&data_dir().join("weather.csv")), "data/weather.csv");
        assert_eq!(
            shown(&downloads_dir().join("ushcn/ghcnd-stations.txt")),
            "data/downloads/ushcn/ghcnd-stations.txt"
        );
        assert_eq!(shown(Path::new("/elsewhere/x.csv")), "/elsewhere/x.csv");
        assert_eq!(shown(Path::new("relative/x.csv")), "relative/x.csv");
    }
}
