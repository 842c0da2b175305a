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

/// The folder that `cargo xtask data …` downloads into: `data/downloads/`.
pub fn downloads_dir() -> PathBuf {
    data_dir().join("downloads")
}
